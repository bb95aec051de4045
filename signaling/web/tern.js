// Tern client library: join a Tern room from the browser.
//
// A plain ES module with no build step and no dependencies. It speaks the protocol in
// signaling/PROTOCOL.md: one WebSocket, a publish peer connection (we offer) and a subscribe peer
// connection (the relay offers).
//
//   import { Room } from '/tern.js';
//   const room = new Room();
//   room.addEventListener('track', (e) => attach(e.detail.track, e.detail.info));
//   await room.connect(`ws://${location.host}/rtc`, token);
//   const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
//   await room.publish(media);
//
// Events (CustomEvent, payload in `detail`): joined, participant_joined, participant_left,
// participant_reconnecting, participant_resumed, track_published, track_unpublished,
// track_muted, track ({ track, stream, info }), error ({ code, message }), closed ({ reason }).

export const PROTOCOL_VERSION = 1;

const PING_INTERVAL_MS = 10000;

export class TernError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Room extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.participant = null;   // own ParticipantInfo
    this.participants = new Map(); // id -> ParticipantInfo (others)
    this.iceServers = [];
    this.publishPc = null;
    this.subscribePc = null;
    this.publishedTracks = new Map(); // relay track id -> TrackInfo (own)
    this.subscribedByMid = new Map(); // subscribe-leg mid -> TrackInfo
    this.resumeToken = null;
    this._pendingPublish = null;
    this._pingTimer = null;
    this._queue = Promise.resolve();
  }

  /** Opens the WebSocket and resolves with the `joined` message. */
  connect(url, token, { resumeToken } = {}) {
    const query = new URLSearchParams({ access_token: token, protocol: String(PROTOCOL_VERSION) });
    if (resumeToken) query.set('resume_token', resumeToken);
    const ws = new WebSocket(`${url}?${query}`);
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
          this._emit('error', { code: 'client', message: String(err) });
        });
      };
      ws.onerror = () => {
        if (!joined) reject(new TernError('unreachable', 'the relay refused or could not be reached'));
      };
      ws.onclose = () => {
        clearInterval(this._pingTimer);
        if (!joined) reject(new TernError('closed', 'the relay closed the connection before joining'));
        this._emit('closed', { reason: this._closedReason || 'disconnected' });
      };
    });
  }

  _onJoined(message) {
    this.participant = message.participant;
    this.resumeToken = message.resume_token;
    this.iceServers = (message.ice_servers || []).map((s) => ({
      urls: s.urls, username: s.username, credential: s.credential,
    }));
    this.participants = new Map(message.participants.map((p) => [p.id, p]));
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this._send({ type: 'ping', timestamp: Date.now() }), PING_INTERVAL_MS);
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
        for (const t of message.tracks) this.publishedTracks.set(t.id, t);
        if (this._pendingPublish) this._pendingPublish.resolve(message.tracks);
        this._pendingPublish = null;
        break;
      case 'subscribe_offer':
        await this._answerSubscribe(message);
        break;
      case 'participant_joined':
        this.participants.set(message.participant.id, message.participant);
        break;
      case 'participant_left':
        this.participants.delete(message.participant_id);
        break;
      case 'track_published': {
        const p = this.participants.get(message.track.participant_id);
        if (p) p.tracks.push(message.track);
        break;
      }
      case 'closed':
        this._closedReason = message.reason;
        break;
      case 'error':
        if (this._pendingPublish && message.request === 'publish_offer') {
          this._pendingPublish.reject(new TernError(message.code, message.message));
          this._pendingPublish = null;
        }
        break;
      default:
        break;
    }
    if (message.type !== 'joined' && message.type !== 'pong') this._emit(message.type, message);
  }

  /**
   * Publishes the tracks of a MediaStream. `sources` maps a track to 'camera', 'microphone' or
   * 'screen' (default: by kind). `videoCodec` (e.g. 'video/VP9') puts that codec first in the
   * offer; the relay answers one codec per track, the first it supports. Resolves with the
   * relay's TrackInfo list for this leg.
   */
  async publish(stream, sources = new Map(), { videoCodec } = {}) {
    if (!this.publishPc) {
      this.publishPc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
      this.publishPc.onicecandidate = (e) => this._trickle('publish', e.candidate);
    }
    const pc = this.publishPc;
    const added = [];
    for (const track of stream.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      if (videoCodec && track.kind === 'video' && RTCRtpSender.getCapabilities) {
        const codecs = RTCRtpSender.getCapabilities('video').codecs;
        const wanted = (c) => c.mimeType.toLowerCase() === videoCodec.toLowerCase();
        transceiver.setCodecPreferences([...codecs.filter(wanted), ...codecs.filter((c) => !wanted(c))]);
      }
      added.push({ transceiver, source: sources.get(track) || (track.kind === 'audio' ? 'microphone' : 'camera') });
    }
    this._publishSources = (this._publishSources || []).concat(added);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const tracks = this._publishSources
      .filter((a) => a.transceiver.mid !== null && a.transceiver.currentDirection !== 'stopped')
      .map((a) => ({ mid: a.transceiver.mid, source: a.source }));
    const answered = new Promise((resolve, reject) => { this._pendingPublish = { resolve, reject }; });
    this._send({ type: 'publish_offer', sdp: pc.localDescription.sdp, tracks });
    return answered;
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
      const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
      pc.onicecandidate = (e) => this._trickle('subscribe', e.candidate);
      pc.ontrack = (e) => {
        const info = this.subscribedByMid.get(e.transceiver.mid);
        this._emit('track', { track: e.track, stream: e.streams[0], info });
      };
      this.subscribePc = pc;
    }
    this.subscribedByMid = new Map(message.tracks.filter((t) => t.mid).map((t) => [t.mid, t]));
    await this.subscribePc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
    const answer = await this.subscribePc.createAnswer();
    await this.subscribePc.setLocalDescription(answer);
    this._send({ type: 'subscribe_answer', sdp: this.subscribePc.localDescription.sdp });
  }

  /** Mutes or unmutes one of our own published tracks (locally and for everybody). */
  setMuted(trackId, muted) {
    this._send({ type: 'set_muted', track_id: trackId, muted });
  }

  /** Leaves for good. */
  leave() {
    this._closedReason = 'left';
    this._send({ type: 'leave' });
    clearInterval(this._pingTimer);
    for (const pc of [this.publishPc, this.subscribePc]) if (pc) pc.close();
    if (this.ws) this.ws.close();
  }
}

/** Dev mode only: asks the relay (from localhost) for a token. */
export async function devToken(room, identity, name) {
  const query = new URLSearchParams({ room, identity, name: name || identity });
  const res = await fetch(`/dev/token?${query}`);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new TernError(body.code || 'token_failed', body.message || `HTTP ${res.status}`);
  return body.token;
}
