#!/usr/bin/env bash
# Profiles the relay's forwarding path under the `fanout` benchmark scenario:
#
#   bash bench/profile.sh [RECORD_SECONDS]        (20 by default)
#
# Runs `bench/run.sh fanout` (release build, own network namespace, relay pinned to CPU 0) and,
# once the loadtest is measuring, attaches `perf record -e cpu-clock -F 4999 --call-graph dwarf`
# to the relay for RECORD_SECONDS. The release profile already carries line tables
# (Cargo.toml: debug = "line-tables-only"), so no special build is needed; DWARF unwinding means
# no frame pointers either. Writes bench/results/profile-<UTC time>/ with perf.data, the
# benchmark table of that run, and profile.md (top self-time entries, self time by component,
# inclusive time of the main stages). Needs root and perf (Debian: apt-get install -y linux-perf;
# installed if missing).
#
# Environment: PROFILE_FREQ=4999 (samples per second), PROFILE_OUT=DIR, PROFILE_SCENARIO=fanout
# (any of run.sh's scenarios), and run.sh's BENCH_*.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
record_s=${1:-20}
freq=${PROFILE_FREQ:-4999}
[[ $(id -u) == 0 ]] || { echo "profile: run as root" >&2; exit 1; }

if ! command -v perf >/dev/null || ! perf --version >/dev/null 2>&1; then
  echo "profile: installing perf (apt-get install -y linux-perf)" >&2
  apt-get install -y linux-perf >&2 || { apt-get update >&2 && apt-get install -y linux-perf >&2; }
fi
# Root may profile any process whatever the setting, but a container's capabilities can be
# narrower: open the kernel up as far as it goes and check that perf can sample at all.
if [[ $(cat /proc/sys/kernel/perf_event_paranoid) != -1 ]]; then
  echo -1 >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true
fi
perf record -q -e cpu-clock -o /dev/null -- true 2>/dev/null || {
  echo "profile: perf cannot sample on this kernel (perf_event_open refused); use valgrind --tool=callgrind instead" >&2
  exit 1
}

out=${PROFILE_OUT:-$HERE/results/profile-$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$out"
# Start recording 10 s after the loadtest starts (fanout ramps up in about 4 s), stop
# RECORD_SECONDS later, well before the measurement window (RECORD_SECONDS + 20 s) ends.
hook="sleep 10; perf record -e cpu-clock -F $freq --call-graph dwarf,16384 -o '$out/perf.data' -p \$RELAY_PID -- sleep $record_s 2>'$out/perf-record.log'"
BENCH_DURATION="$((record_s + 20))s" BENCH_OUT="$out" BENCH_HOOK="$hook" bash "$HERE/run.sh" "${PROFILE_SCENARIO:-fanout}"

echo "profile: analysing $out/perf.data" >&2
python3 "$HERE/profile.py" "$out/perf.data" | tee "$out/profile.md"
echo "profile: wrote $out/profile.md (perf report -i $out/perf.data --no-children for more)" >&2
