// Frame format and frame crypto of signaling/web/e2ee.js: RFC 9605 vectors, clear prefixes,
// counters, receiver key handling. Run with `node --test tests/e2ee/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  E2eeError, FrameCrypto, SAFETY_EMOJI, clearPrefixLength, decodeHeader, deriveSframeKey,
  derivePassphraseSecret, encodeHeader, ratchetKey, safetyCodeFor, sframeDecrypt, sframeEncrypt,
  sframeLabel, sframeNonce,
} from '../../signaling/web/e2ee.js';
import { hex, opus, toHex, vp8Delta, vp8Key } from './helpers.mjs';

const BASE = () => Uint8Array.from({ length: 16 }, (_, i) => i * 11 + 5);

test('SFrame header: RFC 9605 section 4.3 and appendix C.1 cases', () => {
  const cases = [
    [0n, 0n, '00'],
    [7n, 0n, '70'],
    [0n, 7n, '07'],
    [8n, 0n, '8008'],
    [0n, 8n, '0808'],
    [0xffn, 0xffn, '88ffff'],
    [0x100n, 0n, '900100'],
    [0x123n, 0x4567n, '9901234567'],
    [0xffffffffffffffffn, 0n, 'f0ffffffffffffffff'],
    [0xffffffffffffffffn, 0x100n, 'f9ffffffffffffffff0100'],
    [0n, 0xffffffffffffffffn, '0fffffffffffffffff'],
    [0xffffffffffffffffn, 0xffffffffffffffffn, 'ffffffffffffffffffffffffffffffffff'],
  ];
  for (const [kid, ctr, expected] of cases) {
    const header = encodeHeader(kid, ctr);
    assert.equal(toHex(header), expected, `kid ${kid} ctr ${ctr}`);
    assert.deepEqual(decodeHeader(header), { kid, ctr, length: header.length });
    // At an offset, with bytes after it.
    const framed = new Uint8Array([0xaa, 0xbb, ...header, 0xcc]);
    assert.deepEqual(decodeHeader(framed, 2), { kid, ctr, length: header.length });
  }
  // Numbers work as well as BigInts.
  assert.equal(toHex(encodeHeader(0x123, 0x4567)), '9901234567');
});

test('SFrame header: bad input', () => {
  for (const [kid, ctr] of [[-1, 0], [0, -1n], [1n << 64n, 0], [0.5, 0], [0, 2 ** 53]]) {
    assert.throws(() => encodeHeader(kid, ctr), (e) => e instanceof E2eeError && e.code === 'invalid_argument');
  }
  for (const truncated of ['', '99', '990123', '99012345', 'f0ffff']) {
    assert.throws(() => decodeHeader(hex(truncated)), (e) => e.code === 'malformed', truncated);
  }
  assert.throws(() => decodeHeader(hex('00'), 1), (e) => e.code === 'malformed');
});

test('RFC 9605 appendix C.3: AES_128_GCM_SHA256_128 (0x0004)', async () => {
  const kid = 0x123n;
  const ctr = 0x4567n;
  const baseKey = hex('000102030405060708090a0b0c0d0e0f');
  const metadata = hex('4945544620534672616d65205747');
  const pt = hex('64726166742d696574662d736672616d652d656e63');
  const ct = '9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb';

  assert.equal(toHex(sframeLabel('key', kid)), '534672616d6520312e3020536563726574206b65792000000000000001230004');
  assert.equal(toHex(sframeLabel('salt', kid)), '534672616d6520312e30205365637265742073616c742000000000000001230004');
  const keys = await deriveSframeKey(baseKey, kid);
  assert.equal(toHex(keys.keyBytes), 'd34f547f4ca4f9a7447006fe7fcbf768');
  assert.equal(toHex(keys.salt), '75234edefe07819026751816');
  assert.equal(toHex(sframeNonce(keys.salt, ctr)), '75234edefe07819026755d71');
  const aad = new Uint8Array([...encodeHeader(kid, ctr), ...metadata]);
  assert.equal(toHex(aad), '99012345674945544620534672616d65205747');

  assert.equal(toHex(await sframeEncrypt(baseKey, kid, ctr, metadata, pt)), ct);
  assert.equal(toHex(await sframeEncrypt(keys, kid, ctr, metadata, pt)), ct);
  for (const k of [baseKey, keys]) {
    const out = await sframeDecrypt(k, metadata, hex(ct));
    assert.deepEqual(out, { kid, ctr, plaintext: pt });
  }
  // Metadata is authenticated: another one fails, and so does any changed byte.
  await assert.rejects(sframeDecrypt(keys, hex('4945'), hex(ct)), (e) => e.code === 'cannot_decrypt');
  const bad = hex(ct);
  bad[bad.length - 1] ^= 1;
  await assert.rejects(sframeDecrypt(keys, metadata, bad), (e) => e.code === 'cannot_decrypt');
  // Keys derived for one KID refuse to serve another.
  await assert.rejects(sframeEncrypt(keys, 0x124n, 0, metadata, pt), (e) => e.code === 'wrong_key');
});

test('clear prefix: VP8 keyframe 10, delta 3, Opus 1; short frames whole; others refused', () => {
  assert.equal(clearPrefixLength('vp8', vp8Key(100)), 10);
  assert.equal(clearPrefixLength('video/VP8', vp8Delta(100)), 3);
  assert.equal(clearPrefixLength('VP8', vp8Key(5)), 5);
  assert.equal(clearPrefixLength('vp8', vp8Delta(2)), 2);
  assert.equal(clearPrefixLength('vp8', new Uint8Array(0)), 0);
  assert.equal(clearPrefixLength('audio/opus', opus(100)), 1);
  assert.equal(clearPrefixLength('OPUS', new Uint8Array(0)), 0);
  assert.equal(clearPrefixLength('opus', opus(40).buffer), 1);
  for (const codec of ['vp9', 'video/VP9', 'video/H264', 'h264', 'av1', 'video/AV1', 'audio/G722', '', undefined, 42]) {
    assert.throws(() => clearPrefixLength(codec, vp8Key()), (e) => e instanceof E2eeError &&
      e.code === 'unsupported_codec' && /VP8 and Opus only/.test(e.message), String(codec));
  }
});

async function pair() {
  const sender = new FrameCrypto();
  const receiver = new FrameCrypto();
  const raw = BASE();
  await sender.setSenderKey(5, raw);
  await receiver.addReceiverKey('alice', 5, raw);
  return { sender, receiver, raw };
}

test('frames round trip with their clear prefix unchanged', async () => {
  const { sender, receiver } = await pair();
  const frames = [
    ['vp8', vp8Key(1200), 10], ['video/VP8', vp8Delta(300), 3], ['opus', opus(120), 1],
    // Tiny frames: all prefix, nothing encrypted.
    ...[0, 1, 2, 3, 4, 9, 10, 11].map((n) => ['vp8', vp8Key(n), Math.min(n, 10)]),
    ...[0, 1, 2, 3, 4].map((n) => ['vp8', vp8Delta(n), Math.min(n, 3)]),
    ...[0, 1, 2].map((n) => ['audio/opus', opus(n), Math.min(n, 1)]),
  ];
  for (const [codec, frame, prefix] of frames) {
    const enc = await sender.encrypt(codec, frame);
    const headerLength = decodeHeader(enc, prefix).length;
    assert.equal(enc.length, frame.length + headerLength + 16, `${codec} ${frame.length}`);
    assert.deepEqual(enc.subarray(0, prefix), frame.subarray(0, prefix));
    if (frame.length > prefix + 8) assert.notDeepEqual(enc.subarray(prefix + headerLength, prefix + headerLength + 8), frame.subarray(prefix, prefix + 8));
    const out = await receiver.decrypt('alice', codec, enc.buffer);
    assert.equal(out.ok, true, `${codec} ${frame.length}: ${out.reason}`);
    assert.deepEqual(out.frame, frame);
    assert.equal(out.kid, 5);
  }
  assert.equal(receiver.state('alice'), 'encrypted');
  assert.equal(sender.counters.encrypted, frames.length);
  assert.equal(receiver.counters.decrypted, frames.length);
  await assert.rejects(sender.encrypt('video/H264', vp8Key()), (e) => e.code === 'unsupported_codec');
  await assert.rejects(receiver.decrypt('alice', 'vp9', vp8Key()), (e) => e.code === 'unsupported_codec');
  await assert.rejects(new FrameCrypto().encrypt('vp8', vp8Key()), (e) => e.code === 'no_key');
});

test('a flipped bit anywhere is never accepted', async () => {
  const { sender, receiver } = await pair();
  // Move the counter past 255 so the header has CTR bytes too.
  for (let i = 0; i < 300; i++) await sender.encrypt('opus', opus(3));
  for (const [codec, frame, prefix] of [['vp8', vp8Key(40), 10], ['vp8', vp8Delta(30), 3], ['opus', opus(25), 1], ['vp8', vp8Key(6), 6]]) {
    const enc = await sender.encrypt(codec, frame);
    assert.equal((await receiver.decrypt('alice', codec, enc)).ok, true);
    for (let i = 0; i < enc.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Uint8Array.from(enc);
        bad[i] ^= 1 << bit;
        const out = await receiver.decrypt('alice', codec, bad);
        assert.equal(out.ok, false, `byte ${i} bit ${bit}`);
        assert.equal(out.frame, undefined);
        // The first header byte carries the KID and the lengths, the VP8 P bit the prefix length:
        // changed, they point at another key or no frame at all. Anything else fails AES-GCM
        // (a frame shorter than its prefix may be read at a longer one first: only never ok).
        const keyOrLayout = i === prefix || (codec === 'vp8' && i === 0 && bit === 0);
        if (!keyOrLayout && frame.length > prefix) assert.equal(out.reason, 'cannot_decrypt', `${codec} ${frame.length} byte ${i} bit ${bit}`);
      }
    }
  }
  assert.equal(receiver.state('alice'), 'cannot_decrypt');
  assert.equal(receiver.counters.decrypted, 4);
  assert.deepEqual(await receiver.decrypt('alice', 'vp8', hex('0102')), { ok: false, reason: 'malformed' });
});

test('the frame counter never repeats, and restarts with each new key', async () => {
  const sender = new FrameCrypto();
  const used = [];
  sender.onSenderKeyUsed = (kid) => used.push(kid);
  const raw0 = BASE();
  await sender.setSenderKey(0, raw0);
  // Every track and layer shares the sender: concurrent frames of mixed codecs.
  const frames = await Promise.all(Array.from({ length: 1000 }, (_, i) =>
    sender.encrypt(i % 3 === 0 ? 'opus' : 'vp8', i % 3 === 0 ? opus(20) : i % 3 === 1 ? vp8Key(40) : vp8Delta(30))));
  const ctrs = frames.map((f, i) => decodeHeader(f, i % 3 === 0 ? 1 : i % 3 === 1 ? 10 : 3).ctr);
  assert.equal(new Set(ctrs).size, 1000);
  assert.deepEqual([...ctrs].sort((a, b) => (a < b ? -1 : 1)), Array.from({ length: 1000 }, (_, i) => BigInt(i)));

  const raw1 = await ratchetKey(raw0);
  assert.equal(raw1.length, 16);
  assert.notDeepEqual(raw1, raw0);
  assert.deepEqual(await ratchetKey(raw0), raw1);
  await sender.setSenderKey(1, raw1);
  assert.deepEqual(decodeHeader(await sender.encrypt('opus', opus(10)), 1), { kid: 1n, ctr: 0n, length: 1 });
  assert.deepEqual(used, [0, 1]);
  const [s0, s1] = await Promise.all([deriveSframeKey(raw0, 0), deriveSframeKey(raw1, 1)]);
  assert.notDeepEqual(s0.salt, s1.salt);
  assert.notDeepEqual(s0.keyBytes, s1.keyBytes);

  // A KID never goes back: restarting a counter on a used key would repeat nonces.
  await sender.setSenderKey(1, raw1); // the same key again: no-op, the counter goes on
  assert.deepEqual(decodeHeader(await sender.encrypt('opus', opus(10)), 1).ctr, 1n);
  await assert.rejects(sender.setSenderKey(1, raw0), (e) => e.code === 'kid_reused');
  await assert.rejects(sender.setSenderKey(0, raw0), (e) => e.code === 'kid_reused');
  await assert.rejects(sender.setSenderKey(2, new Uint8Array(15)), (e) => e.code === 'invalid_argument');
  assert.equal(sender.senderKid, 1);
});

test('receivers ratchet forward at most 16 steps, never backward', async () => {
  const sender = new FrameCrypto();
  const receiver = new FrameCrypto();
  const states = [];
  receiver.onstate = (id, state) => states.push(`${id}:${state}`);
  let raw = BASE();
  await receiver.addReceiverKey('bob', 3 * 256 + 10, raw);
  assert.equal(receiver.state('bob'), 'encrypted');
  assert.equal(receiver.state('nobody'), 'waiting_for_key');
  const keys = [raw];
  for (let i = 1; i <= 20; i++) keys.push((raw = await ratchetKey(raw)));
  const frameAt = async (step) => {
    await sender.setSenderKey(3 * 256 + 10 + step, keys[step]);
    return sender.encrypt('vp8', vp8Delta(50));
  };
  const at16 = await frameAt(16);
  const at33 = await frameAt(20); // 20 steps ahead of what the receiver holds
  assert.deepEqual(await receiver.decrypt('bob', 'vp8', at33), { ok: false, reason: 'waiting_for_key' });
  assert.equal((await receiver.decrypt('bob', 'vp8', at16)).ok, true);
  // Step 16 is cached now: step 20 is 4 ahead of it.
  assert.equal((await receiver.decrypt('bob', 'vp8', at33)).ok, true);
  assert.deepEqual(states, ['bob:waiting_for_key', 'bob:encrypted']);

  // An earlier step than any held (frames from before a join) can never be derived.
  const earlier = new FrameCrypto();
  await earlier.setSenderKey(3 * 256 + 9, BASE());
  assert.deepEqual(await receiver.decrypt('bob', 'vp8', await earlier.encrypt('vp8', vp8Delta(50))), { ok: false, reason: 'cannot_decrypt' });
  // Unknown senders and later generations wait for their key.
  assert.deepEqual(await receiver.decrypt('carol', 'vp8', at16), { ok: false, reason: 'waiting_for_key' });
  const later = new FrameCrypto();
  await later.setSenderKey(4 * 256, BASE());
  assert.deepEqual(await receiver.decrypt('bob', 'vp8', await later.encrypt('vp8', vp8Delta(50))), { ok: false, reason: 'waiting_for_key' });
  assert.equal(receiver.state('bob'), 'waiting_for_key');
  receiver.removeReceiver('bob');
  assert.deepEqual(await receiver.decrypt('bob', 'vp8', at16), { ok: false, reason: 'waiting_for_key' });
});

test('receivers keep at most 4 generations per sender', async () => {
  const receiver = new FrameCrypto();
  const senders = [];
  for (let gen = 0; gen < 5; gen++) {
    const s = new FrameCrypto();
    const raw = Uint8Array.from(BASE(), (b) => b ^ gen);
    await s.setSenderKey(gen * 256, raw);
    assert.equal(await receiver.addReceiverKey('dave', gen * 256, raw), true);
    senders.push(s);
  }
  const results = [];
  for (const s of senders) results.push((await receiver.decrypt('dave', 'opus', await s.encrypt('opus', opus(30)))).ok);
  assert.deepEqual(results, [false, true, true, true, true]);
  assert.equal(await receiver.addReceiverKey('dave', 0, BASE()), false);
  assert.equal((await receiver.decrypt('dave', 'opus', await senders[0].encrypt('opus', opus(30)))).reason, 'cannot_decrypt');
});

test('safety code: 8 of 64 emoji, independent of order', async () => {
  assert.equal(SAFETY_EMOJI.length, 64);
  assert.equal(new Set(SAFETY_EMOJI).size, 64);
  for (const e of SAFETY_EMOJI) assert.equal([...e].length, 1);
  const keys = ['p256:AAAA', 'x25519:BBBB|p256:CCCC', 'p256:DDDD'];
  const code = await safetyCodeFor(keys);
  assert.equal(code.split(' ').length, 8);
  for (const e of code.split(' ')) assert.ok(SAFETY_EMOJI.includes(e));
  assert.equal(await safetyCodeFor([...keys].reverse()), code);
  assert.notEqual(await safetyCodeFor(keys.slice(1)), code);
});

test('passphrase secret: per room, NFC-normalized', async () => {
  const a = await derivePassphraseSecret('caf\u00e9 au lait', 'room-1');
  assert.equal(a.length, 32);
  assert.deepEqual(await derivePassphraseSecret('cafe\u0301 au lait', 'room-1'), a);
  assert.notDeepEqual(await derivePassphraseSecret('caf\u00e9 au lait', 'room-2'), a);
});
