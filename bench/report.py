#!/usr/bin/env python3
"""Turns what bench/run.sh recorded into numbers and markdown.

  report.py analyze DIR          reads DIR/{meta.json,loadtest.json,samples.jsonl}, writes DIR/result.json
  report.py markdown RESULT...   prints the tables for the given result.json files
  report.py json RESULT...       prints them as one JSON document (the raw results)
  report.py rerender RESULTS.json  prints the tables again from such a document

The relay's counters are sampled every ~0.25 s for the whole loadtest run; the window used is the
span between the first sample inside the loadtest's measurement window and the last one inside
it. The loadtest starts measuring ramp_up_s after it was launched and measures for duration_s
(both from its JSON report), so the window is known to within one sampling interval.
"""

import json
import math
import sys


def load_samples(path):
    samples = []
    with open(path) as f:
        for line in f:
            s = json.loads(line)
            if "error" not in s:
                samples.append(s)
    return samples


def family(metrics, name):
    """{labels: value} of one metric name (labels '' when it has none)."""
    out = {}
    for key, value in metrics.items():
        if key == name:
            out[""] = value
        elif key.startswith(name + "{"):
            out[key[len(name) + 1 : -1]] = value
    return out


def total(metrics, name):
    return sum(family(metrics, name).values())


def delta(a, b, name):
    fa, fb = family(a, name), family(b, name)
    return {k: fb.get(k, 0.0) - fa.get(k, 0.0) for k in fb}


def buckets(a, b, name):
    """Sorted [(le, cumulative count)] of a histogram's change between two scrapes."""
    out = []
    for labels, count in delta(a, b, name + "_bucket").items():
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        out.append((math.inf if le == "+Inf" else float(le), count))
    out.sort()
    return out


def quantile(bk, q):
    """Prometheus histogram_quantile: linear inside the bucket. (value, above_last_bound)."""
    if not bk or bk[-1][1] <= 0:
        return None, False
    rank = q * bk[-1][1]
    prev_le, prev_cum = 0.0, 0.0
    for le, cum in bk:
        if cum >= rank and cum > prev_cum:
            if math.isinf(le):
                return prev_le, True
            return prev_le + (le - prev_le) * (rank - prev_cum) / (cum - prev_cum), False
        prev_le, prev_cum = le, cum
    return None, False


def log_warnings(path):
    """WARN and ERROR lines of the relay's log, counted by target and message."""
    counts = {}
    try:
        f = open(path, errors="replace")
    except OSError:
        return counts
    with f:
        for line in f:
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] in ("WARN", "ERROR"):
                key = f"{parts[1]} {parts[2].strip()}"[:120]
                counts[key] = counts.get(key, 0) + 1
    return counts


def analyze(d):
    meta = json.load(open(f"{d}/meta.json"))
    lt = json.load(open(f"{d}/loadtest.json"))
    samples = load_samples(f"{d}/samples.jsonl")
    clk = meta["clk_tck"]
    launch = meta["t_launch"]
    ws = launch + lt["ramp_up_s"]
    we = ws + lt["duration_s"]
    idle = [s for s in samples if s["t"] < launch]
    inside = [s for s in samples if ws <= s["t"] <= we]
    if not idle:
        raise SystemExit(f"{d}: no sample of the idle relay before the loadtest started")
    if len(inside) < 2:
        raise SystemExit(f"{d}: fewer than two relay samples inside the measurement window")
    a, b, i0, last = inside[0], inside[-1], idle[-1], samples[-1]
    span = b["t"] - a["t"]
    if span < 0.5 * lt["duration_s"]:
        raise SystemExit(f"{d}: relay samples cover only {span:.1f} s of the window")
    ma, mb = a["metrics"], b["metrics"]
    fwd = total(mb, "tern_rtp_packets_sent_total") - total(ma, "tern_rtp_packets_sent_total")
    rcv = total(mb, "tern_rtp_packets_received_total") - total(
        ma, "tern_rtp_packets_received_total"
    )
    fwd_bytes = total(mb, "tern_rtp_bytes_sent_total") - total(ma, "tern_rtp_bytes_sent_total")
    cpu_s = (b["relay_cpu_ticks"] - a["relay_cpu_ticks"]) / clk
    busy_s = (b["machine_busy_ticks"] - a["machine_busy_ticks"]) / clk
    sampler_s = b["sampler_cpu_s"] - a["sampler_cpu_s"]
    lat = buckets(ma, mb, "tern_forwarding_latency_seconds")
    join = buckets(i0["metrics"], last["metrics"], "tern_join_duration_seconds")

    def q_us(bk, q):
        v, above = quantile(bk, q)
        return None if v is None else {"us": v * 1e6, "above_last_bucket": above}

    def q_ms(bk, q):
        v, above = quantile(bk, q)
        return None if v is None else {"ms": v * 1e3, "above_last_bucket": above}

    drops_window = {
        k.split('"')[1]: v
        for k, v in delta(ma, mb, "tern_packets_dropped_total").items()
        if v > 0
    }
    drops_run = {
        k.split('"')[1]: v
        for k, v in delta(i0["metrics"], last["metrics"], "tern_packets_dropped_total").items()
        if v > 0
    }
    breaches_run = {
        k.split('"')[1]: v
        for k, v in delta(i0["metrics"], last["metrics"], "tern_limit_breaches_total").items()
        if v > 0
    }
    leg_failures_run = {
        k.split('"')[1]: v
        for k, v in delta(i0["metrics"], last["metrics"], "tern_leg_failures_total").items()
        if v > 0
    }
    participants = lt["participants_joined"] or lt["participants"]
    rss_idle = i0["relay_rss_kb"]
    rss_end = b["relay_rss_kb"]
    rss_peak = max(s["relay_rss_kb"] for s in inside)
    relay_pct = 100 * cpu_s / span
    busy_pct = 100 * busy_s / span
    result = {
        "scenario": meta["scenario"],
        "args": meta["loadtest_args"],
        "relay_args": meta["relay_args"],
        "pinning": meta["pinning"],
        "participants": participants,
        "window_s": span,
        "samples_in_window": len(inside),
        "packets_in_per_s": rcv / span,
        "forwarded_per_s": fwd / span,
        "forwarded_mbit_per_s": 8 * fwd_bytes / span / 1e6,
        "relay_cpu_percent": relay_pct,
        "relay_cpu_us_per_forwarded": cpu_s * 1e6 / fwd if fwd else None,
        "forwarded_per_relay_cpu_s": fwd / cpu_s if cpu_s else None,
        "relay_latency_p50": q_us(lat, 0.50),
        "relay_latency_p95": q_us(lat, 0.95),
        "relay_latency_p99": q_us(lat, 0.99),
        "relay_latency_samples": lat[-1][1] if lat else 0,
        "relay_join_p50": q_ms(join, 0.50),
        "relay_join_p95": q_ms(join, 0.95),
        "rss_idle_kb": rss_idle,
        "rss_end_kb": rss_end,
        "rss_peak_kb": rss_peak,
        "rss_per_participant_kb": (rss_end - rss_idle) / participants if participants else None,
        "machine_busy_percent": busy_pct,
        "sampler_cpu_percent": 100 * sampler_s / span,
        "other_cpu_percent": busy_pct
        - relay_pct
        - lt["loadtest_cpu_percent"]
        - 100 * sampler_s / span,
        "drops_in_window": drops_window,
        "drops_whole_run": drops_run,
        "limit_breaches_whole_run": breaches_run,
        "leg_failures_whole_run": leg_failures_run,
        "relay_log_warnings": log_warnings(f"{d}/relay.log"),
        "loadtest": lt,
        "relay_start": {"t": a["t"], "cpu_ticks": a["relay_cpu_ticks"], "metrics": ma},
        "relay_end": {"t": b["t"], "cpu_ticks": b["relay_cpu_ticks"], "metrics": mb},
    }
    json.dump(result, open(f"{d}/result.json", "w"), indent=1)
    return result


def fmt(v, digits=1):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def fq(q, unit):
    if q is None:
        return "-"
    v = q[unit]
    s = f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" if v >= 10 else f"{v:,.2f}"
    return (">" if q["above_last_bucket"] else "") + s


def join_summary(r):
    """The loadtest's join time (subscribers only); the relay's when it measured none."""
    lt = r["loadtest"]
    if lt["join_time_p50_ms"] is not None:
        return f"{fmt(lt['join_time_p50_ms'], 0)} / {fmt(lt['join_time_p95_ms'], 0)}"
    return f"{fq(r['relay_join_p50'], 'ms')} / {fq(r['relay_join_p95'], 'ms')} (relay)"


def fwarnings(d):
    top = sorted(d.items(), key=lambda kv: -kv[1])[:3]
    s = "; ".join(f"{v} x `{k}`" for k, v in top) or "none"
    return s + (f"; {len(d) - 3} more kinds" if len(d) > 3 else "")


def fdict(d):
    return ", ".join(f"{k} {v:,.0f}" for k, v in sorted(d.items())) or "none"


DESCRIPTIONS = {
    "fanout": "1 room: 1 publisher (Opus + VP8 500 kbit/s) -> 50 subscribers",
    "two-rooms": "2 rooms x (1 publisher, Opus + VP8 2 Mbit/s -> 25 subscribers)",
    "mesh": "10 rooms x 5 participants, all publishing (Opus + VP8 500 kbit/s) and receiving the other 4",
    "audio": "1 room: 5 speakers (Opus) -> 200 listeners + the other 4 speakers",
}


def markdown(results):
    out = []
    out.append(
        "| Scenario | Participants | Forwarded pkt/s | Relay CPU | µs CPU / fwd pkt | fwd pkt / CPU-s "
        "| Relay latency p50/p95/p99 (µs) | End-to-end p50/p95/p99 (ms) | Loss | Relay RSS "
        "| RSS / participant | Join p50/p95 (ms) | Loadtest CPU |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|---:|")
    for r in results:
        lt = r["loadtest"]
        out.append(
            f"| {r['scenario']} | {r['participants']} | {fmt(r['forwarded_per_s'], 0)} "
            f"| {fmt(r['relay_cpu_percent'])} % | {fmt(r['relay_cpu_us_per_forwarded'], 2)} "
            f"| {fmt(r['forwarded_per_relay_cpu_s'], 0)} "
            f"| {fq(r['relay_latency_p50'], 'us')} / {fq(r['relay_latency_p95'], 'us')} / {fq(r['relay_latency_p99'], 'us')} "
            f"| {fmt(lt['latency_p50_ms'], 2)} / {fmt(lt['latency_p95_ms'], 2)} / {fmt(lt['latency_p99_ms'], 2)} "
            f"| {fmt(lt['loss_percent'], 3)} % | {fmt(r['rss_end_kb'] / 1024)} MiB "
            f"| {fmt(r['rss_per_participant_kb'], 0)} KiB "
            f"| {join_summary(r)} | {fmt(lt['loadtest_cpu_percent'])} % |"
        )
    out.append("")
    for r in results:
        lt = r["loadtest"]
        out.append(f"### `{r['scenario']}`: {DESCRIPTIONS.get(r['scenario'], '')}")
        out.append("")
        out.append(f"`tern loadtest {' '.join(r['args'])}`")
        out.append("")
        out.append("| Measure | Value |")
        out.append("|---|---|")
        rows = [
            (
                "participants",
                f"{lt['participants']} ({lt['participants_joined']} joined, "
                f"{lt['participants_ready']} receiving everything when measuring began)",
            ),
            (
                "window",
                f"{fmt(r['window_s'])} s of relay samples ({r['samples_in_window']}) inside the "
                f"loadtest's {fmt(lt['duration_s'])} s window (ramp-up {fmt(lt['ramp_up_s'])} s before it)",
            ),
            ("packets in (from publishers)", f"{fmt(r['packets_in_per_s'], 0)} /s"),
            (
                "**forwarded packets**",
                f"**{fmt(r['forwarded_per_s'], 0)} /s** ({fmt(r['forwarded_mbit_per_s'])} Mbit/s of RTP)",
            ),
            ("relay CPU (user + system)", f"{fmt(r['relay_cpu_percent'])} % of a core"),
            (
                "**relay CPU per forwarded packet**",
                f"**{fmt(r['relay_cpu_us_per_forwarded'], 2)} µs**",
            ),
            (
                "forwarded packets per relay CPU-second",
                f"{fmt(r['forwarded_per_relay_cpu_s'], 0)}",
            ),
            (
                "added latency p50 / p95 / p99 (relay histogram)",
                f"{fq(r['relay_latency_p50'], 'us')} / {fq(r['relay_latency_p95'], 'us')} / "
                f"{fq(r['relay_latency_p99'], 'us')} µs ({r['relay_latency_samples']:.0f} packets sampled, 1 in 64)",
            ),
            (
                "end-to-end latency p50 / p95 / p99 / max (loadtest)",
                f"{fmt(lt['latency_p50_ms'], 2)} / {fmt(lt['latency_p95_ms'], 2)} / "
                f"{fmt(lt['latency_p99_ms'], 2)} / {fmt(lt['latency_max_ms'], 2)} ms",
            ),
            (
                "loss",
                f"{fmt(lt['loss_percent'], 3)} % ({lt['packets_received']:,} of "
                f"{lt['packets_expected']:,}; {lt['duplicates']} duplicates, {lt['reordered']} reordered)",
            ),
            (
                "relay RSS",
                f"{fmt(r['rss_idle_kb'] / 1024)} MiB idle, {fmt(r['rss_end_kb'] / 1024)} MiB at the "
                f"window's end (peak {fmt(r['rss_peak_kb'] / 1024)} MiB)",
            ),
            (
                "RSS per participant",
                f"{fmt(r['rss_per_participant_kb'], 0)} KiB ((end - idle) / participants)",
            ),
            (
                "join time p50 / p95 (loadtest: WebSocket open to first media)",
                f"{fmt(lt['join_time_p50_ms'], 0)} / {fmt(lt['join_time_p95_ms'], 0)} ms",
            ),
            (
                "join time p50 / p95 (relay: join accepted to first leg connected)",
                f"{fq(r['relay_join_p50'], 'ms')} / {fq(r['relay_join_p95'], 'ms')} ms",
            ),
            (
                "loadtest CPU (its own report)",
                f"{fmt(lt['loadtest_cpu_percent'])} % of a core (media threads "
                f"{fmt(lt['loadtest_media_threads_cpu_percent'])} %, {lt['loadtest_threads']} "
                f"media thread{'s' if lt['loadtest_threads'] != 1 else ''}); send lag p99 "
                f"{fmt(lt['send_lag_p99_ms'], 2)} ms",
            ),
            (
                "whole machine busy (/proc/stat)",
                f"{fmt(r['machine_busy_percent'])} % of a core (of 200 %), against "
                f"{fmt(r['machine_busy_percent'] - r['other_cpu_percent'])} % for relay + loadtest "
                f"+ sampler; /proc/stat is tick-sampled and reads up to ~10 % of a core low here, "
                f"a busy process alongside would show as a surplus",
            ),
            ("relay drops in window (tern_packets_dropped_total)", fdict(r["drops_in_window"])),
            ("relay drops, whole run", fdict(r["drops_whole_run"])),
            (
                "limit breaches / leg failures, whole run",
                f"{fdict(r['limit_breaches_whole_run'])} / {fdict(r['leg_failures_whole_run'])}",
            ),
            (
                "relay log warnings (WARN/ERROR lines; rate-limited lines are summed up)",
                fwarnings(r.get("relay_log_warnings", {})),
            ),
            (
                "loadtest errors",
                fdict(lt["errors"]) if lt["errors"] else "none",
            ),
            ("pinning", r["pinning"]),
        ]
        if lt.get("send_dropped") or lt.get("packets_foreign"):
            rows.append(
                (
                    "loadtest send dropped / foreign packets",
                    f"{lt['send_dropped']} / {lt['packets_foreign']}",
                )
            )
        for k, v in rows:
            out.append(f"| {k} | {v} |")
        out.append("")
    return "\n".join(out)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "analyze":
        for d in args:
            analyze(d)
    elif cmd == "markdown":
        print(markdown([json.load(open(p)) for p in args]))
    elif cmd == "rerender":
        # Markdown again from a combined results JSON (bench/results/<time>.json).
        print(markdown(json.load(open(args[0]))))
    elif cmd == "json":
        print(json.dumps([json.load(open(p)) for p in args], indent=1))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
