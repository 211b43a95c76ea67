// The live room page on two nodes behind a load balancer, on one PostgreSQL
// database and the machine's NATS (a database and a subject prefix of this
// test's own): chat said through one node shows on a page served by the other;
// when the first node stops (SIGTERM: it closes its sockets with 1012), the
// page on it reconnects through the balancer to the second and carries on,
// with every message shown once. Before that, an encoder that reconnects to
// the other node: the page's player rides over it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { balance, countStalls, created, launch, publish, stalls, startHawker, waitForPlayback } from './harness.mjs';

const database = `e2e_cluster_${process.pid}`;
const psql = (sql) => execFileSync('psql', ['-h', '127.0.0.1', '-d', 'postgres', '-qc', sql]);
let nodes = [];
let balancer;
let browser;

before(async () => {
  psql(`CREATE DATABASE ${database}`);
  const args = [
    '--database-url', `postgres://127.0.0.1:5432/${database}`,
    '--nats-url', process.env.HAWKER_E2E_NATS_URL ?? 'nats://127.0.0.1:4222',
    '--nats-prefix', database,
    '--shutdown-grace', '2',
    '--cluster-secret', 'e2e-cluster-secret',
  ];
  // One after the other: the second finds the schema the first made.
  nodes.push(await startHawker({ host: '127.0.0.2', args }));
  nodes.push(await startHawker({ host: '127.0.0.3', args }));
  balancer = await balance(nodes);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await balancer?.close();
  for (const node of nodes) await node.stop();
  psql(`DROP DATABASE IF EXISTS ${database}`);
});

/**
 * Says `text` in the page's chat. The box empties once the message went out;
 * while the page is still connecting it keeps the text, and Send is pressed
 * again.
 */
async function say(page, text) {
  const box = page.getByRole('textbox', { name: 'Chat message' });
  await box.fill(text);
  for (let attempt = 0; ; attempt++) {
    await page.getByRole('button', { name: 'Send' }).click();
    try {
      await page.waitForFunction((el) => el.value === '', await box.elementHandle(), { timeout: 2000 });
      return;
    } catch (error) {
      if (attempt === 10) throw error;
    }
  }
}

/** Waits until `page` shows `text` in its chat, then checks it shows it once. */
async function shownOnce(page, text) {
  const items = page.locator('.chat-list li', { hasText: text });
  await items.first().waitFor();
  assert.equal(await items.count(), 1, `"${text}" is shown once`);
}

test('a player keeps playing when the encoder reconnects to the other node', async () => {
  const base = balancer.url;
  const seller = await created(`${base}/api/v1/users`, {
    email: 'mover@cluster.example', password: 'correct horse battery', display_name: 'Mover',
  });
  await created(`${base}/api/v1/shops`, { handle: 'mover', name: 'Mover', currency: 'EUR' }, seller.token);
  const made = await created(`${base}/api/v1/shops/mover/rooms`, { title: 'Moves' }, seller.token);
  const rtmp = (node) => `rtmp://${node.host}:${node.rtmpPort}/live`;
  let encoder = publish(rtmp(nodes[0]), made.stream_key);
  // The page is on the first node (the balancer's first choice).
  const page = await browser.newPage();
  await page.goto(`${base}/r/${made.room.id}`);
  await waitForPlayback(page, 2);
  await countStalls(page);
  // The encoder's connection drops, and it comes back through its own
  // balancer to the second node: the first becomes an edge of the second.
  await encoder.stop();
  encoder = publish(rtmp(nodes[1]), made.stream_key);
  const joined = await page.evaluate(() => document.querySelector('video').currentTime);
  await page.waitForFunction((t) => document.querySelector('video').currentTime > t + 8, joined, { timeout: 60_000 });
  const played = await stalls(page);
  await encoder.stop();
  await page.close();
  assert.ok(played.at.length <= 1, `the player stalled ${played.at.length} times, at ${played.at.join(', ')} s`);
});

test('a room page follows the chat across nodes and through the stop of the node it was on', async () => {
  const base = balancer.url;
  const seller = await created(`${base}/api/v1/users`, {
    email: 'seller@cluster.example', password: 'correct horse battery', display_name: 'Seller',
  });
  await created(`${base}/api/v1/shops`, { handle: 'cluster', name: 'Cluster', currency: 'EUR' }, seller.token);
  const room = (await created(`${base}/api/v1/shops/cluster/rooms`, { title: 'Across nodes' }, seller.token)).room.id;

  // Ann comes in through the balancer (the first node); Bob straight on the
  // second. Each signs up first (the session cookie goes into the browser).
  const viewer = async (origin, name) => {
    const page = await (await browser.newContext()).newPage();
    page.on('pageerror', (error) => assert.fail(`${name}'s page: ${error.message}`));
    const res = await page.request.post(`${origin}/api/v1/users`, {
      data: { email: `${name}@cluster.example`, password: 'correct horse battery', display_name: name },
    });
    assert.equal(res.status(), 201);
    await page.goto(`${origin}/r/${room}`);
    return page;
  };
  const ann = await viewer(base, 'Ann');
  const bob = await viewer(nodes[1].url, 'Bob');

  await say(ann, 'Said on the first node');
  await say(bob, 'Said on the second node');
  for (const page of [ann, bob]) {
    await shownOnce(page, 'Said on the first node');
    await shownOnce(page, 'Said on the second node');
  }

  // The first node stops; Ann's page reconnects through the balancer to the
  // second: what Bob says now reaches her, and she can answer.
  await nodes[0].stop();
  await say(bob, 'Said after the first node stopped');
  await shownOnce(ann, 'Said after the first node stopped');
  await say(ann, 'Ann, back on the second node');
  for (const page of [ann, bob]) {
    await shownOnce(page, 'Ann, back on the second node');
    await shownOnce(page, 'Said after the first node stopped');
    await shownOnce(page, 'Said on the first node');
    await shownOnce(page, 'Said on the second node');
  }
});
