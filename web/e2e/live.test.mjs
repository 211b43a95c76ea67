// The whole path through the real pages: a seller opens a shop and a room in
// the studio, ffmpeg publishes to it, viewers watch, sign up in place, chat
// and buy in a flash sale; a moderator deletes a message; the seller sees the
// order; another site embeds the player; the ended live plays as a shoppable
// replay. Screenshots go to web/e2e-output/.
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { launch, output, productImage, publish, signUpInDialog, startHawker, waitForPlayback } from './harness.mjs';

let hawker;
let browser;
let encoder;
const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
const desktop = { viewport: { width: 1280, height: 800 } };
const shared = {};

before(async () => {
  hawker = await startHawker();
  browser = await launch();
});

after(async () => {
  await encoder?.stop();
  await browser?.close();
  await hawker?.stop();
});

/** A page that fails the test on any script error. */
async function open(context, url) {
  const page = await context.newPage();
  page.on('pageerror', (error) => assert.fail(`${url}: ${error.message}`));
  await page.goto(url);
  return page;
}

test('a seller signs up, opens a shop, adds a product with an image and a room, and sees its stream key', async () => {
  const context = await browser.newContext(desktop);
  const studio = await open(context, `${hawker.url}/studio`);
  await studio.locator('main').getByRole('button', { name: 'Sign in' }).click();
  await signUpInDialog(studio, 'seller@e2e.example', 'Sally Seller');
  await studio.getByRole('heading', { name: 'Open your shop' }).waitFor();
  await studio.getByLabel('Shop name').fill('Sally’s Shirts');
  await studio.getByLabel('Handle').fill('sally');
  await studio.getByRole('button', { name: 'Open shop' }).click();
  await studio.getByRole('heading', { name: /Sally’s Shirts/ }).waitFor();

  await studio.getByRole('link', { name: 'Products' }).click();
  const newProduct = studio.locator('section', { has: studio.getByRole('heading', { name: 'New product' }) });
  await newProduct.getByLabel('Title').fill('Linen Shirt');
  await studio.getByLabel('Image').setInputFiles(productImage());
  await studio.getByLabel('SKU').fill('LIN-M');
  await studio.getByLabel('Options').fill('size=M');
  await studio.getByLabel('Price (EUR)').fill('40.00');
  await studio.getByLabel('Stock').fill('20');
  await studio.getByRole('button', { name: 'Create product' }).click();
  const row = studio.getByRole('row', { name: /Linen Shirt/ });
  await row.waitFor();
  assert.equal(await row.locator('img').count(), 1, 'the product shows its uploaded image');
  await row.getByText('Edit').click();
  await row.getByLabel('New variant SKU').fill('LIN-L');
  await row.getByLabel('New variant options').fill('size=L');
  await row.getByLabel('New variant price (EUR)').fill('42');
  await row.getByLabel('New variant stock').fill('3');
  await row.getByRole('button', { name: 'Add variant' }).click();
  await studio.getByRole('row', { name: /Linen Shirt/ }).getByText(/LIN-L L: €42\.00/).waitFor();

  await studio.getByRole('link', { name: 'Rooms' }).click();
  const newRoom = studio.locator('section', { has: studio.getByRole('heading', { name: 'New room' }) });
  await newRoom.getByLabel('Title').fill('Spring launch');
  await studio.getByRole('button', { name: 'Create room' }).click();
  const key = studio.locator('input[name=stream-key]');
  await key.waitFor();
  shared.key = await key.inputValue();
  shared.server = await studio.locator('input[name=rtmp-server]').inputValue();
  shared.room = new URL(studio.url()).hash.split('/')[1];
  assert.match(shared.key, /^live_[0-9a-f]{32,}$/);
  assert.equal(shared.server, `rtmp://127.0.0.1:${hawker.rtmpPort}/live`);
  assert.match(shared.room, /^room_/);
  shared.seller = context;
  shared.studio = studio;
});

test('ffmpeg publishes to the room, a viewer on a phone watches it, and the home page lists it live with the shop', async () => {
  encoder = publish(shared.server, shared.key);
  const viewer = await browser.newContext(phone);
  const page = await open(viewer, `${hawker.url}/r/${shared.room}`);
  await waitForPlayback(page, 1);
  await page.getByText('LIVE', { exact: true }).first().waitFor();
  shared.viewerA = page;

  const home = await open(viewer, `${hawker.url}/`);
  await home.getByRole('link', { name: /Spring launch.*LIVE · \d+ watching/ }).waitFor();
  await home.locator('section.shop', { hasText: 'Sally’s Shirts' }).getByText('Linen Shirt').waitFor();
  await home.close();
});

test('two viewers sign up in place and chat; a moderator deletes a message for both', async () => {
  const a = shared.viewerA;
  await a.getByRole('textbox', { name: 'Chat message' }).fill('Hello from Ann');
  await a.getByRole('button', { name: 'Send' }).click();
  await signUpInDialog(a, 'ann@e2e.example', 'Ann');
  // Signing in did not stop the video.
  const before = await a.evaluate(() => document.querySelector('video').currentTime);
  await a.getByRole('button', { name: 'Send' }).click();
  await a.locator('.chat-list li', { hasText: 'Hello from Ann' }).first().waitFor();
  await a.waitForFunction((t) => document.querySelector('video').currentTime > t + 0.5, before);

  const bContext = await browser.newContext(desktop);
  const b = await open(bContext, `${hawker.url}/r/${shared.room}`);
  await b.getByRole('textbox', { name: 'Chat message' }).fill('Hi Ann, Bob here');
  await b.getByRole('button', { name: 'Send' }).click();
  await signUpInDialog(b, 'bob@e2e.example', 'Bob');
  await b.getByRole('button', { name: 'Send' }).click();
  for (const page of [a, b]) {
    await page.locator('.chat-list li', { hasText: 'Hi Ann, Bob here' }).waitFor();
    await page.locator('.chat-list li', { hasText: 'Hello from Ann' }).first().waitFor();
  }

  const moderator = await open(shared.seller, `${hawker.url}/r/${shared.room}`);
  await moderator.getByRole('button', { name: 'Delete Bob: Hi Ann, Bob here' }).click();
  for (const page of [a, b]) {
    await page.locator('.chat-list li', { hasText: 'Hi Ann, Bob here' }).waitFor({ state: 'detached' });
  }
  await moderator.close();
  shared.viewerB = b;
});

test('the seller pins a product and starts a flash sale; a viewer buys and pays, and both see the order', async () => {
  const studio = shared.studio;
  await studio.getByRole('button', { name: 'Pin', exact: true }).click();
  await studio.getByText('Pinned: Linen Shirt').waitFor();
  await studio.getByLabel('Sale price (EUR)').fill('25');
  await studio.getByLabel('Quantity').fill('5');
  await studio.getByRole('button', { name: 'Start flash sale' }).click();

  const a = shared.viewerA;
  const card = a.getByRole('region', { name: 'Pinned product' });
  await card.getByText('Linen Shirt').waitFor();
  const banner = a.getByRole('region', { name: 'Flash sale' });
  await banner.getByText('5 of 5 left').waitFor();
  await a.screenshot({ path: path.join(output, 'live-room-phone.png') });
  await shared.viewerB.getByRole('region', { name: 'Flash sale' }).getByText('5 of 5 left').waitFor();
  await shared.viewerB.screenshot({ path: path.join(output, 'live-room-desktop.png') });

  await banner.getByRole('button', { name: 'Buy now' }).click();
  const checkout = a.getByRole('dialog', { name: 'Pay for your order' });
  await checkout.getByText('Reserved for you for').waitFor();
  await checkout.getByRole('button', { name: 'Pay €25.00' }).click();
  await checkout.getByText('Order confirmed').waitFor();
  const confirmation = await checkout.getByRole('status').textContent();
  const order = confirmation.match(/ord_[0-9a-f]+/)[0];
  await checkout.getByRole('button', { name: 'Back to the live' }).click();
  await banner.getByText('4 of 5 left').waitFor();

  await a.goto(`${hawker.url}/orders`);
  const mine = a.locator(`article[data-order="${order}"]`);
  await mine.getByText('Paid', { exact: true }).waitFor();
  await mine.getByText(/Linen Shirt/).waitFor();

  await studio.locator('.sale-orders', { hasText: /^1$/ }).waitFor();
  const dashboard = studio.locator('.dashboard');
  await dashboard.getByText('€25.00').waitFor();
  await dashboard.getByText('1 (1 paid)').waitFor();
  await studio.screenshot({ path: path.join(output, 'studio-room.png'), fullPage: true });
  await studio.getByRole('link', { name: 'Orders', exact: true }).click();
  await studio.locator(`tr[data-order="${order}"]`).getByText('paid').waitFor();
  shared.viewerA = await open(a.context(), `${hawker.url}/r/${shared.room}`);
});

test('the live room page is small: its compressed weight is reported', async () => {
  const context = await browser.newContext(phone);
  const page = await context.newPage();
  const sizes = [];
  page.on('requestfinished', async (request) => {
    const url = new URL(request.url());
    if (url.pathname.startsWith('/live/') || url.pathname.startsWith('/api/') || url.pathname.startsWith('/images/')) return;
    const { responseBodySize, responseHeadersSize } = await request.sizes();
    sizes.push({ path: url.pathname, body: responseBodySize, headers: responseHeadersSize });
  });
  await page.goto(`${hawker.url}/r/${shared.room}`);
  await waitForPlayback(page, 0.5);
  await page.waitForTimeout(500);
  const total = sizes.reduce((sum, s) => sum + s.body, 0);
  const player = sizes.filter((s) => s.path.includes('/assets/hls')).reduce((sum, s) => sum + s.body, 0);
  console.log(`live room page weight: ${(total / 1024).toFixed(1)} KiB compressed in ${sizes.length} files; hls.js ${(player / 1024).toFixed(1)} KiB, the rest ${((total - player) / 1024).toFixed(1)} KiB`);
  console.log(JSON.stringify({ room_page_bytes: total, hls_bytes: player, files: sizes.length }));
  assert.ok(sizes.length > 0 && total > 0);
  await context.close();
});

test('another site that the shop allows embeds the player; one it does not is refused', async () => {
  const host = (port) =>
    new Promise((resolve) => {
      const server = http.createServer((_req, res) => {
        res.setHeader('content-type', 'text/html');
        res.end(`<!doctype html><title>Blog</title><h1>My blog</h1><iframe id="live" src="${hawker.url}/embed/${shared.room}" width="360" height="640"></iframe>`);
      });
      server.listen(port, '127.0.0.2', () => resolve(server));
    });
  const allowed = await host(0);
  const refused = await host(0);
  const allowedOrigin = `http://127.0.0.2:${allowed.address().port}`;

  const studio = shared.studio;
  await studio.getByRole('link', { name: 'Settings' }).click();
  await studio.getByLabel(/Sites that may show your player/).fill(allowedOrigin);
  await studio.getByRole('button', { name: 'Save' }).click();
  await studio.getByText('Saved.').waitFor();

  const context = await browser.newContext(desktop);
  const page = await context.newPage();
  await page.goto(`${allowedOrigin}/`);
  const frame = await (await page.waitForSelector('#live')).contentFrame();
  await waitForPlayback(frame, 1);
  await frame.getByText('Linen Shirt').waitFor();

  const blocked = [];
  page.on('console', (m) => blocked.push(m.text()));
  await page.goto(`http://127.0.0.2:${refused.address().port}/`);
  for (let i = 0; i < 100 && !blocked.some((text) => text.includes('frame-ancestors')); i++) {
    await page.waitForTimeout(100);
  }
  assert.ok(blocked.some((text) => text.includes('frame-ancestors')), blocked.join('\n'));
  const other = await (await page.waitForSelector('#live')).contentFrame();
  assert.equal(await other.locator('video').count(), 0, 'a site not on the list gets no player');
  await context.close();
  allowed.close();
  refused.close();
});

test('after the live ends, its replay plays with the pinned product appearing when it was pinned', async () => {
  await encoder.stop();
  encoder = null;
  const studio = shared.studio;
  await studio.goto(`${hawker.url}/studio#room/${shared.room}`);
  studio.once('dialog', (dialog) => dialog.accept());
  await studio.getByRole('button', { name: 'End the room' }).click();
  await studio.getByRole('link', { name: 'Spring launch' }).waitFor();

  let recording;
  for (let i = 0; i < 100; i++) {
    const list = await (await fetch(`${hawker.url}/api/v1/rooms/${shared.room}/recordings`)).json();
    if (list.items[0]?.status === 'complete') {
      recording = await (await fetch(`${hawker.url}/api/v1/recordings/${list.items[0].id}`)).json();
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(recording, 'the recording completes');
  const pin = recording.timeline.find((e) => e.type === 'pin');
  assert.ok(pin && pin.at_ms > 1000, JSON.stringify(recording.timeline));

  const page = await open(await browser.newContext(desktop), `${hawker.url}/r/${shared.room}`);
  await page.getByText('Replay', { exact: true }).waitFor();
  await waitForPlayback(page, 0.5);
  const card = page.getByRole('region', { name: 'Pinned product' });
  await page.evaluate(() => {
    const video = document.querySelector('video');
    video.pause();
    video.currentTime = 0.2;
  });
  await card.waitFor({ state: 'hidden' });
  await page.evaluate((at) => {
    document.querySelector('video').currentTime = at;
  }, pin.at_ms / 1000 + 0.5);
  await card.getByText('Linen Shirt').waitFor();
  await page.getByRole('button', { name: /Linen Shirt/ }).waitFor();
  await page.screenshot({ path: path.join(output, 'replay-desktop.png') });
});
