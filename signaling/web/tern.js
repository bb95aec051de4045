// Tern client library: join a Tern room from the browser.
//
// A plain ES module with no build step and no dependencies, served by every relay at /tern.js.
// It speaks the protocol in signaling/PROTOCOL.md: one WebSocket, a publish peer connection (the
// client offers) and a subscribe peer connection (the relay offers), plus the relay's `tern`
// data channel for chat. See signaling/web/README.md for the API with an example.

export const PROTOCOL_VERSION = 1;

const PING_INTERVAL_MS = 10000;
const RESUME_DELAYS_MS = [250, 500, 1000, 2000];

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
 * - `data` ({ from, data }) and `chat` ({ from, text, name }) from the data channel
 * - `error` ({ code, message, track_id? })
 */
export class Room extends EventTarget {
  constructor() {
    super();
    this.state = 'new';
    this.participant = null; // own ParticipantInfo
    this.participants = new Map(); // id -> ParticipantInfo of everybody else
    this.remoteTracks = new Map(); // relay track id -> MediaStreamTrack
    this.localTracks = new Map(); // relay track id -> { track, source, selfMuted, adminMuted }
    this.iceServers = [];
    this.publishPc = null;
    this.subscribePc = null;
    this.dataChannel = null;
    this.resumeToken = null;
    this.resumeGraceMs = 10000;
    this._url = null;
    this._token = null;
    this._published = []; // { transceiver, source }
    this._pendingPublish = [];
    this._subscribedByMid = new Map();
    this._pingTimer = null;
    this._queue = Promise.resolve();
    this._closedReason = null;
  }

  /** Connects and resolves with the `joined` message; rejects with a TernError. */
  async connect(url, token) {
    this._url = url;
    this._token = token;
    this.state = 'connecting';
    try {
      return await this._open(null);
    } catch (err) {
      this.state = 'closed';
      throw err;
    }
  }

  _open(resumeToken) {
    const query = new URLSearchParams({ access_token: this._token, protocol: String(PROTOCOL_VERSION) });
    if (resumeToken) query.set('resume_token', resumeToken);
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
    // After a resume: an operator may have muted or unmuted our tracks meanwhile.
    for (const t of (message.participant && message.participant.tracks) || []) {
      this._applyOperatorMute(t.id, !!t.admin_muted);
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
          if (entry) this.localTracks.set(t.id, { track: entry.transceiver.sender.track, source: t.source, selfMuted: false, adminMuted: !!t.admin_muted });
        }
        this._settlePublish(null, message.tracks);
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
      case 'participant_reconnecting':
      case 'participant_resumed': {
        const p = this.participants.get(message.participant_id);
        if (p) p.state = message.type === 'participant_resumed' ? 'active' : 'reconnecting';
        break;
      }
      case 'track_published': {
        const p = this.participants.get(message.track.participant_id);
        if (p) p.tracks.push(message.track);
        break;
      }
      case 'track_unpublished': {
        const p = this.participants.get(message.participant_id);
        if (p) p.tracks = p.tracks.filter((t) => t.id !== message.track_id);
        this.remoteTracks.delete(message.track_id);
        break;
      }
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
    if (!['joined', 'pong', 'publish_answer', 'subscribe_offer', 'closed'].includes(message.type)) {
      this._emit(message.type, message);
    }
  }

  _settlePublish(error, tracks) {
    const pending = this._pendingPublish.shift();
    if (!pending) return;
    if (error) pending.reject(error);
    else pending.resolve(tracks);
  }

  _ensurePublishPc() {
    if (!this.publishPc) {
      this.publishPc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: 'max-bundle' });
      this.publishPc.onicecandidate = (e) => this._trickle('publish', e.candidate);
    }
    return this.publishPc;
  }

  /**
   * Publishes one track. `source` is 'camera', 'microphone' or 'screen'; `videoCodec` (e.g.
   * 'video/VP9') is put first in the offer (the relay answers one codec per track, the first it
   * supports). Resolves with the relay's TrackInfo of the new track.
   */
  async publishTrack(track, source, { stream, videoCodec } = {}) {
    const pc = this._ensurePublishPc();
    const transceiver = pc.addTransceiver(track, { direction: 'sendonly', streams: [stream || new MediaStream([track])] });
    if (videoCodec && track.kind === 'video' && RTCRtpSender.getCapabilities) {
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      const wanted = (c) => c.mimeType.toLowerCase() === videoCodec.toLowerCase();
      transceiver.setCodecPreferences([...codecs.filter(wanted), ...codecs.filter((c) => !wanted(c))]);
    }
    this._published.push({ transceiver, source, stopped: false });
    const tracks = await this._renegotiatePublish(false);
    return tracks.find((t) => t.mid === transceiver.mid) || null;
  }

  /** Publishes every track of a stream (camera and microphone by kind unless `sources` says). */
  async publish(stream, { sources = new Map(), videoCodec } = {}) {
    const infos = [];
    for (const track of stream.getTracks()) {
      const source = sources.get(track) || (track.kind === 'audio' ? 'microphone' : 'camera');
      infos.push(await this.publishTrack(track, source, { stream, videoCodec }));
    }
    return infos;
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
