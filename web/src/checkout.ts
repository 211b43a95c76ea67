// Paying a reserved order with a card of the built-in `test` provider, in a
// dialog over the page. The card goes to the API once and is never stored here.
import { call, describe, newIdempotencyKey } from './api';
import type { Order } from './types';
import { clock, field, h, money, notice } from './ui';

export const TEST_CARDS: [string, string][] = [
  ['4242424242424242', 'succeeds'],
  ['4000000000000002', 'is declined'],
  ['4000000000009995', 'fails: insufficient funds'],
  ['4000000000003220', 'succeeds a moment later'],
];

/** Shows the order and a card form; resolves with the order as it stands when the dialog closes. */
export function pay(order: Order): Promise<Order> {
  return new Promise((resolve) => {
    let latest = order;
    const number = h('input', {
      name: 'card-number',
      inputmode: 'numeric',
      autocomplete: 'cc-number',
      required: true,
      value: TEST_CARDS[0][0],
      pattern: '[0-9 ]{12,23}',
    });
    const expiry = h('input', { name: 'card-expiry', autocomplete: 'cc-exp', required: true, value: '12/34', pattern: '\\d{1,2}/\\d{2}' });
    const cvc = h('input', { name: 'card-cvc', inputmode: 'numeric', autocomplete: 'cc-csc', required: true, value: '123', maxlength: 4 });
    const out = h('p', { 'aria-live': 'polite' });
    const countdown = h('p', { class: 'muted' });
    const submit = h('button', { type: 'submit' }, `Pay ${money(order.total)}`);
    // One key per attempt: a retry of the same attempt (a lost answer) is
    // answered from the first; a new attempt after a decline is a new payment.
    let key = newIdempotencyKey();
    const lines = h(
      'ul',
      { class: 'lines' },
      order.lines.map((line) =>
        h('li', {}, `${line.quantity} × ${line.title} (${line.sku})`, h('span', {}, money(line.unit_price))),
      ),
    );
    const form = h(
      'form',
      { method: 'dialog' },
      h('h2', {}, 'Pay for your order'),
      lines,
      h('p', { class: 'total' }, 'Total ', h('strong', {}, money(order.total))),
      countdown,
      field('Card number', number, 'Test cards: ' + TEST_CARDS.map(([n, what]) => `${n} ${what}`).join('; ') + '.'),
      h('div', { class: 'row' }, field('Expiry (MM/YY)', expiry), field('CVC', cvc)),
      out,
      h('div', { class: 'row' }, submit, h('button', { type: 'button', class: 'secondary', value: 'later' }, 'Pay later')),
    );
    const dialog = h('dialog', { class: 'checkout', 'aria-label': 'Pay for your order' }, form);
    const tick = () => {
      if (!latest.expires_at || latest.status !== 'reserved') return;
      const left = (Date.parse(latest.expires_at) - Date.now()) / 1000;
      countdown.textContent = left > 0 ? `Reserved for you for ${clock(left)}` : 'The reservation has expired.';
    };
    tick();
    const timer = window.setInterval(tick, 1000);
    form.querySelector('button[value=later]')?.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const [month, year] = expiry.value.split('/').map((part) => Number(part.trim()));
      submit.disabled = true;
      notice(out, null);
      try {
        const answer = await call<{ order: Order; payment: { status: string } }>(
          'POST',
          `/api/v1/orders/${encodeURIComponent(latest.id)}/payments`,
          { card: { number: number.value.replace(/\s+/g, ''), exp_month: month, exp_year: 2000 + (year ?? 0), cvc: cvc.value } },
          { idempotencyKey: key },
        );
        latest = answer.body.order;
        const done =
          answer.status === 202
            ? 'Payment is processing; your order is confirmed when it completes.'
            : `Paid. Thank you! Your order ${latest.id} is confirmed.`;
        form.replaceChildren(
          h('h2', {}, answer.status === 202 ? 'Payment processing' : 'Order confirmed'),
          h('p', { class: 'notice ok', role: 'status' }, done),
          h('div', { class: 'row' }, h('a', { href: '/orders', class: 'button' }, 'My orders'), h('button', { type: 'submit' }, 'Back to the live')),
        );
      } catch (error) {
        key = newIdempotencyKey();
        notice(out, describe(error) + ' Your units stay reserved until the countdown ends.');
        submit.disabled = false;
      }
    });
    dialog.addEventListener('close', () => {
      clearInterval(timer);
      dialog.remove();
      resolve(latest);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
