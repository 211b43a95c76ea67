// Plays an HLS playlist with hls.js (low-latency mode) in headless Chromium and
// reads the frame number that bench/video's clip carries as a barcode at the
// top of each picture. Prints one JSON line: [frame number, wall-clock ms when
// shown] for every frame shown first, after a warm-up.
//
//   node play.mjs URL SECONDS WARMUP_SECONDS
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const [url, seconds = '10', warmup = '4'] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const hlsjs = readFileSync(require.resolve('hls.js/dist/hls.min.js'), 'utf8');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--autoplay-policy=no-user-gesture-required'],
});
const page = await browser.newPage();
page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
await page.setContent('<video id="v" muted playsinline width="640" height="360"></video>');
await page.addScriptTag({ content: hlsjs });
const shown = await page.evaluate(async ({ url, seconds, warmup }) => {
  const video = document.getElementById('v');
  if (!Hls.isSupported()) throw new Error('hls.js: MediaSource is not supported here');
  const hls = new Hls({ lowLatencyMode: true, backBufferLength: 10 });
  hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) console.error('hls.js fatal:', d.details); });
  hls.loadSource(url);
  hls.attachMedia(video);
  await new Promise((ok) => hls.on(Hls.Events.MANIFEST_PARSED, ok));
  await video.play();
  const canvas = document.createElement('canvas');
  canvas.width = 640; canvas.height = 48;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const seen = new Map();
  const start = Date.now();
  await new Promise((done) => {
    const onFrame = () => {
      const now = Date.now();
      ctx.drawImage(video, 0, 0, 640, 360, 0, 0, 640, 360);
      const pixels = ctx.getImageData(0, 0, 640, 48).data;
      let n = 0;
      for (let k = 0; k < 11; k++) {
        const i = (24 * 640 + 8 + 48 * k + 20) * 4;
        if (pixels[i] + pixels[i + 1] + pixels[i + 2] > 384) n |= 1 << k;
      }
      if (now - start > warmup * 1000 && !seen.has(n)) seen.set(n, now);
      if (now - start > (warmup + seconds) * 1000) return done();
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
  hls.destroy();
  return [...seen.entries()];
}, { url, seconds: Number(seconds), warmup: Number(warmup) });
await browser.close();
console.log(JSON.stringify(shown));
