// The video player: LL-HLS through hls.js in low-latency mode (or the browser's
// own HLS where there is no MediaSource, as on iPhones), with mute, live edge
// and fullscreen controls, an overlay for "offline" and "starting soon", and
// reconnection by itself after a network or media error.
import type Hls from 'hls.js';
import { h } from './ui';

export interface Player {
  readonly element: HTMLElement;
  readonly video: HTMLVideoElement;
  /** Plays a live stream (`live` true) or a recording; null shows `offline`. */
  play(url: string | null, live: boolean, offline?: string): void;
  destroy(): void;
}

export function createPlayer(): Player {
  const video = h('video', { playsinline: true, muted: true, autoplay: true, preload: 'auto' });
  video.muted = true;
  const overlay = h('div', { class: 'player-overlay', role: 'status' });
  const mute = h('button', { type: 'button', class: 'ghost' }, 'Unmute');
  const edge = h('button', { type: 'button', class: 'ghost', 'aria-label': 'Jump to live' }, 'LIVE');
  const full = h('button', { type: 'button', class: 'ghost' }, 'Full screen');
  const controls = h('div', { class: 'player-controls' }, mute, edge, full);
  const element = h('div', { class: 'player' }, video, overlay, controls);

  let hls: Hls | null = null;
  let url: string | null = null;
  let live = true;
  let retry: number | undefined;

  const say = (text: string | null) => {
    overlay.textContent = text ?? '';
    overlay.hidden = !text;
  };
  const syncMute = () => {
    mute.textContent = video.muted ? 'Unmute' : 'Mute';
  };
  mute.addEventListener('click', () => {
    video.muted = !video.muted;
    syncMute();
  });
  edge.addEventListener('click', () => {
    const target = hls?.liveSyncPosition;
    if (target !== null && target !== undefined) video.currentTime = target;
    else if (video.seekable.length) video.currentTime = video.seekable.end(video.seekable.length - 1);
    void video.play().catch(() => undefined);
  });
  full.addEventListener('click', () => {
    if (document.fullscreenElement) void document.exitFullscreen();
    else void element.requestFullscreen?.().catch(() => undefined);
  });
  video.addEventListener('playing', () => say(null));
  video.addEventListener('waiting', () => url && say('Loading…'));

  const stop = () => {
    clearTimeout(retry);
    hls?.destroy();
    hls = null;
    video.removeAttribute('src');
    video.load();
  };

  const start = async () => {
    if (!url) return;
    const source = url;
    say(live ? 'Connecting to the live…' : 'Loading the replay…');
    const { default: HlsClass } = await import('hls.js/light');
    if (source !== url) return;
    if (!HlsClass.isSupported()) {
      if (video.canPlayType('application/vnd.apple.mpegurl')) {
        video.src = source;
        void video.play().catch(() => say('Tap to play'));
      } else {
        say('This browser cannot play the video.');
      }
      return;
    }
    const instance = new HlsClass({ lowLatencyMode: live, backBufferLength: 30, enableWorker: true });
    hls = instance;
    instance.on(HlsClass.Events.ERROR, (_event, data) => {
      if (!data.fatal || instance !== hls) return;
      // The stream may have paused or the network dropped: start over shortly.
      say(live ? 'Reconnecting…' : 'The replay could not load; retrying…');
      instance.destroy();
      hls = null;
      retry = window.setTimeout(() => void start(), 2000);
    });
    instance.on(HlsClass.Events.MANIFEST_PARSED, () => {
      void video.play().catch(() => say('Tap ▶ to play'));
    });
    instance.loadSource(source);
    instance.attachMedia(video);
  };

  overlay.addEventListener('click', () => void video.play().catch(() => undefined));
  syncMute();

  return {
    element,
    video,
    play(next, isLive, offline = 'The seller is offline.') {
      edge.hidden = !isLive;
      video.controls = !isLive;
      if (next === url && isLive === live && (hls || video.src)) return;
      stop();
      url = next;
      live = isLive;
      if (next) void start();
      else say(offline);
    },
    destroy() {
      url = null;
      stop();
    },
  };
}
