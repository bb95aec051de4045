// WHIP ingest with independent clients, each watched by a Chromium viewer on the bundled page:
//
//  a. a Chromium page that speaks WHIP with `fetch` and RTCPeerConnection only: 201 with the
//     answer, Location, ETag, Accept-Patch and Link headers (STUN, and TURN with credentials);
//     its candidates trickled in a PATCH (204); the viewer decodes its video and receives its
//     audio; an ICE restart through PATCH (a stale ETag: 412; `If-Match: *`: 200 with the
//     relay's new credentials) and the viewer keeps decoding; DELETE, and the viewer sees the
//     participant leave;
//  b. GStreamer webrtcbin (tests/interop/gst_whip_client.py; Debian 12's simple-whip-client
//     aborts at start, see there): it trickles each candidate in its own PATCH (204 each) and
//     publishes VP8 and Opus; the viewer decodes both; DELETE, and the viewer sees it leave;
//  c. aiortc (tests/interop/whip_client.py): the same, then DELETE; and one that is killed
//     (no DELETE) leaves once ICE consent runs out. The admin API tells WHIP participants
//     (`via: whip`) from WebSocket ones.
//
// The GStreamer and aiortc clients run in network namespaces of their own (libnice and aioice
// ignore loopback); the relay listens on the bridge. Needs root, Debian's GStreamer packages and
// the aiortc venv (tests/run.sh installs both). Run: node tests/browser/whip.mjs   (inside `unshare -n`)

import os from 'node:os';
import path from 'node:path';
import { startRelay, launchBrowser, openParticipant, until, log, repo } from './lib.mjs';
import { createHosts, mintToken, spawnInNetns, RELAY_IP } from './netns.mjs';

const VENV = process.env.TERN_TEST_INTEROP_VENV || path.join(os.homedir(), '.cache', 'tern', 'interop-venv');
const ROOM = 'broadcast';
const cleanups = [];
let relay;
let failed = false;

/** Frames decoded and audio packets received by the viewer from `identity`. */
async function received(viewer, identity) {
  return viewer.evaluate(async (who) => {
    const room = window.tern;
    const p = [...room.participants.values()].find((x) => x.identity === who);
    if (!p || !room.subscribePc) return null;
    const out = { id: p.id, frames: 0, audio: 0, width: 0 };
    (await room.subscribePc.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const info = room._subscribedByMid.get(s.mid);
      if (!info || info.participant_id !== p.id) return;
      if (s.kind === 'video') {
        out.frames += s.framesDecoded || 0;
        out.width = Math.max(out.width, s.frameWidth || 0);
      } else out.audio += s.packetsReceived || 0;
    });
    return out;
  }, identity);
}

/** Waits until the viewer gets 20 more frames and 50 more audio packets from `identity`. */
async function flows(viewer, identity, ms = 30000) {
  const before = (await received(viewer, identity)) || { frames: 0, audio: 0 };
  return until(`the viewer decodes ${identity}`, async () => {
    const now = await received(viewer, identity);
    return now && now.frames >= before.frames + 20 && now.audio >= before.audio + 50 && now.width > 0 && now;
  }, ms);
}

const left = (viewer, id) => viewer.evaluate((pid) => window.ternLog.some((e) => e.type === 'participant_left' && e.participant_id === pid), id);

/** `spawnInNetns`, killed at the end of the test. */
function child(name, ns, command, args) {
  const c = spawnInNetns(name, ns, command, args);
  cleanups.push(c.kill);
  return c;
}

try {
  const hosts = createHosts(2);
  cleanups.push(() => hosts.cleanup());
  const [gstHost, aiortcHost] = hosts.clients;
  const secret = 'whip-secret-0123456789abcdef0123456789';
  relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', 'whip', '--api-secret', secret,
    '--ice-stun-urls', 'stun:127.0.0.1:9', '--ice-turn-urls', 'turn:127.0.0.1:9?transport=udp', '--turn-secret', 'turn-secret-for-the-test'], '0.0.0.0');
  cleanups.push(() => relay.stop());
  const origin = `http://${RELAY_IP}:${relay.httpPort}`;
  const whipUrl = `${origin}/whip/${ROOM}`;
  const token = (identity) => mintToken({ kid: 'whip', secret, room: ROOM, identity });
  const browser = await launchBrowser(undefined, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
  cleanups.push(() => browser.close());
  const viewer = await openParticipant(browser, `${origin}/?room=${ROOM}&name=viewer&token=${token('viewer')}`, 'viewer');

  log('--- a. a browser that speaks WHIP with fetch and RTCPeerConnection');
  const pub = await (await browser.newContext()).newPage();
  pub.on('pageerror', (e) => log('[whip page]', e.message));
  await pub.goto(`${origin}/healthz`);
  const created = await pub.evaluate(async ({ url, token }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
    const gathered = new Promise((resolve) => {
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    });
    await pc.setLocalDescription(await pc.createOffer());
    const auth = { Authorization: `Bearer ${token}` };
    const r = await fetch(url, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
    const answer = await r.text();
    if (r.status !== 201) return { status: r.status, answer };
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    const resource = new URL(r.headers.get('Location'), url).href;
    window.whip = { pc, resource, etag: r.headers.get('ETag'), answer, auth };
    // Trickle (RFC 8840): the gathered candidates, in one fragment.
    await gathered;
    const sdp = pc.localDescription.sdp;
    const firstSection = sdp.split('\r\nm=')[1].split('\r\n');
    const line = (prefix) => sdp.split('\r\n').find((l) => l.startsWith(prefix));
    const frag = [line('a=ice-ufrag:'), line('a=ice-pwd:'), `m=${firstSection[0]}`, firstSection.find((l) => l.startsWith('a=mid:')),
      ...firstSection.filter((l) => l.startsWith('a=candidate:')), 'a=end-of-candidates', ''].join('\r\n');
    const patched = await fetch(resource, { method: 'PATCH', headers: { ...auth, 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': window.whip.etag }, body: frag });
    return {
      status: r.status, location: r.headers.get('Location'), etag: r.headers.get('ETag'),
      acceptPatch: r.headers.get('Accept-Patch'), links: r.headers.get('Link'), type: r.headers.get('Content-Type'),
      trickled: frag.split('a=candidate:').length - 1, patch: patched.status,
    };
  }, { url: whipUrl, token: token('chromium-whip') });
  log('POST', JSON.stringify(created));
  if (created.status !== 201) throw new Error(`POST answered ${created.status}: ${created.answer}`);
  if (!/^\/whip\/resource\/[0-9a-f]{32}$/.test(created.location)) throw new Error(`Location ${created.location}`);
  if (!/^"[0-9a-f]+"$/.test(created.etag || '')) throw new Error(`ETag ${created.etag}`);
  if (created.acceptPatch !== 'application/trickle-ice-sdpfrag' || created.type !== 'application/sdp') throw new Error('headers');
  if (!(created.links.includes('<stun:127.0.0.1:9>; rel="ice-server"') && /<turn:127\.0\.0\.1:9\?transport=udp>; rel="ice-server"; username="[^"]+"; credential="[^"]+"; credential-type="password"/.test(created.links))) {
    throw new Error(`Link: ${created.links}`);
  }
  if (!(created.trickled > 0 && created.patch === 204)) throw new Error(`trickle PATCH: ${created.patch} with ${created.trickled} candidates`);
  const first = await flows(viewer, 'chromium-whip');
  log(`viewer decodes the WHIP page: ${first.frames} frames at ${first.width} px, ${first.audio} audio packets`);
  // The admin API says how each participant came.
  const admin = mintToken({ kid: 'whip', secret, room: ROOM, identity: 'ops', admin: true });
  const listed = await (await fetch(`${origin}/api/rooms/${ROOM}`, { headers: { Authorization: `Bearer ${admin}` } })).json();
  const via = Object.fromEntries(listed.participants.map((p) => [p.identity, p.via]));
  if (via['chromium-whip'] !== 'whip' || via.viewer !== 'websocket') throw new Error(`admin API via: ${JSON.stringify(via)}`);

  // ICE restart: a stale ETag is refused; with If-Match: * the relay answers with new credentials.
  const restart = await pub.evaluate(async () => {
    const { pc, resource, auth, answer } = window.whip;
    pc.restartIce();
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const line = (sdp, prefix) => sdp.split('\r\n').find((l) => l.startsWith(prefix));
    const frag = `${line(offer.sdp, 'a=ice-ufrag:')}\r\n${line(offer.sdp, 'a=ice-pwd:')}\r\n`;
    const headers = { ...auth, 'Content-Type': 'application/trickle-ice-sdpfrag' };
    const stale = await fetch(resource, { method: 'PATCH', headers: { ...headers, 'If-Match': '"0000"' }, body: frag });
    const r = await fetch(resource, { method: 'PATCH', headers: { ...headers, 'If-Match': '*' }, body: frag });
    const body = await r.text();
    if (r.status !== 200) return { stale: stale.status, status: r.status, body };
    // The new answer: the old one with the relay's new credentials.
    const ufrag = line(body, 'a=ice-ufrag:');
    const pwd = line(body, 'a=ice-pwd:');
    const renewed = answer.split('\r\n').map((l) => (l.startsWith('a=ice-ufrag:') ? ufrag : l.startsWith('a=ice-pwd:') ? pwd : l)).join('\r\n');
    await pc.setRemoteDescription({ type: 'answer', sdp: renewed });
    const before = (await pc.getStats());
    let pairs = 0;
    before.forEach((s) => { if (s.type === 'transport') pairs = s.selectedCandidatePairChanges; });
    window.whip.etag = r.headers.get('ETag');
    return { stale: stale.status, status: r.status, type: r.headers.get('Content-Type'), etag: r.headers.get('ETag'), body, oldUfrag: line(answer, 'a=ice-ufrag:'), ufrag, pairs };
  });
  log('ICE restart', JSON.stringify(restart));
  if (restart.stale !== 412) throw new Error(`a stale If-Match got ${restart.stale}`);
  if (restart.status !== 200 || restart.type !== 'application/trickle-ice-sdpfrag') throw new Error(`restart PATCH: ${restart.status} ${restart.body}`);
  if (!restart.ufrag || restart.ufrag === restart.oldUfrag || restart.etag === created.etag) throw new Error('the restart did not renew the credentials and ETag');
  await until('the WHIP page reconnects after the restart', () => pub.evaluate(() => window.whip.pc.iceConnectionState === 'connected' || window.whip.pc.iceConnectionState === 'completed'), 20000);
  await flows(viewer, 'chromium-whip');
  log('after the ICE restart the viewer still decodes the WHIP page');

  const deleted = await pub.evaluate(async () => (await fetch(window.whip.resource, { method: 'DELETE', headers: window.whip.auth })).status);
  if (deleted !== 200) throw new Error(`DELETE answered ${deleted}`);
  await until('the viewer sees the WHIP page leave', () => left(viewer, first.id), 15000);
  const again = await pub.evaluate(async () => (await fetch(window.whip.resource, { method: 'DELETE', headers: window.whip.auth })).status);
  if (again !== 404) throw new Error(`a second DELETE answered ${again}`);
  log('DELETE: 200, the participant left; the resource is gone (404)');

  log('--- b. GStreamer webrtcbin');
  const gst = child('gst-whip', gstHost.ns, '/usr/bin/python3', [path.join(repo, 'tests', 'interop', 'gst_whip_client.py'), '--url', whipUrl, '--token', token('gstreamer')]);
  let gstFlow;
  try {
    gstFlow = await flows(viewer, 'gstreamer', 40000);
    await until('gstreamer trickled every candidate', () => gst.lines.some((l) => l.includes('"trickled"') && l.includes('"done": true')), 20000);
  } catch (err) {
    gst.dump();
    throw err;
  }
  const patches = gst.lines.filter((l) => l.includes('"trickled"')).map((l) => JSON.parse(l));
  if (!patches.every((p) => p.status === 204)) throw new Error(`trickle PATCHes: ${JSON.stringify(patches)}`);
  log(`viewer decodes GStreamer: ${gstFlow.frames} frames at ${gstFlow.width} px, ${gstFlow.audio} audio packets; ${patches.length} trickle PATCHes, all 204`);
  gst.proc.stdin.write('stop\n');
  await until('gstreamer deleted its session', () => gst.lines.some((l) => l.includes('"deleted"') && l.includes('200')), 15000);
  await until('the viewer sees GStreamer leave', () => left(viewer, gstFlow.id), 15000);

  log('--- c. aiortc');
  const aiortc = child('aiortc', aiortcHost.ns, path.join(VENV, 'bin', 'python'), [path.join(repo, 'tests', 'interop', 'whip_client.py'), '--url', whipUrl, '--token', token('aiortc')]);
  let aioFlow;
  try {
    aioFlow = await flows(viewer, 'aiortc', 40000);
  } catch (err) {
    aiortc.dump();
    throw err;
  }
  log(`viewer decodes aiortc: ${aioFlow.frames} frames at ${aioFlow.width} px, ${aioFlow.audio} audio packets`);
  aiortc.proc.stdin.write('stop\n');
  await until('aiortc deleted its session', () => aiortc.lines.some((l) => l.includes('"deleted"') && l.includes('200')), 15000);
  await until('the viewer sees aiortc leave', () => left(viewer, aioFlow.id), 15000);
  // A publisher that just dies (no DELETE): its media stops, ICE consent runs out, it leaves.
  const doomed = child('aiortc-killed', aiortcHost.ns, path.join(VENV, 'bin', 'python'), [path.join(repo, 'tests', 'interop', 'whip_client.py'), '--url', whipUrl, '--token', token('aiortc-killed')]);
  const doomedFlow = await flows(viewer, 'aiortc-killed', 40000).catch((err) => { doomed.dump(); throw err; });
  doomed.proc.kill('SIGKILL');
  const killedAt = Date.now();
  await until('the viewer sees the killed publisher leave', () => left(viewer, doomedFlow.id), 40000);
  log(`a killed WHIP publisher left after ${Date.now() - killedAt} ms (ICE consent)`);
  const sessions = await (await fetch(`${origin}/metrics`)).text();
  const open = Number((sessions.match(/^tern_whip_sessions (\d+)/m) || [])[1]);
  if (open !== 0) throw new Error(`${open} WHIP sessions still open`);
  log('PASS WHIP: a browser, GStreamer webrtcbin and aiortc publish; trickle, ICE restart and DELETE work');
} catch (err) {
  failed = true;
  log('FAIL whip:', err && err.stack ? err.stack : err);
  if (relay) log('relay output (tail):\n' + relay.output().split('\n').slice(-50).join('\n'));
} finally {
  for (const c of cleanups.reverse()) {
    try { await c(); } catch { /* already gone */ }
  }
}
process.exit(failed ? 1 : 0);
