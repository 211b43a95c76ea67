// Small DOM helpers: elements are built with `h`, text is always set as text
// (never parsed as HTML), and errors are shown in words next to what failed.
import { describe, type Money } from './api';

type Child = Node | string | number | null | undefined | false;
type Props = Record<string, string | number | boolean | EventListener | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value as EventListener);
    } else if (key === 'class') {
      el.className = String(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else if (key === 'value' && 'value' in el) {
      (el as HTMLInputElement).value = String(value);
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el: Element, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's content. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

const formats = new Map<string, Intl.NumberFormat>();

function format(currency: string): Intl.NumberFormat {
  let f = formats.get(currency);
  if (!f) {
    f = new Intl.NumberFormat(undefined, { style: 'currency', currency });
    formats.set(currency, f);
  }
  return f;
}

/** Minor units per major unit for a currency (100 for EUR, 1 for JPY). */
export function minorUnits(currency: string): number {
  return 10 ** (format(currency).resolvedOptions().maximumFractionDigits ?? 2);
}

/** A price as people read it, in the shop's currency. */
export function money(m: Money): string {
  return format(m.currency).format(m.amount / minorUnits(m.currency));
}

/** Minor units as a plain decimal for an input ("12.50", or "1200" for JPY). */
export function decimal(amount: number, currency: string): string {
  const units = minorUnits(currency);
  return (amount / units).toFixed(Math.round(Math.log10(units)));
}

/** Parses a price typed in major units ("12.50"); throws an error for people
 * when it is not one ("… is not a price."; `noun` names what was asked for). */
export function parseMoney(text: string, currency: string, noun = 'a price'): Money {
  const value = Number(text.replace(',', '.'));
  if (!Number.isFinite(value) || value < 0) throw new Error(`"${text}" is not ${noun}.`);
  return { amount: Math.round(value * minorUnits(currency)), currency };
}

export function time(iso: string): string {
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** "4:05" for a number of seconds. */
export function clock(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const seconds = String(s % 60).padStart(2, '0');
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, '0')}:${seconds}` : `${minutes}:${seconds}`;
}

/** An inline message under a form or a panel; `role=alert` reads errors aloud. */
export function notice(el: Element, message: string | null, kind: 'error' | 'ok' = 'error'): void {
  if (!message) {
    el.replaceChildren();
    el.removeAttribute('role');
    return;
  }
  el.className = `notice ${kind}`;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.textContent = message;
}

/** Runs an action from a button, showing its error in `out` and disabling the button meanwhile. */
export async function act(button: HTMLButtonElement | null, out: Element, run: () => Promise<void>): Promise<void> {
  if (button) button.disabled = true;
  notice(out, null);
  try {
    await run();
  } catch (error) {
    notice(out, describe(error));
  } finally {
    if (button) button.disabled = false;
  }
}

/** A labelled form field. */
export function field(label: string, input: HTMLElement, hint?: string): HTMLLabelElement {
  return h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', {}, hint) : null);
}

/** Copies text, saying so on the button. */
export function copyButton(label: string, text: () => string): HTMLButtonElement {
  const button = h('button', { type: 'button', class: 'secondary' }, label);
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Select and copy it';
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}

/** The page's top bar. */
export function header(signedIn: string | null, onSignIn: () => void, onSignOut: () => void): HTMLElement {
  return h(
    'header',
    { class: 'top' },
    h('a', { href: '/', class: 'brand' }, 'Hawker'),
    h(
      'nav',
      { 'aria-label': 'Main' },
      h('a', { href: '/orders' }, 'My orders'),
      h('a', { href: '/studio' }, 'Studio'),
      signedIn
        ? h('button', { type: 'button', class: 'link', onclick: onSignOut }, `Sign out (${signedIn})`)
        : h('button', { type: 'button', class: 'link', onclick: onSignIn }, 'Sign in'),
    ),
  );
}

/** The path segment after a prefix: `/r/{room}` gives the room. */
export function pathParam(prefix: string): string {
  const rest = location.pathname.startsWith(prefix) ? location.pathname.slice(prefix.length) : '';
  return decodeURIComponent(rest.split('/')[0] ?? '');
}
