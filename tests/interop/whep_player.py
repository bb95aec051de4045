"""A WHEP player on aiortc, written from the WHEP draft: it POSTs a receive-only offer (one audio,
one video m-line), sets the answer, decodes what arrives and reports it every second until a
line arrives on stdin, then DELETEs its resource. Prints JSON lines: {"event": "created",
"status", "location", "etag"}, {"event": "connected"}, {"event": "stats", "video", "audio",
"width"} (frames decoded so far), {"event": "deleted", "status"}, {"event": "fatal", "error"}.

Usage: whep_player.py --url http://relay:8080/whep/ROOM --token JWT
"""

import argparse
import asyncio
import sys
import urllib.parse

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from aiortc_client import set_remote
from harness import emit
from whip_client import http


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    counts = {"audio": 0, "video": 0, "width": 0}
    tasks = []

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            emit("connected")

    @pc.on("track")
    def on_track(track):
        async def frames():
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                counts[track.kind] += 1
                if track.kind == "video":
                    counts["width"] = frame.width

        tasks.append(asyncio.create_task(frames()))

    async def report():
        while True:
            await asyncio.sleep(1)
            # RTP packets per kind as the receivers counted them, to tell "nothing arrives" from
            # "arrives but does not decode".
            packets = {}
            for transceiver in pc.getTransceivers():
                for stat in (await transceiver.receiver.getStats()).values():
                    if stat.type == "inbound-rtp":
                        packets[transceiver.kind] = stat.packetsReceived
            emit("stats", packets=packets, **counts)

    # aiortc gathers every candidate before it hands out the offer: no trickle needed.
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, answer = await asyncio.to_thread(
        http, "POST", args.url, args.token, pc.localDescription.sdp.encode(), "application/sdp"
    )
    location = headers.get("Location")
    emit("created", status=status, location=location, etag=headers.get("ETag"))
    if status != 201 or not location:
        emit("fatal", error=f"POST answered {status}: {answer[:300]}")
        return 1
    await set_remote(pc, answer, "answer")
    tasks.append(asyncio.create_task(report()))
    # Until told to stop (or stdin closes).
    await asyncio.to_thread(sys.stdin.readline)
    resource = urllib.parse.urljoin(args.url, location)
    status, _, _ = await asyncio.to_thread(http, "DELETE", resource, args.token)
    emit("deleted", status=status)
    for task in tasks:
        task.cancel()
    await pc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
