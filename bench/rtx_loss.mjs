// Publish-leg RTX against retransmission on the media SSRC, under random loss on the publisher's
// uplink. A measurement, not a test: it prints a markdown table and passes no judgement.
//
// Per run: a relay with `--media-publish-rtx true|false`; Chromium alice (fake 1280x720 camera,
// the bundled page, so three simulcast layers q/h/f) in a network namespace whose packets to the
// relay lose LOSS_PERCENT % at random (nftables `numgen random`, in the relay's namespace: only
// alice -> relay, nothing else); Chromium bob, a listener on loopback (unlimited), who receives
// layer f. Warm up (loss already on) until bob decodes 1280 px, then measure MEASURE_S seconds:
// bob's inbound video, alice's outbound video per rid and the relay's /metrics, as deltas.
// The two settings alternate (on, off, on, off, ...).
//
// Run as root from the repository: node bench/rtx_loss.mjs
// Environment: RTX_RUNS=2 (runs per setting), RTX_MEASURE_S=30, RTX_LOSS=3 (percent),
// RTX_WARMUP_S=45 (cap; a run that does not reach 1280 px measures anyway and says so),
// TERN_TEST_BIN (relay binary, default target/debug/tern), CHROMIUM.

import { execFileSync } from 'node:child_process';
import { startRelay, launchBrowser, openParticipant, until, log } from '../tests/browser/lib.mjs';
import { createHosts, mintToken, RELAY_IP } from '../tests/browser/netns.mjs';

const RUNS = Number(process.env.RTX_RUNS || 2);
const MEASURE_S = Number(process.env.RTX_MEASURE_S || 30);
const LOSS_PERCENT = Number(process.env.RTX_LOSS || 3);
const WARMUP_S = Number(process.env.RTX_WARMUP_S || 45);
const FULL = 1280;
const kid = 'rtx';
const secret = 'rtx-loss-bench-secret-0123456789abcdef';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nft = (...args) => execFileSync('nft', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

const RELAY_SERIES = {
  relayNacks: 'tern_nacks_sent_total',
  relayRtx: 'tern_retransmissions_sent_total',
  relayDup: 'tern_packets_dropped_total{reason="duplicate"}',
  relayPadding: 'tern_packets_dropped_total{reason="padding"}',
  relayPli: 'tern_keyframe_requests_sent_total',
};

async function relayCounters(base) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out = {};
  for (const [key, series] of Object.entries(RELAY_SERIES)) {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    out[key] = line ? Number(line.split(' ').pop()) : 0; // a labelled series not yet touched is absent
  }
  return out;
}

/** The loss: a table in this (the relay's) namespace, counting what alice sends and dropping some. */
function lossTable(address, table) {
  nft('add', 'table', 'inet', table);
  nft('add', 'chain', 'inet', table, 'inp', '{ type filter hook input priority 0; }');
  nft('add', 'rule', 'inet', table, 'inp', 'ip', 'saddr', address, 'meta', 'l4proto', 'udp', 'counter');
  nft('add', 'rule', 'inet', table, 'inp', 'ip', 'saddr', address, 'meta', 'l4proto', 'udp',
    'numgen', 'random', 'mod', '100', '<', String(LOSS_PERCENT), 'counter', 'drop');
  return {
    counters: () => {
      const rules = JSON.parse(nft('-j', 'list', 'chain', 'inet', table, 'inp')).nftables.filter((x) => x.rule);
      const packets = (rule) => (rule.rule.expr.find((e) => e.counter) || { counter: { packets: 0 } }).counter.packets;
      return { seen: packets(rules[0]), dropped: packets(rules[1]) };
    },
    remove: () => nft('delete', 'table', 'inet', table),
  };
}

/** Bob's one inbound video stream (alice's camera). */
function bobVideo(page) {
  return page.evaluate(async () => {
    const report = await window.tern.subscribePc.getStats();
    const video = [];
    report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') video.push(s); });
    if (video.length !== 1) return null;
    const [s] = video;
    return {
      at: Date.now(),
      framesDecoded: s.framesDecoded || 0,
      framesDropped: s.framesDropped || 0,
      keyFramesDecoded: s.keyFramesDecoded || 0,
      freezeCount: s.freezeCount || 0,
      freezesS: s.totalFreezesDuration || 0,
      packetsReceived: s.packetsReceived || 0,
      packetsLost: s.packetsLost || 0,
      nackCount: s.nackCount || 0,
      pliCount: s.pliCount || 0,
      frameWidth: s.frameWidth || 0,
    };
  });
}

/** Alice's outbound video by rid. */
function aliceVideo(page) {
  return page.evaluate(async () => {
    const report = await window.tern.publishPc.getStats();
    const out = {};
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      out[s.rid || '-'] = {
        packetsSent: s.packetsSent || 0,
        retransmitted: s.retransmittedPacketsSent || 0,
        nackCount: s.nackCount || 0,
        pliCount: s.pliCount || 0,
        frameWidth: s.frameWidth || 0,
        limited: s.qualityLimitationReason,
        targetKbps: Math.round((s.targetBitrate || 0) / 1000),
      };
    });
    return out;
  });
}

const minus = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k] - b[k]]));

async function run(hosts, rtx, index) {
  const label = `RTX ${rtx ? 'on' : 'off'} #${index}`;
  log(`--- ${label}`);
  const cleanups = [];
  try {
    const relay = await startRelay(['--advertise-ip', RELAY_IP, '--api-key', kid, '--api-secret', secret,
      '--media-publish-rtx', String(rtx)], '0.0.0.0');
    cleanups.push(() => relay.stop());
    const room = `rtx-${rtx ? 'on' : 'off'}-${index}`;
    const origin = `http://${RELAY_IP}:${relay.httpPort}`;
    const url = (host, name) => `http://${host}:${relay.httpPort}/?room=${room}&name=${name}&adaptive=0&token=${mintToken({ kid, secret, room, identity: name })}`;
    const aliceBrowser = await launchBrowser(hosts.clients[0].wrapper, [`--unsafely-treat-insecure-origin-as-secure=${origin}`]);
    cleanups.push(() => aliceBrowser.close());
    const bobBrowser = await launchBrowser();
    cleanups.push(() => bobBrowser.close());

    const started = Date.now();
    const alice = await openParticipant(aliceBrowser, url(RELAY_IP, 'alice'), 'alice');
    const bob = await openParticipant(bobBrowser, url('127.0.0.1', 'bob'), 'bob', { listener: true });
    // Packets already dropped (alice's joining) are not part of the measurement: counters are deltas.
    let warmed = true;
    try {
      await until('bob decodes 1280 px', async () => {
        const s = await bobVideo(bob);
        return s && s.frameWidth === FULL && s.framesDecoded > 0;
      }, WARMUP_S * 1000 - (Date.now() - started), 250);
    } catch (err) {
      warmed = false;
      log(`${label}: ${err.message}; measuring anyway`);
    }
    const warmupS = (Date.now() - started) / 1000;
    // That the flag took: RTX in the relay's publish answer. (Not outbound-rtp's rtxSsrc: Chromium
    // reports the RTX SSRCs it offered even when the answer left RTX out.)
    const answerRtx = await alice.evaluate(() => /a=rtpmap:\d+ rtx\//.test(window.tern.publishPc.remoteDescription.sdp));
    log(`${label}: warm-up ${warmupS.toFixed(1)} s${warmed ? '' : ' (1280 px not reached)'}; alice sends ${JSON.stringify(await aliceVideo(alice))}`);

    const b0 = await until('bob receives video', () => bobVideo(bob), 10000);
    const a0 = await aliceVideo(alice);
    const r0 = await relayCounters(relay.base);
    const n0 = hosts.loss.counters();
    const widths = [];
    const perSecond = [];
    let previous = b0;
    const end = b0.at + MEASURE_S * 1000;
    while (Date.now() < end) {
      await sleep(Math.min(1000, Math.max(0, end - Date.now())));
      const now = await bobVideo(bob);
      widths.push(now.frameWidth);
      perSecond.push(now.framesDecoded - previous.framesDecoded);
      previous = now;
    }
    const b1 = previous;
    const a1 = await aliceVideo(alice);
    const r1 = await relayCounters(relay.base);
    const n1 = hosts.loss.counters();
    const seconds = (b1.at - b0.at) / 1000;
    const bobDelta = minus(
      Object.fromEntries(Object.entries(b1).filter(([k]) => k !== 'frameWidth')),
      Object.fromEntries(Object.entries(b0).filter(([k]) => k !== 'frameWidth')));
    const rids = Object.keys(a1).sort();
    const alicePer = Object.fromEntries(rids.map((rid) => [rid, {
      retransmitted: a1[rid].retransmitted - (a0[rid]?.retransmitted || 0),
      nackCount: a1[rid].nackCount - (a0[rid]?.nackCount || 0),
      packetsSent: a1[rid].packetsSent - (a0[rid]?.packetsSent || 0),
      pliCount: a1[rid].pliCount - (a0[rid]?.pliCount || 0),
      frameWidth: a1[rid].frameWidth,
      limited: a1[rid].limited,
      targetKbps: a1[rid].targetKbps,
    }]));
    const result = {
      label, rtx, warmed, warmupS, seconds, answerRtx,
      bob: { ...bobDelta, frameWidth: b1.frameWidth, minWidth: Math.min(...widths), fullSeconds: widths.filter((w) => w === FULL).length, worstSecond: Math.min(...perSecond) },
      alice: alicePer,
      relay: minus(r1, r0),
      loss: { seen: n1.seen - n0.seen, dropped: n1.dropped - n0.dropped },
    };
    log(`${label}: ${JSON.stringify(result)}`);
    log(`${label}: bob frames per second ${perSecond.join(' ')}`);
    return result;
  } finally {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch (err) { log('cleanup:', err.message); }
    }
  }
}

function table(results) {
  const rids = ['q', 'h', 'f'];
  const fmt = (x, digits = 0) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : String(x));
  const rows = [
    ['RTX in the publish answer', (r) => (r.answerRtx ? 'yes' : 'no')],
    ['warm-up to 1280 px (s)', (r) => `${fmt(r.warmupS, 1)}${r.warmed ? '' : ' (not reached)'}`],
    ['measured (s)', (r) => fmt(r.seconds, 1)],
    ['uplink loss realised (alice -> relay)', (r) => `${r.loss.dropped}/${r.loss.seen} (${fmt(100 * r.loss.dropped / r.loss.seen, 2)} %)`],
    ['**bob** framesDecoded', (r) => `${r.bob.framesDecoded} (${fmt(r.bob.framesDecoded / r.seconds, 1)} fps)`],
    ['bob freezeCount', (r) => fmt(r.bob.freezeCount)],
    ['bob totalFreezesDuration (s)', (r) => fmt(r.bob.freezesS, 2)],
    ['bob packetsLost', (r) => fmt(r.bob.packetsLost)],
    ['bob nackCount', (r) => fmt(r.bob.nackCount)],
    ['bob pliCount', (r) => fmt(r.bob.pliCount)],
    ['bob keyFramesDecoded', (r) => fmt(r.bob.keyFramesDecoded)],
    ['bob framesDropped', (r) => fmt(r.bob.framesDropped)],
    ['bob frameWidth at end / min (s at 1280)', (r) => `${r.bob.frameWidth} / ${r.bob.minWidth} (${r.bob.fullSeconds})`],
    ['bob worst second (frames)', (r) => fmt(r.bob.worstSecond)],
    ['**alice** retransmittedPacketsSent q/h/f', (r) => rids.map((x) => r.alice[x]?.retransmitted ?? '-').join(' / ')],
    ['alice nackCount q/h/f', (r) => rids.map((x) => r.alice[x]?.nackCount ?? '-').join(' / ')],
    ['alice packetsSent q/h/f', (r) => rids.map((x) => r.alice[x]?.packetsSent ?? '-').join(' / ')],
    ['alice pliCount q/h/f', (r) => rids.map((x) => r.alice[x]?.pliCount ?? '-').join(' / ')],
    ['alice f at end (px, target kbit/s, limited by)', (r) => (r.alice.f ? `${r.alice.f.frameWidth}, ${r.alice.f.targetKbps}, ${r.alice.f.limited}` : '-')],
    ['**relay** tern_nacks_sent_total', (r) => fmt(r.relay.relayNacks)],
    ['relay tern_retransmissions_sent_total', (r) => fmt(r.relay.relayRtx)],
    ['relay dropped{reason="duplicate"}', (r) => fmt(r.relay.relayDup)],
    ['relay dropped{reason="padding"}', (r) => fmt(r.relay.relayPadding)],
    ['relay tern_keyframe_requests_sent_total', (r) => fmt(r.relay.relayPli)],
  ];
  const lines = [
    `| ${['', ...results.map((r) => r.label)].join(' | ')} |`,
    `|${['---', ...results.map(() => '---:')].join('|')}|`,
    ...rows.map(([name, f]) => `| ${[name, ...results.map(f)].join(' | ')} |`),
  ];
  return lines.join('\n');
}

const results = [];
const hosts = createHosts(1);
let failed = false;
try {
  hosts.loss = lossTable(hosts.clients[0].address, `ternrtx${hosts.tag}`);
  log(`${LOSS_PERCENT} % random loss on UDP from alice (${hosts.clients[0].address}) to the relay; ${RUNS} runs per setting, ${MEASURE_S} s each`);
  for (let i = 1; i <= RUNS; i++) {
    for (const rtx of [true, false]) {
      try {
        results.push(await run(hosts, rtx, i));
      } catch (err) {
        failed = true;
        log(`RTX ${rtx ? 'on' : 'off'} #${i} failed:`, err && err.stack ? err.stack : err);
      }
    }
  }
} finally {
  try { hosts.loss?.remove(); } catch {}
  hosts.cleanup();
}
if (results.length) {
  console.log(`\n${LOSS_PERCENT} % random loss on the publisher's uplink, ${MEASURE_S} s per run (deltas over the window)\n`);
  console.log(table(results));
}
process.exit(failed ? 1 : 0);
