// What the live room, the replay and the embed show over or beside the video:
// the pinned product card and the flash-sale banner, and the buying that
// starts from them.
import { ApiError, call, newIdempotencyKey } from './api';
import { pay } from './checkout';
import { me, signIn } from './session';
import type { Order, PinnedCard, Sale } from './types';
import { clock, fill, h, money } from './ui';

/** Makes sure someone is signed in, asking in place; false if they declined. */
export async function ensureSignedIn(reason: string): Promise<boolean> {
  if (await me().catch(() => null)) return true;
  return (await signIn(reason)) !== null;
}

/** Buys one unit, in the sale when there is one, then opens the payment dialog. */
export async function buy(room: string, variantId: string, sale: Sale | null): Promise<Order | null> {
  if (!(await ensureSignedIn('Sign in to buy. The video keeps playing.'))) return null;
  const key = newIdempotencyKey();
  const order = async () =>
    sale && sale.variant_id === variantId && sale.status === 'live'
      ? call<Order>('POST', `/api/v1/rooms/${encodeURIComponent(room)}/sales/${encodeURIComponent(sale.sale_id)}/orders`, { quantity: 1 }, { idempotencyKey: key })
      : call<Order>('POST', '/api/v1/orders', { lines: [{ variant_id: variantId, quantity: 1 }], room_id: room }, { idempotencyKey: key });
  let answer;
  try {
    answer = await order();
  } catch (error) {
    // A session that ended meanwhile: sign in again and repeat the same request.
    if (!(error instanceof ApiError && error.status === 401) || !(await signIn('Your session ended; sign in again to buy.'))) throw error;
    answer = await order();
  }
  return pay(answer.body);
}

function optionsLabel(options: Record<string, string>, sku: string): string {
  const values = Object.values(options);
  return values.length ? values.join(' / ') : sku;
}

export interface ProductCard {
  readonly element: HTMLElement;
  show(card: PinnedCard | null, sale: Sale | null): void;
}

/** The pinned product: image, title, price, variants with their stock, and Buy. */
export function productCard(onBuy: (variantId: string, button: HTMLButtonElement) => void, buyLabel = 'Buy now'): ProductCard {
  const element = h('section', { class: 'product-card', 'aria-label': 'Pinned product', 'aria-live': 'polite', hidden: true });
  let selected: string | null = null;
  let shownProduct: string | null = null;
  return {
    element,
    show(card, sale) {
      element.hidden = !card;
      if (!card) {
        element.replaceChildren();
        shownProduct = null;
        return;
      }
      if (shownProduct !== card.product_id) selected = null;
      shownProduct = card.product_id;
      const variants = card.variants;
      const first = variants.find((v) => v.stock > 0) ?? variants[0];
      if (!selected || !variants.some((v) => v.id === selected)) selected = first?.id ?? null;
      const current = variants.find((v) => v.id === selected);
      const inSale = !!(sale && sale.status === 'live' && current && sale.variant_id === current.id);
      const stock = inSale ? sale!.available : (current?.stock ?? 0);
      const select =
        variants.length > 1
          ? h(
              'select',
              { 'aria-label': 'Variant', name: 'variant' },
              variants.map((v) => h('option', { value: v.id, selected: v.id === selected }, `${optionsLabel(v.options, v.sku)}${v.stock > 0 ? '' : ' (sold out)'}`)),
            )
          : null;
      select?.addEventListener('change', () => {
        selected = select.value;
        this.show(card, sale);
      });
      const button = h('button', { type: 'button', class: 'buy', disabled: !current || stock <= 0 }, stock > 0 ? buyLabel : 'Sold out');
      button.addEventListener('click', () => current && onBuy(current.id, button));
      fill(
        element,
        card.image ? h('img', { src: card.image, alt: '', width: 96, height: 96, loading: 'lazy' }) : h('div', { class: 'no-image', 'aria-hidden': 'true' }),
        h(
          'div',
          { class: 'details' },
          h('h3', {}, card.title),
          h(
            'p',
            { class: 'price' },
            inSale ? h('s', {}, money(current!.price)) : null,
            ' ',
            h('strong', {}, money(inSale ? sale!.price : (current?.price ?? card.price))),
          ),
          select,
          h('p', { class: 'stock' }, stock > 0 ? `${stock} left` : 'Out of stock'),
          button,
        ),
      );
    },
  };
}

export interface SaleBanner {
  readonly element: HTMLElement;
  show(sale: Sale | null, title: string | null): void;
}

/** The flash sale: price, countdown, a stock bar that falls as people buy, sold out. */
export function saleBanner(onBuy: (sale: Sale, button: HTMLButtonElement) => void): SaleBanner {
  const element = h('section', { class: 'sale-banner', 'aria-label': 'Flash sale', hidden: true });
  let timer: number | undefined;
  return {
    element,
    show(sale, title) {
      clearInterval(timer);
      const visible = sale && (sale.status === 'live' || sale.status === 'sold_out');
      element.hidden = !visible;
      if (!sale || !visible) return;
      const soldOut = sale.status === 'sold_out' || sale.available <= 0;
      const left = h('span', { class: 'countdown' });
      const tick = () => {
        left.textContent = `ends in ${clock((Date.parse(sale.ends_at) - Date.now()) / 1000)}`;
      };
      tick();
      timer = window.setInterval(tick, 1000);
      const bar = h('div', { class: 'stock-bar', role: 'progressbar', 'aria-label': 'Units left', 'aria-valuemin': 0, 'aria-valuemax': sale.quantity, 'aria-valuenow': sale.available });
      const level = h('span');
      level.style.width = `${sale.quantity ? (100 * sale.available) / sale.quantity : 0}%`;
      bar.append(level);
      const button = h('button', { type: 'button', class: 'buy', disabled: soldOut }, soldOut ? 'Sold out' : 'Buy now');
      button.addEventListener('click', () => onBuy(sale, button));
      element.classList.toggle('sold-out', soldOut);
      fill(
        element,
        h('p', { class: 'sale-title' }, 'Flash sale', title ? `: ${title}` : ''),
        h('p', { class: 'price' }, h('strong', {}, money(sale.price)), ' ', soldOut ? h('span', {}, 'Sold out') : left),
        bar,
        h('p', { class: 'stock' }, soldOut ? `All ${sale.quantity} sold` : `${sale.available} of ${sale.quantity} left`),
        button,
      );
    },
  };
}
