// A Chromium participant with several local addresses (three IPv4 networks and IPv6, as a laptop
// with Wi-Fi, Ethernet and a VPN has) stays in a call for over a minute while media flows both
// ways; midway the path its legs use goes away, the browser moves to another candidate pair, and
// the relay follows it (renomination) instead of failing the participant.
//
// Run as root (network namespaces, nftables): node tests/browser/multihome.mjs

import { startRelay, launchBrowser, openParticipant, until, inbound, metric, log } from './lib.mjs';
import { createMultihomedHost, blockAddress, mintToken } from './netns.mjs';

const CALL_MS = 65000;
const cleanups = [];
let failed = false;

const selected = async (page) => (await inbound(page)).stats.transports.map((t) => t.localAddress);

/** Video frames and audio packets keep arriving at `page` (checked over a short window). */
async function flowing(page, name) {
  const before = await inbound(page);
  await until(`${name} keeps decoding`, async () => {
    const now = await inbound(page);
    return now.framesDecoded - before.framesDecoded >= 20 && now.audioPackets - before.audioPackets >= 50;
  }, 10000);
}

try {
  const hosts = createMultihomedHost(3);
  cleanups.push(() => hosts.cleanup());
  const { client } = hosts;
  log(`alice's addresses: ${client.v4.join(', ')}, ${client.v6}`);
  const secret = 'multihome-secret-0123456789abcdef01234';
  const relay = await startRelay(['--advertise-ip', '10.77.0.1', '--advertise-ip', 'fd00:77::1',
    '--api-key', 'mh', '--api-secret', secret], '[::]');
  cleanups.push(() => relay.stop());
  const origin = `http://10.77.0.1:${relay.httpPort}`;
  const flags = [`--unsafely-treat-insecure-origin-as-secure=${origin}`];
  const aliceBrowser = await launchBrowser(client.wrapper, flags);
  cleanups.push(() => aliceBrowser.close());
  const bobBrowser = await launchBrowser(undefined, flags);
  cleanups.push(() => bobBrowser.close());
  const url = (name) => `${origin}/?room=multi&name=${name}&token=${mintToken({ kid: 'mh', secret, room: 'multi', identity: name })}`;
  const alice = await openParticipant(aliceBrowser, url('alice'), 'alice');
  const joinedAt = Date.now();
  const bob = await openParticipant(bobBrowser, url('bob'), 'bob');
  await flowing(alice, 'alice');
  await flowing(bob, 'bob');
  const first = await selected(alice);
  log(`alice's legs first use ${first.join(', ')}`);

  // Half a minute on the first pair: the browser may move between pairs by itself here (the
  // original failure: the relay judged consent on a pair the browser had left).
  while (Date.now() - joinedAt < 30000) {
    await flowing(alice, 'alice');
    await flowing(bob, 'bob');
  }
  const gone = (await selected(alice))[0];
  blockAddress(client, gone);
  log(`UDP to and from ${gone} dropped in alice's namespace`);
  const moved = await until('alice moves off the dead path', async () => {
    const now = await selected(alice);
    return now.every((a) => a && a !== gone) && now;
  }, 30000, 500);
  log(`alice's legs now use ${moved.join(', ')}`);
  while (Date.now() - joinedAt < CALL_MS) {
    await flowing(alice, 'alice');
    await flowing(bob, 'bob');
  }
  const left = await bob.evaluate(() => window.ternLog.some((e) => e.type === 'participant_left'));
  if (left) throw new Error('bob saw alice leave');
  const failures = ['ice', 'dtls'].map((s) => `tern_leg_failures_total{stage="${s}"}`);
  for (const series of failures) {
    const value = await metric(relay.base, series);
    if (value !== 0) throw new Error(`${series} = ${value}`);
  }
  const stats = await inbound(alice);
  log(`alice in the call for ${((Date.now() - joinedAt) / 1000).toFixed(0)} s, pair changes ${stats.stats.transports.map((t) => `${t.leg}:${t.pairChanges}`).join(', ')}`);
  log('PASS multihome');
} catch (err) {
  failed = true;
  log('FAIL multihome:', err && err.stack ? err.stack : err);
} finally {
  for (const c of cleanups.reverse()) {
    try { await c(); } catch (err) { log('cleanup:', err.message); }
  }
}
process.exit(failed ? 1 : 0);
