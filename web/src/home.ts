// /: rooms live now with their viewer counts, upcoming rooms, recent replays.
import './style.css';
import { describe, get } from './api';
import { mountHeader } from './session';
import type { Page, Product, Room, Shop } from './types';
import { fill, h, money, notice, time } from './ui';

const main = h('main', { class: 'home' });
document.body.append(main);
void mountHeader();

function roomCard(room: Room, label: string): HTMLLIElement {
  return h(
    'li',
    { class: `room-card ${room.status}` },
    h(
      'a',
      { href: `/r/${encodeURIComponent(room.id)}` },
      room.cover_image ? h('img', { src: `/images/${room.cover_image}`, alt: '', loading: 'lazy' }) : h('div', { class: 'cover', 'aria-hidden': 'true' }, '▶'),
      h('strong', {}, room.title),
      h('span', { class: 'muted' }, label),
    ),
  );
}

async function section(heading: string, status: Room['status'], label: (room: Room) => string, empty: string): Promise<HTMLElement> {
  const rooms = await get<Page<Room>>(`/api/v1/rooms?status=${status}&limit=24`);
  const list = h('ul', { class: 'rooms' });
  for (const room of rooms.items) list.append(roomCard(room, label(room)));
  return h('section', {}, h('h2', {}, heading), rooms.items.length ? list : h('p', { class: 'muted' }, empty));
}

/** The shops that are live now, with some of their products; each links to its live. */
async function shops(): Promise<HTMLElement | null> {
  const live = await get<Page<Room>>('/api/v1/rooms?status=live&limit=24');
  const firstRoom = new Map<string, Room>();
  for (const room of live.items) if (!firstRoom.has(room.shop_id)) firstRoom.set(room.shop_id, room);
  const sections = await Promise.all(
    [...firstRoom.values()].slice(0, 3).map(async (room) => {
      const [shop, products] = await Promise.all([
        get<Shop>(`/api/v1/shops/${encodeURIComponent(room.shop_id)}`),
        get<Page<Product>>(`/api/v1/shops/${encodeURIComponent(room.shop_id)}/products?limit=8`),
      ]);
      return h(
        'section',
        { class: 'shop' },
        h('h2', {}, shop.name, ' ', h('a', { href: `/r/${encodeURIComponent(room.id)}`, class: 'live-link' }, 'Watch live')),
        shop.description ? h('p', { class: 'muted' }, shop.description) : null,
        h(
          'ul',
          { class: 'products' },
          products.items.map((p) =>
            h(
              'li',
              {},
              p.images[0] ? h('img', { src: `/images/${p.images[0]}`, alt: '', loading: 'lazy', width: 160, height: 160 }) : null,
              h('strong', {}, p.title),
              p.variants[0] ? h('span', {}, money(p.variants[0].price)) : null,
            ),
          ),
        ),
      );
    }),
  );
  return sections.length ? h('div', {}, sections) : null;
}

async function start(): Promise<void> {
  const parts = await Promise.all([
    section('Live now', 'live', (r) => `LIVE · ${r.viewers ?? 0} watching`, 'Nobody is live right now.'),
    section('Upcoming', 'scheduled', (r) => (r.scheduled_start ? `Starts ${time(r.scheduled_start)}` : 'Not scheduled yet'), 'No upcoming lives.'),
    section('Replays', 'ended', (r) => (r.ended_at ? `Ended ${time(r.ended_at)}` : 'Replay'), 'No replays yet.'),
  ]);
  fill(main, h('h1', { class: 'visually-hidden' }, 'Hawker'), parts[0], await shops(), parts.slice(1));
}

start().catch((error) => {
  const out = h('p', {});
  main.append(out);
  notice(out, describe(error));
});
