// WHEP playback of a Chromium participant (alice, on the bundled page: her fake 1280x720 camera
// as three simulcast layers, and her microphone) by independent players:
//
//  a. a Chromium page that speaks WHEP with `fetch` and RTCPeerConnection only: 201 with the
//     answer, Location, ETag and Accept-Patch; it decodes alice's top layer (1280 px) and receives
//     her audio; alice's page lists the viewer; an ICE restart through PATCH, after which it
//     goes on decoding; DELETE, and alice sees it leave;
//  b. aiortc (tests/interop/whep_player.py) decodes her video and audio, then DELETEs;
//  c. bandwidth control: the same fetch-only player in a network namespace whose downlink a tbf
//     holds to 400 kbit/s gets a layer of 640 px or less and keeps decoding;
//  d. the player follows: bob (a second page) publishes later, a player with
//     `?participant=bob` decodes bob; alice leaves, and the first player goes on with bob on the
//     same m-lines (no renegotiation) and decodes him.
//
// The aiortc player and the rate-limited Chromium run in network namespaces of their own; the
// relay listens on the bridge. Needs root and the aiortc venv (tests/run.sh installs it).
// Run: node tests/browser/whep.mjs   (inside `unshare -n`)

import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { startRelay, launchBrowser, openParticipant, until, log, repo } from './lib.mjs';
import { createHosts, mintToken, spawnInNetns, RELAY_IP } from './netns.mjs';

const VENV = process.env.TERN_TEST_INTEROP_VENV || path.join(os.homedir(), '.cache', 'tern', 'interop-venv');
const ROOM = 'stage';
const cleanups = [];
let failed = false;
let relay;

const tc = (...args) => execFileSync('tc', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Opens a page that plays `url` (a WHEP endpoint) with fetch and RTCPeerConnection only. */
async function openPlayer(browser, origin, url, token, name) {
  const page = await (await browser.newContext()).newPage();
  page.on('pageerror', (e) => log(`[${name}]`, e.message));
  await page.goto(`${origin}/healthz`);
  const created = await page.evaluate(async ({ url, token }) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    const auth = { Authorization: `Bearer ${token}` };
    const r = await fetch(url, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    const answer = await r.text();
    if (r.status !== 201) return { status: r.status, answer };
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    window.whep = { pc, auth, resource: new URL(r.headers.get('Location'), url).href };
    return {
      status: r.status, location: r.headers.get('Location'), etag: r.headers.get('ETag'),
      acceptPatch: r.headers.get('Accept-Patch'), type: r.headers.get('Content-Type'), sendonly: (answer.match(/a=sendonly/g) || []).length,
    };
  }, { url, token });
  log(`${name}: POST ${JSON.stringify(created)}`);
  if (created.status !== 201) throw new Error(`${name}: POST answered ${created.status}: ${created.answer}`);
  return { page, name, created };
}

/** What a player has decoded: video frames and width, audio packets, the video SSRC. */
const played = (player) => player.page.evaluate(async () => {
  const out = { frames: 0, width: 0, audio: 0, ssrc: 0 };
  (await window.whep.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') Object.assign(out, { frames: s.framesDecoded || 0, width: s.frameWidth || 0, ssrc: s.ssrc });
    else out.audio = s.packetsReceived || 0;
  });
  return out;
});

/** Waits until `player` decodes `more` new frames (and `check` holds). */
async function decodes(player, what, more = 30, check = () => true, ms = 30000) {
  const before = await played(player);
  return until(`${player.name} ${what}`, async () => {
    const now = await played(player);
    return now.frames >= before.frames + more && now.audio > before.audio && check(now) && now;
  }, ms);
}

/** `spawnInNetns`, killed at the end of the test. */
function child(name, ns, command, args) {
  const c = spawnInNetns(name, ns, command, args);
  cleanups.push(c.kill);
  return c;
}

const left = (page, id) => page.evaluate((pid) => window.ternLog.some((e) => e.type === 'participant_left' && e.participant_id === pid), id);

try {
  const hosts = createHosts(2);
  cleanups.push(() => hosts.cleanup());
  const [aiortcHost, slowHost] = hosts.clients;
  const secret = 'whep-secret-0123456789abcdef0123456789';
  relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', 'whep', '--api-secret', secret], '0.0.0.0');
  cleanups.push(() => relay.stop());
  const origin = `http://${RELAY_IP}:${relay.httpPort}`;
  const whepUrl = `${origin}/whep/${ROOM}`;
  const token = (identity) => mintToken({ kid: 'whep', secret, room: ROOM, identity });
  const browser = await launchBrowser(undefined, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
  cleanups.push(() => browser.close());
  const alice = await openParticipant(browser, `${origin}/?room=${ROOM}&name=alice&token=${token('alice')}`, 'alice');
  const aliceId = await alice.evaluate(() => window.tern.participant.id);

  log('--- a. a browser that plays WHEP with fetch and RTCPeerConnection');
  const player = await openPlayer(browser, origin, whepUrl, token('player'), 'player');
  const { created } = player;
  if (!/^\/whep\/resource\/[0-9a-f]{32}$/.test(created.location)) throw new Error(`Location ${created.location}`);
  if (!/^"[0-9a-f]+"$/.test(created.etag || '') || created.acceptPatch !== 'application/trickle-ice-sdpfrag' || created.type !== 'application/sdp') throw new Error('headers');
  if (created.sendonly !== 2) throw new Error(`the answer has ${created.sendonly} sendonly m-lines`);
  // Its estimate starts low and ramps up, as any subscriber's: up to 20 s on a loaded machine.
  // Above 640 px is alice's top layer (1280 px unless her encoder scaled it down under load).
  const full = await decodes(player, 'decodes alice above 640 px', 30, (s) => s.width > 640, 60000);
  log(`player decodes alice: ${full.frames} frames at ${full.width} px, ${full.audio} audio packets`);
  const listed = await until('alice lists the player', () => alice.evaluate(() => [...window.tern.participants.values()].find((p) => p.identity === 'player')), 10000);

  // An ICE restart through PATCH: the relay's new credentials come back, and the player goes on.
  const restart = await player.page.evaluate(async () => {
    const { pc, resource, auth } = window.whep;
    const answer = pc.remoteDescription.sdp;
    pc.restartIce();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const line = (sdp, prefix) => sdp.split('\r\n').find((l) => l.startsWith(prefix));
    const frag = `${line(offer.sdp, 'a=ice-ufrag:')}\r\n${line(offer.sdp, 'a=ice-pwd:')}\r\n`;
    const r = await fetch(resource, { method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*' }, body: frag });
    const body = await r.text();
    if (r.status !== 200) return { status: r.status, body };
    const ufrag = line(body, 'a=ice-ufrag:');
    const pwd = line(body, 'a=ice-pwd:');
    const renewed = answer.split('\r\n').map((l) => (l.startsWith('a=ice-ufrag:') ? ufrag : l.startsWith('a=ice-pwd:') ? pwd : l)).join('\r\n');
    await pc.setRemoteDescription({ type: 'answer', sdp: renewed });
    return { status: r.status, oldUfrag: line(answer, 'a=ice-ufrag:'), ufrag };
  });
  if (restart.status !== 200 || !restart.ufrag || restart.ufrag === restart.oldUfrag) throw new Error(`ICE restart: ${JSON.stringify(restart)}`);
  await decodes(player, 'decodes alice after an ICE restart', 30);
  log(`ICE restart: the relay's ufrag ${restart.oldUfrag} -> ${restart.ufrag}; the player goes on decoding`);

  log('--- b. aiortc');
  const aiortc = child('aiortc', aiortcHost.ns, path.join(VENV, 'bin', 'python'), [path.join(repo, 'tests', 'interop', 'whep_player.py'), '--url', whepUrl, '--token', token('aiortc')]);
  let aio;
  try {
    aio = await until('aiortc decodes alice', () => {
      const stats = aiortc.lines.filter((l) => l.includes('"stats"')).map((l) => JSON.parse(l)).pop();
      return stats && stats.video >= 30 && stats.audio >= 50 && stats.width > 0 && stats;
    }, 40000);
  } catch (err) {
    aiortc.dump();
    throw err;
  }
  log(`aiortc decodes alice: ${aio.video} video frames at ${aio.width} px, ${aio.audio} audio frames`);
  aiortc.proc.stdin.write('stop\n');
  await until('aiortc deleted its session', () => aiortc.lines.some((l) => l.includes('"deleted"') && l.includes('200')), 15000);

  log('--- c. a player behind a 400 kbit/s downlink');
  tc('qdisc', 'replace', 'dev', slowHost.veth, 'root', 'tbf', 'rate', '400kbit', 'burst', '32kbit', 'latency', '200ms');
  const slowBrowser = await launchBrowser(slowHost.wrapper, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
  cleanups.push(() => slowBrowser.close());
  const slow = await openPlayer(slowBrowser, origin, whepUrl, token('slow'), 'slow');
  await decodes(slow, 'settles on a layer of 640 px or less', 10, (s) => s.width > 0 && s.width <= 640, 40000);
  // Then keeps decoding there, every second, for 5 s.
  const perSecond = [];
  for (let i = 0; i < 5; i++) {
    const before = await played(slow);
    await sleep(1000);
    const now = await played(slow);
    if (!(now.frames > before.frames) || now.width > 640) throw new Error(`slow player: ${JSON.stringify(now)} after ${JSON.stringify(before)}`);
    perSecond.push(now.frames - before.frames);
  }
  const slowNow = await played(slow);
  log(`slow player at 400 kbit/s: ${slowNow.width} px, frames per second ${perSecond.join(' ')}; the unlimited player at ${(await played(player)).width} px`);
  await slow.page.evaluate(async () => fetch(window.whep.resource, { method: 'DELETE', headers: window.whep.auth }));

  log('--- d. following: a named participant, and the next publisher');
  const bob = await openParticipant(browser, `${origin}/?room=${ROOM}&name=bob&token=${token('bob')}`, 'bob');
  const fan = await openPlayer(browser, origin, `${whepUrl}?participant=bob`, token('fan'), 'fan');
  await decodes(fan, 'decodes bob', 30);
  const firstSsrc = (await played(player)).ssrc;
  await alice.evaluate(() => window.tern.leave());
  await until('bob sees alice leave', () => left(bob, aliceId), 15000);
  const after = await decodes(player, 'goes on with bob after alice left', 30);
  if (after.ssrc !== firstSsrc) throw new Error(`the player's video SSRC changed: ${firstSsrc} -> ${after.ssrc}`);
  log(`after alice left the player decodes bob on the same stream (SSRC ${after.ssrc}), ${after.frames} frames in all`);

  const deleted = await player.page.evaluate(async () => (await fetch(window.whep.resource, { method: 'DELETE', headers: window.whep.auth })).status);
  if (deleted !== 200) throw new Error(`DELETE answered ${deleted}`);
  await until('bob sees the player leave', () => left(bob, listed.id), 15000);
  const again = await player.page.evaluate(async () => (await fetch(window.whep.resource, { method: 'DELETE', headers: window.whep.auth })).status);
  if (again !== 404) throw new Error(`a second DELETE answered ${again}`);
  log('DELETE: 200, the player left; the resource is gone (404)');
  log('PASS WHEP players (fetch-only Chromium, aiortc), bandwidth control and following');
} catch (err) {
  failed = true;
  log('FAIL', err.stack || err.message);
  if (relay) log(`relay output (tail):\n${relay.output().split('\n').slice(-60).join('\n')}`);
} finally {
  for (const cleanup of cleanups.reverse()) {
    try { await cleanup(); } catch {}
  }
}
process.exit(failed ? 1 : 0);
