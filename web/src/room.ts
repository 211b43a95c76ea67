// /r/{room}: the live room (player, chat, likes, viewers, pinned product, flash
// sale, buying in one tap) or, once the room has ended, its replay with the
// pins and chat on the recording's timeline.
import './style.css';
import { describe, get, type Money } from './api';
import { buy, ensureSignedIn, productCard, saleBanner } from './cards';
import { createChat } from './chat';
import { createPlayer } from './player';
import { me, mountHeader } from './session';
import { RoomSocket } from './socket';
import type { ChatMessage, LiveRoom, PinnedCard, Product, Recording, Room, RoomStream, Sale, Shop, TimelineEntry } from './types';
import { clock, fill, h, money, notice, pathParam, time } from './ui';

const roomId = pathParam('/r/');
const main = h('main', { class: 'room' });
document.body.append(main);
void mountHeader(() => void whoAmI(true));

const player = createPlayer();
const title = h('h1', {});
const status = h('p', { class: 'room-status' });
const viewers = h('span', { class: 'viewers' }, '0 watching');
const likeCount = h('span', { class: 'like-count', 'aria-label': 'Likes' }, '0');
const likeButton = h('button', { type: 'button', class: 'like', 'aria-label': 'Like' }, '❤');
const hearts = h('div', { class: 'hearts', 'aria-hidden': 'true' });
const errors = h('p', {});
let sale: Sale | null = null;
let pinned: PinnedCard | null = null;
let socket: RoomSocket | null = null;

const buyFrom = async (variantId: string, button: HTMLButtonElement, from: Sale | null) => {
  button.disabled = true;
  notice(errors, null);
  const signedIn = !!(await me().catch(() => null));
  try {
    await buy(roomId, variantId, from);
    if (!signedIn) await whoAmI(true);
  } catch (error) {
    notice(errors, describe(error));
  } finally {
    button.disabled = false;
  }
};
const card = productCard((variantId, button) => void buyFrom(variantId, button, sale));
const banner = saleBanner((s, button) => void buyFrom(s.variant_id, button, s));
const chat = createChat({
  room: roomId,
  send: (text) => socket?.send({ type: 'chat', text }) ?? false,
  signIn: async () => {
    const ok = await ensureSignedIn('Sign in to chat. The video keeps playing.');
    if (ok) await whoAmI(true);
    return ok;
  },
});

const stage = h('div', { class: 'stage' }, player.element, h('div', { class: 'stage-top' }, viewers), hearts, h('div', { class: 'stage-bottom' }, banner.element, card.element));
fill(
  main,
  h('div', { class: 'room-video' }, stage),
  h(
    'aside',
    { class: 'room-side' },
    h('div', { class: 'room-head' }, title, status, h('div', { class: 'row' }, likeButton, likeCount)),
    errors,
    chat.element,
  ),
);

let shop: Shop | null = null;
let room: Room | null = null;

async function whoAmI(reconnect = false): Promise<void> {
  const account = await me().catch(() => null);
  // The shop's moderators list answers its owner and its moderators only.
  const moderator =
    !!account && !!shop && (account.user.id === shop.owner_id || (await get(`/api/v1/shops/${encodeURIComponent(shop.id)}/moderators`).then(() => true, () => false)));
  chat.setViewer(account?.user.id ?? null, moderator);
  // The socket speaks for whoever its cookie named when it opened.
  if (reconnect) await socket?.reconnect();
}

function floatHeart(): void {
  const heart = h('span', {}, '❤');
  heart.style.left = `${20 + Math.random() * 60}%`;
  hearts.append(heart);
  setTimeout(() => heart.remove(), 2000);
}

likeButton.addEventListener('click', async () => {
  const signedIn = !!(await me().catch(() => null));
  if (!signedIn) {
    if (!(await ensureSignedIn('Sign in to like. The video keeps playing.'))) return;
    await whoAmI(true);
  }
  floatHeart();
  if (!socket?.send({ type: 'like' })) notice(errors, 'Not connected to the room; reconnecting…');
});

function saleTitle(): string | null {
  if (!sale || !pinned) return null;
  return pinned.variants.some((v) => v.id === sale!.variant_id) ? pinned.title : null;
}

function showCommerce(): void {
  card.show(pinned, sale);
  banner.show(sale, saleTitle());
}

function showStatus(state: LiveRoom['status'], stream: RoomStream | null): void {
  if (state === 'live' && stream) {
    status.textContent = 'LIVE';
    status.className = 'room-status live';
    player.play(stream.hls, true);
  } else if (state === 'ended') {
    status.textContent = 'This live has ended.';
    status.className = 'room-status';
    player.play(null, true, 'This live has ended. Its replay is ready in a moment.');
    setTimeout(() => location.reload(), 3000);
  } else {
    status.className = 'room-status';
    const start = room?.scheduled_start;
    status.textContent = start ? `Starts ${time(start)}` : 'Offline';
    player.play(null, true, start ? `Starting soon: ${time(start)}` : 'The seller is offline. This page plays the live as soon as it starts.');
  }
}

function live(): void {
  socket = new RoomSocket(roomId, {
    snapshot(snapshot) {
      viewers.textContent = `${snapshot.viewers} watching`;
      likeCount.textContent = String(snapshot.likes);
      sale = snapshot.sale;
      pinned = snapshot.pinned;
      if (snapshot.chat) chat.reset(snapshot.chat);
      showStatus(snapshot.room.status, snapshot.room.stream);
      showCommerce();
    },
    event(event) {
      const data = (event.data ?? {}) as Record<string, unknown>;
      switch (event.type) {
        case 'chat': {
          chat.add(data as unknown as ChatMessage);
          break;
        }
        case 'chat.deleted':
          chat.remove(String(data.id));
          break;
        case 'likes': {
          likeCount.textContent = String(data.count);
          for (let i = 0; i < Math.min(Number(data.added) || 0, 5); i++) setTimeout(floatHeart, i * 120);
          break;
        }
        case 'viewers':
          viewers.textContent = `${data.count} watching`;
          break;
        case 'pin':
          pinned = data as unknown as PinnedCard;
          showCommerce();
          break;
        case 'unpin':
          pinned = null;
          showCommerce();
          break;
        case 'sale.started':
        case 'sale.stock':
        case 'sale.sold_out':
        case 'sale.ended':
          sale = data as unknown as Sale;
          if (pinned) {
            const variant = pinned.variants.find((v) => v.id === sale!.variant_id);
            if (variant && event.type === 'sale.ended') variant.stock += sale.available;
          }
          showCommerce();
          break;
        case 'stream.live':
          showStatus('live', data as unknown as RoomStream);
          break;
        case 'stream.ended':
          showStatus('scheduled', null);
          break;
        case 'room.ended':
          showStatus('ended', null);
          break;
        case 'user.muted':
        case 'user.banned':
          void me().then((account) => {
            if (account && data.user_id === account.user.id) {
              chat.error(event.type === 'user.banned' ? 'A moderator banned you from this room.' : `A moderator muted you until ${time(String(data.until))}.`);
            }
          });
          break;
        case 'slow_mode':
          chat.error(Number(data.seconds) > 0 ? `Slow mode is on: one message every ${data.seconds} s.` : '');
          break;
      }
    },
    error(code, message, retryAfterMs) {
      const wait = retryAfterMs ? ` (wait ${Math.ceil(retryAfterMs / 1000)} s)` : '';
      chat.error(code === 'unauthenticated' ? 'Sign in to chat and like.' : message + wait);
    },
    connection(state) {
      main.classList.toggle('disconnected', state === 'closed');
    },
  });
}

async function replay(): Promise<void> {
  status.textContent = 'Replay';
  chat.element.querySelector('form')?.remove();
  const recordings = await get<{ items: Recording[] }>(`/api/v1/rooms/${encodeURIComponent(roomId)}/recordings`);
  const newest = recordings.items[0];
  if (!newest) {
    player.play(null, false, 'This live has ended and has no recording.');
    return;
  }
  const recording = await get<Recording>(`/api/v1/recordings/${encodeURIComponent(newest.id)}`);
  const timeline = recording.timeline ?? [];
  player.play(recording.playlist_url, false);
  const products = new Map<string, Promise<Product>>();
  const product = (id: string) => {
    let p = products.get(id);
    if (!p) {
      p = get<Product>(`/api/v1/products/${encodeURIComponent(id)}`);
      products.set(id, p);
    }
    return p;
  };
  const chapters = h('ol', { class: 'chapters', 'aria-label': 'Products and sales in this replay' });
  const label = (entry: TimelineEntry) => {
    if (entry.type === 'pin') return String(entry.data.title ?? 'Product');
    const price = entry.data.price as Money | undefined;
    return entry.type === 'sale.started' ? `Flash sale starts${price ? ` at ${money(price)}` : ''}` : 'Flash sale ends';
  };
  for (const entry of timeline.filter((e) => e.type === 'pin' || e.type === 'sale.started' || e.type === 'sale.ended')) {
    const seek = h('button', { type: 'button', class: 'link' }, `${clock(entry.at_ms / 1000)} ${label(entry)}`);
    seek.addEventListener('click', () => {
      player.video.currentTime = entry.at_ms / 1000;
    });
    chapters.append(h('li', {}, seek));
  }
  if (chapters.childElementCount) chat.element.before(h('h2', {}, 'In this replay'), chapters);
  let shownChat = -1;
  let shownPin: string | null = null;
  const sync = async () => {
    const now = player.video.currentTime * 1000;
    const past = timeline.filter((e) => e.at_ms <= now);
    const chatLines = past.filter((e) => e.type === 'chat');
    if (chatLines.length !== shownChat) {
      shownChat = chatLines.length;
      chat.reset(
        chatLines.map((e, i) => {
          const user = e.data.user as { id: string; display_name: string };
          return { id: `replay-${i}`, user: { id: user.id, name: user.display_name }, text: String(e.data.text) };
        }),
      );
    }
    const pin = past.filter((e) => e.type === 'pin' || e.type === 'unpin').at(-1);
    const productId = pin?.type === 'pin' ? String(pin.data.product_id) : null;
    if (productId === shownPin) return;
    shownPin = productId;
    if (!productId) {
      pinned = null;
      showCommerce();
      return;
    }
    try {
      const p = await product(productId);
      if (shownPin !== productId) return;
      const first = p.variants[0];
      pinned = {
        product_id: p.id,
        title: p.title,
        image: p.images[0] ? `/images/${p.images[0]}` : null,
        price: first.price,
        variants: p.variants.map((v) => ({ id: v.id, sku: v.sku, options: v.options, price: v.price, stock: v.stock_on_hand })),
        pinned_at: '',
      };
      showCommerce();
    } catch (error) {
      notice(errors, describe(error));
    }
  };
  player.video.addEventListener('timeupdate', () => void sync());
  player.video.addEventListener('seeked', () => void sync());
}

async function start(): Promise<void> {
  if (!roomId) throw new Error('No room in the address.');
  room = await get<Room>(`/api/v1/rooms/${encodeURIComponent(roomId)}`);
  shop = await get<Shop>(`/api/v1/shops/${encodeURIComponent(room.shop_id)}`);
  document.title = `${room.title} · ${shop.name}`;
  fill(title, room.title, h('small', {}, ` · ${shop.name}`));
  await whoAmI();
  if (room.status === 'ended') {
    main.classList.add('replay');
    likeButton.hidden = true;
    likeCount.hidden = true;
    viewers.hidden = true;
    await replay();
  } else {
    live();
  }
}

start().catch((error) => {
  notice(errors, describe(error));
  player.play(null, true, describe(error));
});
