#!/usr/bin/env python3
"""Samples a running relay until SIGTERM: one JSON object per line.

Usage: sample.py PID METRICS_URL OUT.jsonl [INTERVAL_S]

Each sample: wall time, the relay's user+system CPU in clock ticks (/proc/PID/stat), its RSS
(/proc/PID/status VmRSS), the machine's busy and total ticks (/proc/stat), this sampler's own
CPU, and the /metrics families the benchmark reads. Part of bench/run.sh.
"""

import json
import os
import resource
import signal
import sys
import time
import urllib.request

KEEP = (
    "tern_rtp_packets_",
    "tern_rtp_bytes_",
    "tern_udp_bytes_",
    "tern_forwarding_latency_seconds",
    "tern_join_duration_seconds",
    "tern_packets_dropped_total",
    "tern_limit_breaches_total",
    "tern_leg_failures_total",
    "tern_participants",
    "tern_peer_connections",
    "tern_subscriptions",
    "tern_retransmissions_sent_total",
    "tern_nacks_sent_total",
    "tern_keyframe_requests_sent_total",
    "process_",
)


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces: fields start after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def machine_ticks():
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    total = sum(cpu[:8])  # user nice system idle iowait irq softirq steal
    idle = cpu[3] + cpu[4]
    return total - idle, total


def scrape(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(KEEP):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def main():
    pid, url, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.25
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with open(path, "w") as out:
        while True:
            t = time.time()
            try:
                cpu = proc_cpu_ticks(pid)
                rss = proc_rss_kb(pid)
                metrics = scrape(url)
            except (OSError, ValueError) as e:
                # The relay is gone or did not answer: note it, keep going until told to stop.
                out.write(json.dumps({"t": t, "error": str(e)}) + "\n")
                out.flush()
                if not os.path.exists(f"/proc/{pid}"):
                    return
            else:
                busy, total = machine_ticks()
                self_cpu = resource.getrusage(resource.RUSAGE_SELF)
                out.write(
                    json.dumps(
                        {
                            "t": t,
                            "t_end": time.time(),
                            "relay_cpu_ticks": cpu,
                            "relay_rss_kb": rss,
                            "machine_busy_ticks": busy,
                            "machine_total_ticks": total,
                            "sampler_cpu_s": self_cpu.ru_utime + self_cpu.ru_stime,
                            "metrics": metrics,
                        }
                    )
                    + "\n"
                )
                out.flush()
            if stop:
                return
            # Wake on the interval grid, not interval after the work. A SIGTERM during the
            # sleep ends the loop after one more sample.
            time.sleep(max(0.0, interval - (time.time() - t) % interval))


if __name__ == "__main__":
    main()
