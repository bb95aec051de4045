// Firefox and Chromium in one call through the relay, on the bundled page: each decodes the
// other's video and receives its audio, over SRTP_AEAD_AES_128_GCM on every leg. Firefox runs
// in a network namespace of its own (tests/browser/firefox-page.mjs), Chromium here.
//
// What it guards: Firefox nominates a candidate pair in its first check to an ICE-lite peer, and
// offers every m-line after the first as port 0 with a=bundle-only; the relay must take both.
// With `e2ee`, the pages encrypt end to end (the same passphrase): each decodes the other's
// frames through its own encoded-transform worker; two more Chromium pages (listeners) decode
// both, and all four show the same safety code.
//
// Run as root (network namespaces): node tests/browser/firefox.mjs [e2ee]

import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { startRelay, launchBrowser, openParticipant, until, inbound, log, repo } from './lib.mjs';
import { createHosts, mintToken, RELAY_IP } from './netns.mjs';

const GCM = 'SRTP_AEAD_AES_128_GCM';
const kid = 'mixed';
const secret = 'mixed-browsers-0123456789abcdef0123';
const e2ee = process.argv.includes('e2ee');
const room = e2ee ? 'mixed-e2ee' : 'mixed';
const fragment = e2ee ? '#e2ee=firefox%20and%20chromium' : '';
const token = (identity) => mintToken({ kid, secret, room, identity });
const videoFrames = (s) => s.inbound.filter((x) => x.kind === 'video').reduce((a, x) => a + (x.framesDecoded || 0), 0);
const audioPackets = (s) => s.inbound.filter((x) => x.kind === 'audio').reduce((a, x) => a + (x.packetsReceived || 0), 0);

let failed = false;
let relay;
let chromium;
let firefox;
const hosts = createHosts(1);
try {
  relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', kid, '--api-secret', secret], '0.0.0.0');
  chromium = await launchBrowser();
  const page = await openParticipant(chromium, `http://127.0.0.1:${relay.httpPort}/?room=${room}&name=chromium&token=${token('chromium')}${fragment}`, 'chromium');

  const firefoxUrl = `http://${RELAY_IP}:${relay.httpPort}/?room=${room}&name=firefox&token=${token('firefox')}${fragment}`;
  firefox = spawn('ip', ['netns', 'exec', hosts.clients[0].ns, process.execPath, path.join(repo, 'tests', 'browser', 'firefox-page.mjs'), firefoxUrl],
    { stdio: ['pipe', 'pipe', 'inherit'] });
  const reports = {};
  readline.createInterface({ input: firefox.stdout }).on('line', (line) => {
    const space = line.indexOf(' ');
    try {
      reports[line.slice(0, space)] = JSON.parse(line.slice(space + 1));
    } catch {
      log('[firefox]', line);
    }
  });
  const ready = await until('firefox decodes chromium and publishes', () => {
    if (reports.TIMEOUT) throw Object.assign(new Error(`firefox did not get going: ${JSON.stringify(reports.TIMEOUT)}`), { fatal: true });
    return reports.READY;
  }, 60000);
  log(`firefox is in: ${videoFrames(ready)} frames decoded, ${audioPackets(ready)} audio packets`);

  const first = await until('chromium receives firefox', async () => {
    const s = await inbound(page);
    return s.videoStreams === 1 && s.audioStreams === 1 && s.framesDecoded > 0 && s.minFrameWidth > 0 && s.audioPackets > 0 && s;
  }, 30000);
  const start = Date.now();
  const later = await until('chromium keeps decoding firefox', async () => {
    const s = await inbound(page);
    return s.framesDecoded >= first.framesDecoded + 20 && s.audioPackets >= first.audioPackets + 50 && s;
  }, 10000);
  log(`chromium: +${later.framesDecoded - first.framesDecoded} frames of firefox's ${later.stats.inbound.map((s) => s.codec).join(', ')} in ${Date.now() - start} ms (${later.minFrameWidth} px wide); ciphers ${later.ciphers.join(', ')}`);
  if (!(later.ciphers.length === 2 && later.ciphers.every((c) => c.endsWith(GCM)))) throw new Error(`chromium's legs: ${later.ciphers}`);

  let agreed = null;
  if (e2ee) {
    // Two more Chromium participants, listening: they decode both publishers.
    const listeners = [];
    for (const name of ['chromium-2', 'chromium-3']) {
      listeners.push(await openParticipant(chromium, `http://127.0.0.1:${relay.httpPort}/?room=${room}&name=${name}&token=${token(name)}${fragment}`, name, { listener: true }));
    }
    for (const [i, listener] of listeners.entries()) {
      await until(`listener ${i + 2} decodes chromium and firefox`, async () => {
        const s = await inbound(listener);
        return s.videoStreams === 2 && s.minVideoFrames > 10 && s;
      }, 30000);
    }
    const codes = await until('all four show one safety code', async () => {
      const mineNow = await page.evaluate(() => window.tern.e2ee.safetyCode);
      const theirs = await Promise.all(listeners.map((l) => l.evaluate(() => window.tern.e2ee.safetyCode)));
      return theirs.every((c) => c && c === mineNow) && [mineNow, ...theirs];
    }, 20000);
    await until('firefox shows the same code', async () => {
      delete reports.CODE;
      firefox.stdin.write('code\n');
      const answer = await until('firefox answers', () => reports.CODE, 5000);
      return answer.code === codes[0];
    }, 20000);
    agreed = codes[0];
    log(`four participants (three Chromium, one Firefox) show ${codes[0]}`);
  }

  firefox.stdin.write('done\n');
  const final = await until('firefox reports', () => reports.FINAL, 20000);
  const ciphers = final.transports.map((t) => `${t.leg}:${t.srtpCipher}`);
  log(`firefox: +${videoFrames(final) - videoFrames(ready)} frames, +${audioPackets(final) - audioPackets(ready)} audio packets of chromium's since ready (${final.inbound.map((s) => s.codec).join(', ')}); ciphers ${ciphers.join(', ')}`);
  if (videoFrames(final) < videoFrames(ready) + 20) throw new Error('firefox stopped decoding chromium\'s video');
  if (audioPackets(final) < audioPackets(ready) + 50) throw new Error('firefox stopped receiving chromium\'s audio');
  if (!final.inbound.some((s) => s.kind === 'video' && s.frameWidth > 0)) throw new Error('firefox decoded no frame size');
  if (!(ciphers.length === 2 && final.transports.every((t) => t.srtpCipher === GCM))) throw new Error(`firefox's legs: ${ciphers}`);
  if (e2ee) {
    const mine = await page.evaluate(() => ({ code: window.tern.e2ee.safetyCode, counters: window.tern.e2ee.counters }));
    log(`e2ee: chromium's code ${mine.code}, firefox's ${final.e2ee && final.e2ee.code}; chromium decrypted ${mine.counters.decrypted} frames, firefox ${final.e2ee && final.e2ee.counters && final.e2ee.counters.decrypted}`);
    // Against the code all four agreed on: once firefox has reported it leaves, and chromium's
    // code changes with it (it may already have when we ask).
    if (!final.e2ee || final.e2ee.code !== agreed) throw new Error(`firefox's final safety code ${final.e2ee && final.e2ee.code} is not the one all four agreed on (${agreed})`);
    // The pages drop what they cannot decrypt, so the frames decoded above went through the
    // crypto; the counters (posted by the workers once a second) say it did work at all.
    if (!(mine.counters.decrypted >= 20 && final.e2ee.counters.decrypted >= 20)) throw new Error('too few frames decrypted');
    if (!(final.e2ee.counters.encrypted >= 20)) throw new Error('firefox encrypted too few frames');
  }
  log(`PASS firefox and chromium see and hear each other through the relay${e2ee ? ', end to end encrypted' : ''}`);
} catch (err) {
  failed = true;
  log('FAIL firefox:', err && err.stack ? err.stack : err);
  if (relay) log('relay output:\n' + relay.output().slice(-4000));
} finally {
  if (firefox && firefox.exitCode === null) firefox.kill();
  if (chromium) await chromium.close();
  if (relay) await relay.stop();
  hosts.cleanup();
}
process.exit(failed ? 1 : 0);
