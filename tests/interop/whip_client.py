"""A WHIP publisher (RFC 9725) on aiortc, written from the RFC: it POSTs an offer with a tone and a
moving pattern, sets the answer, publishes until a line arrives on stdin, then DELETEs its
resource. Prints JSON lines: {"event": "created", "status", "location", "etag", "links"},
{"event": "connected"}, {"event": "deleted", "status"}, {"event": "fatal", "error"}.

Usage: whip_client.py --url http://relay:8080/whip/ROOM --token JWT
"""

import argparse
import asyncio
import sys
import urllib.error
import urllib.parse
import urllib.request

from aiortc import RTCPeerConnection

from aiortc_client import PatternTrack, ToneTrack, set_remote
from harness import emit


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


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    pc = RTCPeerConnection()
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    pc.addTransceiver(PatternTrack(), direction="sendonly")

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected":
            emit("connected")

    # aiortc gathers every candidate before it hands out the offer: no trickle needed.
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, answer = await asyncio.to_thread(
        http, "POST", args.url, args.token, pc.localDescription.sdp.encode(), "application/sdp"
    )
    location = headers.get("Location")
    emit("created", status=status, location=location, etag=headers.get("ETag"),
         links=headers.get_all("Link") or [])
    if status != 201 or not location:
        emit("fatal", error=f"POST answered {status}: {answer[:300]}")
        return 1
    await set_remote(pc, answer, "answer")
    # Until told to stop (or stdin closes).
    await asyncio.to_thread(sys.stdin.readline)
    resource = urllib.parse.urljoin(args.url, location)
    status, _, _ = await asyncio.to_thread(http, "DELETE", resource, args.token)
    emit("deleted", status=status)
    await pc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
