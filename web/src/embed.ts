// /embed/{room}: the player for an iframe on another site, with the pinned
// product and a Buy button that opens the room on Hawker (buying needs the
// viewer's Hawker session, which a third-party frame does not carry).
import './style.css';
import { describe } from './api';
import { productCard } from './cards';
import { createPlayer } from './player';
import { RoomSocket } from './socket';
import type { PinnedCard } from './types';
import { h, notice, pathParam } from './ui';

const roomId = pathParam('/embed/');
const player = createPlayer();
const out = h('p', {});
const roomUrl = `${location.origin}/r/${encodeURIComponent(roomId)}`;
const card = productCard(() => window.open(roomUrl, '_blank', 'noopener'), 'Buy on Hawker');
const watch = h('a', { href: roomUrl, target: '_blank', rel: 'noopener', class: 'watch' }, 'Open the live room ↗');
document.body.append(h('main', { class: 'embed' }, h('div', { class: 'stage' }, player.element, h('div', { class: 'stage-bottom' }, card.element)), watch, out));

try {
  new RoomSocket(roomId, {
    snapshot(snapshot) {
      const stream = snapshot.room.status === 'live' ? snapshot.room.stream : null;
      player.play(stream?.hls ?? null, true, snapshot.room.status === 'ended' ? 'This live has ended.' : 'The seller is offline.');
      card.show(snapshot.pinned, snapshot.sale);
    },
    event(event) {
      if (event.type === 'pin') card.show(event.data as unknown as PinnedCard, null);
      else if (event.type === 'unpin') card.show(null, null);
      else if (event.type === 'stream.live') player.play(String(event.data?.hls), true);
      else if (event.type === 'stream.ended' || event.type === 'room.ended') player.play(null, true);
    },
    error() {},
    connection() {},
  });
} catch (error) {
  notice(out, describe(error));
}
