// E2eeSession: simulated calls over an in-memory relay (joins, leaves, passphrases, a tampering
// relay) and hostile messages. Run with `node --test tests/e2ee/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { E2eeSession, FrameCrypto } from '../../signaling/web/e2ee.js';
import { Relay, opus, vp8Delta, vp8Key, waitFor } from './helpers.mjs';

async function call(ids, options = {}, perSession = {}) {
  const relay = new Relay(options);
  for (const id of ids) await relay.join(id, perSession[id]);
  await relay.idle();
  return relay;
}

/** Every session decrypts a fresh frame of every other; returns the failures. */
async function crossDecrypt(relay, ids = [...relay.sessions.keys()]) {
  const failures = [];
  for (const from of ids) {
    const frame = vp8Key(300, from.length);
    const enc = await relay.sessions.get(from).encrypt('video/VP8', frame);
    for (const to of ids) {
      if (to === from) continue;
      const out = await relay.sessions.get(to).decrypt(from, 'vp8', enc);
      if (!out.ok) failures.push(`${to} <- ${from}: ${out.reason}`);
      else assert.deepEqual(out.frame, frame);
    }
  }
  return failures;
}

const codes = (relay) => [...relay.sessions.values()].map((s) => s.safetyCode());

test('four participants decrypt each other and see the same safety code', async () => {
  const relay = await call(['alice', 'bob', 'carol', 'dave']);
  assert.deepEqual(await crossDecrypt(relay), []);
  const [code, ...others] = codes(relay);
  assert.match(code, /^(\S+ ){7}\S+$/);
  for (const c of others) assert.equal(c, code);
  for (const s of relay.sessions.values()) {
    assert.equal(s.peers.length, 3);
    for (const id of s.peers) assert.equal(s.state(id), 'encrypted');
    assert.equal(s.counters.refused, 0);
    assert.equal(s.counters.encrypted, 1);
    assert.equal(s.counters.decrypted, 3);
  }
  // A join changes the code, for everyone alike.
  await relay.join('erin');
  await relay.idle();
  const after = codes(relay);
  assert.notEqual(after[0], code);
  assert.equal(new Set(after).size, 1);
  assert.deepEqual(await crossDecrypt(relay), []);
  relay.close();
});

test('a late joiner reads frames sent after its join, not before', async () => {
  const relay = await call(['alice', 'bob', 'carol']);
  const alice = relay.sessions.get('alice');
  const before = await alice.encrypt('opus', opus(80));
  assert.equal((await relay.sessions.get('bob').decrypt('alice', 'opus', before)).ok, true);
  assert.equal(alice.keyId, 0);

  const dave = await relay.join('dave');
  await relay.idle();
  // Alice's key had encrypted a frame: she ratcheted once. Bob's had not: no need.
  assert.equal(alice.keyId, 1);
  assert.equal(relay.sessions.get('bob').keyId, 0);
  const after = await alice.encrypt('opus', opus(80));
  for (const id of ['bob', 'carol', 'dave']) {
    const out = await relay.sessions.get(id).decrypt('alice', 'audio/opus', after);
    assert.equal(out.ok, true, `${id}: ${out.reason}`);
    assert.deepEqual(out.frame, opus(80));
  }
  const old = await dave.decrypt('alice', 'opus', before);
  assert.deepEqual(old, { ok: false, reason: 'cannot_decrypt' });
  assert.deepEqual(await crossDecrypt(relay), []);

  // crossDecrypt used key 1: erin's join costs a step; frank's, with no frame between, none.
  await relay.join('erin');
  await relay.join('frank');
  await relay.idle();
  assert.equal(alice.keyId, 2);
  // participantJoined is idempotent.
  await alice.encrypt('opus', opus(10));
  await alice.participantJoined('frank');
  assert.equal(alice.keyId, 2);
  relay.close();
});

test('after a leave the others rotate to keys the leaver cannot read', async () => {
  const relay = await call(['alice', 'bob', 'carol', 'dave']);
  const dave = relay.sessions.get('dave');
  const changed = [];
  for (const s of relay.sessions.values()) s.onKeyChanged = (kid) => changed.push(`${s.selfId}:${kid}`);
  assert.deepEqual(await crossDecrypt(relay), []);

  await relay.leave('dave');
  await relay.idle();
  const rest = [...relay.sessions.values()];
  for (const s of rest) assert.equal(s.pendingKeyId, 256);
  await waitFor(() => rest.every((s) => s.keyId === 256), 'the switch to the new keys');
  assert.deepEqual(changed.sort(), ['alice:256', 'bob:256', 'carol:256']);
  assert.deepEqual(await crossDecrypt(relay), []);
  for (const s of rest) {
    assert.equal(s.peers.length, 2);
    const frame = await s.encrypt('vp8', vp8Delta(100));
    assert.deepEqual(await dave.decrypt(s.selfId, 'vp8', frame), { ok: false, reason: 'waiting_for_key' });
  }
  assert.equal(new Set(codes(relay)).size, 1);
  assert.notEqual(codes(relay)[0], dave.safetyCode());
  // A second leave notice for the same participant changes nothing.
  await relay.sessions.get('alice').participantLeft('dave');
  assert.equal(relay.sessions.get('alice').pendingKeyId, null);
  relay.close();
  dave.close();
});

test('a wrong passphrase: announcements refused both ways, nothing decrypted', async () => {
  const relay = await call(['alice', 'bob', 'carol'], { passphrase: 'correct horse' },
    { carol: { passphrase: 'battery staple' } });
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((id) => relay.sessions.get(id));
  assert.deepEqual(await crossDecrypt(relay, ['alice', 'bob']), []);
  assert.equal(alice.safetyCode(), bob.safetyCode());
  assert.notEqual(carol.safetyCode(), alice.safetyCode());
  assert.deepEqual(alice.peers, ['bob']);
  assert.deepEqual(carol.peers, []);
  assert.ok(relay.refused('alice', 'bad_mac').some((e) => e.from === 'carol'));
  assert.deepEqual(new Set(relay.refused('carol', 'bad_mac').map((e) => e.from)), new Set(['alice', 'bob']));

  const fromAlice = await alice.encrypt('vp8', vp8Key(100));
  const fromCarol = await carol.encrypt('vp8', vp8Key(100));
  for (const [who, from, frame] of [[carol, 'alice', fromAlice], [alice, 'carol', fromCarol], [bob, 'carol', fromCarol]]) {
    const out = await who.decrypt(from, 'vp8', frame);
    assert.equal(out.ok, false);
    assert.ok(['waiting_for_key', 'cannot_decrypt'].includes(out.reason));
    assert.equal(out.frame, undefined);
  }
  assert.equal(carol.counters.decrypted, 0);
  // No passphrase at all against a room with one: refused for the missing mac.
  const dave = await relay.join('dave', { passphrase: '' });
  await relay.idle();
  assert.ok(relay.refused('alice', 'missing_mac').some((e) => e.from === 'dave'));
  assert.equal((await alice.decrypt('dave', 'vp8', await dave.encrypt('vp8', vp8Key(50)))).ok, false);
  relay.close();
});

async function attackerKeys() {
  const b64 = (buf) => Buffer.from(buf).toString('base64');
  const p = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
  const x = await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
  return {
    p256: b64(await crypto.subtle.exportKey('raw', p.publicKey)),
    x25519: b64(await crypto.subtle.exportKey('raw', x.publicKey)),
  };
}

// A relay that gives alice its own keys in place of bob's.
function swapBobsKeysForAlice(relay, keys) {
  relay.tamper = (m) => {
    const msg = JSON.parse(m.data);
    if (m.from !== 'bob' || m.to !== 'alice' || msg.t !== 'announce') return m.data;
    return JSON.stringify({ ...msg, ...keys });
  };
}

test('a relay substituting a public key: refused with a passphrase', async () => {
  const relay = new Relay({ passphrase: 'correct horse' });
  swapBobsKeysForAlice(relay, await attackerKeys());
  for (const id of ['alice', 'bob', 'carol']) await relay.join(id);
  await relay.idle();
  const [alice, bob] = ['alice', 'bob'].map((id) => relay.sessions.get(id));
  assert.ok(relay.refused('alice', 'bad_mac').some((e) => e.from === 'bob'));
  assert.deepEqual(alice.peers, ['carol']);
  const out = await alice.decrypt('bob', 'vp8', await bob.encrypt('vp8', vp8Key(100)));
  assert.deepEqual(out, { ok: false, reason: 'waiting_for_key' });
  assert.deepEqual(await crossDecrypt(relay, ['alice', 'carol']), []);
  relay.close();
});

test('a relay substituting a public key: without a passphrase the safety codes differ', async () => {
  const relay = new Relay();
  swapBobsKeysForAlice(relay, await attackerKeys());
  for (const id of ['alice', 'bob', 'carol']) await relay.join(id);
  await relay.idle();
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((id) => relay.sessions.get(id));
  assert.deepEqual(alice.peers.sort(), ['bob', 'carol']);
  assert.equal(bob.safetyCode(), carol.safetyCode());
  assert.notEqual(alice.safetyCode(), bob.safetyCode());
  // Nor do their wrapped keys open on the other side: the relay holds the substituted key.
  assert.ok(relay.refused('bob', 'bad_key').some((e) => e.from === 'alice'));
  assert.ok(relay.refused('alice', 'bad_key').some((e) => e.from === 'bob'));
  relay.close();
});

test('P-256 between a participant without X25519 and one with it', async () => {
  const relay = await call(['alice', 'bob', 'carol'], {}, { alice: { x25519: false } });
  const announce = (id) => JSON.parse(relay.log.find((m) => m.from === id && JSON.parse(m.data).t === 'announce').data);
  assert.equal(announce('alice').x25519, undefined);
  assert.equal(typeof announce('bob').x25519, 'string');
  assert.deepEqual(await crossDecrypt(relay), []);
  assert.equal(new Set(codes(relay)).size, 1);
  relay.close();
});

test('messages are paced, and a rotation switches only after its keys went out', async () => {
  const ids = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'];
  const relay = await call(ids, { switchDelayMs: 30 }, { alice: { rate: { perSecond: 50, burst: 2 } } });
  const alice = relay.sessions.get('alice');
  await waitFor(() => ids.slice(1).every((id) => relay.sessions.get(id).peers.includes('alice') &&
    relay.events.get(id).some((e) => e.type === 'key' && e.from === 'alice')), 'alice\'s paced keys');
  let switchedAt = 0;
  alice.onKeyChanged = () => { switchedAt = Date.now(); };
  const start = relay.log.length;
  await relay.leave('frank');
  await waitFor(() => switchedAt > 0, 'alice\'s switch');
  const keys = relay.log.slice(start).filter((m) => m.from === 'alice' && JSON.parse(m.data).t === 'key');
  assert.equal(keys.length, 4);
  // Two at once (the burst), then one per 20 ms.
  assert.ok(keys[3].at - keys[0].at >= 30, `spread ${keys[3].at - keys[0].at} ms`);
  assert.ok(switchedAt - keys[3].at >= 25, `switched ${switchedAt - keys[3].at} ms after the last key`);
  await relay.idle();
  await waitFor(() => [...relay.sessions.values()].every((s) => s.keyId === 256), 'every switch');
  assert.deepEqual(await crossDecrypt(relay), []);
  relay.close();
});

test('hostile messages are refused, counted and reported, never thrown', async () => {
  const relay = await call(['alice', 'bob', 'carol']);
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((id) => relay.sessions.get(id));
  const keyMsg = relay.log.find((m) => m.from === 'alice' && m.to === 'bob' && JSON.parse(m.data).t === 'key');
  const key = JSON.parse(keyMsg.data);
  const b64 = (bytes) => Buffer.from(bytes).toString('base64');
  const flipped = Buffer.from(key.wrapped, 'base64');
  flipped[5] ^= 0x10;
  const p256 = new Uint8Array(65);
  p256[0] = 4;
  const realAnnounce = JSON.parse(relay.log.find((m) => m.from === 'carol' && m.to === undefined).data);
  const cases = [
    ['alice', 'not json', 'malformed'],
    ['alice', '{"v":1,"t":"key"', 'malformed'],
    ['alice', 'null', 'malformed'],
    ['alice', '[1,2,3]', 'malformed'],
    ['alice', '42', 'malformed'],
    ['alice', 42, 'malformed'],
    ['alice', undefined, 'malformed'],
    ['alice', 'x'.repeat(5000), 'oversized'],
    ['alice', JSON.stringify({ v: 1, t: 'announce', p256: 'A'.repeat(4000) }), 'bad_public_key'],
    ['alice', '{"v":2,"t":"announce"}', 'unsupported_version'],
    ['alice', '{"v":"1","t":"announce"}', 'unsupported_version'],
    ['alice', '{"t":"key"}', 'unsupported_version'],
    ['alice', '{"v":1,"t":"hello"}', 'unknown_type'],
    ['alice', '{"v":1}', 'unknown_type'],
    [undefined, keyMsg.data, 'bad_sender'],
    ['', keyMsg.data, 'bad_sender'],
    ['ali\nce', keyMsg.data, 'bad_sender'],
    ['a'.repeat(300), keyMsg.data, 'bad_sender'],
    [{}, keyMsg.data, 'bad_sender'],
    ['bob', keyMsg.data, 'self'],
    ['alice', JSON.stringify({ v: 1, t: 'announce', p256: '!!!' }), 'bad_public_key'],
    ['alice', JSON.stringify({ v: 1, t: 'announce' }), 'bad_public_key'],
    ['alice', JSON.stringify({ v: 1, t: 'announce', p256: b64(p256) }), 'bad_public_key'],
    ['alice', JSON.stringify({ ...realAnnounce, x25519: b64(new Uint8Array(32)) }), 'bad_public_key'],
    ['alice', JSON.stringify({ ...realAnnounce, x25519: 42 }), 'bad_public_key'],
    // Non-canonical base64 of the same key: one key, one spelling.
    ['alice', JSON.stringify({ ...realAnnounce, p256: realAnnounce.p256.slice(0, -2) + 'B=' }), 'bad_public_key'],
    ['alice', JSON.stringify({ ...key, to: 'carol' }), 'not_for_me'],
    ['alice', JSON.stringify({ ...key, to: 42 }), 'malformed'],
    ['alice', JSON.stringify({ ...key, iv: key.iv.slice(4) }), 'malformed'],
    ['alice', JSON.stringify({ ...key, wrapped: 'AAAA' }), 'malformed'],
    ['alice', keyMsg.data, 'replayed'],
    ['alice', JSON.stringify({ ...key, wrapped: b64(flipped) }), 'replayed'],
    ['alice', JSON.stringify({ ...key, iv: b64(crypto.getRandomValues(new Uint8Array(12))), wrapped: b64(flipped) }), 'bad_key'],
    ['alice', JSON.stringify({ ...key, iv: b64(new Uint8Array(12)) }), 'bad_key'],
    // Alice's key passed off as carol's: the wrapping (pairwise key, AAD) does not match.
    ['carol', keyMsg.data, 'bad_key'],
    ['mallory', keyMsg.data, 'unknown_peer'],
  ];
  const counts = {};
  for (const [from, data, reason] of cases) {
    const before = relay.refused('bob').length;
    assert.equal(await bob.receive(from, data), false, `${reason}: ${String(data).slice(0, 60)}`);
    const got = relay.refused('bob').slice(before);
    assert.equal(got.length, 1);
    assert.equal(got[0].reason, reason, `${String(data).slice(0, 60)}`);
    counts[reason] = (counts[reason] || 0) + 1;
  }
  // The genuine key addressed to bob, delivered to carol.
  assert.equal(await carol.receive('alice', keyMsg.data), false);
  assert.equal(relay.refused('carol', 'not_for_me').length, 1);
  assert.equal(bob.counters.refused, cases.length);
  assert.deepEqual(bob.counters.refusedBy, counts);
  // Before start a session holds no key pair to unwrap with.
  const idle = new E2eeSession({ selfId: 'bob', room: 'room', send() {} });
  const events = [];
  idle.onevent = (e) => events.push(e);
  assert.equal(await idle.receive('alice', keyMsg.data), false);
  assert.equal(events[0].reason, 'not_started');
  // Nothing of this disturbed the call.
  assert.deepEqual(bob.peers.sort(), ['alice', 'carol']);
  assert.deepEqual(await crossDecrypt(relay), []);
  assert.equal(new Set(codes(relay)).size, 1);
  // A throwing page callback does not break anything either.
  bob.onevent = () => { throw new Error('page bug'); };
  assert.equal(await bob.receive('alice', 'junk'), false);
  relay.close();
});

test('a participant that comes back, or announces new keys, is a new peer', async () => {
  const relay = await call(['alice', 'bob', 'carol']);
  const alice = relay.sessions.get('alice');
  const oldBob = relay.sessions.get('bob');
  const frame = await oldBob.encrypt('vp8', vp8Key(60));
  assert.equal((await alice.decrypt('bob', 'vp8', frame)).ok, true);
  const code = alice.safetyCode();
  // Bob reloads and comes back under the same id: a new session with new keys.
  await relay.leave('bob');
  oldBob.close();
  const bob = await relay.join('bob');
  await relay.idle();
  assert.notEqual(alice.safetyCode(), code);
  assert.equal(new Set(codes(relay)).size, 1);
  await waitFor(() => [...relay.sessions.values()].every((s) => s.pendingKeyId === null), 'the rotations');
  assert.deepEqual(await crossDecrypt(relay), []);
  assert.equal((await alice.decrypt('bob', 'vp8', frame)).ok, false);

  // New keys announced under a known id (no leave between) replace that peer's media keys.
  const delivered = [];
  const other = new E2eeSession({ selfId: 'bob', room: 'room', send: (m) => delivered.push(alice.receive('bob', m.data)) });
  await other.start();
  assert.deepEqual(await Promise.all(delivered), [true]);
  await relay.idle();
  const bobsFrame = await bob.encrypt('vp8', vp8Key(60));
  assert.deepEqual(await alice.decrypt('bob', 'vp8', bobsFrame), { ok: false, reason: 'waiting_for_key' });
  assert.notEqual(alice.safetyCode(), bob.safetyCode());
  other.close();
  relay.close();
});

test('key updates mirror into a transform worker\'s FrameCrypto', async () => {
  const worker = new FrameCrypto();
  const posted = [];
  const relay = new Relay();
  const alice = await relay.join('alice');
  // Carol's frames go through the worker; her session only exchanges keys.
  const carol = await relay.join('carol', {
    onSenderKey: (kid, raw) => posted.push(worker.setSenderKey(kid, raw)),
    onReceiverKey: (id, kid, raw) => posted.push(worker.addReceiverKey(id, kid, raw)),
    onReceiverRemoved: (id) => worker.removeReceiver(id),
  });
  worker.onSenderKeyUsed = (kid) => carol.senderKeyUsed(kid);
  const settled = async () => {
    await relay.idle();
    await Promise.all(posted);
  };
  await settled();
  assert.equal(worker.senderKid, 0);
  assert.equal((await alice.decrypt('carol', 'vp8', await worker.encrypt('vp8', vp8Key(90)))).ok, true);
  assert.equal((await worker.decrypt('alice', 'opus', await alice.encrypt('opus', opus(40)))).ok, true);

  // The worker reported the key used: a join ratchets it, and the worker follows.
  const dave = await relay.join('dave');
  await settled();
  assert.equal(carol.keyId, 1);
  assert.equal(worker.senderKid, 1);
  const frame = await worker.encrypt('vp8', vp8Key(90));
  for (const s of [alice, dave]) assert.equal((await s.decrypt('carol', 'vp8', frame)).ok, true);

  // A leave: the rotation and the forgotten peer reach the worker too.
  await relay.leave('alice');
  await waitFor(() => carol.keyId === 256, 'carol\'s switch');
  await settled();
  assert.equal(worker.senderKid, 256);
  assert.equal(worker.state('alice'), 'waiting_for_key');
  assert.equal((await dave.decrypt('carol', 'vp8', await worker.encrypt('vp8', vp8Key(90)))).ok, true);
  relay.close();
  alice.close();
});

test('a join at step 255 rotates instead of ratcheting', async () => {
  const sent = [];
  const s = new E2eeSession({ selfId: 'alice', room: 'room', switchDelayMs: 5, send: (m) => sent.push(m),
    rate: { perSecond: 1e6, burst: 1e6 } });
  await s.start();
  for (let i = 0; i < 255; i++) {
    await s.encrypt('opus', opus(10));
    await s.participantJoined(`p${i}`);
  }
  assert.equal(s.keyId, 255);
  await s.encrypt('opus', opus(10));
  await s.participantJoined('last');
  assert.equal(s.keyId, 255);
  assert.equal(s.pendingKeyId, 256);
  await waitFor(() => s.keyId === 256, 'the rotation');
  assert.equal(sent.length, 1 + 256); // the first announcement, then one to each newcomer
  s.close();
});

test('a participant whose signaling was down catches up when it resumes', async () => {
  const relay = await call(['alice', 'bob', 'carol']);
  const alice = relay.sessions.get('alice');
  // Alice's connection drops: she hears nothing while dave joins and carol leaves.
  relay.sessions.delete('alice');
  await relay.join('dave');
  await relay.leave('carol');
  await relay.idle();
  const bob = relay.sessions.get('bob');
  await waitFor(() => bob.pendingKeyId === null, 'bob switches to his new key');
  // She resumes (what tern.js's resync does): the leave and the join she missed, then her
  // announcement again.
  relay.sessions.set('alice', alice);
  await alice.participantLeft('carol');
  await alice.participantJoined('dave');
  await alice.reannounce();
  await relay.idle();
  await waitFor(async () => (await crossDecrypt(relay)).length === 0, 'everyone decrypts everyone', 3000);
  assert.equal(new Set(codes(relay)).size, 1);
  relay.close();
});
