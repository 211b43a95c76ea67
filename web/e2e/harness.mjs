// What the end-to-end tests share: a real Hawker server on free loopback ports
// with its own data directory, headless Chromium from the system, and ffmpeg
// publishing the committed demo clip over RTMP.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');
export const output = path.join(repo, 'web/e2e-output');
mkdirSync(output, { recursive: true });

function binary() {
  if (process.env.HAWKER_BIN) return process.env.HAWKER_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target');
  return path.join(target, 'debug/hawker');
}

async function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `hawker serve` in a fresh directory; `stop()` ends it with SIGTERM.
 * On SQLite by default; `host` and `args` (such as `--database-url` and
 * `--nats-url`) make it one node of several; `command: 'demo'` starts the
 * demo.
 */
export async function startHawker({ host = '127.0.0.1', args = [], command = 'serve' } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hawker-e2e-'));
  const http = await freePort(host);
  const rtmp = await freePort(host);
  // Every test's accounts sign up and buy from loopback.
  const env = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
    HAWKER_SIGN_UPS_PER_ADDRESS: '10000',
    HAWKER_MAX_UNPAID_ORDERS_PER_ADDRESS: '10000',
  };
  delete env.HAWKER_DATABASE_URL;
  delete env.HAWKER_NATS_URL;
  const child = spawn(
    binary(),
    [command, '--data-dir', dir, '--http-addr', `${host}:${http}`, '--rtmp-addr', `${host}:${rtmp}`, ...args],
    { env, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const url = `http://${host}:${http}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (i > 600 || child.exitCode !== null) throw new Error(`Hawker did not start (${binary()})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    host,
    port: http,
    rtmpPort: rtmp,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A load balancer in front of several nodes, as small as one can be: each new
 * connection goes to the first node that accepts it, so once the first node
 * stops, everyone lands on the next. `close()` ends it.
 */
export async function balance(nodes) {
  const open = new Set();
  const server = net.createServer((client) => {
    open.add(client);
    client.once('close', () => open.delete(client));
    const attempt = (i) => {
      if (i >= nodes.length) return client.destroy();
      const upstream = net.connect(nodes[i].port, nodes[i].host);
      upstream.once('error', () => attempt(i + 1));
      upstream.once('connect', () => {
        upstream.removeAllListeners('error');
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
      });
    };
    attempt(0);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--autoplay-policy=no-user-gesture-required'],
  });
}

/** Publishes the demo clip in a loop to `server/key` until `stop()`. */
export function publish(server, key) {
  const clip = path.join(repo, 'crates/media/fixtures/demo.flv');
  const ffmpeg = spawn(
    'ffmpeg',
    ['-hide_banner', '-loglevel', 'error', '-re', '-stream_loop', '-1', '-i', clip, '-c', 'copy', '-f', 'flv', `${server}/${key}`],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  return {
    async stop() {
      ffmpeg.kill('SIGINT');
      await new Promise((r) => (ffmpeg.exitCode !== null ? r() : ffmpeg.once('exit', r)));
    },
  };
}

/** POSTs `body` to `url` (with `token`) and returns what a 201 brings. */
export async function created(url, body, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body) });
  const value = await res.json();
  if (res.status !== 201) throw new Error(`${url}: ${res.status} ${JSON.stringify(value)}`);
  return value;
}

/** A small PNG made by ffmpeg, for a product image upload. */
export function productImage() {
  const file = path.join(output, 'product.png');
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'color=c=0x3366cc:s=200x200', '-frames:v', '1', file]);
  return file;
}

/** Waits until a page's video has played at least `seconds`. */
export async function waitForPlayback(page, seconds = 1, selector = 'video') {
  await page.waitForFunction(
    ([sel, s]) => {
      const video = document.querySelector(sel);
      return video && video.currentTime > s;
    },
    [selector, seconds],
    { timeout: 60_000 },
  );
}

/** Signs up in the page's sign-in dialog, which must be open. */
export async function signUpInDialog(page, email, name) {
  const dialog = page.getByRole('dialog');
  await dialog.getByRole('button', { name: 'New here? Create an account' }).click();
  await dialog.getByLabel('Email').fill(email);
  await dialog.getByLabel('Password').fill('correct horse battery');
  await dialog.getByLabel('Your name, as the chat shows it').fill(name);
  await dialog.getByRole('button', { name: 'Create account' }).click();
  await dialog.waitFor({ state: 'detached' });
}

/** Starts counting the page's video stalls. */
export async function countStalls(page) {
  await page.evaluate(() => {
    const video = document.querySelector('video');
    window.stalls = { at: [], from: video.currentTime };
    video.addEventListener('waiting', () => window.stalls.at.push(video.currentTime.toFixed(2)));
  });
}

/**
 * Starts looking for holes in what the page's video has buffered: twice a
 * second, every gap of more than a frame between two buffered ranges is noted
 * (where it starts and how long it is). A hole is in the media itself, so it
 * shows whatever the machine's speed; a stall may also come from a busy
 * machine. Read them with `holes(page)`.
 */
export async function watchHoles(page) {
  await page.evaluate(() => {
    const video = document.querySelector('video');
    window.holes = new Map();
    window.holeWatch = setInterval(() => {
      const b = video.buffered;
      for (let i = 1; i < b.length; i++) {
        const gap = b.start(i) - b.end(i - 1);
        if (gap > 0.034) window.holes.set(b.end(i - 1).toFixed(2), gap.toFixed(3));
      }
    }, 500);
  });
}

/** The holes seen, each `[start, length]` in seconds. */
export async function holes(page) {
  return page.evaluate(() => {
    clearInterval(window.holeWatch);
    return [...window.holes.entries()];
  });
}

/** The stalls counted, and the seconds played since counting started. */
export async function stalls(page) {
  return page.evaluate(() => ({
    at: window.stalls.at,
    seconds: document.querySelector('video').currentTime - window.stalls.from,
  }));
}
