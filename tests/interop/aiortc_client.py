#!/usr/bin/env python3
"""A Tern participant built on aiortc (an independent WebRTC stack), written from
signaling/PROTOCOL.md alone. It joins a room, publishes a sine tone (Opus, aiortc's own Opus
parameters) and a moving test pattern (VP8), answers every subscribe offer, and counts the audio
and video frames it decodes from each other participant.

Output (stdout): one JSON object per line. Events as they happen ({"event": "joined", ...},
"error", "left", ...) and once a second {"event": "stats", "session": n, "me": id, "pongs",
"recv": {participant id: {"identity", "audio", "video", "width"}}}; counts restart on every join.
Commands (stdin, one per line, with --commands): `leave` (leave the room, stay running), `join`
(join again), `quit`. A dependency that is missing fails at import, loudly.

Usage: aiortc_client.py --url ws://HOST:PORT/rtc --token JWT [--duration S] [--commands]
"""

import asyncio
import fractions
import json
import logging
import math
import struct
import sys
import time

import harness
from harness import emit, opus_format

import aioice.ice
import av
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

WIDTH, HEIGHT, FPS = 320, 240, 30
AUDIO_RATE, AUDIO_PTIME = 48000, 0.020




# aioice never gathers 127.0.0.1; in a namespace that has only loopback it would gather nothing.
if not aioice.ice.get_host_addresses(True, False):
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class Paced:
    """Hands out presentation times at a fixed rate, sleeping until each is due."""

    def __init__(self, rate, step):
        self.rate, self.step, self.start, self.n = rate, step, None, 0

    async def next(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.n += 1
            await asyncio.sleep(max(0, self.start + self.n * self.step / self.rate - time.monotonic()))
        return self.n * self.step


class ToneTrack(MediaStreamTrack):
    """A 440 Hz sine, 48 kHz mono, in 20 ms frames (silence would prove little at the far end)."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.clock = Paced(AUDIO_RATE, int(AUDIO_RATE * AUDIO_PTIME))

    async def recv(self):
        pts = await self.clock.next()
        n = self.clock.step
        samples = [int(8000 * math.sin(2 * math.pi * 440 * (pts + i) / AUDIO_RATE)) for i in range(n)]
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(struct.pack(f"<{n}h", *samples))
        frame.pts, frame.sample_rate, frame.time_base = pts, AUDIO_RATE, fractions.Fraction(1, AUDIO_RATE)
        return frame


class PatternTrack(MediaStreamTrack):
    """A white bar sweeping across a grey frame, so every frame differs (VP8 has to encode it)."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.clock = Paced(90000, 90000 // FPS)

    async def recv(self):
        pts = await self.clock.next()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        x = (self.clock.n * 4) % WIDTH
        for index, plane in enumerate(frame.planes):
            width, height = (WIDTH, HEIGHT) if index == 0 else (WIDTH // 2, HEIGHT // 2)
            if index == 0:
                row = bytes([60] * x + [235] * min(16, width - x) + [60] * max(0, width - x - 16))
            else:
                row = bytes([128] * width)
            row += bytes(plane.line_size - width)
            plane.update(row * height)
        frame.pts, frame.time_base = pts, fractions.Fraction(1, 90000)
        return frame


async def set_remote(pc, sdp, kind):
    """setRemoteDescription, then hands aiortc the candidates of the BUNDLE-tagged m-section:
    aiortc (1.14) takes a bundled transport's remote candidates from the *last* m-section of the
    group, while the relay, as RFC 8843 allows, lists them only in the first."""
    await pc.setRemoteDescription(RTCSessionDescription(sdp, kind))
    sections = sdp.split("\r\nm=")[1:]
    if not sections:
        return
    lines = sections[0].split("\r\n")
    mid = next(line[6:] for line in lines if line.startswith("a=mid:"))
    for line in lines:
        if line.startswith("a=candidate:"):
            candidate = candidate_from_sdp(line[12:])
            candidate.sdpMid = mid
            await pc.addIceCandidate(candidate)
    if "a=end-of-candidates" in lines:
        await pc.addIceCandidate(None)


class Session:
    """One join: the WebSocket, the publish leg and the subscribe leg (PROTOCOL.md section 3)."""

    def __init__(self, args, number):
        self.args, self.number = args, number
        self.ws = None
        self.me = None
        self.identities = {}  # participant id -> identity
        self.by_mid = {}  # subscribe m-line -> TrackInfo, from the latest subscribe_offer
        self.counts = {}  # participant id -> {"audio", "video", "width"}
        self.ice_servers = []
        self.publish_pc = None
        self.subscribe_pc = None
        self.opus = None  # our Opus rtpmap and fmtp
        self.pings, self.pongs = set(), 0  # ping timestamps sent, matching pongs received
        self.closed = asyncio.get_running_loop().create_future()
        self.tasks = []

    async def send(self, **message):
        if self.args.log_sdp and "sdp" in message:
            emit("sdp", direction="sent", type=message["type"], sdp=message["sdp"])
        await self.ws.send(json.dumps(message))

    async def run(self):
        """Connects and handles messages until the relay closes the session."""
        url = f"{self.args.url}?access_token={self.args.token}&protocol=1"
        async with connect(url, max_size=2**20) as ws:
            self.ws = ws
            self.tasks += [asyncio.create_task(self.ping()), asyncio.create_task(self.report())]
            try:
                async for raw in ws:
                    await self.handle(json.loads(raw))
            except ConnectionClosed:
                if not self.closed.done():
                    raise
            finally:
                for task in self.tasks:
                    task.cancel()
                await self.close_pcs()
                if not self.closed.done():
                    self.closed.set_result("socket closed")

    async def handle(self, m):
        kind = m["type"]
        if self.args.log_sdp and "sdp" in m:
            emit("sdp", direction="received", type=kind, sdp=m["sdp"])
        if kind == "joined":
            self.me = m["participant"]["id"]
            self.identities = {p["id"]: p["identity"] for p in m["participants"]}
            self.ice_servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                                for s in m.get("ice_servers", [])]
            emit("joined", session=self.number, me=self.me, participants=sorted(self.identities.values()))
            await self.publish()
        elif kind == "publish_answer":
            await set_remote(self.publish_pc, m["sdp"], "answer")
            emit("published", opus=self.opus, tracks=[{k: t.get(k) for k in ("id", "kind", "codec", "mid")} for t in m["tracks"]])
        elif kind == "subscribe_offer":
            await self.answer(m)
        elif kind == "participant_joined":
            self.identities[m["participant"]["id"]] = m["participant"]["identity"]
            emit("participant_joined", id=m["participant"]["id"], identity=m["participant"]["identity"])
        elif kind == "participant_left":
            emit("participant_left", id=m["participant_id"], reason=m["reason"])
        elif kind == "pong":
            if m.get("timestamp") in self.pings:
                self.pongs += 1
            else:
                emit("unexpected_pong", timestamp=m.get("timestamp"))
        elif kind == "error":
            emit("error", **{k: v for k, v in m.items() if k != "type"})
        elif kind == "closed":
            emit("closed", reason=m["reason"])
            if not self.closed.done():
                self.closed.set_result(m["reason"])
        # track_published/unpublished/muted, reconnecting/resumed: nothing to do here.

    def config(self):
        # An empty list, not None: aiortc would otherwise use a public STUN server.
        return RTCConfiguration(iceServers=self.ice_servers, bundlePolicy=RTCBundlePolicy(self.args.bundle_policy))

    async def publish(self):
        pc = self.publish_pc = RTCPeerConnection(self.config())
        audio = pc.addTransceiver(ToneTrack(), direction="sendonly")
        video = pc.addTransceiver(PatternTrack(), direction="sendonly")
        # VP8 only, so the relay's "first choice" is not a guess about aiortc's codec order.
        caps = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in caps if c.mimeType in ("video/VP8", "video/rtx")])
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers here: no trickle needed
        self.opus = opus_format(pc.localDescription.sdp)
        await self.send(type="publish_offer", sdp=pc.localDescription.sdp,
                        tracks=[{"mid": audio.mid, "source": "microphone"}, {"mid": video.mid, "source": "camera"}])
        await self.trickle("publish", pc)

    async def trickle(self, leg, pc):
        """Trickles the candidates that are already in our SDP, then end-of-candidates: optional
        for an ICE-lite relay, but part of the protocol a client may use."""
        lines = pc.localDescription.sdp.splitlines()
        first_mid = next(line[6:] for line in lines if line.startswith("a=mid:"))
        seen = set()
        for line in lines:
            if line.startswith("a=candidate:") and line not in seen:
                seen.add(line)
                await self.send(type="trickle", leg=leg,
                                candidate={"candidate": line[2:], "sdpMid": first_mid, "sdpMLineIndex": 0})
        await self.send(type="trickle", leg=leg, candidate={"candidate": ""})

    async def answer(self, m):
        if m.get("new_connection") or self.subscribe_pc is None:
            if self.subscribe_pc is not None:
                await self.subscribe_pc.close()
            # max-bundle here, whatever --bundle-policy says: aiortc 1.14 with "balanced"
            # answers a first offer that has two m-lines of one kind by binding the second to a
            # transport of its own (its own ufrag, port 9) while listing it in the BUNDLE group,
            # and then drops what arrives for it on the bundle. The relay runs one transport
            # per connection (PROTOCOL.md asks clients to bundle every m-line).
            self.subscribe_pc = RTCPeerConnection(RTCConfiguration(
                iceServers=self.ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
            self.subscribe_pc.on("track", self.consume)
            fresh = True
        else:
            fresh = False
        self.by_mid = {t["mid"]: t for t in m["tracks"] if t.get("mid")}
        pc = self.subscribe_pc
        await set_remote(pc, m["sdp"], "offer")
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send(type="subscribe_answer", sdp=pc.localDescription.sdp)
        emit("subscribe_answered", new_connection=bool(m.get("new_connection")),
             tracks=[{k: t.get(k) for k in ("participant_id", "kind", "codec", "mid")} for t in m["tracks"]])
        if fresh:
            await self.trickle("subscribe", pc)

    def consume(self, track):
        """Counts every decoded frame of one subscribe m-line for the participant that m-line
        carries now (the relay reuses an m-line for the next track of the same kind)."""
        pc = self.subscribe_pc
        mid = next(t.mid for t in pc.getTransceivers() if t.receiver.track is track)

        async def frames():
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                info = self.by_mid.get(mid)
                if info is None:
                    continue
                c = self.counts.setdefault(info["participant_id"], {"audio": 0, "video": 0, "width": 0})
                c[track.kind] += 1
                if track.kind == "video":
                    c["width"] = frame.width

        self.tasks.append(asyncio.create_task(frames()))

    async def ping(self):
        while True:
            await asyncio.sleep(self.args.ping_interval)
            timestamp = int(time.time() * 1000)
            self.pings.add(timestamp)
            await self.send(type="ping", timestamp=timestamp)

    async def report(self):
        while True:
            await asyncio.sleep(1)
            recv = {pid: {"identity": self.identities.get(pid), **c} for pid, c in self.counts.items()}
            emit("stats", session=self.number, me=self.me, pongs=self.pongs, recv=recv)

    async def leave(self):
        await self.send(type="leave")
        try:
            reason = await asyncio.wait_for(asyncio.shield(self.closed), 10)
        except asyncio.TimeoutError:
            reason = "no closed message within 10 s"
        emit("left", reason=reason)
        await self.ws.close()

    async def close_pcs(self):
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()



async def main():
    parser = harness.parser(__doc__)
    parser.add_argument("--bundle-policy", choices=[p.value for p in RTCBundlePolicy], default="balanced",
                        help="aiortc's default, balanced, offers one ICE ufrag per m-line (valid with BUNDLE)")
    parser.add_argument("--verbose", action="store_true", help="aiortc's and aioice's debug log on stderr")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

    await harness.run(args, Session)


if __name__ == "__main__":
    asyncio.run(main())
