// Chromium media robustness through the relay binary:
//  0. active speaker: of a participant whose microphone plays a tone and one whose plays silence,
//     everyone is told the first speaks and the page marks her tile;
//     dynacast: a publisher alone encodes no video; a subscriber's small tile turns on only the
//     lowest layer, a large one every layer;
//  1. a VP9 publisher reaches a VP9-capable subscriber, which decodes it; an AV1 publisher
//     sending three spatial layers in one stream (L3T3_KEY SVC) is forwarded whole and decoded at
//     its full size;
//  2. participants in their own network namespaces with 5 % random UDP loss on their links keep
//     decoding while the relay's retransmission and NACK counters move;
//  3. a killed browser process disappears for the others within 15 s;
//  4. a participant whose network drops all UDP calls over ICE-TCP and decodes video.
//
// Run as root (network namespaces, nftables): node tests/browser/media.mjs [vp9|av1|dynacast|speaker|loss|kill|tcp]...

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startRelay, launchBrowser, spawnBrowser, openParticipant, until, inbound, metric, log, repo } from './lib.mjs';
import { createHosts, addLoss, blockUdp, mintToken, RELAY_IP } from './netns.mjs';

// --screenshot saves docs/screenshot-speaker.png (bob's page while alice speaks).
const screenshot = process.argv.includes('--screenshot');
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const run = (name) => wanted.length === 0 || wanted.includes(name);
let failed = false;

async function scenario(name, body) {
  if (!run(name)) return;
  log(`--- ${name}`);
  const cleanups = [];
  try {
    await body(cleanups);
    log(`PASS ${name}`);
  } catch (err) {
    failed = true;
    log(`FAIL ${name}:`, err && err.stack ? err.stack : err);
  } finally {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch (err) { log('cleanup:', err.message); }
    }
  }
}

/**
 * framesDecoded of the page's remote video grows by at least `frames` within `frames / 3` s. At
 * 30 fps that takes a tenth of it: the slack is for a loaded machine, while a stream that stalls
 * for seconds or crawls from keyframe to keyframe still fails. The time it took is logged.
 */
async function decodes(page, name, frames, deadlineMs = (frames / 3) * 1000) {
  const start = Date.now();
  const before = await inbound(page);
  const after = await until(`${name} decodes ${frames} more frames`, async () => {
    const now = await inbound(page);
    return now.framesDecoded - before.framesDecoded >= frames && now;
  }, deadlineMs);
  const grew = after.framesDecoded - before.framesDecoded;
  log(`${name}: +${grew} frames in ${Date.now() - start} ms (${after.minFrameWidth} px wide, codecs ${after.stats.inbound.filter((s) => s.kind === 'video').map((s) => s.codec).join(',')})`);
  return after;
}

await scenario('vp9', async (cleanups) => {
  const relay = await startRelay();
  cleanups.push(() => relay.stop());
  const browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const alice = await openParticipant(browser, `${relay.base}/?room=vp9&name=alice&codec=video/VP9`, 'alice');
  const bob = await openParticipant(browser, `${relay.base}/?room=vp9&name=bob`, 'bob');
  await until('bob receives alice as VP9', async () => {
    const s = await inbound(bob);
    return s.stats.inbound.some((x) => x.kind === 'video' && x.codec === 'video/VP9' && x.framesDecoded > 0);
  }, 30000);
  await decodes(bob, 'bob (VP9 from alice)', 20);
  await decodes(alice, 'alice (VP8 from bob)', 20);
});

await scenario('av1', async (cleanups) => {
  const relay = await startRelay();
  cleanups.push(() => relay.stop());
  const browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const alice = await openParticipant(browser, `${relay.base}/?room=av1&name=alice&codec=video/AV1`, 'alice');
  const bob = await openParticipant(browser, `${relay.base}/?room=av1&name=bob`, 'bob');
  const sent = await until('alice sends AV1 L3T3_KEY', () => alice.evaluate(async () => {
    let found = null;
    const stats = await window.tern.publishPc.getStats();
    stats.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.framesEncoded > 0) {
        const codec = stats.get(s.codecId);
        found = { codec: codec && codec.mimeType, mode: s.scalabilityMode, width: s.frameWidth };
      }
    });
    return found && found.codec === 'video/AV1' && found;
  }), 30000);
  if (sent.mode !== 'L3T3_KEY') throw new Error(`alice's AV1 is not SVC: ${JSON.stringify(sent)}`);
  await until('bob receives alice as AV1', async () => {
    const s = await inbound(bob);
    return s.stats.inbound.some((x) => x.kind === 'video' && x.codec === 'video/AV1' && x.framesDecoded > 0);
  }, 30000);
  const got = await decodes(bob, 'bob (AV1 from alice)', 20);
  // The whole SVC stream reaches bob: he decodes the top spatial layer, as wide as alice sends.
  const width = Math.max(...got.stats.inbound.filter((x) => x.codec === 'video/AV1').map((x) => x.frameWidth || 0));
  if (width < sent.width) throw new Error(`bob decodes AV1 ${width} px wide, alice sends ${sent.width}`);
  log(`alice sends AV1 ${sent.mode} ${sent.width} px wide; bob decodes ${width} px`);
  await decodes(alice, 'alice (VP8 from bob)', 20);
});

await scenario('dynacast', async (cleanups) => {
  const relay = await startRelay();
  cleanups.push(() => relay.stop());
  const browser = await launchBrowser();
  cleanups.push(() => browser.close());
  const alice = await openParticipant(browser, `${relay.base}/?room=dyn&name=alice`, 'alice');
  /** Alice's camera encodings: which are on, and which send (frames encoded in the last second). */
  const encodings = () => alice.evaluate(async () => {
    const sender = window.tern.publishPc.getSenders().find((s) => s.track && s.track.kind === 'video');
    const active = sender.getParameters().encodings.map((e) => `${e.rid}:${e.active === false ? 'off' : 'on'}`).join(' ');
    const frames = async () => {
      const out = {};
      (await sender.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') out[s.rid] = s.framesEncoded || 0; });
      return out;
    };
    const before = await frames();
    await new Promise((r) => setTimeout(r, 1000));
    const after = await frames();
    const sending = Object.keys(after).filter((rid) => after[rid] > (before[rid] || 0)).sort().join(',');
    return { active, sending };
  });
  const aloneAt = Date.now();
  const alone = await until('alice alone encodes no video', async () => {
    const e = await encodings();
    return e.active === 'q:off h:off f:off' && e.sending === '' && e;
  }, 15000);
  log(`dynacast: alice alone: ${alone.active} after ${Date.now() - aloneAt} ms`);
  // Bob joins and shows her in a 240x135 tile: only her lowest layer is needed.
  const bob = await openParticipant(browser, `${relay.base}/?room=dyn&name=bob`, 'bob');
  const tile = (css) => bob.evaluate((css) => Object.assign(document.querySelector('.tile.media').style, css), css);
  await tile({ width: '240px', height: '135px', minHeight: '0' });
  const small = await until('alice encodes only q for bob\'s small tile', async () => {
    const e = await encodings();
    return e.active === 'q:on h:off f:off' && e.sending === 'q' && e;
  }, 20000);
  await decodes(bob, 'bob (alice\'s q only)', 20);
  // A large tile: the other layers come back, and bob gets the full picture.
  await tile({ width: '1280px', height: '720px' });
  const largeAt = Date.now();
  const large = await until('alice encodes every layer again', async () => {
    const e = await encodings();
    return e.active === 'q:on h:on f:on' && e.sending === 'f,h,q' && e;
  }, 10000);
  const upMs = Date.now() - largeAt;
  await until('bob decodes 1280 px', async () => (await inbound(bob)).minFrameWidth === 1280, 15000);
  log(`dynacast: bob's small tile: ${small.active}; large tile: ${large.active} after ${upMs} ms, bob at 1280 px`);
});

/** A 16-bit mono 48 kHz WAV of `seconds` of a sine at `amplitude` (0: silence), for Chromium's
 * fake microphone (`--use-file-for-fake-audio-capture`, played in a loop). */
function wav(file, seconds, amplitude) {
  const rate = 48000;
  const samples = rate * seconds;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) data.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * 440 * i) / rate)), i * 2);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
}

await scenario('speaker', async (cleanups) => {
  const relay = await startRelay();
  cleanups.push(() => relay.stop());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-speaker-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  wav(path.join(dir, 'tone.wav'), 5, 0.5);
  wav(path.join(dir, 'silence.wav'), 5, 0);
  const talking = await launchBrowser(undefined, [`--use-file-for-fake-audio-capture=${path.join(dir, 'tone.wav')}`]);
  cleanups.push(() => talking.close());
  const quiet = await launchBrowser(undefined, [`--use-file-for-fake-audio-capture=${path.join(dir, 'silence.wav')}`]);
  cleanups.push(() => quiet.close());
  const alice = await openParticipant(talking, `${relay.base}/?room=speak&name=alice`, 'alice');
  const bob = await openParticipant(quiet, `${relay.base}/?room=speak&name=bob`, 'bob');
  const aliceId = await alice.evaluate(() => window.tern.participant.id);
  const bobAt = Date.now();
  await until('bob is told alice speaks, and her tile shows it', () => bob.evaluate((id) => {
    const tile = document.querySelector(`.tile.media[data-participant="${id}"]`);
    return window.tern.activeSpeakers.length === 1 && window.tern.activeSpeakers[0] === id && tile && tile.classList.contains('speaking');
  }, aliceId), 20000);
  await until('alice sees herself speaking', () => alice.evaluate(() => document.getElementById('self').classList.contains('speaking')), 10000);
  const lists = await bob.evaluate(() => window.ternLog.filter((e) => e.type === 'active_speakers').map((e) => e.participant_ids));
  const bobId = await bob.evaluate(() => window.tern.participant.id);
  if (lists.some((l) => l.includes(bobId))) throw new Error(`bob's silence was taken for speech: ${JSON.stringify(lists)}`);
  log(`speaker: bob told that alice speaks ${Date.now() - bobAt} ms after he joined; lists he got: ${JSON.stringify(lists.map((l) => l.map((id) => (id === aliceId ? 'alice' : id))))}`);
  if (screenshot) {
    const file = path.join(repo, 'docs', 'screenshot-speaker.png');
    await bob.screenshot({ path: file });
    log(`screenshot saved to ${file}`);
  }
});

await scenario('loss', async (cleanups) => {
  const hosts = createHosts(2);
  cleanups.push(() => hosts.cleanup());
  const secret = 'loss-test-secret-0123456789abcdef0123';
  const relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', 'loss', '--api-secret', secret], '0.0.0.0');
  cleanups.push(() => relay.stop());
  const origin = `http://${RELAY_IP}:${relay.httpPort}`;
  const pages = [];
  for (const [i, name] of ['alice', 'bob'].entries()) {
    const browser = await launchBrowser(hosts.clients[i].wrapper, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
    cleanups.push(() => browser.close());
    const token = mintToken({ kid: 'loss', secret, room: 'loss', identity: name });
    pages.push(await openParticipant(browser, `${origin}/?room=loss&name=${name}&token=${token}`, name));
  }
  for (const [i, page] of pages.entries()) {
    await until(`${i} decodes before loss`, async () => (await inbound(page)).framesDecoded > 10, 30000);
  }
  const bobId = await pages[1].evaluate(() => window.tern.participant.id);
  const quality = (page, id) => page.evaluate((id) => {
    const tile = document.querySelector(`.tile.media[data-participant="${id}"]`);
    return tile && tile.dataset.quality;
  }, id);
  await until('alice shows bob\'s connection as good', async () => (await quality(pages[0], bobId)) === 'good', 15000);
  addLoss(hosts, 5);
  log('5 % random UDP loss on both links, both directions');
  const nacks0 = await metric(relay.base, 'tern_nacks_sent_total');
  const rtx0 = await metric(relay.base, 'tern_retransmissions_sent_total');
  for (const [i, page] of pages.entries()) {
    await decodes(page, ['alice', 'bob'][i], 40);
  }
  const nacks = (await metric(relay.base, 'tern_nacks_sent_total')) - nacks0;
  const rtx = (await metric(relay.base, 'tern_retransmissions_sent_total')) - rtx0;
  log(`relay under loss: ${nacks} NACKs sent to publishers, ${rtx} retransmissions to subscribers`);
  if (!(nacks > 0)) throw new Error('the relay did not NACK lost packets');
  if (!(rtx > 0)) throw new Error('the relay did not retransmit lost packets');
  // With about 15 % loss both ways the relay judges bob's connection poor (its downlink loses
  // more than 5 % of the relay's packets), and alice's page shows it.
  addLoss(hosts, 10);
  await until('alice shows bob\'s connection as poor', async () => (await quality(pages[0], bobId)) === 'poor', 20000);
  const log_ = await pages[0].evaluate(() => window.ternLog.filter((e) => e.type === 'connection_quality').map((e) => e.updates));
  log(`connection_quality messages on alice's page: ${JSON.stringify(log_)}`);
});

await scenario('kill', async (cleanups) => {
  const relay = await startRelay();
  cleanups.push(() => relay.stop());
  const stayer = await launchBrowser();
  cleanups.push(() => stayer.close());
  const { browser: victim, proc } = await spawnBrowser();
  cleanups.push(() => { try { proc.kill('SIGKILL'); } catch {} });
  const alice = await openParticipant(stayer, `${relay.base}/?room=kill&name=alice`, 'alice');
  await openParticipant(victim, `${relay.base}/?room=kill&name=bob`, 'bob');
  await until('alice decodes bob', async () => (await inbound(alice)).framesDecoded > 10, 30000);
  const tiles = () => alice.evaluate(() => document.querySelectorAll('.tile').length);
  const before = await tiles();
  const killedAt = Date.now();
  proc.kill('SIGKILL');
  await until('bob gone for alice', async () => {
    const left = await alice.evaluate(() => window.ternLog.some((e) => e.type === 'participant_left'));
    return left && (await tiles()) === before - 1;
  }, 20000, 100);
  const took = (Date.now() - killedAt) / 1000;
  log(`bob's tile gone ${took.toFixed(1)} s after his browser was killed`);
  if (took > 15) throw new Error(`took ${took} s`);
});

await scenario('tcp', async (cleanups) => {
  const hosts = createHosts(2);
  cleanups.push(() => hosts.cleanup());
  blockUdp(hosts.clients[0]);
  log('all UDP dropped in alice\'s network namespace');
  const secret = 'tcp-test-secret-0123456789abcdef01234';
  const relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', 'tcp', '--api-secret', secret,
    '--tcp-listen', '0.0.0.0:0', '--media-workers', '2'], '0.0.0.0');
  cleanups.push(() => relay.stop());
  // A room made first takes the first media worker, so the call's room is placed on the second,
  // with ICE-TCP (and UDP) ports of its own.
  const adminToken = mintToken({ kid: 'tcp', secret, room: '*', identity: 'operator', admin: true });
  const created = await fetch(`${relay.base}/api/rooms`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'first-worker' }),
  });
  if (!created.ok) throw new Error(`creating the first room: ${created.status} ${await created.text()}`);
  const origin = `http://${RELAY_IP}:${relay.httpPort}`;
  const pages = [];
  for (const [i, name] of ['alice', 'bob'].entries()) {
    const browser = await launchBrowser(hosts.clients[i].wrapper, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
    cleanups.push(() => browser.close());
    const token = mintToken({ kid: 'tcp', secret, room: 'tcp', identity: name });
    pages.push(await openParticipant(browser, `${origin}/?room=tcp&name=${name}&token=${token}`, name));
  }
  const [alice, bob] = pages;
  await until('alice decodes bob over TCP', async () => (await inbound(alice)).framesDecoded > 10, 40000);
  await until('bob decodes alice', async () => (await inbound(bob)).framesDecoded > 10, 40000);
  const after = await decodes(alice, 'alice (UDP blocked)', 40);
  const protocols = after.stats.transports.map((t) => `${t.leg}:${t.protocol}`);
  log(`alice's legs: ${protocols.join(', ')}; bob's: ${(await inbound(bob)).stats.transports.map((t) => `${t.leg}:${t.protocol}`).join(', ')}`);
  if (!after.stats.transports.every((t) => t.protocol === 'tcp')) throw new Error(`alice's legs are not on TCP: ${protocols}`);
  const open = await metric(relay.base, 'tern_ice_tcp_connections');
  if (!(open >= 2)) throw new Error(`relay reports ${open} ICE-TCP connections`);
  const rooms = await (await fetch(`${relay.base}/api/rooms`, { headers: { authorization: `Bearer ${adminToken}` } })).json();
  const worker = rooms.rooms?.find((r) => r.name === 'tcp')?.worker ?? rooms.find?.((r) => r.name === 'tcp')?.worker;
  log(`room 'tcp' is on media worker ${worker}`);
  if (worker !== 1) throw new Error(`room 'tcp' is on worker ${worker}, not the second: ${JSON.stringify(rooms)}`);
});

process.exit(failed ? 1 : 0);
