#!/usr/bin/env python3
"""Summarises a perf.data of the relay (bench/profile.sh) as markdown.

  profile.py PERF.DATA [TOP]

From `perf script` (call stacks, inlined frames folded into their function): the TOP (15)
functions by self time, self time summed by component, the inclusive time of the stages of the
packet path (share of samples with the function anywhere on the stack), and who calls the hot
leaf functions that belong to no stage of their own (memmove, hashing, tracing, malloc).
"""

import collections
import re
import subprocess
import sys


def stacks(path):
    """[(frames leaf first as (symbol, dso))] of every sample."""
    text = subprocess.run(
        ["perf", "script", "-i", path, "--no-inline", "-F", "comm,ip,sym,dso"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out = []
    for block in text.split("\n\n"):
        frames = []
        for line in block.splitlines():
            m = re.match(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                dso = m.group(2).rsplit("/", 1)[-1]
                frames.append((m.group(1), dso))
        if frames:
            out.append(frames)
    return out


def shorten(sym):
    """Generic arguments dropped: `<A as B<X, Y<Z>>>::f` -> `<A as B>::f`."""
    s = sym
    while True:
        # A `<` right after a name opens generic arguments; a `<` elsewhere opens `<A as B>`.
        t = re.sub(r"(?<=[\w])<[^<>]*>", "", s)
        if t == s:
            return s
        s = t


# Self time by component: the first that matches the leaf frame (symbol, dso) wins.
COMPONENTS = [
    ("kernel: UDP send + loopback delivery, syscalls, scheduler", lambda s, d: d.startswith("[kernel")),
    (
        "SRTP and AES-GCM crypto (rtc_srtp, ring)",
        lambda s, d: re.search(r"aes|gcm|ghash|ring::|ring_core|aws_lc|rtc_srtp|gfmul|clmul", s, re.I),
    ),
    ("memcpy/memmove", lambda s, d: re.search(r"mem(move|cpy)", s)),
    (
        "malloc/free",
        lambda s, d: re.search(r"malloc|_int_free|^free$|cfree|realloc|memalign|__rust_(de|re)?alloc", s),
    ),
    ("other libc", lambda s, d: d.startswith("libc")),
    ("hashing and hash maps (SipHash, hashbrown)", lambda s, d: re.search(r"hashbrown|hash::sip|Hasher", s)),
    ("tracing (disabled log call sites)", lambda s, d: "tracing" in s),
    ("tokio/mio (driver IO)", lambda s, d: re.search(r"^<?(tokio|mio)::", s)),
    ("tern: node, driver, media core", lambda s, d: re.search(r"^<?tern::", s)),
    (
        "rtc: peer connection handlers, interceptors, RTP/RTCP, stats",
        lambda s, d: re.search(r"^<?(rtc|rtc_[a-z]+|sansio|bytes)::", s),
    ),
    ("other (std, unresolved)", lambda s, d: True),
]

# Stages of the packet path, inclusive (a sample counts once however often the pattern recurs on
# its stack).
STAGES = [
    ("driver: receive batch and send (all of the packet path)", r"^tern::node::driver::NodeDriver::receive_batch$"),
    ("node: one datagram in, its copies queued (Node::handle_packet)", r"^tern::node::relay::Node::handle_packet$"),
    ("rtc receive path of the publish leg (handle_read)", r"RTCPeerConnection.*>::handle_read$"),
    ("tern media core: room, forwarders, rewrite (tern::media)", r"^<?tern::media::"),
    ("rtc send path, all copies (write_rtp + flush_writes)", r"(RTCRtpSender::write_rtp|RTCPeerConnection>::flush_writes)$"),
    ("  interceptor chain (NACK send buffer, sender reports, stats, tern's Observe)", r"^<rtc_interceptor::chain::Chain as .*>::(handle|poll)_write$"),
    ("  of which NACK responder / send buffer", r"rtc_interceptor::nack::"),
    ("  SRTP encrypt (rtc_srtp, incl. AES-GCM)", r"rtc_srtp::.*encrypt_rtp"),
    ("SRTP decrypt (rtc_srtp, incl. AES-GCM)", r"rtc_srtp::.*decrypt_rtp"),
    ("AES-GCM seal + open (ring)", r"^ring::aead::aes_gcm::(seal|open)"),
    ("driver: sends, one sendmmsg per batch (incl. the kernel's loopback delivery)", r"^__x64_sys_(sendto|sendmmsg)$"),
    ("driver: receive syscalls", r"^__x64_sys_recv(mmsg|msg|from)$"),
    ("driver: epoll_wait (going to sleep, waking)", r"^__x64_sys_epoll_wait$"),
    ("timers (poll_timeout / handle_timeout)", r"(poll_timeout|handle_timeout)$"),
]

# Leaf functions to attribute to their first caller outside them: (label, leaf regex, skip regex).
CALLERS = [
    ("memcpy/memmove", r"mem(move|cpy)", r"mem(move|cpy)"),
    ("hash map entry (hashbrown)", r"hashbrown", r"hashbrown|hash"),
    ("SipHash", r"hash::sip", r"hash|Hash"),
    ("tracing", r"tracing", r"tracing"),
    ("malloc/free", r"malloc|_int_free|^free$|cfree|memalign", r"malloc|free|alloc|memalign"),
]


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    samples = stacks(path)
    n = len(samples)
    if n == 0:
        raise SystemExit(f"{path}: no samples")
    pct = lambda k: 100.0 * k / n  # noqa: E731

    self_count = collections.Counter((s[0][0], s[0][1]) for s in samples)
    out = [f"{n} samples (cpu-clock) of the relay process; percentages are of all of them.", ""]
    out.append(f"Top {top} functions by self time:")
    out.append("")
    out.append("| Self | Object | Function |")
    out.append("|---:|---|---|")
    for (sym, dso), k in self_count.most_common(top):
        out.append(f"| {pct(k):.1f} % | {dso} | `{shorten(sym)}` |")
    out.append("")

    by = collections.Counter()
    for (sym, dso), k in self_count.items():
        for label, pred in COMPONENTS:
            if pred(sym, dso):
                by[label] += k
                break
    out.append("Self time by component:")
    out.append("")
    out.append("| Component | Self |")
    out.append("|---|---:|")
    for label, _ in COMPONENTS:
        if by[label]:
            out.append(f"| {label} | {pct(by[label]):.1f} % |")
    out.append("")

    out.append("Inclusive time of the stages (share of samples with the function on the stack):")
    out.append("")
    out.append("| Stage | Inclusive |")
    out.append("|---|---:|")
    for label, pattern in STAGES:
        rx = re.compile(pattern)
        k = sum(1 for s in samples if any(rx.search(sym) for sym, _ in s))
        out.append(f"| {label} | {pct(k):.1f} % |")
    out.append("")

    out.append("Who calls the hot leaf functions (first caller outside them, self time):")
    out.append("")
    out.append("| Leaf | Self | Main callers |")
    out.append("|---|---:|---|")
    for label, leaf, skip in CALLERS:
        leaf_rx, skip_rx = re.compile(leaf), re.compile(skip)
        callers = collections.Counter()
        total = 0
        for s in samples:
            if leaf_rx.search(s[0][0]):
                total += 1
                caller = next((sym for sym, _ in s[1:] if not skip_rx.search(sym)), "?")
                callers[shorten(caller)] += 1
        if total:
            main_callers = ", ".join(
                f"`{c}` {pct(k):.1f} %" for c, k in callers.most_common(4) if pct(k) >= 0.1
            )
            out.append(f"| {label} | {pct(total):.1f} % | {main_callers} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
