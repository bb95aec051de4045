// Interop with two independent WebRTC stacks: Chromium (the bundled page), an aiortc client and
// a GStreamer webrtcbin client (tests/interop/, written from signaling/PROTOCOL.md alone) in one
// room through the relay binary. Each client runs in its own network namespace (libnice ignores
// loopback); the relay listens on the bridge address.
//  a. media both ways: every participant decodes every other's video and receives its audio;
//  b. aiortc leaves and joins again: Chromium sees it go and come back and decodes it again;
//  c. three publishers with three different Opus parameter sets (Chrome's, aiortc's, GStreamer's):
//     every audio still reaches everyone, and nobody gets any `error` (codec_not_receivable or other).
//
// Needs root, Debian's GStreamer packages and the aiortc venv (tests/interop/venv.sh); run.sh
// installs both. Run: node tests/browser/interop.mjs   (inside `unshare -n` in CI)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startRelay, launchBrowser, openParticipant, until, log, repo } from './lib.mjs';
import { createHosts, mintToken, RELAY_IP } from './netns.mjs';

const VENV = process.env.TERN_TEST_INTEROP_VENV || path.join(os.homedir(), '.cache', 'tern', 'interop-venv');
const ROOM = 'interop';
// Growth that proves a stream decodes (about 1 s of video at 30 fps and of 20 ms audio frames).
const VIDEO_FRAMES = 20;
const AUDIO_FRAMES = 50;
const FLOW_MS = 30000;
// Client events that fail the test: relay errors, the client's own failures, GStreamer errors.
const PROBLEMS = ['error', 'fatal', 'gst_error', 'unexpected_pong'];

const cleanups = [];
const started = []; // clients, for their stderr on failure
let relay;
let failed = false;

/**
 * A Python client as a child process in network namespace `ns`: its JSON lines are kept, the
 * last stats line gives what it decoded per participant; `command` writes to its stdin.
 */
function startClient(name, ns, python, script, url, token) {
  // TERN_TEST_INTEROP_ARGS_AIORTC / _GST: extra client options when debugging (e.g. --log-sdp).
  const extra = (process.env[`TERN_TEST_INTEROP_ARGS_${name.toUpperCase()}`] || '').split(' ').filter(Boolean);
  const args = ['netns', 'exec', ns, python, path.join(repo, 'tests', 'interop', script),
    // A ping a second, not every 10 s as PROTOCOL.md asks: the call is shorter than that.
    '--url', url, '--token', token, '--commands', '--ping-interval', '1', ...extra];
  const proc = spawn('ip', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const client = { name, proc, events: [], stats: null, stderr: [], exited: null };
  let buf = '';
  proc.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let event;
      try { event = JSON.parse(line); } catch { client.stderr.push(`(stdout) ${line}`); continue; }
      if (event.event === 'stats') { client.stats = event; continue; }
      client.events.push(event);
      if (event.event === 'sdp') log(`[${name}] ${event.direction} ${event.type}:\n${event.sdp}`);
      else if (event.event !== 'subscribe_answered') log(`[${name}]`, JSON.stringify(event));
    }
  });
  proc.stderr.on('data', (d) => { client.stderr.push(d.toString()); if (client.stderr.length > 200) client.stderr.shift(); });
  proc.on('exit', (code, signal) => { client.exited = { code, signal }; });
  proc.stdin.on('error', () => {}); // a client that died already: its exit is what gets reported
  client.command = (c) => proc.stdin.write(`${c}\n`);
  client.problems = () => client.events.filter((e) => PROBLEMS.includes(e.event));
  // Fails the waiting check at once (until() rethrows `fatal`) when the client died or reported
  // a problem: nothing after that would be meaningful.
  client.alive = () => {
    const problems = client.problems();
    if (client.exited || problems.length) {
      const err = new Error(`${name} ${client.exited ? `exited (${JSON.stringify(client.exited)})` : 'reported a problem'}: `
        + `${JSON.stringify(problems)} ${client.stderr.join('').slice(-3000)}`);
      err.fatal = true;
      throw err;
    }
  };
  client.quit = async () => {
    if (client.exited) return;
    client.command('quit');
    const done = new Promise((resolve) => proc.once('exit', resolve));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    await done;
    clearTimeout(timer);
  };
  cleanups.push(() => client.quit());
  started.push(client);
  return client;
}

/** What a client decoded from the participant with `identity`: { id, video, audio } or null. */
function clientRecv(client, identity) {
  client.alive();
  const recv = client.stats && client.stats.recv;
  if (!recv) return null;
  // The latest participant with that identity: one that left and joined again has a new id,
  // and the counts of its old id stay in the table.
  const [id, c] = Object.entries(recv).filter(([, v]) => v.identity === identity).pop() || [];
  return id ? { id, session: client.stats.session, video: c.video, audio: c.audio, width: c.width } : null;
}

/**
 * What the page decoded from each other participant, from its subscribe leg's inbound-rtp stats
 * matched to participants through the library's documented `participants` and `remoteTracks`.
 * Audio counts packets; `energy` (totalAudioEnergy) shows it decoded to something audible.
 */
async function pageRecv(page, identity) {
  const { all, errors } = await page.evaluate(async () => {
    const room = window.tern;
    const out = {};
    const errors = window.ternLog.filter((e) => e.type === 'error');
    if (!room || !room.subscribePc) return { all: out, errors };
    const inbound = [];
    (await room.subscribePc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') inbound.push(s); });
    for (const p of room.participants.values()) {
      const trackIds = new Set(p.tracks.map((t) => room.remoteTracks.get(t.id)).filter(Boolean).map((t) => t.id));
      const mine = inbound.filter((s) => trackIds.has(s.trackIdentifier));
      const sum = (kind, field) => mine.filter((s) => s.kind === kind).reduce((a, s) => a + (s[field] || 0), 0);
      out[p.identity] = {
        id: p.id,
        video: sum('video', 'framesDecoded'),
        audio: sum('audio', 'packetsReceived'),
        energy: sum('audio', 'totalAudioEnergy'),
        width: Math.max(0, ...mine.filter((s) => s.kind === 'video').map((s) => s.frameWidth || 0)),
      };
    }
    return { all: out, errors };
  });
  if (errors.length) {
    const err = new Error(`chrome got errors: ${JSON.stringify(errors)}`);
    err.fatal = true;
    throw err;
  }
  return all[identity] || null;
}

/**
 * Waits until `sample()` ({ id, video, audio, ... }) grows by a second's worth of video frames
 * and audio from the first time it is seen (for the same participant id `id`, if given).
 */
async function flows(what, sample, id = null) {
  let base = null;
  const start = Date.now();
  const last = await until(what, async () => {
    const now = await sample();
    if (!now || (id && now.id !== id)) return false;
    if (!base) base = now;
    const video = now.video - base.video;
    const audio = now.audio - base.audio;
    const audible = now.energy === undefined || now.energy > base.energy;
    return video >= VIDEO_FRAMES && audio >= AUDIO_FRAMES && audible && { ...now, dv: video, da: audio };
  }, FLOW_MS);
  log(`${what}: +${last.dv} video frames (${last.width} px wide), +${last.da} audio in ${Date.now() - start} ms`);
  return last;
}

/** Every directed flow among the participants: a. */
async function allFlows(page, clients) {
  const checks = [];
  for (const c of clients) {
    checks.push(flows(`chrome decodes ${c.name}`, () => { c.alive(); return pageRecv(page, c.name); }));
    checks.push(flows(`${c.name} decodes chrome`, () => clientRecv(c, 'chrome')));
    for (const other of clients) {
      if (other !== c) checks.push(flows(`${c.name} decodes ${other.name}`, () => clientRecv(c, other.name)));
    }
  }
  await Promise.all(checks);
}

/** The first event of `client` after index `from` that `match` accepts. */
function eventAfter(client, from, match) {
  client.alive();
  return client.events.slice(from).find(match);
}

function need(file, hint) {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: ${hint}`);
}

try {
  need(path.join(VENV, 'bin', 'python'), 'create the aiortc venv with tests/interop/venv.sh (tests/run.sh does)');
  need('/usr/lib/python3/dist-packages/gi', 'apt-get install python3-gi gir1.2-gst-plugins-bad-1.0 ... (tests/run.sh does)');
  const hosts = createHosts(2);
  cleanups.push(() => hosts.cleanup());
  const [gstHost, aiortcHost] = hosts.clients;
  const secret = 'interop-secret-0123456789abcdef0123456';
  relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', 'interop', '--api-secret', secret], '0.0.0.0');
  cleanups.push(() => relay.stop());
  const origin = `http://${RELAY_IP}:${relay.httpPort}`;
  const wsUrl = `ws://${RELAY_IP}:${relay.httpPort}/rtc`;
  const token = (identity) => mintToken({ kid: 'interop', secret, room: ROOM, identity });

  // Chromium first, so each later publisher brings Opus parameters the room has not seen.
  const browser = await launchBrowser(undefined, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
  cleanups.push(() => browser.close());
  const page = await openParticipant(browser, `${origin}/?room=${ROOM}&name=chrome&token=${token('chrome')}`, 'chrome');
  const aiortc = startClient('aiortc', aiortcHost.ns, path.join(VENV, 'bin', 'python'), 'aiortc_client.py', wsUrl, token('aiortc'));
  await until('aiortc published', () => eventAfter(aiortc, 0, (e) => e.event === 'published'), 30000);
  const gst = startClient('gst', gstHost.ns, '/usr/bin/python3', 'gst_client.py', wsUrl, token('gst'));
  const clients = [aiortc, gst];

  log('--- a. media both ways among chrome, aiortc and gst');
  await allFlows(page, clients);

  for (const c of clients) {
    await until(`${c.name} gets pongs`, () => { c.alive(); return c.stats && c.stats.pongs >= 2; }, 10000);
  }

  log('--- b. aiortc leaves and joins again');
  const first = await pageRecv(page, 'aiortc');
  let mark = aiortc.events.length;
  aiortc.command('leave');
  await until('aiortc left', () => eventAfter(aiortc, mark, (e) => e.event === 'left' && e.reason === 'left'), 15000);
  await until('chrome sees aiortc leave', () => page.evaluate((id) => window.ternLog.some((e) => e.type === 'participant_left' && e.participant_id === id)
    && !document.querySelector(`.tile[data-participant="${id}"]`), first.id), 15000);
  await until('gst sees aiortc leave', () => eventAfter(gst, 0, (e) => e.event === 'participant_left' && e.id === first.id), 15000);
  mark = aiortc.events.length;
  aiortc.command('join');
  const rejoined = await until('aiortc joined again', () => eventAfter(aiortc, mark, (e) => e.event === 'joined'), 15000);
  if (rejoined.me === first.id) throw new Error(`aiortc rejoined with its old participant id ${first.id}`);
  await until('chrome sees aiortc come back', () => page.evaluate((id) => !!document.querySelector(`.tile[data-participant="${id}"]`), rejoined.me), 15000);
  await Promise.all([
    flows('chrome decodes aiortc again', () => pageRecv(page, 'aiortc'), rejoined.me),
    flows('gst decodes aiortc again', () => clientRecv(gst, 'aiortc'), rejoined.me),
    flows('aiortc (rejoined) decodes chrome', async () => { const r = clientRecv(aiortc, 'chrome'); return r && r.session === 2 && r; }),
    flows('aiortc (rejoined) decodes gst', async () => { const r = clientRecv(aiortc, 'gst'); return r && r.session === 2 && r; }),
  ]);

  log('--- c. three different Opus parameter sets, no errors anywhere');
  const pageOpus = await page.evaluate(() => {
    const sdp = window.tern.publishPc.localDescription.sdp.split('\r\n');
    const rtpmap = sdp.find((l) => /^a=rtpmap:\d+ opus\//i.test(l)) || '';
    const pt = rtpmap.slice('a=rtpmap:'.length).split(' ')[0];
    const fmtp = (sdp.find((l) => l.startsWith(`a=fmtp:${pt} `)) || '').split(' ').slice(1).join(' ');
    return `${rtpmap.slice('a=rtpmap:'.length)} ${fmtp}`.trim();
  });
  const opus = { chrome: pageOpus };
  for (const c of clients) opus[c.name] = c.events.filter((e) => e.event === 'published').map((e) => e.opus).pop();
  log('Opus offered by each publisher:', JSON.stringify(opus));
  const fmtps = Object.values(opus).map((o) => o.split(' ').slice(1).join(' '));
  if (new Set(fmtps).size !== fmtps.length) throw new Error(`the publishers' Opus parameters do not all differ: ${JSON.stringify(opus)}`);
  const pageErrors = await page.evaluate(() => window.ternLog.filter((e) => e.type === 'error'));
  const errors = [...pageErrors.map((e) => ({ who: 'chrome', ...e })),
    ...clients.flatMap((c) => c.problems().map((e) => ({ who: c.name, ...e })))];
  if (errors.length) throw new Error(`errors during the call: ${JSON.stringify(errors)}`);
  log('PASS interop');
} catch (err) {
  failed = true;
  log('FAIL interop:', err && err.stack ? err.stack : err);
  for (const c of started) {
    log(`--- ${c.name}: last stats ${JSON.stringify(c.stats)}`);
    log(`--- ${c.name} stderr (tail)\n${c.stderr.join('').slice(-4000)}`);
  }
  if (relay) {
    log(`--- relay log (tail)\n${relay.output().slice(-8000)}`);
    try {
      const metrics = await (await fetch(`${relay.base}/metrics`)).text();
      log(`--- relay counters\n${metrics.split('\n').filter((l) => /^tern_(packets_dropped|rtcp_feedback|keyframe|nacks|retransmissions|rtp_packets|leg_failures)/.test(l) && !/ 0$/.test(l)).join('\n')}`);
    } catch (e) { log('metrics unavailable', e.message); }
  }
} finally {
  for (const c of cleanups.reverse()) {
    try { await c(); } catch (err) { log('cleanup:', err.message); }
  }
}
process.exit(failed ? 1 : 0);
