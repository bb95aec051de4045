// The frame crypto of Tern's end-to-end encryption, in a dedicated worker so that no frame waits
// on the page's main thread. The page (tern.js) holds the key exchange (E2eeSession) and posts
// every key change here; this worker holds the keys' FrameCrypto and transforms every encoded
// frame: RTCRtpScriptTransform (`rtctransform` events) where the browser has it, else the
// readable/writable pair of createEncodedStreams posted by the page.
//
// Messages from the page: { type: 'sender_key', kid, raw }, { type: 'receiver_key', senderId,
// kid, raw }, { type: 'receiver_removed', senderId }, { type: 'receivers', map: [[mid, {
// senderId, plain, ssrc }]] } (whose frames each subscribe m-line carries now, under which
// SSRC; `plain`: a participant who does not encrypt, passed as it is), { type: 'keyframe' } (our key changed), { type:
// 'streams', readable, writable, options }. To the page: { type: 'state', senderId, state },
// { type: 'sender_key_used', kid }, { type: 'counters', counters } (every second while frames
// flow), { type: 'error', message }.

import { FrameCrypto } from './e2ee.js';

const crypto = new FrameCrypto({
  onstate: (senderId, state) => self.postMessage({ type: 'state', senderId, state }),
  onSenderKeyUsed: (kid) => self.postMessage({ type: 'sender_key_used', kid }),
});
// Subscribe-leg mid -> { senderId, plain }: whose track it carries (changes on renegotiation).
let receivers = new Map();
// RTCRtpScriptTransformers of our senders, to ask their encoders for a keyframe.
const senders = new Set();
// Key changes are applied in order: a frame after a key message sees that key.
let keys = Promise.resolve();
let countersDue = 0;
// What the crypto costs, by side and frame size ('send 1280x720'): frames, milliseconds, bytes.
const cost = new Map();

function account(side, frame, started, bytes) {
  const { width, height } = frame.getMetadata ? frame.getMetadata() : {};
  const key = `${side} ${width && height ? `${width}x${height}` : 'audio'}`;
  const entry = cost.get(key) || { frames: 0, ms: 0, bytes: 0 };
  entry.frames++;
  entry.ms += performance.now() - started;
  entry.bytes += bytes;
  cost.set(key, entry);
}

self.onmessage = ({ data: m }) => {
  switch (m.type) {
    case 'sender_key':
      keys = keys.then(() => crypto.setSenderKey(m.kid, new Uint8Array(m.raw))).catch(report);
      break;
    case 'receiver_key':
      keys = keys.then(() => crypto.addReceiverKey(m.senderId, m.kid, new Uint8Array(m.raw))).catch(report);
      break;
    case 'receiver_removed':
      keys = keys.then(() => crypto.removeReceiver(m.senderId));
      break;
    case 'receivers':
      receivers = new Map(m.map);
      break;
    case 'keyframe':
      // Once the key is in place, so the keyframe is encrypted with it.
      keys = keys.then(() => {
        for (const t of senders) if (t.generateKeyFrame) t.generateKeyFrame().catch(() => {});
      });
      break;
    case 'streams':
      transform(m.readable, m.writable, m.options);
      break;
    default:
      break;
  }
};

self.onrtctransform = ({ transformer }) => {
  if (transformer.options.side === 'send') senders.add(transformer);
  transform(transformer.readable, transformer.writable, transformer.options, transformer);
};

function report(err) {
  self.postMessage({ type: 'error', message: String(err && err.message || err) });
}

function countersTick() {
  const now = Date.now();
  if (now < countersDue) return;
  countersDue = now + 1000;
  self.postMessage({ type: 'counters', counters: { ...crypto.counters, cost: Object.fromEntries(cost) } });
}

/**
 * Pipes one sender's or receiver's encoded frames through the crypto. `options`: { side: 'send'
 * | 'receive', kind: 'audio' | 'video', mid } (mid: the subscribe m-line, for receivers). A frame
 * that cannot be encrypted (no key yet) or decrypted is dropped, never passed on as garbage.
 */
function transform(readable, writable, { side, kind, mid }, transformer = null) {
  const codec = kind === 'audio' ? 'opus' : 'vp8';
  // Frames were dropped (no key yet, or one that failed): the decoder needs a keyframe to
  // start again, asked for once the frames decrypt.
  let dropped = false;
  const stream = new TransformStream({
    async transform(frame, controller) {
      await keys;
      const data = new Uint8Array(frame.data);
      const started = performance.now();
      if (side === 'send') {
        if (crypto.senderKid === null) return;
        const out = await crypto.encrypt(codec, data).catch(() => null);
        if (!out) return;
        account('send', frame, started, data.byteLength);
        frame.data = out.buffer.byteLength === out.byteLength ? out.buffer : out.slice().buffer;
        controller.enqueue(frame);
      } else {
        const from = receivers.get(mid);
        if (!from) return;
        // A frame of the participant this m-line carried before (its old SSRC): not theirs to
        // decode as the new one's, least of all as plain.
        const { synchronizationSource } = frame.getMetadata ? frame.getMetadata() : {};
        if (from.ssrc !== null && synchronizationSource !== undefined && synchronizationSource !== from.ssrc) return;
        if (from.plain) {
          controller.enqueue(frame);
          return;
        }
        const result = await crypto.decrypt(from.senderId, codec, data).catch(() => ({ ok: false }));
        account('receive', frame, started, data.byteLength);
        if (!result.ok) {
          dropped = true;
          return;
        }
        if (dropped && kind === 'video' && transformer && transformer.sendKeyFrameRequest) {
          transformer.sendKeyFrameRequest().catch(() => {});
        }
        dropped = false;
        const plain = result.frame;
        frame.data = plain.buffer.byteLength === plain.byteLength ? plain.buffer : plain.slice().buffer;
        controller.enqueue(frame);
      }
      countersTick();
    },
  });
  readable.pipeThrough(stream).pipeTo(writable).catch(() => {});
}
