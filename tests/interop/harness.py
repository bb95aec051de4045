"""What both interop clients share: their output lines, their command line, and the loop that
joins, leaves, rejoins and quits on command. Each client brings its own `Session` (a WebRTC
stack speaking PROTOCOL.md) with `run()` and `leave()`."""

import argparse
import asyncio
import json
import sys
import threading
import time

PING_INTERVAL_S = 10  # PROTOCOL.md section 5


def emit(event, **fields):
    """One JSON line on stdout, the test's view of the client."""
    print(json.dumps({"event": event, "t": round(time.time(), 3), **fields}), flush=True)


def opus_format(sdp):
    """The Opus rtpmap and fmtp of an SDP (to show how publishers' Opus parameters differ)."""
    lines = sdp.splitlines()
    rtpmap = next((line for line in lines if line.startswith("a=rtpmap:") and "opus/" in line.lower()), "")
    pt = rtpmap[len("a=rtpmap:"):].split(" ")[0]
    fmtp = next((line.split(" ", 1)[1] for line in lines if line.startswith(f"a=fmtp:{pt} ")), "")
    return f"{rtpmap[len('a=rtpmap:'):]} {fmtp}".strip()


def parser(description):
    """The options every client takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="ws://HOST:PORT/rtc")
    p.add_argument("--token", required=True, help="join token (JWT)")
    p.add_argument("--duration", type=float, default=0, help="quit after this many seconds (0: never)")
    p.add_argument("--commands", action="store_true", help="obey leave/join/quit on stdin")
    p.add_argument("--ping-interval", type=float, default=PING_INTERVAL_S)
    p.add_argument("--log-sdp", action="store_true", help="print every SDP sent and received")
    return p


def commands(loop, queue):
    """(thread) Feeds stdin lines into `queue`; EOF (the test went away) means quit. A daemon
    thread, so that a fatal error can exit while it waits for input."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, "quit")


async def run(args, new_session):
    """Joins at once, then follows `leave`/`join`/`quit` from stdin (with --commands) until
    quit or --duration. `new_session(args, number)` makes the session of the number-th join."""
    queue = asyncio.Queue()
    if args.commands:
        threading.Thread(target=commands, args=(asyncio.get_running_loop(), queue), daemon=True).start()
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, queue.put_nowait, "quit")

    number, session, runner = 0, None, None
    command = "join"
    while command != "quit":
        if command == "join" and runner is None:
            number += 1
            session = new_session(args, number)
            runner = asyncio.ensure_future(session.run())
            runner.add_done_callback(lambda t: queue.put_nowait("ended"))
        elif command == "leave" and runner is not None:
            await session.leave()
            await runner
            runner = None
        elif command == "ended" and runner is not None and runner.done():
            error = runner.exception()
            runner = None
            if error:
                emit("fatal", error=repr(error))
                sys.exit(1)
        command = await queue.get()
    if runner is not None:
        await session.leave()
        await runner
    emit("quit")
