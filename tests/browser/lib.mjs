// Shared helpers for the headless Chromium tests: start the relay binary on free ports, launch
// Debian's chromium with fake devices, poll page state with deadlines.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');

export const CHROMIUM_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream=fps=30', '--use-fake-ui-for-media-stream',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

async function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `tern` (TERN_TEST_BIN or target/debug/tern) on free ports of `host`; resolves when healthy.
 * `extraArgs` are appended to the command line.
 */
export async function startRelay(extraArgs = [], host = '127.0.0.1') {
  const bin = process.env.TERN_TEST_BIN || path.join(repo, 'target', 'debug', 'tern');
  const httpPort = await freeTcpPort();
  // Port 0: every media worker on a port of its own that the system picks (a free port chosen
  // here could have a taken neighbour for the second worker).
  const args = ['--http-listen', `${host}:${httpPort}`, '--media-listen', `${host}:0`, ...extraArgs];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TERN_LOG: process.env.TERN_LOG || 'info' } });
  const output = [];
  // TERN_TEST_RELAY_LOG=file keeps the relay's whole log (the in-memory tail is for failures).
  const whole = process.env.TERN_TEST_RELAY_LOG ? fs.createWriteStream(process.env.TERN_TEST_RELAY_LOG, { flags: 'a' }) : null;
  const keep = (d) => { whole?.write(d); output.push(d.toString()); if (output.length > 2000) output.shift(); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const base = `http://127.0.0.1:${httpPort}`;
  await until('relay /healthz', async () => {
    if (child.exitCode !== null) throw new Error(`relay exited: ${output.join('')}`);
    try { return (await fetch(`${base}/healthz`)).ok; } catch { return false; }
  }, 20000);
  return {
    base, httpPort, child,
    output: () => output.join(''),
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGINT');
    }),
  };
}

/** Launches headless Chromium (through `executablePath`, e.g. a network-namespace wrapper). */
export async function launchBrowser(executablePath = process.env.CHROMIUM || '/usr/bin/chromium', extraArgs = []) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...extraArgs],
  });
}

/**
 * Spawns Chromium as our own child process (so a test can kill it) and connects over CDP.
 * Returns { browser, proc }.
 */
export async function spawnBrowser() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-chromium-'));
  const proc = spawn(process.env.CHROMIUM || '/usr/bin/chromium', [
    '--headless', ...CHROMIUM_FLAGS, `--user-data-dir=${userDataDir}`, '--remote-debugging-port=0', 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no DevTools URL: ${buf}`)), 30000);
    proc.stderr.on('data', (d) => {
      buf += d;
      const m = buf.match(/DevTools listening on (ws:\/\/\S+)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
  });
  const browser = await chromium.connectOverCDP(url);
  return { browser, proc, userDataDir };
}

/**
 * Opens a page of the bundled client and waits until it joined and published. A `listener` finds
 * no camera or microphone (getUserMedia fails as without devices), so it joins publishing nothing.
 */
export async function openParticipant(browser, url, name, { listener = false } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  if (listener) {
    // (An insecure origin has no navigator.mediaDevices at all: a listener already.)
    await page.addInitScript(() => {
      if (navigator.mediaDevices) navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('no devices (test listener)', 'NotFoundError'));
    });
  }
  page.on('console', (m) => { if (m.type() === 'error') log(`[${name} console]`, m.text()); });
  page.on('pageerror', (e) => log(`[${name} pageerror]`, e.message));
  await page.goto(url);
  await until(`${name} joined and published`, () => page.evaluate(() => window.ternJoined.then(() => true)), 30000);
  return page;
}

/** Reads a counter from the relay's /metrics. */
export async function metric(base, series) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

/** Polls `check` until it returns a truthy value; throws `what` after `ms`. A check that never
 * settles (a page too starved of CPU to answer `evaluate`) counts as a failed one once the time
 * is up, so a test fails with its reason instead of hanging the whole suite. */
export async function until(what, check, ms = 30000, every = 200) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    let timer;
    const stalled = new Promise((resolve) => {
      timer = setTimeout(() => resolve(new Error('a check did not settle before the deadline')), Math.max(end - Date.now(), 0) + 5000);
    });
    try {
      last = await Promise.race([check(), stalled]);
      if (last instanceof Error) throw last;
      if (last) return last;
    } catch (err) {
      last = err;
      if (err && err.fatal) throw err;
    } finally {
      clearTimeout(timer);
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** Summed inbound stats of a page by kind, from window.ternStats(). */
export async function inbound(page) {
  const stats = await page.evaluate(() => window.ternStats());
  const sum = (kind, field) => stats.inbound.filter((s) => s.kind === kind).reduce((a, s) => a + (s[field] || 0), 0);
  return {
    stats,
    videoStreams: stats.inbound.filter((s) => s.kind === 'video').length,
    audioStreams: stats.inbound.filter((s) => s.kind === 'audio').length,
    framesDecoded: sum('video', 'framesDecoded'),
    audioPackets: sum('audio', 'packetsReceived'),
    minFrameWidth: Math.min(...stats.inbound.filter((s) => s.kind === 'video').map((s) => s.frameWidth || 0)),
    minVideoFrames: Math.min(...stats.inbound.filter((s) => s.kind === 'video').map((s) => s.framesDecoded || 0)),
    minAudioPackets: Math.min(...stats.inbound.filter((s) => s.kind === 'audio').map((s) => s.packetsReceived || 0)),
    ciphers: stats.transports.map((t) => `${t.leg}:${t.srtpCipher}`),
  };
}
