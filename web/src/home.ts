// /: rooms live now with their viewer counts, upcoming rooms, recent replays.
import './style.css';
import { describe, get } from './api';
import { mountHeader } from './session';
import type { Page, Room } from './types';
import { fill, h, notice, time } from './ui';

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

async function start(): Promise<void> {
  const parts = await Promise.all([
    section('Live now', 'live', (r) => `LIVE · ${r.viewers ?? 0} watching`, 'Nobody is live right now.'),
    section('Upcoming', 'scheduled', (r) => (r.scheduled_start ? `Starts ${time(r.scheduled_start)}` : 'Not scheduled yet'), 'No upcoming lives.'),
    section('Replays', 'ended', (r) => (r.ended_at ? `Ended ${time(r.ended_at)}` : 'Replay'), 'No replays yet.'),
  ]);
  fill(main, h('h1', { class: 'visually-hidden' }, 'Hawker'), parts);
}

start().catch((error) => {
  const out = h('p', {});
  main.append(out);
  notice(out, describe(error));
});
