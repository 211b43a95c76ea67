// Who is signed in, and signing in or up in place: a dialog over the page, so a
// viewer keeps watching while they sign in. The session itself is the HttpOnly
// cookie the API sets; nothing about it is kept in the page or in storage.
import { ApiError, describe, get, post, del } from './api';
import type { Me, User } from './types';
import { field, fill, h, header, notice } from './ui';

let current: Promise<Me | null> | null = null;
const SESSION_CHANGED = 'hawker:session';

/** The signed-in account with its shops, or null. */
export function me(): Promise<Me | null> {
  current ??= get<Me>('/api/v1/me').catch((error) => {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  });
  return current;
}

function forget(): void {
  current = null;
  window.dispatchEvent(new Event(SESSION_CHANGED));
}

/** Opens the sign-in / sign-up dialog; resolves with the account, or null if closed. */
export function signIn(reason?: string): Promise<User | null> {
  return new Promise((resolve) => {
    let mode: 'in' | 'up' = 'in';
    const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true });
    const password = h('input', {
      type: 'password',
      name: 'password',
      autocomplete: 'current-password',
      required: true,
      minlength: 8,
    });
    const name = h('input', { type: 'text', name: 'display_name', autocomplete: 'nickname', maxlength: 60 });
    const nameField = field('Your name, as the chat shows it', name);
    const out = h('p', { 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit' }, 'Sign in');
    const title = h('h2', {}, 'Sign in');
    const toggle = h('button', { type: 'button', class: 'link' }, 'New here? Create an account');
    const form = h(
      'form',
      { method: 'dialog' },
      title,
      reason ? h('p', {}, reason) : null,
      field('Email', email),
      field('Password', password, 'At least 8 characters.'),
      nameField,
      out,
      h('div', { class: 'row' }, submit, h('button', { type: 'button', class: 'secondary', value: 'cancel' }, 'Cancel')),
      toggle,
    );
    const dialog = h('dialog', { class: 'sign-in', 'aria-label': 'Sign in' }, form);
    const show = () => {
      title.textContent = mode === 'in' ? 'Sign in' : 'Create an account';
      submit.textContent = mode === 'in' ? 'Sign in' : 'Create account';
      toggle.textContent = mode === 'in' ? 'New here? Create an account' : 'Have an account? Sign in';
      nameField.hidden = mode === 'in';
      name.required = mode === 'up';
      password.autocomplete = mode === 'in' ? 'current-password' : 'new-password';
    };
    toggle.addEventListener('click', () => {
      mode = mode === 'in' ? 'up' : 'in';
      notice(out, null);
      show();
    });
    form.querySelector('button[value=cancel]')?.addEventListener('click', () => dialog.close());
    let done: User | null = null;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      submit.disabled = true;
      notice(out, null);
      try {
        const body =
          mode === 'in'
            ? await post<{ user: User }>('/api/v1/sessions', { email: email.value, password: password.value })
            : await post<{ user: User }>('/api/v1/users', {
                email: email.value,
                password: password.value,
                display_name: name.value,
              });
        forget();
        done = body.user;
        dialog.close();
      } catch (error) {
        notice(out, describe(error));
      } finally {
        submit.disabled = false;
      }
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(done);
    });
    show();
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** What a page for signed-in people shows to others: why, and a Sign in button
 * that opens the dialog and reloads the page once signed in. */
export function signInPrompt(main: HTMLElement, title: string, why: string): void {
  const button = h('button', { type: 'button' }, 'Sign in');
  button.addEventListener('click', async () => (await signIn()) && location.reload());
  fill(main, h('h1', {}, title), h('p', {}, why), button);
}

export async function signOut(): Promise<void> {
  await del('/api/v1/sessions/current').catch(() => undefined);
  forget();
}

let changed: () => void = () => location.reload();

async function renderHeader(): Promise<void> {
  const account = await me().catch(() => null);
  const bar = header(
    account?.user.display_name ?? null,
    async () => {
      if (await signIn()) changed();
    },
    async () => {
      await signOut();
      changed();
    },
  );
  const old = document.querySelector('header.top');
  if (old) old.replaceWith(bar);
  else document.body.prepend(bar);
}

/** Puts the top bar on the page, kept current as people sign in and out
 * (from the bar or in place); `onChange` runs after the bar's own actions. */
export async function mountHeader(onChange?: () => void): Promise<void> {
  if (onChange) changed = onChange;
  window.addEventListener(SESSION_CHANGED, () => void renderHeader());
  await renderHeader();
}
