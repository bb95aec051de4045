// Chromium smoke test: two pages of the bundled client join one room through the real relay
// binary, exchange fake-camera video and fake-microphone audio, and each decodes the other over
// SRTP_AEAD_AES_128_GCM on both legs (the relay prefers it though SHA1_80 is allowed and
// Chromium lists SHA1_80 first); the relay counts no rejected SRTP in this clean call.
//
// Run: node tests/browser/smoke.mjs   (after `cargo build`; inside `unshare -n` in CI)

import { startRelay, launchBrowser, until, inbound, log } from './lib.mjs';

const GCM = 'SRTP_AEAD_AES_128_GCM';
let relay;
let browser;
let failed = false;

try {
  relay = await startRelay();
  log(`relay on ${relay.base}`);
  browser = await launchBrowser();
  log(`chromium ${browser.version()}`);
  const pages = [];
  for (const name of ['alice', 'bob']) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') log(`[${name} console]`, m.text()); });
    page.on('pageerror', (e) => log(`[${name} pageerror]`, e.message));
    await page.goto(`${relay.base}/?room=smoke&name=${name}`);
    pages.push({ name, page });
  }
  for (const { name, page } of pages) {
    await until(`${name} joined and published`, () => page.evaluate(() => window.ternJoined.then(() => true)), 30000);
  }

  // Each page decodes the other's video and receives its audio.
  const first = [];
  for (const { name, page } of pages) {
    const s = await until(`${name} decodes remote video`, async () => {
      const s = await inbound(page);
      return s.videoStreams === 1 && s.audioStreams === 1 && s.framesDecoded > 0 && s.minFrameWidth > 0 && s.audioPackets > 0 && s;
    }, 30000);
    log(`${name}: first frames decoded=${s.framesDecoded} width=${s.minFrameWidth} audio packets=${s.audioPackets}`);
    first.push(s);
  }
  for (const [i, { name, page }] of pages.entries()) {
    const start = Date.now();
    const s = await until(`${name} keeps decoding video and receiving audio`, async () => {
      const s = await inbound(page);
      return s.framesDecoded >= first[i].framesDecoded + 20 && s.audioPackets >= first[i].audioPackets + 50 && s;
    }, 10000); // about 1 s at the usual rates; the slack is for a loaded machine
    const frames = s.framesDecoded - first[i].framesDecoded;
    const audio = s.audioPackets - first[i].audioPackets;
    log(`${name}: +${frames} frames, +${audio} audio packets in ${Date.now() - start} ms; ciphers ${s.ciphers.join(', ')}`);
    if (s.ciphers.length !== 2 || !s.ciphers.every((c) => c.endsWith(GCM))) {
      throw new Error(`${name}: legs not on ${GCM}: ${s.ciphers.join(', ')}`);
    }
    const tiles = await page.evaluate(() => [...document.querySelectorAll('.tile video')].map((v) => v.videoWidth));
    if (!(tiles.length === 2 && tiles.every((w) => w > 0))) throw new Error(`${name}: video elements ${JSON.stringify(tiles)}`);
  }
  // Counted as they go (subscribers start on the 320x180 layer, about one packet a frame, so
  // the count grows more slowly than with one full-size stream).
  let metrics = '';
  const sent = await until('relay metrics show forwarded video', async () => {
    metrics = await (await fetch(`${relay.base}/metrics`)).text();
    const n = Number((metrics.match(/^tern_rtp_packets_sent_total\{kind="video"\} (\d+)/m) || [])[1] || 0);
    return n >= 100 && n;
  }, 10000);
  log(`relay forwarded ${sent} video packets`);
  // A clean call rejects nothing: receiver reports and transport-cc feedback that the relay's
  // interceptors consume are not failed SRTP (they were counted as such once, four a second).
  const rejected = Number((metrics.match(/^tern_packets_dropped_total\{reason="srtp_rejected"\} (\d+)/m) || [])[1]);
  if (rejected !== 0) throw new Error(`a clean call counted ${rejected} srtp_rejected`);
  log('PASS chromium smoke');
} catch (err) {
  failed = true;
  log('FAIL', err && err.stack ? err.stack : err);
  if (relay) log('relay output (tail):\n' + relay.output().split('\n').slice(-60).join('\n'));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (relay) await relay.stop();
}
process.exit(failed ? 1 : 0);
