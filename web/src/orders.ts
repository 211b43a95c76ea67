// /orders: the buyer's orders, each with its history; a reserved order can be
// paid before its countdown ends; shipped orders show their tracking number.
import './style.css';
import { describe, get } from './api';
import { pay } from './checkout';
import { me, mountHeader, signInPrompt } from './session';
import type { Order, Page } from './types';
import { clock, fill, h, money, notice, time } from './ui';

const main = h('main', { class: 'orders' });
document.body.append(main);
void mountHeader();
const out = h('p', {});
let timers: number[] = [];

const STATUS: Record<string, string> = {
  reserved: 'Awaiting payment',
  paid: 'Paid',
  fulfilled: 'Shipped',
  cancelled: 'Cancelled',
  expired: 'Expired',
  refunded: 'Refunded',
  partially_refunded: 'Partly refunded',
};

function orderView(order: Order): HTMLElement {
  const countdown = h('span', { class: 'countdown' });
  if (order.status === 'reserved' && order.expires_at) {
    const tick = () => {
      const left = (Date.parse(order.expires_at!) - Date.now()) / 1000;
      countdown.textContent = left > 0 ? `Pay within ${clock(left)}` : 'Expired';
    };
    tick();
    timers.push(window.setInterval(tick, 1000));
  }
  const payButton = order.status === 'reserved' ? h('button', { type: 'button' }, `Pay ${money(order.total)}`) : null;
  payButton?.addEventListener('click', async () => {
    await pay(order);
    await load();
  });
  return h(
    'article',
    { class: `order ${order.status}`, 'data-order': order.id },
    h('header', {}, h('h2', {}, `Order ${order.id}`), h('span', { class: `status ${order.status}` }, STATUS[order.status] ?? order.status)),
    h('ul', { class: 'lines' }, order.lines.map((l) => h('li', {}, `${l.quantity} × ${l.title} (${l.sku})`, h('span', {}, money(l.unit_price))))),
    h('p', { class: 'total' }, 'Total ', h('strong', {}, money(order.total)), order.refunded.amount > 0 ? ` · refunded ${money(order.refunded)}` : ''),
    order.shipment ? h('p', {}, `Shipped with ${order.shipment.carrier}, tracking number `, h('strong', {}, order.shipment.tracking_number)) : null,
    order.room_id ? h('p', {}, h('a', { href: `/r/${encodeURIComponent(order.room_id)}` }, 'From this live')) : null,
    payButton ? h('p', { class: 'row' }, payButton, countdown) : null,
    h('details', {}, h('summary', {}, 'History'), h('ol', { class: 'history' }, order.history.map((e) => h('li', {}, h('time', { datetime: e.at }, time(e.at)), ` ${STATUS[e.status] ?? e.status}: ${e.reason}`, e.amount ? ` (${money(e.amount)})` : '')))),
  );
}

async function load(): Promise<void> {
  timers.forEach(clearInterval);
  timers = [];
  const account = await me();
  if (!account) {
    signInPrompt(main, 'My orders', 'Sign in to see your orders.');
    return;
  }
  const orders = await get<Page<Order>>('/api/v1/orders?limit=50');
  fill(main, h('h1', {}, 'My orders'), out, orders.items.length ? orders.items.map(orderView) : h('p', { class: 'muted' }, 'No orders yet. Buy something in a live!'));
}

load().catch((error) => {
  main.append(out);
  notice(out, describe(error));
});
