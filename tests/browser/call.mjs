// The bundled web page, three people in a call, driven through its real buttons:
//  - each page decodes both remote videos and receives both remote audio streams, over
//    SRTP_AEAD_AES_128_GCM on both legs;
//  - muting on one page shows on the others; a screen share appears as an extra tile;
//  - a chat message reaches the other two; a closed page's tile goes away;
//  - a participant without camera or microphone joins as a listener and receives;
//  - resume: the page's WebSocket is cut by killing a TCP proxy between page and relay; the page
//    resumes with the same participant id, its media flows again, and the others saw neither a
//    leave nor a join.
// With --screenshot, saves docs/screenshot.png of the three-person call.
//
// Run: node tests/browser/call.mjs [--screenshot]

import net from 'node:net';
import path from 'node:path';
import { startRelay, launchBrowser, until, inbound, log, repo } from './lib.mjs';

const GCM = 'SRTP_AEAD_AES_128_GCM';
const screenshot = process.argv.includes('--screenshot');
let failed = false;

async function step(name, body) {
  try {
    await body();
    log(`PASS ${name}`);
  } catch (err) {
    failed = true;
    log(`FAIL ${name}:`, err && err.stack ? err.stack : err);
  }
}

/** A TCP proxy whose connections a test can cut, like a network that drops. */
function tcpProxy(targetPort) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    const close = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port,
    cut: () => { for (const s of sockets) s.destroy(); sockets.clear(); },
    close: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(r); }),
  })));
}

async function open(browser, url, name, { noDevices = false } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  if (noDevices) {
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
    });
  }
  page.on('console', (m) => { if (m.type() === 'error') log(`[${name} console]`, m.text()); });
  page.on('pageerror', (e) => log(`[${name} pageerror]`, e.message));
  await page.goto(url);
  await until(`${name} joined`, () => page.evaluate(() => window.ternJoined.then(() => true)), 30000);
  return page;
}

const participantId = (page) => page.evaluate(() => window.tern.participant.id);
const log_ = (page) => page.evaluate(() => window.ternLog);

let relay;
let browser;
let proxy;
try {
  relay = await startRelay();
  browser = await launchBrowser();
  proxy = await tcpProxy(relay.httpPort);
  const names = ['alice', 'bob', 'carol'];
  const pages = {};
  // Alice goes through the proxy (for the resume test); the others straight to the relay.
  pages.alice = await open(browser, `http://127.0.0.1:${proxy.port}/?room=call&name=alice`, 'alice');
  pages.bob = await open(browser, `${relay.base}/?room=call&name=bob`, 'bob');
  pages.carol = await open(browser, `${relay.base}/?room=call&name=carol`, 'carol');
  const ids = {};
  for (const n of names) ids[n] = await participantId(pages[n]);

  await step('each page decodes both remote videos and hears both remote audio streams over GCM', async () => {
    for (const n of names) {
      const first = await until(`${n} receives two of each`, async () => {
        const s = await inbound(pages[n]);
        return s.videoStreams === 2 && s.audioStreams === 2 && s.minVideoFrames > 0 && s.minFrameWidth > 0 && s.minAudioPackets > 0 && s;
      }, 40000);
      // Both streams keep going: about 1 s of video and audio at their usual rates, within 10 s
      // (slack for a loaded machine; a stream that stalls or crawls still fails).
      const start = Date.now();
      const later = await until(`${n} keeps decoding both streams`, async () => {
        const s = await inbound(pages[n]);
        return s.minVideoFrames >= first.minVideoFrames + 20 && s.minAudioPackets >= first.minAudioPackets + 50 && s;
      }, 10000);
      const frames = later.stats.inbound.filter((s) => s.kind === 'video').map((s) => s.framesDecoded);
      log(`${n}: +20 frames and +50 audio packets on every stream within ${Date.now() - start} ms; decoded per stream ${frames.join(', ')}; ciphers ${later.ciphers.join(', ')}`);
      if (!(later.ciphers.length === 2 && later.ciphers.every((c) => c.endsWith(GCM)))) throw new Error(`${n}: ${later.ciphers}`);
      const widths = await pages[n].evaluate(() => [...document.querySelectorAll('.tile:not(#self) video')].map((v) => v.videoWidth));
      if (!(widths.length === 2 && widths.every((w) => w > 0))) throw new Error(`${n}: tiles ${JSON.stringify(widths)}`);
    }
  });

  if (screenshot) {
    await new Promise((r) => setTimeout(r, 1500));
    const file = path.join(repo, 'docs', 'screenshot.png');
    await pages.alice.screenshot({ path: file });
    log(`screenshot saved to ${file}`);
  }

  await step('muting on one page shows on the others', async () => {
    await pages.alice.click('#mic');
    await pages.alice.click('#camera');
    for (const n of ['bob', 'carol']) {
      await until(`${n} sees alice muted`, () => pages[n].evaluate((id) => {
        const tile = document.querySelector(`.tile.media[data-participant="${id}"]`);
        return tile && tile.querySelector('.mic-badge').textContent === 'mic off' && tile.querySelector('.cam-badge').textContent === 'camera off';
      }, ids.alice), 10000);
    }
    await pages.alice.click('#mic');
    await until('bob sees alice unmuted', () => pages.bob.evaluate((id) => {
      const tile = document.querySelector(`.tile.media[data-participant="${id}"]`);
      return tile && tile.querySelector('.mic-badge').textContent === '';
    }, ids.alice), 10000);
  });

  await step('a screen share appears as an extra tile', async () => {
    await pages.bob.click('#screen');
    for (const n of ['alice', 'carol']) {
      await until(`${n} decodes bob's screen`, () => pages[n].evaluate((id) => {
        const tile = document.querySelector(`.tile.screen[data-participant="${id}"] video`);
        return tile && tile.videoWidth > 0;
      }, ids.bob), 20000);
      const count = await pages[n].evaluate(() => document.querySelectorAll('.tile:not(#self)').length);
      if (count !== 3) throw new Error(`${n} shows ${count} remote tiles`);
    }
  });

  await step('a chat message reaches the other two', async () => {
    await pages.carol.fill('#chat-input', 'hello from carol');
    await pages.carol.click('#chat-send');
    for (const n of ['alice', 'bob']) {
      await until(`${n} reads carol`, () => pages[n].evaluate(() =>
        [...document.querySelectorAll('#messages li')].some((li) => li.textContent === 'carolhello from carol')), 10000);
    }
  });

  await step('a participant without camera or microphone joins and receives', async () => {
    const dave = await open(browser, `${relay.base}/?room=call&name=dave`, 'dave', { noDevices: true });
    await until('dave decodes three videos', async () => {
      const s = await inbound(dave);
      return s.videoStreams >= 3 && s.framesDecoded > 30;
    }, 30000);
    const banner = await dave.evaluate(() => document.getElementById('banner').textContent);
    if (!banner.includes('permission')) throw new Error(`dave's banner: ${banner}`);
    await dave.close();
  });

  await step('a rejected token is explained on the page', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${relay.base}/?room=call&name=eve&token=not.a.token`);
    await until('the reason on the page', () => page.evaluate(() =>
      document.getElementById('banner').textContent.includes('token_malformed')), 10000);
    await context.close();
  });

  await step('resume: a cut WebSocket resumes with the same id, media flows, nobody saw it leave', async () => {
    const before = await inbound(pages.bob);
    const aliceId = ids.alice;
    proxy.cut();
    await until('alice reconnecting then resumed', async () => {
      const events = await log_(pages.alice);
      return events.some((e) => e.type === 'reconnecting') && events.some((e) => e.type === 'resumed');
    }, 20000);
    const sameId = await participantId(pages.alice);
    if (sameId !== aliceId) throw new Error(`new participant id ${sameId}`);
    await until('bob decodes alice again', async () => (await inbound(pages.bob)).framesDecoded > before.framesDecoded + 30, 20000);
    await until('alice decodes again', async () => {
      const s = await inbound(pages.alice);
      return s.minVideoFrames > 0;
    }, 20000);
    for (const n of ['bob', 'carol']) {
      const events = await log_(pages[n]);
      const aboutAlice = events.filter((e) => (e.participant_id || (e.participant && e.participant.id)) === aliceId);
      if (aboutAlice.some((e) => e.type === 'participant_left' || e.type === 'participant_joined')) {
        throw new Error(`${n} saw alice leave or join: ${JSON.stringify(aboutAlice.map((e) => e.type))}`);
      }
    }
  });

  await step('a closed page goes away for the others', async () => {
    await pages.carol.close({ runBeforeUnload: true });
    for (const n of ['alice', 'bob']) {
      await until(`${n} drops carol's tile`, () => pages[n].evaluate((id) =>
        !document.querySelector(`.tile[data-participant="${id}"]`), ids.carol), 5000);
    }
  });
} catch (err) {
  failed = true;
  log('FAIL', err && err.stack ? err.stack : err);
} finally {
  if (failed && relay) log('relay output (tail):\n' + relay.output().split('\n').slice(-40).join('\n'));
  if (browser) await browser.close().catch(() => {});
  if (proxy) await proxy.close();
  if (relay) await relay.stop();
}
process.exit(failed ? 1 : 0);
