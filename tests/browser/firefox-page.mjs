// The Firefox side of tests/browser/firefox.mjs. Runs inside the Firefox host's network
// namespace (Firefox gathers no ICE candidates on loopback, so it needs a veth of its own; and
// puppeteer reaches Firefox's WebDriver BiDi endpoint on that namespace's loopback).
//
// Opens the page at argv[2], and once it decodes remote video and publishes over a connected
// leg, prints `READY <stats>`; then keeps the call going until `done` arrives on stdin (`code`
// prints `CODE {code}`, its end-to-end safety code), waits for 20 more frames and 50 more audio
// packets (10 s at most), prints `FINAL <stats>` and leaves.
//
// Run: ip netns exec NS node tests/browser/firefox-page.mjs URL

import readline from 'node:readline';
import puppeteer from 'puppeteer-core';

const url = process.argv[2];
const say = (tag, value) => console.log(`${tag} ${JSON.stringify(value)}`);

const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
  headless: true,
  protocol: 'webDriverBiDi',
  extraPrefsFirefox: {
    // Fake camera and microphone, no permission prompt.
    'media.navigator.streams.fake': true,
    'media.navigator.permission.disabled': true,
    // The relay is served over plain HTTP on the test network: let getUserMedia work there.
    'dom.securecontext.allowlist': new URL(url).hostname,
    'media.autoplay.default': 0,
  },
});
let exitCode = 0;
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error('[firefox console]', m.text()); });
  await page.goto(url);
  const stats = () => page.evaluate(async () => {
    await window.ternJoined;
    const e2ee = window.tern.e2ee ? { code: window.tern.e2ee.safetyCode, counters: window.tern.e2ee.counters } : null;
    return { ...(await window.ternStats()), banner: document.getElementById('banner').textContent, e2ee };
  });
  const frameCount = (s) => (s.inbound || []).filter((x) => x.kind === 'video').reduce((a, x) => a + (x.framesDecoded || 0), 0);
  const audioCount = (s) => (s.inbound || []).filter((x) => x.kind === 'audio').reduce((a, x) => a + (x.packetsReceived || 0), 0);
  let ready;
  const deadline = Date.now() + 40000;
  for (;;) {
    const s = await stats().catch((err) => ({ error: String(err) }));
    const publishing = (s.transports || []).some((t) => t.leg === 'publish' && t.dtlsState === 'connected');
    if (frameCount(s) > 0 && publishing) {
      ready = s;
      say('READY', s);
      break;
    }
    if (Date.now() > deadline) {
      say('TIMEOUT', s);
      exitCode = 1;
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (exitCode === 0) {
    // `code` asks for the end-to-end safety code (CODE); `done` ends the call (FINAL).
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
      if (line === 'code') say('CODE', { code: await page.evaluate(() => window.tern.e2ee && window.tern.e2ee.safetyCode) });
      if (line === 'done') break;
    }
    const until = Date.now() + 10000;
    let s = await stats();
    while (Date.now() < until && (frameCount(s) < frameCount(ready) + 20 || audioCount(s) < audioCount(ready) + 50)) {
      await new Promise((r) => setTimeout(r, 250));
      s = await stats();
    }
    say('FINAL', s);
  }
} finally {
  await browser.close();
}
process.exit(exitCode);
