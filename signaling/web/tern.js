// Tern client library: join a Tern room from the browser.
//
// A plain ES module with no build step and no dependencies, served by every relay at /tern.js.
// It speaks the protocol in signaling/PROTOCOL.md: one WebSocket, a publish peer connection (the
// client offers) and a subscribe peer connection (the relay offers), plus the relay's `tern`
// data channel for chat. See signaling/web/README.md for the API with an example. End-to-end
// encryption (useE2ee) lives in e2ee.js (keys, frame format) and e2ee-worker.js (the frames).

import { E2eeSession } from './e2ee.js';

export const PROTOCOL_VERSION = 1;

const PING_INTERVAL_MS = 10000;
const RESUME_DELAYS_MS = [250, 500, 1000, 2000];
// A join refused with `unavailable` (the relay is draining, or the media worker that holds the
// room is over its load limit) is tried again after these pauses, about 15 s in all; a busy
// worker measures its load over about 2 s, so it can take the join a few seconds later.
const UNAVAILABLE_RETRY_DELAYS_MS = [1000, 2000, 4000, 8000];

const layer = (l) => Object.freeze(l);

/**
 * Camera simulcast layers, lowest quality first: the relay numbers a track's layers in the order
 * of its `a=simulcast` line, which follows `sendEncodings` (PROTOCOL.md section 3.1).
 */
export const CAMERA_LAYERS = Object.freeze([
  layer({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 }),
  layer({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 }),
  layer({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 }),
]);

/** Screen share layers: full resolution at low frame rates, so that text stays readable. */
export const SCREEN_LAYERS = Object.freeze([
  layer({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 300000, maxFramerate: 5 }),
  layer({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1200000, maxFramerate: 15 }),
]);

// Codecs whose layers travel in one stream (SVC) rather than as simulcast; the relay forwards
// such a stream whole. L3T3_KEY: three spatial and three temporal layers, spatial layers
// depending on each other only at keyframes, as Chrome's own VP9 SVC does by default.
const SVC_CODECS = ['video/vp9', 'video/av1'];
const SVC_CAMERA_MODE = 'L3T3_KEY';
// A screen share keeps its resolution (text) and drops frames instead.
const SVC_SCREEN_MODE = 'L1T3';

// A higher layer squeezed below this share of its own maxBitrate looks worse than the layer
// under it at its full rate: a cap turns it off instead.
const MIN_LAYER_SHARE = 0.5;
// A higher layer without a maxBitrate of its own is kept under a cap only with this much left.
const MIN_UNBOUNDED_LAYER_BPS = 100000;

/**
 * getUserMedia video constraints for a camera: 1280x720 at 30 fps where the camera can (ideal,
 * so any camera works), enough pixels for three simulcast layers.
 */
export function cameraConstraints({ width = 1280, height = 720, frameRate = 30 } = {}) {
  return { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } };
}

/**
 * The camera layers worth sending for a capture of `width` x `height`. Chrome encodes fewer
 * simulcast layers for smaller frames (3 from 960x540, 2 from 480x270, else 1, by pixel count)
 * and drops the *highest* encodings it has no layer for; so a smaller capture sends the top
 * layers of CAMERA_LAYERS, and a small one a single layer (null).
 */
export function cameraLayersFor(width, height) {
  const pixels = (width || 0) * (height || 0);
  const count = pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
  return count === 1 ? null : CAMERA_LAYERS.slice(CAMERA_LAYERS.length - count);
}

/**
 * Splits a publisher's video cap over its encodings. `tracks`: per video track, the maxBitrate
 * (bps, or undefined for none) of each layer, lowest first. Returns per track and layer
 * `{ active, maxBitrate }`, the sum of active maxBitrates within `capBps` (null: no cap, every
 * layer as it is). The lowest layers come first, shared evenly between tracks (a track that
 * needs less leaves the rest to the others); then the second layer of every track in order,
 * then the third: a layer gets its maxBitrate if it fits, what is left if that is at least
 * MIN_LAYER_SHARE of it, or is turned off with every layer above it.
 */
export function planVideoEncodings(tracks, capBps) {
  if (capBps === null || capBps === undefined) {
    return tracks.map((layers) => layers.map((maxBitrate) => ({ active: true, maxBitrate })));
  }
  const plan = tracks.map((layers) => layers.map(() => ({ active: false, maxBitrate: undefined })));
  let left = Math.max(0, capBps);
  const want = (i, l) => (tracks[i][l] === undefined ? Infinity : tracks[i][l]);
  const withBase = tracks.map((_, i) => i).filter((i) => tracks[i].length > 0);
  withBase.sort((a, b) => want(a, 0) - want(b, 0));
  withBase.forEach((i, n) => {
    const give = Math.min(want(i, 0), Math.floor(left / (withBase.length - n)));
    if (give > 0) plan[i][0] = { active: true, maxBitrate: give };
    left -= give;
  });
  const depth = Math.max(0, ...tracks.map((layers) => layers.length));
  for (let l = 1; l < depth; l++) {
    tracks.forEach((layers, i) => {
      if (l >= layers.length || !plan[i][l - 1].active) return;
      const full = want(i, l);
      const least = full === Infinity ? MIN_UNBOUNDED_LAYER_BPS : full * MIN_LAYER_SHARE;
      const give = Math.min(full, left);
      if (give > 0 && give >= least) {
        plan[i][l] = { active: true, maxBitrate: give };
        left -= give;
      }
    });
  }
  return plan;
}

export class TernError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * A participant's session in one room. Events (CustomEvent, payload in `detail`):
 * - `joined` (the joined message), `reconnecting`, `resumed`, `closed` ({ reason })
 * - `participant_joined` / `participant_left` / `participant_reconnecting` / `participant_resumed`
 * - `track_published` / `track_unpublished` / `track_muted` (relay messages as documented)
 * - `track` ({ track, stream, info }): a remote track arrived (info: the relay's TrackInfo)
 * - `subscription_state` (the relay message plus `participant_id`): what the relay forwards of
 *   a video track we receive; also kept in `subscriptions` and on the TrackInfo
 * - `publish_limits` (the relay message): the room's cap on our video, applied to our senders
 * - `active_speakers` (the relay message): who speaks now, loudest first (`activeSpeakers`)
 * - `connection_quality` (the relay message): participants whose connection quality changed
 *   (`good`, `poor`, `lost`; ours included), kept in `connectionQuality`
 * - `video_demand` (the relay message): how many layers of one of our video tracks anybody may
 *   receive; the encodings above are turned off (`videoDemand`)
 * - `data` ({ from, data }) and `chat` ({ from, text, name }) from the data channel
 * - `error` ({ code, message, track_id? })
 * - with end-to-end encryption (useE2ee): `e2ee_state` ({ participant_id, state }: 'encrypted',
 *   'waiting_for_key', 'cannot_decrypt' or 'not_encrypted'), `e2ee_safety_code` ({ code }: the
 *   emoji everyone compares, a string), `e2ee_refused` ({ from, reason }: keys refused, e.g. `bad_mac` when
 *   the passphrase differs or the relay substituted a key); state in `room.e2ee`
 */
export class Room extends EventTarget {
  constructor() {
    super();
    this.state = 'new';
    this.participant = null; // own ParticipantInfo
    this.participants = new Map(); // id -> ParticipantInfo of everybody else
    this.remoteTracks = new Map(); // relay track id -> MediaStreamTrack
    this.localTracks = new Map(); // relay track id -> { track, source, selfMuted, adminMuted }
    // Relay track id -> { paused, reason, layer, width, height } of the video tracks we receive
    // that the relay told us about (`subscription_state`); a track without one is not paused.
    this.subscriptions = new Map();
    // Relay track id -> { paused, maxWidth, maxHeight }: what we asked of each video we receive
    // (setSubscription); repeated to the relay after a resume.
    this._wishes = new Map();
    this.publishLimits = { maxVideoKbps: null }; // the room's cap on our video (null: none)
    // Relay track id of our video -> how many of its layers, lowest first, anybody may receive
    // (`video_demand`; absent: all). Encodings above are turned off (dynacast).
    this.videoDemand = new Map();
    // Who is speaking now, loudest first (participant ids, ours included; `active_speakers`).
    this.activeSpeakers = [];
    // Participant id (ours included) -> 'good' | 'poor' | 'lost' (`connection_quality`; absent:
    // not judged yet, take it as good).
    this.connectionQuality = new Map();
    this.iceServers = [];
    this.publishPc = null;
    this.subscribePc = null;
    this.dataChannel = null;
    this.resumeToken = null;
    this.resumeGraceMs = 10000;
    this._url = null;
    this._token = null;
    this._published = []; // { transceiver, source, stopped, layers, degradationPreference }
    this._pendingPublish = [];
    this._subscribedByMid = new Map();
    this._pingTimer = null;
    this._queue = Promise.resolve();
    this._closedReason = null;
    this._e2eeOptions = null;
    this.e2ee = null; // E2eeCall once joined with end-to-end encryption
  }

  /**
   * Encrypts our media end to end and decrypts everybody's (call before connect): the relay
   * forwards frames it cannot read. `passphrase` (optional, the same for everyone in the room,
   * e.g. from the page's `#e2ee=` fragment) authenticates everyone's keys, so that a relay that
   * substitutes one is detected; without it, compare the safety code (`room.e2ee.safetyCode`).
   * Video is sent as VP8 (E2EE supports VP8 and Opus only). `transform`: 'auto' (the default:
   * RTCRtpScriptTransform where the browser has it, else createEncodedStreams) or 'streams'.
   */
  useE2ee({ passphrase = '', transform = 'auto' } = {}) {
    if (this.state !== 'new') throw new TernError('invalid_state', 'useE2ee comes before connect');
    if (!globalThis.crypto || !globalThis.crypto.subtle) {
      throw new TernError('e2ee_unavailable', 'end-to-end encryption needs WebCrypto, which browsers give only to secure pages (HTTPS or localhost)');
    }
    const streams = transform === 'streams' || typeof RTCRtpScriptTransform === 'undefined';
    if (streams && !('createEncodedStreams' in RTCRtpSender.prototype)) {
      throw new TernError('e2ee_unavailable', 'this browser has no encoded transforms, so it cannot encrypt end to end');
    }
    this._e2eeOptions = { passphrase, streams };
  }

  /**
   * Connects and resolves with the `joined` message; rejects with a TernError. A refusal with
   * `unavailable` is retried with growing pauses (a `retrying` event before each: attempt,
   * delayMs, code, message) before it is given up; `leave()` meanwhile stops the retries.
   */
  async connect(url, token) {
    this._url = url;
    this._token = token;
    this.state = 'connecting';
    for (let attempt = 0; ; attempt++) {
      try {
        return await this._open(null);
      } catch (err) {
        const delayMs = UNAVAILABLE_RETRY_DELAYS_MS[attempt];
        if (err.code !== 'unavailable' || delayMs === undefined || this.state !== 'connecting') {
          this.state = 'closed';
          throw err;
        }
        this._emit('retrying', { attempt: attempt + 1, delayMs, code: err.code, message: err.message });
        await new Promise((r) => setTimeout(r, delayMs));
        if (this.state !== 'connecting') throw new TernError('left', 'left before the relay took the join');
      }
    }
  }

  _open(resumeToken) {
    const query = new URLSearchParams({ access_token: this._token, protocol: String(PROTOCOL_VERSION) });
    if (resumeToken) query.set('resume_token', resumeToken);
    if (this._e2eeOptions) query.set('e2ee', '1');
    const ws = new WebSocket(`${this._url}?${query}`);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      let joined = false;
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (message.type === 'joined') {
          joined = true;
          this._onJoined(message);
          resolve(message);
        } else if (message.type === 'error' && !joined) {
          reject(new TernError(message.code, message.message));
        }
        // One message at a time: SDP handling is asynchronous and must not interleave.
        this._queue = this._queue.then(() => this._dispatch(message)).catch((err) => {
          this._emit('error', { code: 'client', message: String(err && err.message || err) });
        });
      };
      ws.onclose = () => {
        clearInterval(this._pingTimer);
        if (this.ws !== ws) return;
        if (!joined) {
          reject(new TernError('unreachable', 'the relay refused or could not be reached'));
          return;
        }
        this._onDropped();
      };
    });
  }

  _onJoined(message) {
    this.state = 'connected';
    this.participant = message.participant;
    this.resumeToken = message.resume_token;
    this.resumeGraceMs = (message.resume_grace_s || 10) * 1000;
    this.iceServers = (message.ice_servers || []).map((s) => ({
      urls: s.urls, username: s.username, credential: s.credential,
    }));
    this.participants = new Map(message.participants.map((p) => [p.id, p]));
    for (const id of [...this.subscriptions.keys()]) if (!this._remoteTrackInfo(id)) this.subscriptions.delete(id);
    for (const p of this.participants.values()) {
      for (const t of p.tracks) if (this.subscriptions.has(t.id)) t.subscription = this.subscriptions.get(t.id);
    }
    // The relay repeats the room's cap (publish_limits) right after every joined, resumes
    // included; no repeat means there is none now. Not applied here: a cap that still holds
    // follows at once, and lifting it meanwhile would only make the senders flap.
    this.publishLimits = { maxVideoKbps: null };
    // Likewise the demand for our layers: what still holds is repeated right after `joined`.
    this.videoDemand = new Map();
    // After a resume: an operator may have muted or unmuted our tracks meanwhile.
    for (const t of (message.participant && message.participant.tracks) || []) {
      this._applyOperatorMute(t.id, !!t.admin_muted);
    }
    if (this._e2eeOptions) {
      if (!this.e2ee) this.e2ee = new E2eeCall(this, message, this._e2eeOptions);
      // In order with the messages that came before the drop.
      else this._queue = this._queue.then(() => this.e2ee.resync(message.participants));
    }
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this._send({ type: 'ping', timestamp: Date.now() }), PING_INTERVAL_MS);
  }

  /** The WebSocket dropped without `closed`: resume within the grace period, by ourselves. */
  async _onDropped() {
    if (this._closedReason || this.state === 'closed') {
      this._finish(this._closedReason || 'closed');
      return;
    }
    this.state = 'reconnecting';
    this._emit('reconnecting', {});
    const deadline = Date.now() + this.resumeGraceMs;
    for (let attempt = 0; Date.now() < deadline && this.state === 'reconnecting'; attempt++) {
      await new Promise((r) => setTimeout(r, RESUME_DELAYS_MS[Math.min(attempt, RESUME_DELAYS_MS.length - 1)]));
      if (this.state !== 'reconnecting') return;
      try {
        const joined = await this._open(this.resumeToken);
        if (joined.resumed) {
          for (const [trackId, wish] of this._wishes) {
            if (this._remoteTrackInfo(trackId)) this._sendWish(trackId, wish);
            else this._wishes.delete(trackId);
          }
          this._emit('resumed', joined);
          await this._restartPublishIce();
          return;
        }
      } catch (err) {
        if (err.code === 'resume_failed') break;
      }
    }
    if (this.state === 'reconnecting') this._finish('timeout');
  }

  _finish(reason) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearInterval(this._pingTimer);
    for (const pc of [this.publishPc, this.subscribePc]) if (pc) pc.close();
    if (this.e2ee) this.e2ee.close();
    this._emit('closed', { reason });
  }

  _send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async _dispatch(message) {
    switch (message.type) {
      case 'publish_answer':
        await this.publishPc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
        for (const t of message.tracks) {
          const entry = this._published.find((p) => p.transceiver.mid === t.mid);
          if (entry) {
            entry.trackId = t.id;
            this.localTracks.set(t.id, { track: entry.transceiver.sender.track, source: t.source, selfMuted: false, adminMuted: !!t.admin_muted });
          }
        }
        await this._applyPublishLimits();
        this._settlePublish(null, message.tracks);
        break;
      case 'subscribe_offer':
        await this._answerSubscribe(message);
        break;
      case 'participant_joined':
        this.participants.set(message.participant.id, message.participant);
        // Before any of the newcomer's own e2ee messages (the relay sends this first).
        if (this.e2ee) await this.e2ee.joined(message.participant);
        break;
      case 'participant_left':
        this.participants.delete(message.participant_id);
        if (this.e2ee) await this.e2ee.left(message.participant_id);
        break;
      case 'e2ee':
        if (this.e2ee) await this.e2ee.session.receive(message.from, message.data);
        break;
      case 'participant_reconnecting':
      case 'participant_resumed': {
        const p = this.participants.get(message.participant_id);
        if (p) p.state = message.type === 'participant_resumed' ? 'active' : 'reconnecting';
        break;
      }
      case 'track_published': {
        const p = this.participants.get(message.track.participant_id);
        if (p) p.tracks.push(message.track);
        if (this.subscriptions.has(message.track.id)) message.track.subscription = this.subscriptions.get(message.track.id);
        break;
      }
      case 'track_unpublished': {
        const p = this.participants.get(message.participant_id);
        if (p) p.tracks = p.tracks.filter((t) => t.id !== message.track_id);
        this.remoteTracks.delete(message.track_id);
        this.subscriptions.delete(message.track_id);
        this._wishes.delete(message.track_id);
        break;
      }
      case 'subscription_state': {
        const state = {
          paused: !!message.paused,
          reason: message.paused ? message.reason || null : null,
          layer: message.layer ?? null,
          width: message.width ?? null,
          height: message.height ?? null,
        };
        this.subscriptions.set(message.track_id, state);
        const t = this._remoteTrackInfo(message.track_id);
        if (t) t.subscription = state;
        message.participant_id = t ? t.participant_id : null;
        break;
      }
      case 'publish_limits':
        this.publishLimits = { maxVideoKbps: message.max_video_kbps ?? null };
        await this._applyPublishLimits();
        break;
      case 'active_speakers':
        this.activeSpeakers = message.participant_ids || [];
        break;
      case 'connection_quality':
        for (const u of message.updates || []) this.connectionQuality.set(u.participant_id, u.quality);
        break;
      case 'video_demand':
        if (message.layers === undefined || message.layers === null) this.videoDemand.delete(message.track_id);
        else this.videoDemand.set(message.track_id, message.layers);
        await this._applyPublishLimits();
        break;
      case 'track_muted': {
        const p = this.participants.get(message.participant_id);
        const t = p && p.tracks.find((x) => x.id === message.track_id);
        if (t) {
          t.muted = message.muted;
          t.admin_muted = !!message.admin_muted;
        }
        this._applyOperatorMute(message.track_id, !!message.admin_muted);
        break;
      }
      case 'closed':
        this._closedReason = message.reason;
        break;
      case 'error':
        if (message.request === 'publish_offer') this._settlePublish(new TernError(message.code, message.message));
        break;
      default:
        break;
    }
    if (!['joined', 'pong', 'publish_answer', 'subscribe_offer', 'closed', 'e2ee'].includes(message.type)) {
      this._emit(message.type, message);
    }
  }

  /** The TrackInfo of a track somebody else publishes, or null. */
  _remoteTrackInfo(trackId) {
    for (const p of this.participants.values()) {
      const t = p.tracks.find((x) => x.id === trackId);
      if (t) return t;
    }
    return null;
  }

  _settlePublish(error, tracks) {
    const pending = this._pendingPublish.shift();
    if (!pending) return;
    if (error) pending.reject(error);
    else pending.resolve(tracks);
  }

  _ensurePublishPc() {
    if (!this.publishPc) {
      this.publishPc = new RTCPeerConnection(this._pcConfig());
      this.publishPc.onicecandidate = (e) => this._trickle('publish', e.candidate);
    }
    return this.publishPc;
  }

  /**
   * Publishes one track. `source` is 'camera', 'microphone' or 'screen'; `videoCodec` (e.g.
   * 'video/VP9') is put first in the offer (the relay answers one codec per track, the first it
   * supports). `simulcast` (video only): true (the default) sends CAMERA_LAYERS or SCREEN_LAYERS
   * as far as the capture size allows (see cameraLayersFor), or one SVC encoding when
   * `videoCodec` is VP9 or AV1; false sends one plain encoding; an array of encodings
   * ({ rid, scaleResolutionDownBy, maxBitrate, maxFramerate }, lowest quality first) sends
   * those. Resolves with the relay's TrackInfo of the new track.
   */
  async publishTrack(track, source, { stream, videoCodec, simulcast = true } = {}) {
    if (this.e2ee && track.kind === 'video') {
      if (videoCodec && videoCodec.toLowerCase() !== 'video/vp8') {
        throw new TernError('unsupported_codec', `end-to-end encryption supports VP8 and Opus only, not ${videoCodec}`);
      }
      videoCodec = 'video/VP8';
    }
    const pc = this._ensurePublishPc();
    const init = { direction: 'sendonly', streams: [stream || new MediaStream([track])] };
    let layers = null;
    let degradationPreference;
    if (track.kind === 'video') {
      if (source === 'screen') {
        // Encoders keep the resolution of 'detail' content and give up frames instead.
        if ('contentHint' in track && !track.contentHint) track.contentHint = 'detail';
        degradationPreference = 'maintain-resolution';
      }
      layers = videoLayers(track, source, videoCodec, simulcast);
      if (layers) init.sendEncodings = layers.map((l) => ({ ...l }));
    }
    let transceiver;
    try {
      transceiver = pc.addTransceiver(track, init);
    } catch (err) {
      // A browser without this SVC mode refuses it (Chrome does not list the modes it has in
      // getCapabilities): send one plain encoding instead.
      if (!layers || !layers.some((l) => l.scalabilityMode)) throw err;
      layers = null;
      delete init.sendEncodings;
      transceiver = pc.addTransceiver(track, init);
    }
    if (this.e2ee) this.e2ee.attachSender(transceiver.sender, track.kind);
    if (videoCodec && track.kind === 'video' && RTCRtpSender.getCapabilities) {
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      const wanted = (c) => c.mimeType.toLowerCase() === videoCodec.toLowerCase();
      transceiver.setCodecPreferences([...codecs.filter(wanted), ...codecs.filter((c) => !wanted(c))]);
    }
    // `layers`: what the encodings are when no cap applies; [{}] for the browser's own single one.
    this._published.push({ transceiver, source, stopped: false, layers: layers || [{}], degradationPreference });
    const tracks = await this._renegotiatePublish(false);
    return tracks.find((t) => t.mid === transceiver.mid) || null;
  }

  /**
   * Publishes every track of a stream (camera and microphone by kind unless `sources` says);
   * `simulcast` as in publishTrack, for its video tracks.
   */
  async publish(stream, { sources = new Map(), videoCodec, simulcast } = {}) {
    const infos = [];
    for (const track of stream.getTracks()) {
      const source = sources.get(track) || (track.kind === 'audio' ? 'microphone' : 'camera');
      infos.push(await this.publishTrack(track, source, { stream, videoCodec, simulcast }));
    }
    return infos;
  }

  /**
   * Writes the encodings of every video track we send: their own layers without a cap, under
   * the room's cap (publish_limits) the plan of planVideoEncodings. Runs in the message queue,
   * so two setParameters of one sender never overlap (the second would fail).
   */
  async _applyPublishLimits() {
    const capKbps = this.publishLimits.maxVideoKbps;
    const senders = [];
    for (const entry of this._published) {
      const sender = entry.transceiver.sender;
      if (entry.stopped || !sender.track || sender.track.kind !== 'video') continue;
      if (entry.degradationPreference && !entry.degradationPreferenceSet) {
        // Once, and apart from the encodings: a browser that refuses it still gets the cap.
        entry.degradationPreferenceSet = true;
        await setSenderParameters(entry, (params) => {
          params.degradationPreference = entry.degradationPreference;
          return true;
        });
      }
      const { encodings } = sender.getParameters();
      if (!encodings || encodings.length === 0) continue;
      const demand = this.videoDemand.get(entry.trackId);
      senders.push({ entry, layers: effectiveLayers(entry.layers, encodings), demand: demand === undefined ? Infinity : demand });
    }
    const plan = planVideoEncodings(senders.map((s) => s.layers.map((l) => l.maxBitrate)),
      capKbps === null ? null : capKbps * 1000);
    for (const [i, { entry, layers, demand }] of senders.entries()) {
      await setSenderParameters(entry, (params) => {
        let changed = false;
        params.encodings.forEach((encoding, e) => {
          const want = { ...layers[e], ...plan[i][e] };
          // Encodings are lowest quality first; those above the demand nobody receives.
          if (e >= demand) want.active = false;
          if (encoding.active !== want.active) {
            encoding.active = want.active;
            changed = true;
          }
          if (want.maxBitrate === undefined && 'maxBitrate' in encoding) {
            delete encoding.maxBitrate;
            changed = true;
          } else if (want.maxBitrate !== undefined && encoding.maxBitrate !== want.maxBitrate) {
            encoding.maxBitrate = want.maxBitrate;
            changed = true;
          }
          // Set by our layers only; a browser's own value for a layer we never set stays.
          for (const key of ['scaleResolutionDownBy', 'maxFramerate']) {
            if (want[key] !== undefined && encoding[key] !== want[key]) {
              encoding[key] = want[key];
              changed = true;
            }
          }
        });
        return changed;
      });
    }
  }

  /** Stops publishing a track (e.g. the screen share ended). */
  async unpublishTrack(trackId) {
    const local = this.localTracks.get(trackId);
    if (!local) return;
    const entry = this._published.find((p) => p.transceiver.sender.track === local.track);
    if (entry) {
      entry.stopped = true;
      entry.transceiver.direction = 'inactive';
    }
    this.localTracks.delete(trackId);
    await this._renegotiatePublish(false);
  }

  async _renegotiatePublish(iceRestart) {
    const pc = this._ensurePublishPc();
    const offer = await pc.createOffer({ iceRestart });
    await pc.setLocalDescription(offer);
    const tracks = this._published
      .filter((p) => !p.stopped && p.transceiver.mid !== null)
      .map((p) => ({ mid: p.transceiver.mid, source: p.source }));
    const answered = new Promise((resolve, reject) => this._pendingPublish.push({ resolve, reject }));
    this._send({ type: 'publish_offer', sdp: pc.localDescription.sdp, tracks });
    return answered;
  }

  async _restartPublishIce() {
    if (!this.publishPc || this._published.every((p) => p.stopped)) return;
    try {
      await this._renegotiatePublish(true);
    } catch (err) {
      this._emit('error', { code: err.code || 'client', message: err.message });
    }
  }

  _pcConfig() {
    const config = { iceServers: this.iceServers, bundlePolicy: 'max-bundle' };
    // Chromium's createEncodedStreams works only on a connection made for it.
    if (this._e2eeOptions && this._e2eeOptions.streams) config.encodedInsertableStreams = true;
    return config;
  }

  _trickle(leg, candidate) {
    const init = candidate ? candidate.toJSON() : { candidate: '' };
    this._send({ type: 'trickle', leg, candidate: init });
  }

  async _answerSubscribe(message) {
    if (message.new_connection && this.subscribePc) {
      // The relay rebuilt our subscribe leg: answer on a fresh peer connection.
      this.subscribePc.close();
      this.subscribePc = null;
    }
    if (!this.subscribePc) {
      const pc = new RTCPeerConnection(this._pcConfig());
      pc.onicecandidate = (e) => this._trickle('subscribe', e.candidate);
      pc.ontrack = (e) => {
        if (this.e2ee) this.e2ee.attachReceiver(e.receiver, e.track.kind, e.transceiver.mid);
        const info = this._subscribedByMid.get(e.transceiver.mid);
        if (info) this.remoteTracks.set(info.id, e.track);
        this._emit('track', { track: e.track, stream: e.streams[0], info });
      };
      pc.ondatachannel = (e) => {
        if (e.channel.label !== 'tern') return;
        this.dataChannel = e.channel;
        e.channel.onmessage = (m) => this._onData(m.data);
      };
      this.subscribePc = pc;
    }
    this._subscribedByMid = new Map(message.tracks.filter((t) => t.mid).map((t) => [t.mid, t]));
    // Before the new m-lines' first frames: whose frames each carries, to decrypt them.
    if (this.e2ee) this.e2ee.setReceivers(this._subscribedByMid, ssrcsByMid(message.sdp));
    await this.subscribePc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
    const answer = await this.subscribePc.createAnswer();
    await this.subscribePc.setLocalDescription(answer);
    this._send({ type: 'subscribe_answer', sdp: this.subscribePc.localDescription.sdp });
  }

  _onData(raw) {
    let envelope;
    try {
      envelope = JSON.parse(raw);
    } catch {
      return;
    }
    this._emit('data', envelope);
    let body = null;
    try {
      body = JSON.parse(envelope.data);
    } catch {
      body = null;
    }
    if (body && body.type === 'chat' && typeof body.text === 'string') {
      const p = this.participants.get(envelope.from);
      this._emit('chat', { from: envelope.from, name: p ? p.name : envelope.from, text: body.text });
    }
  }

  /** Sends text to everybody else in the room (needs the publish_data grant). */
  sendData(text) {
    if (!this.dataChannel || this.dataChannel.readyState !== 'open') {
      throw new TernError('no_data_channel', 'the data channel is not open yet');
    }
    this.dataChannel.send(text);
  }

  /**
   * Swaps the capture behind one of our published tracks (another camera or microphone) without
   * renegotiating: the others keep receiving the same track, now from `track`, which takes the
   * old one's mute state. The old capture is not stopped (the caller owns it).
   */
  async replaceTrack(trackId, track) {
    const local = this.localTracks.get(trackId);
    if (!local) throw new TernError('unknown_track', `no published track ${trackId}`);
    if (track.kind !== local.track.kind) throw new TernError('malformed_message', `a ${local.track.kind} track cannot be replaced by a ${track.kind} track`);
    const entry = this._published.find((p) => !p.stopped && p.transceiver.sender.track === local.track);
    if (!entry) throw new TernError('unknown_track', `track ${trackId} is not being sent`);
    track.enabled = !(local.selfMuted || local.adminMuted);
    await entry.transceiver.sender.replaceTrack(track);
    local.track = track;
  }

  /** Sends a chat line; the others receive a `chat` event. */
  sendChat(text) {
    this.sendData(JSON.stringify({ type: 'chat', text }));
  }

  /**
   * Mutes or unmutes one of our own tracks, locally and for everybody. While an operator has
   * muted the track (`localTracks.get(id).adminMuted`) it cannot be unmuted: this throws a
   * `TernError` with code `not_allowed`, as the relay would refuse it.
   */
  setMuted(trackId, muted) {
    const local = this.localTracks.get(trackId);
    if (local) {
      if (local.adminMuted && !muted) throw new TernError('not_allowed', 'an operator muted this track; only an operator can unmute it');
      local.selfMuted = muted;
      local.track.enabled = !muted;
    }
    this._send({ type: 'set_muted', track_id: trackId, muted });
  }

  /**
   * Says what we want of a video track we receive (protocol 1.2), so that the relay sends no
   * more than it is shown with: `paused` for none of it (a tile off screen, a hidden tab), or
   * `maxWidth` x `maxHeight`, the size it is shown at in device pixels, for no larger layer than
   * that needs (the smallest that covers it). Omitted sizes: no limit. Unchanged wishes are not
   * sent again; a relay before 1.2 answers `unknown_message_type` and sends every layer.
   */
  setSubscription(trackId, { paused = false, maxWidth, maxHeight } = {}) {
    const size = (v) => (Number.isFinite(v) && v > 0 ? Math.min(16384, Math.ceil(v)) : undefined);
    const wish = { paused: !!paused, maxWidth: size(maxWidth), maxHeight: size(maxHeight) };
    const last = this._wishes.get(trackId);
    if (last && last.paused === wish.paused && last.maxWidth === wish.maxWidth && last.maxHeight === wish.maxHeight) return;
    this._wishes.set(trackId, wish);
    this._sendWish(trackId, wish);
  }

  _sendWish(trackId, wish) {
    const message = { type: 'update_subscription', track_id: trackId, paused: wish.paused };
    if (wish.maxWidth) message.max_width = wish.maxWidth;
    if (wish.maxHeight) message.max_height = wish.maxHeight;
    this._send(message);
  }

  /**
   * An operator muted or unmuted one of our tracks. Their mute stops the track here too; lifting
   * it re-enables the track only if we had not muted it ourselves (the relay's word never turns
   * on a microphone the user turned off). Emits `local_muted` ({ trackId, source, muted,
   * adminMuted }) when the operator's state changed.
   */
  _applyOperatorMute(trackId, adminMuted) {
    const local = this.localTracks.get(trackId);
    if (!local || !!local.adminMuted === adminMuted) return;
    local.adminMuted = adminMuted;
    const muted = local.selfMuted || adminMuted;
    local.track.enabled = !muted;
    this._emit('local_muted', { trackId, source: local.source, muted, adminMuted });
  }

  /** Leaves for good. */
  leave() {
    this._closedReason = 'left';
    this._send({ type: 'leave' });
    this._finish('left');
    if (this.ws) this.ws.close();
  }
}

/**
 * The page's side of an end-to-end encrypted call: the key exchange (E2eeSession, through the
 * relay's `e2ee` messages) and a worker (e2ee-worker.js) that encrypts every frame we send and
 * decrypts every frame we receive with the keys the session posts to it.
 */
class E2eeCall {
  constructor(room, joined, { passphrase, streams }) {
    this.room = room;
    this.selfId = joined.participant.id;
    this.streams = streams;
    this.passphrase = !!passphrase;
    // Participant id -> 'encrypted' | 'waiting_for_key' | 'cannot_decrypt' | 'not_encrypted'.
    this.states = new Map();
    this.refused = new Map(); // participant id -> why its keys were refused
    this.safetyCode = null; // the emoji everyone compares
    this.counters = null; // the worker's: frames encrypted, decrypted, failed by reason
    this._workerStates = new Map();
    this._plain = new Set(); // participants who joined without e2ee
    this.worker = new Worker(new URL('./e2ee-worker.js', import.meta.url), { type: 'module' });
    this.worker.onmessage = ({ data: m }) => this._fromWorker(m);
    this.worker.onerror = (e) => room._emit('error', { code: 'e2ee', message: `the encryption worker failed: ${e.message}` });
    const post = (m) => this.worker.postMessage(m);
    this.session = new E2eeSession({
      selfId: this.selfId,
      room: joined.room,
      passphrase,
      send: ({ to, data }) => room._send(to ? { type: 'e2ee', to, data } : { type: 'e2ee', data }),
      onevent: (ev) => this._onEvent(ev),
      // A new key after a leave: a keyframe lets everyone start clean on it.
      onKeyChanged: () => post({ type: 'keyframe' }),
      onSenderKey: (kid, raw) => post({ type: 'sender_key', kid, raw }),
      onReceiverKey: (senderId, kid, raw) => post({ type: 'receiver_key', senderId, kid, raw }),
      onReceiverRemoved: (senderId) => post({ type: 'receiver_removed', senderId }),
    });
    for (const p of joined.participants) this._note(p);
    this.started = this.session.start().catch((err) => room._emit('error', { code: 'e2ee', message: String(err.message || err) }));
  }

  _note(p) {
    if (p.e2ee) this._plain.delete(p.id);
    else this._plain.add(p.id);
    this._render(p.id);
  }

  /** A participant joined after us (before its own e2ee messages are handled). */
  async joined(p) {
    this._note(p);
    if (p.e2ee) await this.session.participantJoined(p.id);
  }

  async left(id) {
    this._plain.delete(id);
    this.states.delete(id);
    this.refused.delete(id);
    this._workerStates.delete(id);
    await this.session.participantLeft(id);
  }

  /**
   * After a resume: whoever left or joined while we were away, and the key messages lost while
   * the connection was down (everyone re-sends us its key, we re-send ours).
   */
  async resync(participants) {
    const now = new Set(participants.map((p) => p.id));
    for (const id of this.session.peers) if (!now.has(id)) await this.left(id);
    for (const p of participants) if (!this.session.peers.includes(p.id)) await this.joined(p);
    await this.session.reannounce();
  }

  attachSender(sender, kind) {
    this._attach(sender, { side: 'send', kind });
  }

  attachReceiver(receiver, kind, mid) {
    if (receiver._ternE2ee) return; // a reused m-line keeps its transform; setReceivers moves it
    receiver._ternE2ee = true;
    this._attach(receiver, { side: 'receive', kind, mid });
  }

  _attach(endpoint, options) {
    if (this.streams) {
      const { readable, writable } = endpoint.createEncodedStreams();
      this.worker.postMessage({ type: 'streams', readable, writable, options }, [readable, writable]);
    } else {
      endpoint.transform = new RTCRtpScriptTransform(this.worker, options);
    }
  }

  /** Whose frames each subscribe m-line carries (mid -> TrackInfo); plain senders pass as they are. */
  setReceivers(byMid, ssrcs = new Map()) {
    // The SSRC too: an m-line the relay reuses for another participant's track can still bring
    // frames of the one before (under its old SSRC) until the relay switches; those are dropped.
    const map = [...byMid].map(([mid, t]) => [mid, { senderId: t.participant_id, plain: this._plain.has(t.participant_id), ssrc: ssrcs.get(mid) ?? null }]);
    this.worker.postMessage({ type: 'receivers', map });
  }

  _fromWorker(m) {
    if (m.type === 'state') {
      // A late report about somebody who has left.
      if (!this.room.participants.has(m.senderId)) return;
      this._workerStates.set(m.senderId, m.state);
      this._render(m.senderId);
    } else if (m.type === 'sender_key_used') {
      this.session.senderKeyUsed(m.kid);
    } else if (m.type === 'counters') {
      this.counters = m.counters;
    } else if (m.type === 'error') {
      this.room._emit('error', { code: 'e2ee', message: m.message });
    }
  }

  _onEvent(ev) {
    if (ev.type === 'safety_code') {
      this.safetyCode = ev.code;
      this.room._emit('e2ee_safety_code', { code: ev.code });
    } else if (ev.type === 'refused' && ['bad_mac', 'missing_mac', 'bad_public_key'].includes(ev.reason)) {
      this.refused.set(ev.from, ev.reason);
      this.room._emit('e2ee_refused', { from: ev.from, reason: ev.reason });
      this._render(ev.from);
    } else if (ev.type === 'peer') {
      this.refused.delete(ev.id);
      this._render(ev.id);
    } else if (ev.type === 'key') {
      this._render(ev.from);
    }
  }

  /** A participant's state as its tile shows it. */
  state(id) {
    if (this._plain.has(id)) return 'not_encrypted';
    if (this.refused.has(id)) return 'cannot_decrypt';
    // Before any of their frames: whether we hold a key of theirs.
    return this._workerStates.get(id) || this.session.state(id);
  }

  _render(id) {
    if (!id || id === this.selfId) return;
    const state = this.state(id);
    if (this.states.get(id) === state) return;
    this.states.set(id, state);
    this.room._emit('e2ee_state', { participant_id: id, state });
  }

  close() {
    this.session.close();
    this.worker.terminate();
  }
}

/** mid -> the first `a=ssrc` of its m-section, from an SDP. */
function ssrcsByMid(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const lines = section.split(/\r?\n/);
    const mid = lines.find((l) => l.startsWith('a=mid:'));
    const ssrc = lines.find((l) => l.startsWith('a=ssrc:'));
    if (mid && ssrc) out.set(mid.slice(6).trim(), Number(ssrc.slice(7).split(' ')[0]));
  }
  return out;
}

/**
 * The encodings to send a video track with (lowest quality first), or null for the browser's
 * default single encoding. See publishTrack for `simulcast`.
 */
function videoLayers(track, source, videoCodec, simulcast) {
  if (Array.isArray(simulcast)) return simulcast.map((l) => ({ ...l }));
  if (!simulcast) return null;
  if (videoCodec && SVC_CODECS.includes(videoCodec.toLowerCase())) {
    return [{ scalabilityMode: source === 'screen' ? SVC_SCREEN_MODE : SVC_CAMERA_MODE }];
  }
  const { width, height } = track.getSettings ? track.getSettings() : {};
  if (source === 'screen') {
    // Screens are not held to the camera's layer counts, but a tiny window needs only one.
    return width >= 480 ? SCREEN_LAYERS.map((l) => ({ ...l })) : null;
  }
  const layers = cameraLayersFor(width, height);
  return layers && layers.map((l) => ({ ...l }));
}

/**
 * Our layers matched to the encodings the sender really has. A relay that does not take
 * simulcast leaves one encoding (the first, our lowest layer): that one becomes the full layer.
 */
function effectiveLayers(layers, encodings) {
  if (encodings.length === 1 && layers.length > 1) {
    const top = { ...layers[layers.length - 1], scaleResolutionDownBy: layers[layers.length - 1].scaleResolutionDownBy ?? 1 };
    delete top.rid;
    return [top];
  }
  return encodings.map((encoding, i) => layers.find((l) => l.rid && l.rid === encoding.rid) || layers[i] || {});
}

/** getParameters, `change` (returns whether it changed anything), setParameters if it did. */
async function setSenderParameters(entry, change) {
  const sender = entry.transceiver.sender;
  const params = sender.getParameters();
  if (!params.encodings || !change(params)) return;
  try {
    await sender.setParameters(params);
  } catch (err) {
    // Not an `error` event: the user can do nothing about it, and the relay holds the room's cap
    // whatever we send.
    console.warn(`tern: cannot set the parameters of a ${entry.source} track: ${err.message}`);
  }
}

/** Dev mode only: asks the relay (from localhost) for a token. */
export async function devToken(room, identity, name) {
  const query = new URLSearchParams({ room, identity, name: name || identity });
  let res;
  try {
    res = await fetch(`/dev/token?${query}`);
  } catch {
    throw new TernError('unreachable', 'the relay cannot be reached');
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new TernError(body.code || 'token_failed', body.message || `HTTP ${res.status}`);
  return body.token;
}

/**
 * Why a connection was refused before the WebSocket opened (browsers cannot read the HTTP
 * status of a failed WebSocket): asks the same URL over plain HTTP. Resolves with a TernError.
 */
export async function diagnose(url, token) {
  const httpUrl = url.replace(/^ws/, 'http');
  try {
    const res = await fetch(`${httpUrl}?access_token=${encodeURIComponent(token)}`);
    const body = await res.json().catch(() => ({}));
    if (res.status === 401) return new TernError(body.code || 'token_rejected', `token rejected: ${body.message || body.code}`);
    return new TernError('unreachable', 'the relay did not accept the WebSocket');
  } catch {
    return new TernError('unreachable', 'the relay cannot be reached');
  }
}
