#!/usr/bin/python3
"""A Tern participant built on GStreamer's webrtcbin (an independent WebRTC stack, through
Python GObject introspection), written from signaling/PROTOCOL.md alone. It joins a room,
publishes audiotestsrc -> opusenc and videotestsrc -> vp8enc, answers every subscribe offer, and
counts the audio and video buffers that decodebin decodes from each other participant.

Run it with Debian's /usr/bin/python3 (python3-gi, python3-websockets, gir1.2-gst-plugins-bad-1.0,
gstreamer1.0-plugins-{base,good,bad}, gstreamer1.0-nice). libnice ignores loopback interfaces,
so it needs a real (e.g. veth) address.

Output and commands are those of aiortc_client.py: JSON lines on stdout ({"event": "stats",
"session", "me", "pongs", "recv": {participant id: {"identity", "audio", "video", "width"}}}
once a second, plus events), `leave`/`join`/`quit` on stdin with --commands.

Usage: gst_client.py --url ws://HOST:PORT/rtc --token JWT [--duration S] [--commands]
"""

import asyncio
import json
import sys
import time

import harness
from harness import emit, opus_format

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402
import websockets  # noqa: E402


# Small video keeps the encoder cheap on a 2-core CI machine that also runs Chromium.
PUBLISH = """
webrtcbin name=pub bundle-policy=max-bundle
audiotestsrc is-live=true wave=sine freq=660 ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt=111
  ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! pub.
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert
  ! vp8enc deadline=1 ! rtpvp8pay pt=96
  ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! pub.
"""




def media_of(sdp_text):
    """[(kind, mid)] of every m-section of an SDP."""
    _, message = GstSdp.SDPMessage.new_from_text(sdp_text)
    out = []
    for i in range(message.medias_len()):
        media = message.get_media(i)
        out.append((media.get_media(), media.get_attribute_val("mid")))
    return out


class Leg:
    """One webrtcbin and its signaling state. Candidates that webrtcbin finds before our offer
    or answer went out are held back until it has (a trickle the relay cannot place yet would be
    refused, PROTOCOL.md section 2)."""

    def __init__(self, session, name, pipeline, webrtc):
        self.session, self.name, self.pipeline, self.webrtc = session, name, pipeline, webrtc
        self.mids = []
        self.described = False
        self.pending = []
        loop = session.loop
        webrtc.connect("on-ice-candidate", lambda _w, index, cand: loop.call_soon_threadsafe(self.candidate, index, cand))
        webrtc.connect("notify::ice-gathering-state", lambda w, _p: loop.call_soon_threadsafe(self.gathering, w.props.ice_gathering_state))

    def candidate(self, index, candidate):
        mid = self.mids[index] if index < len(self.mids) else None
        self.trickle({"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index})

    def gathering(self, state):
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.trickle({"candidate": ""})

    def trickle(self, candidate):
        if not self.described:
            self.pending.append(candidate)
            return
        self.session.send_soon(type="trickle", leg=self.name, candidate=candidate)

    def sent_description(self, sdp_text):
        self.mids = [mid for _, mid in media_of(sdp_text)]
        self.described = True
        for candidate in self.pending:
            self.session.send_soon(type="trickle", leg=self.name, candidate=candidate)
        self.pending = []

    async def call(self, signal, *args, field=None):
        """Emits a promise-taking webrtcbin action signal and waits for the reply; with `field`,
        returns that description's SDP text (read inside the callback: the reply dies with the
        promise)."""
        loop = self.session.loop
        future = loop.create_future()

        def done(promise):
            reply = promise.get_reply()
            if reply is not None and reply.has_field("error"):
                result = RuntimeError(f"{signal}: {reply.get_value('error')}")
            elif field and (reply is None or not reply.has_field(field)):
                result = RuntimeError(f"{signal}: no {field} in the reply")
            else:
                result = reply.get_value(field).sdp.as_text() if field else None
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

        self.webrtc.emit(signal, *args, Gst.Promise.new_with_change_func(done))
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    def stop(self):
        self.pipeline.set_state(Gst.State.NULL)


class Session:
    """One join: the WebSocket, the publish leg and the subscribe leg (PROTOCOL.md section 3)."""

    def __init__(self, args, number):
        self.args, self.number = args, number
        self.loop = asyncio.get_running_loop()
        self.ws = None
        self.me = None
        self.identities = {}
        self.by_mid = {}  # subscribe m-line -> TrackInfo, from the latest subscribe_offer
        self.counts = {}  # participant id -> {"audio", "video", "width"}
        self.publish_leg = None
        self.subscribe_leg = None
        self.opus = None  # our Opus rtpmap and fmtp
        self.pings, self.pongs = set(), 0  # ping timestamps sent, matching pongs received
        self.closed = self.loop.create_future()
        self.tasks = []

    async def send(self, **message):
        if self.args.log_sdp and "sdp" in message:
            emit("sdp", direction="sent", type=message["type"], sdp=message["sdp"])
        await self.ws.send(json.dumps(message))

    def send_soon(self, **message):
        self.tasks.append(asyncio.ensure_future(self.send(**message)))

    async def run(self):
        url = f"{self.args.url}?access_token={self.args.token}&protocol=1"
        async with websockets.connect(url, max_size=2**20) as ws:
            self.ws = ws
            self.tasks += [asyncio.ensure_future(self.ping()), asyncio.ensure_future(self.report())]
            try:
                async for raw in ws:
                    await self.handle(json.loads(raw))
            except websockets.ConnectionClosed:
                if not self.closed.done():
                    raise
            finally:
                for task in self.tasks:
                    task.cancel()
                for leg in (self.publish_leg, self.subscribe_leg):
                    if leg:
                        leg.stop()
                if not self.closed.done():
                    self.closed.set_result("socket closed")

    async def handle(self, m):
        kind = m["type"]
        if self.args.log_sdp and "sdp" in m:
            emit("sdp", direction="received", type=kind, sdp=m["sdp"])
        if kind == "joined":
            self.me = m["participant"]["id"]
            self.identities = {p["id"]: p["identity"] for p in m["participants"]}
            emit("joined", session=self.number, me=self.me, participants=sorted(self.identities.values()))
            await self.publish()
        elif kind == "publish_answer":
            await self.publish_leg.call("set-remote-description", description("answer", m["sdp"]))
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

    async def publish(self):
        pipeline = Gst.parse_launch(PUBLISH)
        webrtc = pipeline.get_by_name("pub")
        self.publish_leg = leg = Leg(self, "publish", pipeline, webrtc)
        watch(pipeline, "publish")
        pipeline.set_state(Gst.State.READY)
        # The relay answers recvonly either way; sendonly says what we mean.
        for index in range(2):
            webrtc.emit("get-transceiver", index).props.direction = GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
        pipeline.set_state(Gst.State.PLAYING)
        # webrtcbin writes the offer from the caps its sink pads have by then: wait for the
        # encoders' full caps (Opus parameters included), not just the capsfilters'.
        pads = [pad for pad in webrtc.sinkpads]
        for _ in range(100):
            if all(pad.get_current_caps() for pad in pads):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the encoders did not produce caps within 5 s")
        sdp = await leg.call("create-offer", None, field="offer")
        await leg.call("set-local-description", description("offer", sdp))
        sources = {"audio": "microphone", "video": "camera"}
        tracks = [{"mid": mid, "source": sources[kind]} for kind, mid in media_of(sdp)]
        self.opus = opus_format(sdp)
        await self.send(type="publish_offer", sdp=sdp, tracks=tracks)
        leg.sent_description(sdp)

    async def answer(self, m):
        if m.get("new_connection") or self.subscribe_leg is None:
            if self.subscribe_leg is not None:
                self.subscribe_leg.stop()
            pipeline = Gst.Pipeline.new("subscribe")
            webrtc = Gst.ElementFactory.make("webrtcbin", "sub")
            webrtc.props.bundle_policy = GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE
            pipeline.add(webrtc)
            webrtc.connect("pad-added", self.decode)
            watch(pipeline, "subscribe")
            pipeline.set_state(Gst.State.PLAYING)
            self.subscribe_leg = Leg(self, "subscribe", pipeline, webrtc)
        self.by_mid = {t["mid"]: t for t in m["tracks"] if t.get("mid")}
        leg = self.subscribe_leg
        await leg.call("set-remote-description", description("offer", m["sdp"]))
        sdp = await leg.call("create-answer", None, field="answer")
        await leg.call("set-local-description", description("answer", sdp))
        await self.send(type="subscribe_answer", sdp=sdp)
        leg.sent_description(sdp)
        emit("subscribe_answered", new_connection=bool(m.get("new_connection")),
             tracks=[{k: t.get(k) for k in ("participant_id", "kind", "codec", "mid")} for t in m["tracks"]])

    def decode(self, webrtc, pad):
        """(streaming thread) A remote stream appeared: decodebin it, and count what comes out
        for the participant its m-line carries now (the relay reuses m-lines)."""
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        mid = pad.props.transceiver.props.mid
        pipeline = webrtc.get_parent()
        decoder = Gst.ElementFactory.make("decodebin")
        pipeline.add(decoder)
        decoder.connect("pad-added", lambda _d, out: self.count(pipeline, out, mid))
        decoder.sync_state_with_parent()
        pad.link(decoder.get_static_pad("sink"))

    def count(self, pipeline, pad, mid):
        sink = Gst.ElementFactory.make("fakesink")
        sink.props.sync = False
        pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        caps = pad.get_current_caps().get_structure(0)
        kind = "audio" if caps.get_name().startswith("audio/") else "video"

        def probe(p, _info):
            info = self.by_mid.get(mid)
            if info is not None:
                c = self.counts.setdefault(info["participant_id"], {"audio": 0, "video": 0, "width": 0})
                c[kind] += 1
                if kind == "video" and not c["width"]:
                    c["width"] = p.get_current_caps().get_structure(0).get_value("width")
            return Gst.PadProbeReturn.OK

        pad.add_probe(Gst.PadProbeType.BUFFER, probe)

    async def ping(self):
        while True:
            await asyncio.sleep(self.args.ping_interval)
            timestamp = int(time.time() * 1000)
            self.pings.add(timestamp)
            await self.send(type="ping", timestamp=timestamp)

    async def report(self):
        while True:
            await asyncio.sleep(1)
            recv = {pid: {"identity": self.identities.get(pid), **c} for pid, c in list(self.counts.items())}
            emit("stats", session=self.number, me=self.me, pongs=self.pongs, recv=recv)

    async def leave(self):
        await self.send(type="leave")
        try:
            reason = await asyncio.wait_for(asyncio.shield(self.closed), 10)
        except asyncio.TimeoutError:
            reason = "no closed message within 10 s"
        emit("left", reason=reason)
        await self.ws.close()


def description(kind, sdp_text):
    _, message = GstSdp.SDPMessage.new_from_text(sdp_text)
    sdp_type = GstWebRTC.WebRTCSDPType.OFFER if kind == "offer" else GstWebRTC.WebRTCSDPType.ANSWER
    return GstWebRTC.WebRTCSessionDescription.new(sdp_type, message)


def watch(pipeline, name):
    """Reports the pipeline's errors and warnings (from GStreamer's threads) as events."""

    def on_message(_bus, message):
        if message.type in (Gst.MessageType.ERROR, Gst.MessageType.WARNING):
            error, debug = message.parse_error() if message.type == Gst.MessageType.ERROR else message.parse_warning()
            emit("gst_" + message.type.first_value_nick, pipeline=name, source=message.src.get_name(),
                 message=error.message, debug=debug)
        return Gst.BusSyncReply.DROP

    pipeline.get_bus().set_sync_handler(on_message)



async def main():
    parser = harness.parser(__doc__)
    args = parser.parse_args()
    Gst.init(None)
    missing = [e for e in ("webrtcbin", "nicesrc", "opusenc", "vp8enc", "vp8dec", "opusdec", "rtpvp8depay", "sctpenc")
               if Gst.ElementFactory.find(e) is None]
    if missing:
        sys.exit(f"GStreamer elements missing: {', '.join(missing)}")

    await harness.run(args, Session)


if __name__ == "__main__":
    asyncio.run(main())
