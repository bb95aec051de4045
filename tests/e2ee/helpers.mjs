// Shared test helpers: frames, an in-memory relay wiring E2eeSessions together, deadlines.

import { E2eeSession } from '../../signaling/web/e2ee.js';

export const hex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
export const toHex = (b) => Buffer.from(b).toString('hex');

/** A VP8 keyframe: frame tag with P = 0, start code, 640x360, then payload. */
export function vp8Key(length = 200, seed = 1) {
  const f = new Uint8Array(length);
  f.set([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01].slice(0, length));
  for (let i = 10; i < length; i++) f[i] = (i * 31 + seed) & 0xff;
  return f;
}

/** A VP8 delta frame: P = 1. */
export function vp8Delta(length = 80, seed = 2) {
  const f = new Uint8Array(length);
  for (let i = 0; i < length; i++) f[i] = (i * 17 + seed) & 0xff;
  if (length > 0) f[0] = 0x31;
  return f;
}

/** An Opus frame: TOC byte, then payload. */
export function opus(length = 60, seed = 3) {
  const f = new Uint8Array(length);
  for (let i = 0; i < length; i++) f[i] = (i * 7 + seed) & 0xff;
  if (length > 0) f[0] = 0x78;
  return f;
}

/** Polls `cond` until it holds; fails once `ms` have passed. */
export async function waitFor(cond, what = 'condition', ms = 3000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * A room on an in-memory relay: delivers each `send` to its recipients in order, asynchronously,
 * like the real relay's `e2ee` messages. `tamper(m)` may rewrite (return a string) or drop
 * (return null) a message `{ from, to, data }` in flight. `log` keeps everything sent.
 */
export class Relay {
  sessions = new Map();
  events = new Map();
  log = [];
  tamper = null;
  #queue = [];
  #busy = false;

  constructor(defaults = {}) {
    this.defaults = { room: 'room', switchDelayMs: 20, ...defaults };
  }

  /** A newcomer: everyone present hears participant_joined first, then it starts. */
  async join(id, options = {}) {
    const others = [...this.sessions.values()];
    const events = [];
    const session = new E2eeSession({
      ...this.defaults,
      ...options,
      selfId: id,
      send: (m) => this.#deliver(id, m),
      onevent: (ev) => events.push(ev),
    });
    this.sessions.set(id, session);
    this.events.set(id, events);
    for (const s of others) await s.participantJoined(id);
    await session.start();
    return session;
  }

  /** `id` leaves: the relay stops delivering to it and tells everyone else. */
  async leave(id) {
    this.sessions.delete(id);
    for (const s of this.sessions.values()) await s.participantLeft(id);
  }

  /** Waits until every message in flight has been received. */
  async idle(ms = 3000) {
    await waitFor(() => this.#queue.length === 0 && !this.#busy, 'relay queue to drain', ms);
  }

  refused(id, reason) {
    return this.events.get(id).filter((e) => e.type === 'refused' && (!reason || e.reason === reason));
  }

  close() {
    for (const s of this.sessions.values()) s.close();
  }

  #deliver(from, { to, data }) {
    this.log.push({ from, to, data, at: Date.now() });
    const recipients = to === undefined ? [...this.sessions.keys()].filter((id) => id !== from) : [to];
    for (const r of recipients) if (this.sessions.has(r)) this.#queue.push({ from, to: r, data });
    this.#pump();
  }

  async #pump() {
    if (this.#busy) return;
    this.#busy = true;
    await null;
    while (this.#queue.length > 0) {
      const m = this.#queue.shift();
      const data = this.tamper ? this.tamper(m) : m.data;
      const session = this.sessions.get(m.to);
      if (data !== null && session) await session.receive(m.from, data);
    }
    this.#busy = false;
  }
}
