// Tern end-to-end encryption: frame crypto and key management, with no DOM, WebRTC or WebSocket.
//
// Browsers encrypt every encoded media frame before it leaves (WebRTC Encoded Transforms), so the
// relay forwards media it cannot read. The frame format follows SFrame (RFC 9605, cipher suite
// AES_128_GCM_SHA256_128) and leaves the few codec bytes the relay reads in the clear; media keys
// travel between participants wrapped with pairwise ECDH keys, through the relay's opaque `e2ee`
// messages. docs/E2EE.md describes the bytes and the key schedule.
//
// Layers, lowest first: the SFrame header and cipher (encodeHeader ... sframeDecrypt), FrameCrypto
// (a sender key and per-sender receiver keys; what a transform worker holds) and E2eeSession (key
// exchange; what the page holds). Works unchanged in browsers, dedicated workers and Node 20.

export const CIPHER_SUITE = 0x0004;
export const MEDIA_KEY_BYTES = 16;
export const MAX_MESSAGE_BYTES = 4096;
export const PBKDF2_ITERATIONS = 200000;
/** Receivers keep this many generations of a sender's keys, and ratchet at most this far. */
export const MAX_GENERATIONS = 4;
export const MAX_RATCHET_STEPS = 16;

// Steps of one generation a receiver keeps: a few, for frames still in flight around a ratchet.
const MAX_STEPS_KEPT = 8;
// Wrapped-key IVs remembered per peer, to refuse a relay replaying a key message.
const IVS_KEPT = 64;
// Key messages held for senders not announced yet.
const MAX_EARLY_KEYS = 256;
const MAX_ID_LENGTH = 256;
const TAG_BYTES = 16;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MAX_U64 = (1n << 64n) - 1n;

const encoder = new TextEncoder();
const utf8 = (s) => encoder.encode(s);
const subtle = () => globalThis.crypto.subtle;

export class E2eeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'E2eeError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// Bytes

function bytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // Compared by tag too: an ArrayBuffer from another realm fails instanceof.
  if (data instanceof ArrayBuffer || Object.prototype.toString.call(data) === '[object ArrayBuffer]') {
    return new Uint8Array(data);
  }
  throw new E2eeError('invalid_argument', 'expected bytes (Uint8Array or ArrayBuffer)');
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function u64be(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

function toBase64(data) {
  let s = '';
  for (const b of data) s += String.fromCharCode(b);
  return btoa(s);
}

/** Strict base64: exactly `length` bytes, canonical padding, or null. */
function fromBase64(text, length) {
  if (typeof text !== 'string' || text.length !== 4 * Math.ceil(length / 3)) return null;
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  let raw;
  try {
    raw = atob(text);
  } catch {
    return null;
  }
  const out = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  // Re-encoding catches non-zero padding bits: one key, one spelling (it is MACed and compared).
  return out.length === length && toBase64(out) === text ? out : null;
}

// ---------------------------------------------------------------------------------------------
// Codecs: how many leading bytes stay in the clear for the relay

function codecName(codec) {
  const name = typeof codec === 'string' ? codec.toLowerCase().replace(/^(video|audio)\//, '') : '';
  if (name === 'vp8' || name === 'opus') return name;
  throw new E2eeError('unsupported_codec', `E2EE supports VP8 and Opus only, not ${String(codec)}`);
}

// The prefix a frame of this codec has when it is long enough: VP8 keeps its payload header
// (10 bytes for a keyframe: frame tag, start code, dimensions; 3 for a delta frame), Opus its TOC.
function fullPrefix(name, frame) {
  if (name === 'opus') return 1;
  // VP8 frame tag: bit 0 of the first byte is the P bit, 0 for a keyframe.
  return frame.length > 0 && (frame[0] & 1) === 0 ? 10 : 3;
}

/**
 * How many leading bytes of `frame` stay unencrypted (authenticated as SFrame metadata):
 * 'vp8' / 'video/VP8': 10 for a keyframe, 3 for a delta frame; 'opus' / 'audio/opus': 1. A frame
 * shorter than that is all prefix. Throws E2eeError `unsupported_codec` for any other codec.
 */
export function clearPrefixLength(codec, frame) {
  const name = codecName(codec);
  const f = bytes(frame);
  return Math.min(fullPrefix(name, f), f.length);
}

// ---------------------------------------------------------------------------------------------
// SFrame header (RFC 9605 section 4.3). KID and CTR are BigInt here, covering the whole 64-bit
// range; encodeHeader also takes non-negative safe-integer Numbers.

function toU64(value, what) {
  let v;
  if (typeof value === 'bigint') v = value;
  else if (Number.isSafeInteger(value)) v = BigInt(value);
  else throw new E2eeError('invalid_argument', `${what} must be a non-negative integer`);
  if (v < 0n || v > MAX_U64) throw new E2eeError('invalid_argument', `${what} out of range`);
  return v;
}

function minimalBytes(v) {
  const out = [];
  for (; v > 0n; v >>= 8n) out.unshift(Number(v & 0xffn));
  return out;
}

/** SFrame header for `kid` and `ctr` (BigInt or Number): `X KKK Y CCC`, then KID, then CTR. */
export function encodeHeader(kid, ctr) {
  const k = toU64(kid, 'kid');
  const c = toU64(ctr, 'ctr');
  const kb = k < 8n ? [] : minimalBytes(k);
  const cb = c < 8n ? [] : minimalBytes(c);
  const first = (k < 8n ? Number(k) << 4 : 0x80 | ((kb.length - 1) << 4)) |
    (c < 8n ? Number(c) : 0x08 | (cb.length - 1));
  return Uint8Array.from([first, ...kb, ...cb]);
}

/**
 * Reads an SFrame header at `offset`: `{ kid, ctr }` as BigInt and its `length` in bytes.
 * Throws E2eeError `malformed` if the bytes end first.
 */
export function decodeHeader(data, offset = 0) {
  const b = bytes(data);
  if (offset >= b.length) throw new E2eeError('malformed', 'no SFrame header');
  const first = b[offset];
  const kLen = first & 0x80 ? ((first >> 4) & 7) + 1 : 0;
  const cLen = first & 0x08 ? (first & 7) + 1 : 0;
  const length = 1 + kLen + cLen;
  if (offset + length > b.length) throw new E2eeError('malformed', 'truncated SFrame header');
  const read = (at, n) => {
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(b[at + i]);
    return v;
  };
  const kid = kLen ? read(offset + 1, kLen) : BigInt((first >> 4) & 7);
  const ctr = cLen ? read(offset + 1 + kLen, cLen) : BigInt(first & 7);
  return { kid, ctr, length };
}

// ---------------------------------------------------------------------------------------------
// SFrame keys and cipher (RFC 9605 sections 4.4.2 to 4.4.4, suite 0x0004)

/** The HKDF info for the SFrame key ('key') or salt ('salt') of `kid`. */
export function sframeLabel(kind, kid) {
  const text = kind === 'key' ? 'SFrame 1.0 Secret key ' : 'SFrame 1.0 Secret salt ';
  return concat(utf8(text), u64be(toU64(kid, 'kid')), Uint8Array.of(CIPHER_SUITE >> 8, CIPHER_SUITE & 0xff));
}

async function hkdf(ikm, salt, info, bits) {
  const key = await subtle().importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  // WebCrypto's HKDF is Extract then Expand (RFC 5869), as SFrame specifies.
  return new Uint8Array(await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, key, bits));
}

/**
 * The SFrame key and salt of a base key for `kid`: `{ kid (BigInt), keyBytes (16), salt (12),
 * aesKey (CryptoKey) }`.
 */
export async function deriveSframeKey(baseKey, kid) {
  const base = bytes(baseKey);
  const empty = new Uint8Array(0);
  const keyBytes = await hkdf(base, empty, sframeLabel('key', kid), 128);
  const salt = await hkdf(base, empty, sframeLabel('salt', kid), 96);
  const aesKey = await subtle().importKey('raw', keyBytes, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
  return { kid: toU64(kid, 'kid'), keyBytes, salt, aesKey };
}

/** Nonce = salt XOR CTR as a 12-byte big-endian number. */
export function sframeNonce(salt, ctr) {
  const nonce = Uint8Array.from(bytes(salt));
  const c = u64be(toU64(ctr, 'ctr'));
  for (let i = 0; i < 8; i++) nonce[4 + i] ^= c[i];
  return nonce;
}

/** The one-way step from a media key to the next one of its generation. */
export async function ratchetKey(baseKey) {
  return hkdf(bytes(baseKey), new Uint8Array(0), utf8('Tern E2EE ratchet'), MEDIA_KEY_BYTES * 8);
}

async function keysFor(keys, kid) {
  if (keys && keys.aesKey) {
    if (keys.kid !== toU64(kid, 'kid')) throw new E2eeError('wrong_key', 'keys derived for another KID');
    return keys;
  }
  return deriveSframeKey(keys, kid);
}

async function seal(keys, header, ctr, metadata, plaintext) {
  const params = { name: 'AES-GCM', iv: sframeNonce(keys.salt, ctr), additionalData: concat(header, metadata), tagLength: 128 };
  return new Uint8Array(await subtle().encrypt(params, keys.aesKey, plaintext));
}

// The plaintext, or null when AES-GCM authentication fails.
async function open(keys, header, ctr, metadata, sealed) {
  const params = { name: 'AES-GCM', iv: sframeNonce(keys.salt, ctr), additionalData: concat(header, metadata), tagLength: 128 };
  try {
    return new Uint8Array(await subtle().decrypt(params, keys.aesKey, sealed));
  } catch {
    return null;
  }
}

/**
 * SFrame encryption: header || ciphertext || tag, authenticating `metadata` (not included).
 * `keys`: a base key (bytes) or what deriveSframeKey returned for `kid`.
 */
export async function sframeEncrypt(keys, kid, ctr, metadata, plaintext) {
  const k = await keysFor(keys, kid);
  const header = encodeHeader(kid, ctr);
  return concat(header, await seal(k, header, ctr, bytes(metadata), bytes(plaintext)));
}

/**
 * SFrame decryption of header || ciphertext || tag: `{ kid, ctr, plaintext }`. Throws E2eeError
 * `malformed`, `wrong_key` (derived keys of another KID) or `cannot_decrypt`.
 */
export async function sframeDecrypt(keys, metadata, data) {
  const b = bytes(data);
  const { kid, ctr, length } = decodeHeader(b, 0);
  if (b.length < length + TAG_BYTES) throw new E2eeError('malformed', 'SFrame too short');
  const k = await keysFor(keys, kid);
  const plaintext = await open(k, b.subarray(0, length), ctr, bytes(metadata), b.subarray(length));
  if (!plaintext) throw new E2eeError('cannot_decrypt', 'SFrame authentication failed');
  return { kid, ctr, plaintext };
}

// ---------------------------------------------------------------------------------------------
// FrameCrypto: frames in and out with keys set from outside

const STATE_OF = { waiting_for_key: 'waiting_for_key', cannot_decrypt: 'cannot_decrypt', malformed: 'cannot_decrypt' };

function checkKid(kid) {
  if (!Number.isSafeInteger(kid) || kid < 0) throw new E2eeError('invalid_argument', 'kid must be a safe non-negative integer');
}

function checkMediaKey(raw) {
  const key = bytes(raw);
  if (key.length !== MEDIA_KEY_BYTES) throw new E2eeError('invalid_argument', `a media key has ${MEDIA_KEY_BYTES} bytes`);
  return Uint8Array.from(key);
}

/**
 * The frame crypto of one participant: one sender key (every track and simulcast layer shares
 * it, and its counter) and, per remote sender, the keys received. A transform worker holds one
 * and gets keys posted from the page (E2eeSession's onSenderKey / onReceiverKey).
 * Callbacks: `onstate(senderId, state)` when a sender's state changes, `onSenderKeyUsed(kid)`
 * when the first frame is encrypted with a key (report it to E2eeSession.senderKeyUsed).
 * KIDs are Numbers: generation * 256 + step.
 */
export class FrameCrypto {
  #sender = null;
  #lastKid = -1;
  #lastRaw = null;
  #receivers = new Map();
  #states = new Map();

  constructor({ onstate, onSenderKeyUsed } = {}) {
    this.onstate = onstate;
    this.onSenderKeyUsed = onSenderKeyUsed;
    this.counters = { encrypted: 0, decrypted: 0, failed: { waiting_for_key: 0, cannot_decrypt: 0, malformed: 0 } };
  }

  /** The KID frames are encrypted with now, or null. */
  get senderKid() {
    return this.#sender ? this.#sender.kid : null;
  }

  /**
   * Encrypts from now on with `rawKey` (16 bytes) as `kid`, counter from 0. KIDs only go up: a
   * repeated KID with the same key is a no-op and anything else throws `kid_reused`, because a
   * counter restarted on a used key would repeat nonces.
   */
  async setSenderKey(kid, rawKey) {
    checkKid(kid);
    const raw = checkMediaKey(rawKey);
    if (kid === this.#lastKid && this.#lastRaw.every((b, i) => b === raw[i])) return;
    if (kid <= this.#lastKid) throw new E2eeError('kid_reused', `KID ${kid} is not newer than ${this.#lastKid}`);
    // Claimed before the await, so that overlapping calls (keys posted to a worker in quick
    // succession) end with the newest key whatever order their derivations finish in.
    this.#lastKid = kid;
    this.#lastRaw = raw;
    const keys = await deriveSframeKey(raw, kid);
    if (this.#lastKid === kid) this.#sender = { kid, keys, ctr: 0 };
  }

  /** `clear prefix || SFrame header || ciphertext || tag` for one encoded frame. */
  async encrypt(codec, frame) {
    const f = bytes(frame);
    const p = clearPrefixLength(codec, f);
    const s = this.#sender;
    if (!s) throw new E2eeError('no_key', 'no sender key yet');
    // Taken before any await: concurrent calls never share a counter value.
    const ctr = s.ctr++;
    if (ctr > Number.MAX_SAFE_INTEGER) throw new E2eeError('counter_exhausted', 'frame counter exhausted');
    if (ctr === 0 && this.onSenderKeyUsed) this.onSenderKeyUsed(s.kid);
    const prefix = f.slice(0, p);
    const header = encodeHeader(s.kid, ctr);
    const sealed = await seal(s.keys, header, ctr, prefix, f.subarray(p));
    this.counters.encrypted++;
    return concat(prefix, header, sealed);
  }

  /**
   * Adds a key of `senderId`. Keeps at most MAX_GENERATIONS generations, dropping the oldest;
   * returns false (and keeps nothing) for a generation older than all of a full set.
   */
  async addReceiverKey(senderId, kid, rawKey) {
    checkKid(kid);
    const raw = checkMediaKey(rawKey);
    let r = this.#receivers.get(senderId);
    if (!r) this.#receivers.set(senderId, (r = { gens: new Map() }));
    const gen = Math.floor(kid / 256);
    if (!r.gens.has(gen)) {
      if (r.gens.size >= MAX_GENERATIONS) {
        const oldest = Math.min(...r.gens.keys());
        if (gen < oldest) return false;
        r.gens.delete(oldest);
      }
      r.gens.set(gen, new Map());
    }
    const steps = r.gens.get(gen);
    if (!steps.has(kid % 256)) keep(steps, kid % 256, { raw, keys: deriveSframeKey(raw, kid) });
    return true;
  }

  /** Forgets every key of `senderId` (it left). */
  removeReceiver(senderId) {
    this.#receivers.delete(senderId);
    this.#states.delete(senderId);
  }

  /**
   * `{ ok: true, frame, kid }` with the frame exactly as its sender had it, or `{ ok: false,
   * reason }`: `waiting_for_key` (a key not received yet), `cannot_decrypt` (authentication
   * failed, or a key that will never come: an earlier step or a dropped generation),
   * `malformed` (not an encrypted frame).
   */
  async decrypt(senderId, codec, frame) {
    const name = codecName(codec);
    const f = bytes(frame);
    let failure = null;
    for (const { prefixLength, kid, ctr, headerLength } of candidates(name, f)) {
      const found = await this.#keyFor(senderId, kid);
      if (found.reason) {
        failure = failure || found.reason;
        continue;
      }
      const keys = await found.keys;
      const start = prefixLength + headerLength;
      const prefix = f.subarray(0, prefixLength);
      const plaintext = await open(keys, f.subarray(prefixLength, start), ctr, prefix, f.subarray(start));
      if (!plaintext) {
        failure = failure || 'cannot_decrypt';
        continue;
      }
      // A ratcheted key is kept only once a frame has proven it: forged KIDs move nothing.
      if (found.remember) found.remember();
      this.counters.decrypted++;
      this.#setState(senderId, 'encrypted');
      return { ok: true, frame: concat(prefix, plaintext), kid: Number(kid) };
    }
    const reason = failure || 'malformed';
    this.counters.failed[reason]++;
    this.#setState(senderId, STATE_OF[reason]);
    return { ok: false, reason };
  }

  /**
   * 'encrypted' | 'waiting_for_key' | 'cannot_decrypt': how the last frame of `senderId` went;
   * before any frame, 'encrypted' if a key is held, else 'waiting_for_key'.
   */
  state(senderId) {
    return this.#states.get(senderId) || (this.#receivers.has(senderId) ? 'encrypted' : 'waiting_for_key');
  }

  #setState(senderId, state) {
    if (this.#states.get(senderId) === state) return;
    this.#states.set(senderId, state);
    if (this.onstate) this.onstate(senderId, state);
  }

  // The keys for `kid` of `senderId` ({ keys, remember? }) or why there are none ({ reason }).
  async #keyFor(senderId, kidBig) {
    const r = this.#receivers.get(senderId);
    if (!r || r.gens.size === 0 || kidBig > MAX_SAFE) return { reason: 'waiting_for_key' };
    const kid = Number(kidBig);
    const gen = Math.floor(kid / 256);
    const step = kid % 256;
    const steps = r.gens.get(gen);
    if (!steps) return { reason: gen > Math.max(...r.gens.keys()) ? 'waiting_for_key' : 'cannot_decrypt' };
    const exact = steps.get(step);
    if (exact) return { keys: exact.keys };
    const below = [...steps.keys()].filter((s) => s < step);
    if (below.length === 0) return { reason: 'cannot_decrypt' };
    const from = Math.max(...below);
    if (step - from > MAX_RATCHET_STEPS) return { reason: 'waiting_for_key' };
    let raw = steps.get(from).raw;
    for (let s = from; s < step; s++) raw = await ratchetKey(raw);
    const keys = deriveSframeKey(raw, kid);
    const remember = () => {
      if (this.#receivers.get(senderId) === r && r.gens.get(gen) === steps) keep(steps, step, { raw, keys });
    };
    return { keys, remember };
  }
}

function keep(steps, step, entry) {
  steps.set(step, entry);
  if (steps.size > MAX_STEPS_KEPT) steps.delete(Math.min(...steps.keys()));
}

// Where the SFrame of a received frame may start. Normally after the codec's full prefix; but a
// frame that was shorter than its prefix was sent whole as metadata with an empty ciphertext,
// so for small frames every shorter prefix whose header and tag end exactly at the end is a
// candidate too. AES-GCM tells which one is right.
function candidates(name, f) {
  const out = [];
  const full = fullPrefix(name, f);
  const at = (prefixLength, exact) => {
    if (prefixLength >= f.length) return;
    let h;
    try {
      h = decodeHeader(f, prefixLength);
    } catch {
      return;
    }
    const end = prefixLength + h.length + TAG_BYTES;
    if (exact ? end === f.length : end <= f.length) out.push({ prefixLength, kid: h.kid, ctr: h.ctr, headerLength: h.length });
  };
  at(full, false);
  for (let n = Math.min(full, f.length) - 1; n >= 0; n--) at(n, true);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Passphrase, safety code

/** PBKDF2-SHA256(passphrase (NFC), "Tern E2EE passphrase v1\n" + room, 200000) -> 32 bytes. */
export async function derivePassphraseSecret(passphrase, room) {
  const key = await subtle().importKey('raw', utf8(passphrase.normalize('NFC')), 'PBKDF2', false, ['deriveBits']);
  const params = { name: 'PBKDF2', hash: 'SHA-256', salt: utf8(`Tern E2EE passphrase v1\n${room}`), iterations: PBKDF2_ITERATIONS };
  return new Uint8Array(await subtle().deriveBits(params, key, 256));
}

/** The 64 safety code symbols; single code points, so every platform draws each as one emoji. */
export const SAFETY_EMOJI = Object.freeze([...
  '🐶🐱🐭🐰🦊🐻🐼🐨🐯🦁🐮🐷🐸🐵🐔🐧🦉🐴🦄🐝🦋🐌🐞🐢🐙🦀🐠🐬🐳🌵🌲🌻' +
  '🌹🍄🌙⭐🔥🌈💧🍎🍌🍇🍓🍋🍒🍍🥕🌽🍕🍩🍪🎂🔑🔔🎈🎁🎸🚀🚲⚓🏠⌛💡📚']);

/**
 * The safety code of a set of participants' announced keys (one "x25519:<b64>|p256:<b64>" or
 * "p256:<b64>" string each): SHA-256 of the sorted strings joined with "\n"; 6 bits each of its
 * first 6 bytes pick 8 emoji, returned separated by spaces.
 */
export async function safetyCodeFor(keyStrings) {
  const digest = new Uint8Array(await subtle().digest('SHA-256', utf8([...keyStrings].sort().join('\n'))));
  let bits = 0n;
  for (const b of digest.subarray(0, 6)) bits = (bits << 8n) | BigInt(b);
  const out = [];
  for (let i = 7; i >= 0; i--) out.push(SAFETY_EMOJI[Number((bits >> BigInt(6 * i)) & 63n)]);
  return out.join(' ');
}

// ---------------------------------------------------------------------------------------------
// E2eeSession: key exchange through the relay

const validId = (id) => typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH && !id.includes('\n');

function keyString(x25519, p256) {
  return (x25519 ? `x25519:${toBase64(x25519)}|` : '') + `p256:${toBase64(p256)}`;
}

/**
 * One participant's end-to-end encryption in one room. `send({ to, data })` passes a message
 * through the relay (`to` undefined: everyone); the page hands every received one to `receive`.
 * The page must call participantJoined for a newcomer before passing on its messages (the relay
 * sends participant_joined first), so that the newcomer never gets a key older than its join.
 *
 * Callbacks (constructor options or properties):
 * - `onevent(ev)`: `{ type: 'refused', from, reason }` (a message ignored; reason `bad_mac` or
 *   `missing_mac` means a passphrase mismatch or a relay substituting keys), `{ type: 'peer', id }`
 *   (keys of a participant accepted or changed), `{ type: 'peer_left', id }`, `{ type: 'key',
 *   from, kid }` (a media key received), `{ type: 'state', id, state }`, `{ type:
 *   'safety_code', code }`, `{ type: 'error', error }` (send threw).
 * - `onKeyChanged(kid)`: encryption switched to a new generation (request a keyframe).
 * - `onSenderKey(kid, raw)`, `onReceiverKey(senderId, kid, raw)`, `onReceiverRemoved(senderId)`:
 *   key updates for a FrameCrypto in a transform worker (mirror them there).
 */
export class E2eeSession {
  #send;
  #now;
  #rate;
  #x25519Wanted;
  #passphrase;
  #secretPromise = null;
  #hmacKey = null;
  #self = null;
  #started = false;
  // Participants we sent our announcement to directly (so an unknown one is answered once).
  #announcedTo = new Set();
  // The last key message of each sender whose announcement has not come yet (it can overtake
  // it: paced queues, a resume), applied once it does. Bounded like the peers.
  #early = new Map();
  #peers = new Map();
  #joined = new Set();
  #active = null;
  #pending = null;
  #usedKid = -1;
  #code = null;
  #chain = Promise.resolve();
  #outbox = [];
  #tokens;
  #refilled;
  #flushTimer = null;
  #switchTimer = null;
  #closed = false;
  #counters = { sent: 0, accepted: 0, refused: 0, refusedBy: {} };

  /**
   * @param {object} o
   * @param {string} o.selfId our participant id
   * @param {string} o.room the room name (salts the passphrase)
   * @param {string} [o.passphrase] shared by everyone in the room; empty or absent: none
   * @param {(m: {to?: string, data: string}) => void} o.send
   * @param {() => number} [o.now] milliseconds, for pacing messages
   * @param {number} [o.switchDelayMs] after a rotation's keys are sent, until frames use it
   * @param {{perSecond: number, burst: number}} [o.rate] message pacing, under the relay's 40/s
   * @param {boolean} [o.x25519] false: P-256 only
   */
  constructor({ selfId, room, passphrase, send, now = () => Date.now(), switchDelayMs = 500,
    rate = { perSecond: 30, burst: 40 }, x25519 = true, onevent, onKeyChanged, onSenderKey,
    onReceiverKey, onReceiverRemoved } = {}) {
    if (!validId(selfId)) throw new E2eeError('invalid_argument', 'selfId must be a participant id');
    if (typeof room !== 'string') throw new E2eeError('invalid_argument', 'room must be a string');
    if (typeof send !== 'function') throw new E2eeError('invalid_argument', 'send must be a function');
    this.selfId = selfId;
    this.room = room;
    this.switchDelayMs = switchDelayMs;
    this.#passphrase = passphrase ? String(passphrase) : null;
    this.#send = send;
    this.#now = now;
    this.#rate = rate;
    this.#tokens = rate.burst;
    this.#refilled = now();
    this.#x25519Wanted = x25519;
    Object.assign(this, { onevent, onKeyChanged, onSenderKey, onReceiverKey, onReceiverRemoved });
    this.frameCrypto = new FrameCrypto({
      onstate: (id, state) => this.#emit({ type: 'state', id, state }),
      onSenderKeyUsed: (kid) => this.senderKeyUsed(kid),
    });
  }

  /** Makes key pairs and the first media key, and announces them to everyone. */
  start() {
    return this.#serial(async () => {
      if (this.#started) return;
      await this.#secretReady();
      const p256 = await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
      let x25519 = null;
      if (this.#x25519Wanted) {
        // Feature test: a platform without X25519 in WebCrypto rejects this.
        x25519 = await subtle().generateKey({ name: 'X25519' }, false, ['deriveBits']).catch(() => null);
      }
      const p256Raw = new Uint8Array(await subtle().exportKey('raw', p256.publicKey));
      const xRaw = x25519 && new Uint8Array(await subtle().exportKey('raw', x25519.publicKey));
      const keys = keyString(xRaw, p256Raw);
      const announce = { v: 1, t: 'announce', p256: toBase64(p256Raw) };
      if (xRaw) announce.x25519 = toBase64(xRaw);
      if (this.#hmacKey) announce.mac = toBase64(new Uint8Array(await subtle().sign('HMAC', this.#hmacKey, this.#macInput(this.selfId, keys))));
      this.#self = { p256, x25519, keys, announce: JSON.stringify(announce) };
      await this.#activate(0, randomBytes(MEDIA_KEY_BYTES));
      this.#started = true;
      this.#post(undefined, this.#self.announce, 'announce');
      // Announcements that came before we started: check them now, and answer with our key.
      for (const [id, peer] of [...this.#peers]) {
        if (await this.#pairwise(id, peer).then(() => true, () => false)) await this.#sendKey(id);
        else {
          this.#peers.delete(id);
          this.#refuse(id, 'bad_public_key');
        }
      }
      await this.#updateCode();
    });
  }

  /** Handles one message from `from`. Never throws: returns false for a message it ignored. */
  receive(from, data) {
    return this.#serial(() => this.#receive(from, data)).catch(() => this.#refuse(from, 'error'));
  }

  /** A participant joined after us: ratchet our key, announce ourselves to it. Idempotent. */
  participantJoined(id) {
    return this.#serial(async () => {
      if (!validId(id) || id === this.selfId || this.#joined.has(id)) return;
      this.#joined.add(id);
      if (!this.#started) return;
      await this.#ratchetIfUsed();
      this.#announcedTo.add(id);
      this.#post(id, this.#self.announce, 'announce');
    });
  }

  /**
   * After our signaling connection was down (messages to and from us were lost): announce
   * ourselves to everyone again, so that each answers with its current key, and send every
   * known peer our current key.
   */
  reannounce() {
    return this.#serial(async () => {
      if (!this.#started) return;
      this.#post(undefined, this.#self.announce, 'announce');
      for (const id of this.#peers.keys()) await this.#sendKey(id);
    });
  }

  /** A participant left or was removed: forget it, rotate our key to everyone remaining. */
  participantLeft(id) {
    return this.#serial(async () => {
      const wasJoined = this.#joined.delete(id);
      this.#announcedTo.delete(id);
      const known = this.#peers.delete(id) || wasJoined;
      this.#outbox = this.#outbox.filter((m) => m.to !== id);
      this.frameCrypto.removeReceiver(id);
      this.#call('onReceiverRemoved', id);
      if (!known) return;
      this.#emit({ type: 'peer_left', id });
      await this.#updateCode();
      if (this.#started) await this.#rotate();
    });
  }

  /** Encrypts one frame with our current key (see FrameCrypto.encrypt). */
  encrypt(codec, frame) {
    return this.frameCrypto.encrypt(codec, frame);
  }

  /** Decrypts one frame of `senderId` (see FrameCrypto.decrypt). */
  decrypt(senderId, codec, frame) {
    return this.frameCrypto.decrypt(senderId, codec, frame);
  }

  /** 'encrypted' | 'waiting_for_key' | 'cannot_decrypt' (see FrameCrypto.state). */
  state(senderId) {
    return this.frameCrypto.state(senderId);
  }

  /** 8 emoji, the same on every screen exactly when everyone sees the same keys; null before start. */
  safetyCode() {
    return this.#code;
  }

  /** A frame was encrypted with `kid` (reported by a worker's FrameCrypto.onSenderKeyUsed). */
  senderKeyUsed(kid) {
    if (Number.isSafeInteger(kid) && kid > this.#usedKid) this.#usedKid = kid;
  }

  /** The KID frames are encrypted with, and the one that will replace it after a rotation. */
  get keyId() {
    return this.#active ? this.#active.kid : null;
  }

  get pendingKeyId() {
    return this.#pending ? this.#pending.kid : null;
  }

  /** Participants whose keys we accepted. */
  get peers() {
    return [...this.#peers.keys()];
  }

  get counters() {
    const c = this.frameCrypto.counters;
    return { ...c, failed: { ...c.failed }, ...this.#counters, refusedBy: { ...this.#counters.refusedBy } };
  }

  /** Stops timers and sends nothing more. */
  close() {
    this.#closed = true;
    this.#outbox = [];
    clearTimeout(this.#flushTimer);
    clearTimeout(this.#switchTimer);
  }

  // --- receiving

  async #receive(from, data) {
    if (!validId(from)) return this.#refuse(from, 'bad_sender');
    if (from === this.selfId) return this.#refuse(from, 'self');
    if (typeof data !== 'string') return this.#refuse(from, 'malformed');
    if (data.length > MAX_MESSAGE_BYTES) return this.#refuse(from, 'oversized');
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return this.#refuse(from, 'malformed');
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return this.#refuse(from, 'malformed');
    if (msg.v !== 1) return this.#refuse(from, 'unsupported_version');
    if (msg.t === 'announce') return this.#onAnnounce(from, msg);
    if (msg.t === 'key') return this.#onKey(from, msg);
    return this.#refuse(from, 'unknown_type');
  }

  async #onAnnounce(from, msg) {
    const p256Raw = fromBase64(msg.p256, 65);
    const xRaw = msg.x25519 === undefined || msg.x25519 === null ? null : fromBase64(msg.x25519, 32);
    if (!p256Raw || p256Raw[0] !== 4 || (xRaw === null && msg.x25519 != null)) return this.#refuse(from, 'bad_public_key');
    const keys = keyString(xRaw, p256Raw);
    await this.#secretReady();
    if (this.#hmacKey) {
      if (msg.mac === undefined) return this.#refuse(from, 'missing_mac');
      const mac = fromBase64(msg.mac, 32);
      if (!mac || !(await subtle().verify('HMAC', this.#hmacKey, mac, this.#macInput(from, keys)))) {
        return this.#refuse(from, 'bad_mac');
      }
    }
    const known = this.#peers.get(from);
    let peer = known && known.keys === keys ? known : null;
    if (!peer) {
      let p256;
      try {
        p256 = await subtle().importKey('raw', p256Raw, { name: 'ECDH', namedCurve: 'P-256' }, true, []);
      } catch {
        return this.#refuse(from, 'bad_public_key');
      }
      peer = { keys, p256, xRaw, pairwise: null, ivs: new Set() };
      if (this.#started && !(await this.#pairwise(from, peer).then(() => true, () => false))) {
        return this.#refuse(from, 'bad_public_key');
      }
      if (known) {
        // New keys: a new session of that participant; its old media keys are gone with it.
        this.frameCrypto.removeReceiver(from);
        this.#call('onReceiverRemoved', from);
      }
      this.#peers.set(from, peer);
      this.#emit({ type: 'peer', id: from });
      await this.#updateCode();
    }
    this.#counters.accepted++;
    const early = this.#early.get(from);
    if (early) {
      this.#early.delete(from);
      await this.#onKey(from, early);
    }
    // Learning (or re-learning) a peer's keys is when it gets our current key.
    if (this.#started) await this.#sendKey(from);
    // A peer that never heard of us (it joined while our signaling was down, so neither side saw
    // the other's broadcast) gets our announcement too, once.
    if (this.#started && !known && !this.#announcedTo.has(from)) {
      this.#announcedTo.add(from);
      this.#post(from, this.#self.announce, 'announce');
    }
    return true;
  }

  async #onKey(from, msg) {
    if (!this.#started) return this.#refuse(from, 'not_started');
    if (typeof msg.to !== 'string') return this.#refuse(from, 'malformed');
    if (msg.to !== this.selfId) return this.#refuse(from, 'not_for_me');
    const peer = this.#peers.get(from);
    if (!peer) {
      this.#early.delete(from);
      this.#early.set(from, msg);
      if (this.#early.size > MAX_EARLY_KEYS) this.#early.delete(this.#early.keys().next().value);
      return this.#refuse(from, 'unknown_peer');
    }
    const iv = fromBase64(msg.iv, 12);
    const wrapped = fromBase64(msg.wrapped, 8 + MEDIA_KEY_BYTES + TAG_BYTES);
    if (!iv || !wrapped) return this.#refuse(from, 'malformed');
    if (peer.ivs.has(msg.iv)) return this.#refuse(from, 'replayed');
    let plain;
    try {
      const params = { name: 'AES-GCM', iv, additionalData: utf8(`Tern E2EE key v1\n${from}\n${this.selfId}`) };
      plain = new Uint8Array(await subtle().decrypt(params, await this.#pairwise(from, peer), wrapped));
    } catch {
      return this.#refuse(from, 'bad_key');
    }
    peer.ivs.add(msg.iv);
    if (peer.ivs.size > IVS_KEPT) peer.ivs.delete(peer.ivs.values().next().value);
    const kid = new DataView(plain.buffer).getBigUint64(0);
    if (kid > MAX_SAFE) return this.#refuse(from, 'bad_key');
    const raw = plain.slice(8);
    if (!(await this.frameCrypto.addReceiverKey(from, Number(kid), raw))) return this.#refuse(from, 'stale_key');
    this.#counters.accepted++;
    this.#call('onReceiverKey', from, Number(kid), raw);
    this.#emit({ type: 'key', from, kid: Number(kid) });
    return true;
  }

  #refuse(from, reason) {
    this.#counters.refused++;
    this.#counters.refusedBy[reason] = (this.#counters.refusedBy[reason] || 0) + 1;
    this.#emit({ type: 'refused', from, reason });
    return false;
  }

  // --- keys

  #secretReady() {
    if (!this.#secretPromise) {
      this.#secretPromise = (async () => {
        if (!this.#passphrase) return new Uint8Array(32);
        const secret = await derivePassphraseSecret(this.#passphrase, this.room);
        this.#hmacKey = await subtle().importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
        return secret;
      })();
    }
    return this.#secretPromise;
  }

  #macInput(id, keys) {
    return utf8(`Tern E2EE announce v1\n${id}\n${keys}`);
  }

  // The AES-GCM key wrapping media keys between us and `id` (cached on the peer).
  #pairwise(id, peer) {
    if (!peer.pairwise) {
      peer.pairwise = (async () => {
        const useX = this.#self.x25519 && peer.xRaw;
        let shared;
        if (useX) {
          const pub = await subtle().importKey('raw', peer.xRaw, { name: 'X25519' }, true, []);
          shared = await subtle().deriveBits({ name: 'X25519', public: pub }, this.#self.x25519.privateKey, 256);
        } else {
          shared = await subtle().deriveBits({ name: 'ECDH', public: peer.p256 }, this.#self.p256.privateKey, 256);
        }
        const ikm = await subtle().importKey('raw', shared, 'HKDF', false, ['deriveKey']);
        const info = utf8(`Tern E2EE pairwise v1\n${[this.selfId, id].sort().join('\n')}`);
        return subtle().deriveKey({ name: 'HKDF', hash: 'SHA-256', salt: await this.#secretReady(), info }, ikm,
          { name: 'AES-GCM', length: 128 }, false, ['encrypt', 'decrypt']);
      })();
      peer.pairwise.catch(() => { peer.pairwise = null; });
    }
    return peer.pairwise;
  }

  async #sendKey(to) {
    const { kid, raw } = this.#pending || this.#active;
    const iv = randomBytes(12);
    const params = { name: 'AES-GCM', iv, additionalData: utf8(`Tern E2EE key v1\n${this.selfId}\n${to}`) };
    const wrapped = new Uint8Array(await subtle().encrypt(params, await this.#pairwise(to, this.#peers.get(to)), concat(u64be(kid), raw)));
    this.#post(to, JSON.stringify({ v: 1, t: 'key', to, iv: toBase64(iv), wrapped: toBase64(wrapped) }), 'key');
  }

  async #activate(kid, raw) {
    await this.frameCrypto.setSenderKey(kid, raw);
    this.#active = { kid, raw };
    // A copy: whatever the page does with it (transfer it to a worker) leaves ours intact.
    this.#call('onSenderKey', kid, Uint8Array.from(raw));
  }

  // A newcomer must not read what was sent before it came: move on one ratchet step, unless the
  // key has encrypted nothing yet (then it hides nothing, and bursts of joins cost one step).
  async #ratchetIfUsed() {
    if (this.#pending || this.#usedKid !== this.#active.kid) return;
    const { kid, raw } = this.#active;
    if (kid % 256 === 255) return this.#rotate();
    await this.#activate(kid + 1, await ratchetKey(raw));
  }

  // A fresh key of the next generation, sent to every peer; frames switch to it once the last of
  // those messages went out and switchDelayMs passed, so that peers hold it first.
  async #rotate() {
    const newest = this.#pending || this.#active;
    const next = { kid: (Math.floor(newest.kid / 256) + 1) * 256, raw: randomBytes(MEDIA_KEY_BYTES) };
    this.#pending = next;
    clearTimeout(this.#switchTimer);
    for (const id of this.#peers.keys()) await this.#sendKey(id);
    this.#outbox.push({
      marker: () => {
        this.#switchTimer = setTimeout(() => this.#serial(() => this.#switchTo(next)).catch(() => {}), this.switchDelayMs);
      },
    });
    this.#flush();
  }

  async #switchTo(next) {
    if (this.#pending !== next || this.#closed) return;
    await this.#activate(next.kid, next.raw);
    this.#pending = null;
    this.#call('onKeyChanged', next.kid);
  }

  async #updateCode() {
    if (!this.#self) return;
    const code = await safetyCodeFor([this.#self.keys, ...[...this.#peers.values()].map((p) => p.keys)]);
    if (code === this.#code) return;
    this.#code = code;
    this.#emit({ type: 'safety_code', code });
  }

  // --- sending, paced under the relay's limit

  #post(to, data, kind) {
    if (this.#closed) return;
    // Only the latest key (or announcement) for one recipient matters: replace a queued one in
    // place, which keeps an announcement ahead of the key that needs it.
    const queued = this.#outbox.find((m) => !m.marker && m.to === to && m.kind === kind);
    if (queued) queued.data = data;
    else this.#outbox.push({ to, data, kind });
    this.#flush();
  }

  #flush() {
    const now = this.#now();
    this.#tokens = Math.min(this.#rate.burst, this.#tokens + ((now - this.#refilled) * this.#rate.perSecond) / 1000);
    this.#refilled = now;
    while (this.#outbox.length > 0 && !this.#closed) {
      const m = this.#outbox[0];
      if (m.marker) {
        this.#outbox.shift();
        m.marker();
        continue;
      }
      if (this.#tokens < 1) break;
      this.#outbox.shift();
      this.#tokens -= 1;
      this.#counters.sent++;
      try {
        const r = this.#send(m.to === undefined ? { data: m.data } : { to: m.to, data: m.data });
        if (r && typeof r.then === 'function') r.then(undefined, (error) => this.#emit({ type: 'error', error }));
      } catch (error) {
        this.#emit({ type: 'error', error });
      }
    }
    if (this.#outbox.length > 0 && !this.#flushTimer && !this.#closed) {
      const wait = Math.ceil(((1 - this.#tokens) * 1000) / this.#rate.perSecond);
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = null;
        this.#flush();
      }, Math.max(1, wait));
    }
  }

  // --- plumbing

  // Operations run one at a time, in call order: each sees the state the previous one left.
  #serial(fn) {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => {});
    return run;
  }

  #emit(ev) {
    this.#call('onevent', ev);
  }

  #call(name, ...args) {
    try {
      if (typeof this[name] === 'function') this[name](...args);
    } catch {
      // A page callback that throws must not break the key exchange.
    }
  }
}
