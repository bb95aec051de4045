// Shared helpers for the headless Chromium tests: start the relay binary on free ports, launch
// Debian's chromium with fake devices, poll page state with deadlines.

import { spawn } from 'node:child_process';
import net from 'node:net';
import dgram from 'node:dgram';
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

async function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** Starts `tern` (TERN_BIN or target/debug/tern) on free loopback ports; resolves when healthy. */
export async function startRelay(extraArgs = []) {
  const bin = process.env.TERN_BIN || path.join(repo, 'target', 'debug', 'tern');
  const httpPort = await freeTcpPort();
  const mediaPort = await freeUdpPort();
  const args = ['--http-listen', `127.0.0.1:${httpPort}`, '--media-listen', `127.0.0.1:${mediaPort}`, ...extraArgs];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TERN_LOG: process.env.TERN_LOG || 'info' } });
  const output = [];
  const keep = (d) => { output.push(d.toString()); if (output.length > 2000) output.shift(); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const base = `http://127.0.0.1:${httpPort}`;
  await until('relay /healthz', async () => {
    if (child.exitCode !== null) throw new Error(`relay exited: ${output.join('')}`);
    try { return (await fetch(`${base}/healthz`)).ok; } catch { return false; }
  }, 20000);
  return {
    base, httpPort, mediaPort, child,
    output: () => output.join(''),
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGINT');
    }),
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_FLAGS,
  });
}

/** Polls `check` until it returns a truthy value; throws `what` after `ms`. */
export async function until(what, check, ms = 30000, every = 200) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
      if (err && err.fatal) throw err;
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
