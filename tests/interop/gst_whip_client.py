#!/usr/bin/python3
"""A WHIP publisher (RFC 9725) on GStreamer's webrtcbin, written from the RFC: it POSTs the offer
webrtcbin makes (before any candidate is gathered), sets the answer, and trickles every candidate
libnice finds in its own PATCH (`application/trickle-ice-sdpfrag`), ending with
`a=end-of-candidates`; it publishes until a line arrives on stdin, then DELETEs its resource.

Debian 12's simple-whip-client cannot run at all (it links libsoup 2 while libnice, through
gupnp-igd, loads libsoup 3, and libsoup aborts the process), and GStreamer's own whipsink is not in
Debian 12: this is the GStreamer WHIP client the tests can have.

JSON lines on stdout: {"event": "created", "status", "location"}, {"event": "trickled", "status",
"candidates"}, {"event": "deleted", "status"}, {"event": "fatal", "error"}, and GStreamer's errors
as {"event": "gst_error", ...}. Run with Debian's /usr/bin/python3 (as gst_client.py).

Usage: gst_whip_client.py --url http://HOST:PORT/whip/ROOM --token JWT
"""

import argparse
import asyncio
import sys
import urllib.error
import urllib.parse
import urllib.request

from harness import emit

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstWebRTC  # noqa: E402

from gst_client import PUBLISH, description, media_of, watch  # noqa: E402


def http(method, url, token, body=None, content_type=None):
    """One request; (status, headers, body text). Blocking: run it in a thread."""
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


async def call(loop, webrtc, signal, *args, field=None):
    """A promise-taking webrtcbin action signal; with `field`, that description's SDP text."""
    future = loop.create_future()

    def done(promise):
        reply = promise.get_reply()
        result = reply.get_value(field).sdp.as_text() if field and reply is not None else None
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

    webrtc.emit(signal, *args, Gst.Promise.new_with_change_func(done))
    return await future


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    Gst.init(None)
    loop = asyncio.get_running_loop()
    pipeline = Gst.parse_launch(PUBLISH)
    webrtc = pipeline.get_by_name("pub")
    watch(pipeline, "whip")
    candidates = asyncio.Queue()
    webrtc.connect("on-ice-candidate",
                   lambda _w, index, cand: loop.call_soon_threadsafe(candidates.put_nowait, (index, cand)))
    webrtc.connect("notify::ice-gathering-state", lambda w, _p: loop.call_soon_threadsafe(
        candidates.put_nowait, None) if w.props.ice_gathering_state == GstWebRTC.WebRTCICEGatheringState.COMPLETE else None)
    pipeline.set_state(Gst.State.READY)
    for index in range(2):
        webrtc.emit("get-transceiver", index).props.direction = GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
    pipeline.set_state(Gst.State.PLAYING)
    for _ in range(100):
        if all(pad.get_current_caps() for pad in webrtc.sinkpads):
            break
        await asyncio.sleep(0.05)
    offer = await call(loop, webrtc, "create-offer", None, field="offer")
    await call(loop, webrtc, "set-local-description", description("offer", offer))
    status, headers, answer = await asyncio.to_thread(http, "POST", args.url, args.token, offer.encode(), "application/sdp")
    location = headers.get("Location")
    emit("created", status=status, location=location)
    if status != 201 or not location:
        emit("fatal", error=f"POST answered {status}: {answer[:300]}")
        return 1
    resource = urllib.parse.urljoin(args.url, location)
    await call(loop, webrtc, "set-remote-description", description("answer", answer))
    mids = [mid for _, mid in media_of(offer)]
    ufrag = next(line for line in offer.splitlines() if line.startswith("a=ice-ufrag:"))
    pwd = next(line for line in offer.splitlines() if line.startswith("a=ice-pwd:"))

    async def trickle():
        # One PATCH per candidate, as they come (RFC 9725 section 4.3.1), then the end.
        sent = 0
        while True:
            item = await candidates.get()
            if item is None:
                lines = "a=end-of-candidates\r\n"
            else:
                index, candidate = item
                mid = mids[index] if index < len(mids) else mids[0]
                lines = f"a=mid:{mid}\r\na={candidate}\r\n"
            frag = f"{ufrag}\r\n{pwd}\r\n{lines}".encode()
            status, _, _ = await asyncio.to_thread(http, "PATCH", resource, args.token, frag, "application/trickle-ice-sdpfrag")
            sent += item is not None
            emit("trickled", status=status, candidates=sent, done=item is None)
            if item is None:
                return

    trickling = asyncio.create_task(trickle())
    await asyncio.to_thread(sys.stdin.readline)
    trickling.cancel()
    status, _, _ = await asyncio.to_thread(http, "DELETE", resource, args.token)
    emit("deleted", status=status)
    pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
