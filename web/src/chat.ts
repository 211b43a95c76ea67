// The chat list and box. Messages are text only (never HTML); the viewer's own
// messages are marked; a deleted message vanishes; moderators get delete, mute
// and ban on each message.
import { describe, del, put } from './api';
import type { ChatMessage } from './types';
import { fill, h, notice } from './ui';

const KEEP = 200;

export interface ChatOptions {
  room: string;
  /** Sends a message; false when not connected. */
  send: ((text: string) => boolean) | null;
  /** Asks the person to sign in before they write. */
  signIn: () => Promise<boolean>;
  /** Offered to the shop's owner: makes a message's author a moderator. */
  appoint?: (userId: string) => Promise<void>;
}

export interface Chat {
  readonly element: HTMLElement;
  reset(messages: ChatMessage[]): void;
  add(message: ChatMessage): void;
  remove(id: string): void;
  error(message: string): void;
  setViewer(userId: string | null, moderator: boolean): void;
}

export function createChat(options: ChatOptions): Chat {
  const list = h('ol', { class: 'chat-list', 'aria-label': 'Chat messages', 'aria-live': 'polite' });
  const out = h('p', { class: 'chat-error' });
  const input = h('input', { type: 'text', name: 'chat', maxlength: 300, placeholder: 'Say something…', 'aria-label': 'Chat message', autocomplete: 'off' });
  const send = h('button', { type: 'submit' }, 'Send');
  const form = h('form', { class: 'chat-box' }, input, send);
  const element = h('section', { class: 'chat', 'aria-label': 'Chat' }, list, out, options.send ? form : null);
  let me: string | null = null;
  let moderator = false;

  const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const render = (message: ChatMessage): HTMLLIElement => {
    const own = message.user.id === me;
    const li = h(
      'li',
      { 'data-id': message.id, class: own ? 'own' : message.user.moderator ? 'staff' : '' },
      h('b', {}, message.user.name),
      message.user.moderator ? h('span', { class: 'badge' }, 'seller') : null,
      ' ',
      h('span', { class: 'text' }, message.text),
    );
    if (moderator && !own) li.append(moderation(message));
    return li;
  };
  const moderation = (message: ChatMessage) => {
    const room = encodeURIComponent(options.room);
    const run = (label: string, action: () => Promise<unknown>) => {
      const button = h('button', { type: 'button', class: 'mini', 'aria-label': `${label} ${message.user.name}: ${message.text}` }, label);
      button.addEventListener('click', async () => {
        button.disabled = true;
        try {
          await action();
        } catch (error) {
          notice(out, describe(error));
        } finally {
          button.disabled = false;
        }
      });
      return button;
    };
    return h(
      'span',
      { class: 'mod-actions' },
      run('Delete', () => del(`/api/v1/rooms/${room}/messages/${encodeURIComponent(message.id)}`)),
      message.user.moderator ? null : run('Mute 10 min', () => put(`/api/v1/rooms/${room}/sanctions/${encodeURIComponent(message.user.id)}`, { kind: 'mute', seconds: 600 })),
      message.user.moderator ? null : run('Ban', () => put(`/api/v1/rooms/${room}/sanctions/${encodeURIComponent(message.user.id)}`, { kind: 'ban' })),
      message.user.moderator || !options.appoint ? null : run('Make moderator', () => options.appoint!(message.user.id)),
    );
  };
  let messages: ChatMessage[] = [];

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (!me && !(await options.signIn())) return;
    notice(out, null);
    if (options.send?.(text)) input.value = '';
    else notice(out, 'Not connected to the room; reconnecting…');
  });

  return {
    element,
    reset(all) {
      messages = all.slice(-KEEP);
      fill(list, messages.map(render));
      list.scrollTop = list.scrollHeight;
    },
    add(message) {
      const follow = atBottom();
      messages.push(message);
      list.append(render(message));
      if (messages.length > KEEP) {
        messages.shift();
        list.firstElementChild?.remove();
      }
      if (follow || message.user.id === me) list.scrollTop = list.scrollHeight;
    },
    remove(id) {
      messages = messages.filter((m) => m.id !== id);
      list.querySelector(`li[data-id="${CSS.escape(id)}"]`)?.remove();
    },
    error(message) {
      notice(out, message);
    },
    setViewer(userId, isModerator) {
      if (me === userId && moderator === isModerator) return;
      me = userId;
      moderator = isModerator;
      this.reset(messages);
    },
  };
}
