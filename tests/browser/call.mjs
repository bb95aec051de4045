// The bundled web page, three people in a call, driven through its real buttons:
//  - each page decodes both remote videos and receives both remote audio streams, over
//    SRTP_AEAD_AES_128_GCM on both legs;
//  - the layout: remote tiles are 16:9, inside the grid, not overlapping, their videos letterboxed
//    (never cropped); speaker view puts one tile large and the rest in a strip; a screen share is
//    shown large; on a phone-sized portrait window the tiles still fit; our own video can be
//    moved and hidden;
//  - muting on one page shows on the others; a screen share appears as an extra tile;
//  - a chat message reaches the other two; a closed page's tile goes away;
//  - a participant without camera or microphone joins as a listener and receives;
//  - resume: the page's WebSocket is cut by killing a TCP proxy between page and relay; the page
//    resumes with the same participant id, its media flows again, and the others saw neither a
//    leave nor a join.
// With --screenshot, saves docs/screenshot.png of the three-person call, and
// docs/screenshot-screen-share.png and docs/screenshot-phone.png.
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

/** Where the page put each remote tile, and how its video fits. */
const tileBoxes = (page) => page.evaluate(() => {
  const grid = document.getElementById('grid').getBoundingClientRect();
  return [...document.querySelectorAll('.tile:not(#self)')].map((el) => {
    const r = el.getBoundingClientRect();
    return {
      kind: el.dataset.kind, main: el.classList.contains('main'),
      x: r.left - grid.left, y: r.top - grid.top, w: r.width, h: r.height,
      gridW: grid.width, gridH: grid.height,
      fit: getComputedStyle(el.querySelector('video')).objectFit,
    };
  });
});

/** Tiles inside the grid, 16:9 (±2 %), not overlapping, letterboxed. */
function checkGrid(who, boxes, { aspect = true } = {}) {
  for (const b of boxes) {
    if (b.fit !== 'contain') throw new Error(`${who}: a video is cropped (object-fit ${b.fit})`);
    if (b.x < -1 || b.y < -1 || b.x + b.w > b.gridW + 1) throw new Error(`${who}: a tile leaves the grid ${JSON.stringify(b)}`);
    if (aspect && Math.abs(b.w / b.h - 16 / 9) > 0.04) throw new Error(`${who}: a tile is ${b.w}x${b.h}, not 16:9`);
  }
  for (const [i, a] of boxes.entries()) {
    for (const b of boxes.slice(i + 1)) {
      const overlap = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x) > 1 && Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y) > 1;
      if (overlap) throw new Error(`${who}: tiles overlap ${JSON.stringify([a, b])}`);
    }
  }
}

/**
 * What a page's streams did between two `inbound` samples, what the relay told the page about
 * its subscriptions, and the relay's drop and keyframe counters: enough to tell a publisher
 * that stopped from a forwarder waiting for a keyframe or a paused subscription.
 */
async function stalled(page, first, last) {
  const streams = last.stats.inbound.map((s) => {
    const before = first.stats.inbound.find((b) => b.kind === s.kind && b.mid === s.mid) || {};
    const fields = ['packetsReceived', 'framesDecoded', 'packetsLost', 'nackCount'];
    return `${s.kind} mid ${s.mid}: ${fields.filter((f) => s[f] !== undefined).map((f) => `${f} ${before[f] ?? '?'} -> ${s[f]}`).join(', ')}, ${s.frameWidth || 0} px`;
  });
  const states = await page.evaluate(() => JSON.stringify([...window.tern.subscriptions.entries()]));
  const body = await (await fetch(`${relay.base}/metrics`)).text();
  const counters = body.split('\n').filter((l) => /^tern_(packets_dropped_total|keyframe_requests_sent_total|rtcp_feedback_received_total|paused_subscriptions|layer_switches_total)/.test(l));
  return `streams:\n  ${streams.join('\n  ')}\nsubscription states: ${states}\nrelay: ${counters.join('; ')}`;
}

const settle = (page) => page.evaluate(() => new Promise((r) => setTimeout(r, 400))); // the tiles' 0.2 s move
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
      let last = first;
      const later = await until(`${n} keeps decoding both streams`, async () => {
        const s = await inbound(pages[n]);
        last = s;
        return s.minVideoFrames >= first.minVideoFrames + 20 && s.minAudioPackets >= first.minAudioPackets + 50 && s;
      }, 10000).catch(async (err) => { throw new Error(`${err.message}\n${await stalled(pages[n], first, last)}`); });
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

  await step('the grid: 16:9 tiles as large as the window allows, letterboxed, never overlapping', async () => {
    await settle(pages.alice);
    const boxes = await tileBoxes(pages.alice);
    if (boxes.length !== 2) throw new Error(`${boxes.length} remote tiles`);
    checkGrid('alice', boxes);
    // Two tiles in a 1280x720 window beside the chat: each at least 400 px wide.
    if (!boxes.every((b) => b.w >= 400)) throw new Error(`small tiles: ${JSON.stringify(boxes)}`);
    log(`alice's tiles: ${boxes.map((b) => `${Math.round(b.w)}x${Math.round(b.h)}@${Math.round(b.x)},${Math.round(b.y)}`).join(' ')}`);
  });

  await step('the stats panel: codec, size, bitrate, loss, layer and cipher of every stream; quality bars', async () => {
    await pages.alice.click('#stats-button');
    const rows = await until('the panel fills in', () => pages.alice.evaluate(() => {
      const rows = [...document.querySelectorAll('#stats-panel tr')].map((tr) => [...tr.children].map((td) => td.textContent));
      const received = rows.filter((r) => r[0] === 'receive' && r[2] === 'video');
      return received.length === 2 && received.every((r) => /kbps/.test(r[6]) && /\d+x\d+/.test(r[4])) && rows;
    }), 10000);
    const video = rows.filter((r) => r[0] === 'receive' && r[2] === 'video');
    for (const r of video) {
      if (!(r[3] === 'video/VP8' && /^L\d/.test(r[9]) && r[10] === 'SRTP_AEAD_AES_128_GCM' && /lost/.test(r[7]))) throw new Error(`row ${JSON.stringify(r)}`);
    }
    if (!rows.some((r) => r[0] === 'send' && r[2] === 'video')) throw new Error(`no sent video in ${JSON.stringify(rows)}`);
    log(`alice's stats panel: ${video.map((r) => r.join(' ')).join(' | ')}`);
    await pages.alice.click('#stats-button');
    // Every tile shows its participant's connection quality (a healthy loopback call: good).
    const qualities = await until('quality on every tile', () => pages.alice.evaluate(() => {
      const q = [...document.querySelectorAll('.tile')].map((t) => t.dataset.quality);
      return q.length === 3 && q.every((x) => x === 'good') && q;
    }), 10000);
    log(`alice's tiles' quality: ${qualities.join(', ')}`);
  });

  await step('speaker view: one tile large, the other in a strip; back to the grid', async () => {
    await pages.alice.click('#view');
    await settle(pages.alice);
    const boxes = await tileBoxes(pages.alice);
    checkGrid('alice (speaker view)', boxes, { aspect: false });
    const main = boxes.filter((b) => b.main);
    const strip = boxes.filter((b) => !b.main);
    if (main.length !== 1 || strip.length !== 1) throw new Error(`speaker view: ${JSON.stringify(boxes)}`);
    if (!(main[0].w * main[0].h > 3 * strip[0].w * strip[0].h)) throw new Error(`the stage is not large: ${JSON.stringify(boxes)}`);
    await pages.alice.click('#view');
    await settle(pages.alice);
    if ((await tileBoxes(pages.alice)).some((b) => b.main)) throw new Error('still staged after grid view');
  });

  await step('our own video can be moved and hidden', async () => {
    const before = await pages.alice.evaluate(() => document.getElementById('self').getBoundingClientRect().toJSON());
    await pages.alice.mouse.move(before.x + 40, before.y + 30);
    await pages.alice.mouse.down();
    await pages.alice.mouse.move(before.x - 300, before.y - 200, { steps: 5 });
    await pages.alice.mouse.up();
    const after = await pages.alice.evaluate(() => document.getElementById('self').getBoundingClientRect().toJSON());
    if (!(after.x < before.x - 200 && after.y < before.y - 100)) throw new Error(`self view did not move: ${JSON.stringify([before, after])}`);
    await pages.alice.click('#self-view');
    if (await pages.alice.evaluate(() => document.getElementById('self').offsetParent !== null)) throw new Error('self view still shown');
    await pages.alice.click('#self-view');
    if (await pages.alice.evaluate(() => document.getElementById('self').offsetParent === null)) throw new Error('self view not shown again');
  });

  await step('a phone-sized portrait window: the tiles fit, one above the other', async () => {
    await pages.carol.setViewportSize({ width: 390, height: 844 });
    await settle(pages.carol);
    const boxes = await tileBoxes(pages.carol);
    checkGrid('carol (phone)', boxes);
    if (!(boxes.length === 2 && Math.abs(boxes[0].x - boxes[1].x) < 2)) throw new Error(`not stacked: ${JSON.stringify(boxes)}`);
    if (!boxes.every((b) => b.w >= 300)) throw new Error(`small tiles on a phone: ${JSON.stringify(boxes)}`);
    if (screenshot) {
      const file = path.join(repo, 'docs', 'screenshot-phone.png');
      await pages.carol.screenshot({ path: file });
      log(`screenshot saved to ${file}`);
    }
    await pages.carol.setViewportSize({ width: 1280, height: 720 });
  });

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
    // The share is on the stage, the cameras in the strip beside it.
    await settle(pages.alice);
    const boxes = await tileBoxes(pages.alice);
    checkGrid('alice (screen share)', boxes, { aspect: false });
    const main = boxes.filter((b) => b.main);
    if (!(main.length === 1 && main[0].kind === 'screen')) throw new Error(`the share is not staged: ${JSON.stringify(boxes)}`);
    const largestOther = Math.max(...boxes.filter((b) => !b.main).map((b) => b.w * b.h));
    if (!(main[0].w * main[0].h > 3 * largestOther)) throw new Error(`the share is not large: ${JSON.stringify(boxes)}`);
    if (screenshot) {
      await new Promise((r) => setTimeout(r, 1000));
      const file = path.join(repo, 'docs', 'screenshot-screen-share.png');
      await pages.alice.screenshot({ path: file });
      log(`screenshot saved to ${file}`);
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
