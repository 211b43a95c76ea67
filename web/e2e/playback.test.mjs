// Playback as a viewer's browser has it: the demo's looping clip for 60 s,
// whose loop joins must leave no hole in what the video buffers (a hole is
// in the media, whatever the machine's speed; the stalls are reported, as a
// busy machine stalls a live player too); and an encoder that drops its
// connection and comes back within the reconnect grace, which the player
// rides over with at most one short stall.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { countStalls, created, holes, launch, publish, stalls, startHawker, waitForPlayback, watchHoles } from './harness.mjs';

let hawker;
let browser;

before(async () => {
  hawker = await startHawker({ command: 'demo' });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hawker?.stop();
});

test('the demo plays for 60 s with no hole at the clip loop joins', async () => {
  let room;
  for (let i = 0; !room; i++) {
    const live = await (await fetch(`${hawker.url}/api/v1/rooms?status=live`)).json();
    room = live.items?.[0]?.id;
    if (!room) {
      assert.ok(i < 300, 'the demo room never went live');
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const page = await browser.newPage();
  await page.goto(`${hawker.url}/r/${room}`);
  await waitForPlayback(page, 1);
  await countStalls(page);
  await watchHoles(page);
  await page.evaluate(() => new Promise((done) => setTimeout(done, 60_000)));
  const played = await stalls(page);
  const found = await holes(page);
  assert.ok(played.seconds > 30, `the video played ${played.seconds} s of 60`);
  console.log(`stalls while playing the demo: ${played.at.length ? played.at.join(', ') : 'none'}`);
  assert.deepEqual(found, [], `holes in the buffered media (start, length): ${JSON.stringify(found)}`);
});

test('a player keeps playing when the encoder reconnects within the grace', async () => {
  const seller = await created(`${hawker.url}/api/v1/users`, {
    email: 'seller@playback.example', password: 'correct horse battery', display_name: 'Seller',
  });
  await created(`${hawker.url}/api/v1/shops`, { handle: 'playback', name: 'Playback', currency: 'EUR' }, seller.token);
  const made = await created(`${hawker.url}/api/v1/shops/playback/rooms`, { title: 'Reconnects' }, seller.token);
  const server = `rtmp://127.0.0.1:${hawker.rtmpPort}/live`;
  let encoder = publish(server, made.stream_key);
  const page = await browser.newPage();
  await page.goto(`${hawker.url}/r/${made.room.id}`);
  await waitForPlayback(page, 2);
  await countStalls(page);
  // The connection drops; the encoder comes back a moment later.
  await encoder.stop();
  encoder = publish(server, made.stream_key);
  const joined = await page.evaluate(() => document.querySelector('video').currentTime);
  // Playing well past the join, on the page's clock.
  await page.waitForFunction((t) => document.querySelector('video').currentTime > t + 8, joined, { timeout: 60_000 });
  const played = await stalls(page);
  await encoder.stop();
  assert.ok(played.at.length <= 1, `the player stalled ${played.at.length} times, at ${played.at.join(', ')} s`);
});
