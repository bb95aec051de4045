#!/usr/bin/env bash
# The one benchmark command:
#
#   bash bench/run.sh [fanout|two-rooms|mesh|audio|saturate ...]      (the first four by default)
#
# `saturate` offers more than a core can forward: BENCH_ROOMS (10) rooms of 1 publisher at
# 8 Mbit/s and 25 subscribers that count RTP without decrypting it, about 19,000 copies a second
# per room. What the relay forwards then is its ceiling. For the scaling figure compare
# BENCH_ROOMS=5 BENCH_RELAY_ARGS="--media-workers 1" (BENCH_PIN=1) with BENCH_ROOMS=10
# BENCH_RELAY_ARGS="--media-workers 2" BENCH_PIN=0 (five rooms per worker). It runs the relay
# without its load limit (media.max_worker_load_percent 0) unless BENCH_WORKER_LOAD_LIMIT says.
#
# Builds the release relay, then for each scenario, inside a fresh network namespace that has only
# loopback: starts `tern` (API key, limits raised for load, log to a file), waits for /readyz,
# samples the relay (CPU from /proc/<pid>/stat, RSS, /metrics every 0.25 s) while `tern loadtest
# --json` runs against it, and turns the samples inside the loadtest's measurement window into a
# table. Tables go to stdout and bench/results/<UTC time>.md, everything measured to
# bench/results/<UTC time>.json. Needs root (unshare -n), python3, curl, taskset.
#
# Environment:
#   BENCH_DURATION=30s    measurement window of each scenario (loadtest --duration)
#   BENCH_PIN=1           relay on CPU 0, loadtest and sampler on CPU 1 (0: let the kernel place them)
#   BENCH_QUIET_WAIT=300  seconds to wait before each scenario for the machine to be idle (other
#                         processes under 30 % of a core); then it measures anyway and says so
#   BENCH_OUT=bench/results   where the results go
#   BENCH_TERN=PATH       use this relay binary instead of building one
#   BENCH_RELAY=PATH      run this relay binary under the load of the built (or BENCH_TERN) one's
#                         loadtest, e.g. an older relay to compare with
#   BENCH_RELAY_ARGS="..."  more flags for the relay (e.g. "--media-bandwidth-estimation false")
#   BENCH_LOADTEST_ARGS="..."  more flags for the loadtest (e.g. "--e2ee")
#   BENCH_WORKER_LOAD_LIMIT=0  the relay's media.max_worker_load_percent in `saturate` (0: off)
#   BENCH_RAMP_PER_S=40   joins per second in `saturate`
#   BENCH_KEEP=1          keep the working directory (relay logs, all samples, loadtest output)
#   BENCH_HOOK=CMD        run CMD in the background (bash -c, inside the namespace, RELAY_PID and
#                         LOADTEST_PID exported) right after the loadtest starts; bench/profile.sh
#                         uses it to attach perf
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
ALL_SCENARIOS=(fanout two-rooms mesh audio)
HTTP=127.0.0.1:8080
MEDIA=127.0.0.1:50000

die() {
  echo "bench: error: $*" >&2
  exit 1
}

scenario_args() {
  case "$1" in
    fanout) echo "--rooms 1 --publishers 1 --subscribers 50" ;;
    two-rooms) echo "--rooms 2 --publishers 1 --subscribers 25 --video-kbps 2000" ;;
    mesh) echo "--rooms 10 --publishers 5 --subscribers 0" ;;
    audio) echo "--rooms 1 --publishers 5 --subscribers 200 --audio-only" ;;
    saturate) echo "--rooms ${BENCH_ROOMS:-10} --publishers 1 --subscribers 25 --video-kbps 8000 --count-only --ramp-per-s ${BENCH_RAMP_PER_S:-40}" ;;
    *) return 1 ;;
  esac
}

# Relay flags a scenario needs: counting receivers send no transport-cc feedback, and a relay
# measured at its ceiling must not refuse joins for load (BENCH_WORKER_LOAD_LIMIT=95 shows what
# the default admission limit does there instead).
scenario_relay_args() {
  case "$1" in
    saturate) echo "--media-bandwidth-estimation false --media-max-worker-load-percent ${BENCH_WORKER_LOAD_LIMIT:-0}" ;;
    *) echo "" ;;
  esac
}

# CPU ticks (busy, total) of the whole machine.
machine_ticks() {
  awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; print busy, busy+$5+$6; exit}' /proc/stat
}

# Waits up to BENCH_QUIET_WAIT seconds for the machine to be idle (under 30 % of a core busy over
# 2 s): the relay and the loadtest share two cores with whatever else runs here.
wait_quiet() {
  local limit=${BENCH_QUIET_WAIT:-300} waited=0 b0 t0 b1 t1 pct
  while :; do
    read -r b0 t0 < <(machine_ticks)
    sleep 2
    read -r b1 t1 < <(machine_ticks)
    pct=$(( (b1 - b0) * 100 * $(nproc) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
    if (( pct < 30 )); then
      return 0
    fi
    if (( waited >= limit )); then
      echo "bench: warning: the machine is still busy (${pct} % of a core used by other processes); measuring anyway" >&2
      return 0
    fi
    if (( waited == 0 )); then
      echo "bench: the machine is busy (${pct} % of a core); waiting up to ${limit} s for it to calm down" >&2
    fi
    waited=$((waited + 2))
  done
}

# ---------------------------------------------------------------------------------------------
# One scenario, inside the namespace: bash run.sh __scenario NAME DIR TERN
inner() {
  local name=$1 dir=$2 tern=$3 relay=${4:-$3}
  local pin_relay=() pin_load=()
  if [[ ${BENCH_PIN:-1} == 1 ]]; then
    pin_relay=(taskset -c 0)
    pin_load=(taskset -c 1)
  fi
  RELAY_PID="" SAMPLER_PID="" LOADTEST_PID="" HOOK_PID=""
  trap 'inner_exit $?' EXIT
  trap 'exit 143' TERM INT
  ip link set lo up

  local relay_args=(
    --http-listen "$HTTP" --media-listen "$MEDIA"
    --http-max-joins-per-ip-per-minute 0
    --http-max-connections-per-client 4096
    --room-max-participants 1000
  )
  # shellcheck disable=SC2207
  relay_args+=($(scenario_relay_args "$name"))
  # BENCH_RELAY_ARGS: more relay flags for a comparison (e.g. "--media-bandwidth-estimation false").
  # shellcheck disable=SC2206
  relay_args+=(${BENCH_RELAY_ARGS:-})
  # An API key: the loadtest mints its own tokens (no /dev/token round trips), the relay is not in
  # dev mode. Passed in the environment, so it is not on any command line.
  TERN_API_KEY=bench
  TERN_API_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export TERN_API_KEY TERN_API_SECRET

  "${pin_relay[@]}" "$relay" "${relay_args[@]}" >"$dir/relay.log" 2>&1 &
  RELAY_PID=$!
  local i
  for i in $(seq 150); do
    kill -0 "$RELAY_PID" 2>/dev/null || die "the relay exited during start-up"
    curl -fs -o /dev/null "http://$HTTP/readyz" && break
    (( i < 150 )) || die "the relay was not ready after 15 s"
    sleep 0.1
  done

  "${pin_load[@]}" python3 "$HERE/sample.py" "$RELAY_PID" "http://$HTTP/metrics" "$dir/samples.jsonl" 0.25 &
  SAMPLER_PID=$!
  sleep 1.5 # a few samples of the idle relay

  # shellcheck disable=SC2207
  local lt_args=($(scenario_args "$name") ${BENCH_LOADTEST_ARGS:-} --duration "${BENCH_DURATION:-30s}" --local-ip 127.0.0.1,127.0.0.2)
  local t_launch
  t_launch=$(date +%s.%N)
  "${pin_load[@]}" "$tern" loadtest --url "http://$HTTP" "${lt_args[@]}" --json \
    >"$dir/loadtest.json" 2>"$dir/loadtest.err" &
  LOADTEST_PID=$!
  if [[ -n ${BENCH_HOOK:-} ]]; then
    RELAY_PID=$RELAY_PID LOADTEST_PID=$LOADTEST_PID bash -c "$BENCH_HOOK" &
    HOOK_PID=$!
  fi
  local rc=0
  wait "$LOADTEST_PID" || rc=$?
  LOADTEST_PID=""
  [[ $rc == 0 ]] || die "the loadtest failed (exit $rc)"
  if [[ -n $HOOK_PID ]]; then
    wait "$HOOK_PID" || die "BENCH_HOOK failed"
    HOOK_PID=""
  fi
  kill -TERM "$SAMPLER_PID"
  wait "$SAMPLER_PID" || die "the sampler failed"
  SAMPLER_PID=""
  kill -0 "$RELAY_PID" 2>/dev/null || die "the relay died during the run"

  python3 - "$dir/meta.json" "$name" "$t_launch" "$(getconf CLK_TCK)" "${BENCH_PIN:-1}" \
    "${lt_args[*]}" "${relay_args[*]}" <<'EOF'
import json, sys
path, name, t_launch, clk, pin, lt_args, relay_args = sys.argv[1:]
json.dump({
    "scenario": name,
    "t_launch": float(t_launch),
    "clk_tck": int(clk),
    "pinning": "relay on CPU 0, loadtest and sampler on CPU 1 (taskset)" if pin == "1"
               else "none (the kernel places relay and loadtest on the 2 cores)",
    "loadtest_args": lt_args.split(),
    "relay_args": relay_args.split() + ["(TERN_API_KEY, TERN_API_SECRET in the environment)"],
}, open(path, "w"), indent=1)
EOF

  # SIGTERM drains; everybody has left already, so it exits at once. SIGINT if it does not.
  kill -TERM "$RELAY_PID"
  for i in $(seq 100); do
    kill -0 "$RELAY_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -INT "$RELAY_PID" 2>/dev/null || true
  wait "$RELAY_PID" || true
  RELAY_PID=""
}

inner_exit() {
  local rc=$1 p
  for p in "$HOOK_PID" "$LOADTEST_PID" "$SAMPLER_PID" "$RELAY_PID"; do
    [[ -n $p ]] && kill -INT "$p" 2>/dev/null || true
  done
  for p in "$HOOK_PID" "$LOADTEST_PID" "$SAMPLER_PID" "$RELAY_PID"; do
    if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
      sleep 0.5
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  if [[ $rc != 0 ]]; then
    echo "bench: scenario failed; relay log ($dir/relay.log), last 30 lines:" >&2
    tail -n 30 "$dir/relay.log" >&2 || true
    if [[ -s $dir/loadtest.err ]]; then
      echo "bench: loadtest stderr, last 30 lines:" >&2
      tail -n 30 "$dir/loadtest.err" >&2 || true
    fi
  fi
}

if [[ ${1:-} == __scenario ]]; then
  shift
  dir=$2
  inner "$@"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# The command.
[[ $(id -u) == 0 ]] || die "run as root (each scenario runs in its own network namespace: unshare -n)"
for tool in python3 curl taskset unshare ip getconf; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
scenarios=("$@")
(( ${#scenarios[@]} )) || scenarios=("${ALL_SCENARIOS[@]}")
for s in "${scenarios[@]}"; do
  scenario_args "$s" >/dev/null || die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]} saturate)"
done

WORK=$(mktemp -d /tmp/tern-bench.XXXXXX)
CHILD=""
outer_exit() {
  local rc=$?
  if [[ -n $CHILD ]]; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  if [[ $rc == 0 && ${BENCH_KEEP:-0} != 1 ]]; then
    rm -rf "$WORK"
  elif [[ $rc == 0 ]]; then
    echo "bench: relay logs, samples and loadtest output kept in $WORK" >&2
  else
    echo "bench: failed; what was recorded is in $WORK" >&2
  fi
}
trap outer_exit EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
if [[ -n ${BENCH_TERN:-} ]]; then
  cp "$BENCH_TERN" "$WORK/tern"
else
  echo "bench: building: cargo build --release --locked --bin tern" >&2
  cargo build --release --locked --bin tern >&2
  # A copy: another build of target/ during the run must not swap the binary under us.
  cp target/release/tern "$WORK/tern"
fi
cp "${BENCH_RELAY:-$WORK/tern}" "$WORK/relay"

stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out=${BENCH_OUT:-$ROOT/bench/results}
mkdir -p "$out"
results=()
for s in "${scenarios[@]}"; do
  echo "bench: $s: tern loadtest $(scenario_args "$s") --duration ${BENCH_DURATION:-30s}" >&2
  wait_quiet
  mkdir -p "$WORK/$s"
  unshare -n bash "$HERE/run.sh" __scenario "$s" "$WORK/$s" "$WORK/tern" "$WORK/relay" &
  CHILD=$!
  wait "$CHILD" || die "scenario $s failed"
  CHILD=""
  python3 "$HERE/report.py" analyze "$WORK/$s"
  results+=("$WORK/$s/result.json")
done

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  rev="$rev + uncommitted changes"
fi
{
  echo "# Tern benchmark, $stamp"
  echo
  echo "\`bash bench/run.sh ${scenarios[*]}\` (BENCH_DURATION=${BENCH_DURATION:-30s}, BENCH_PIN=${BENCH_PIN:-1}) at $rev."
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r);" \
    "relay and loadtest on loopback in a private network namespace."
  echo
  python3 "$HERE/report.py" markdown "${results[@]}"
} >"$out/$stamp.md"
python3 "$HERE/report.py" json "${results[@]}" >"$out/$stamp.json"
cat "$out/$stamp.md"
echo "bench: wrote $out/$stamp.md and $out/$stamp.json" >&2
