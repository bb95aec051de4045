#!/usr/bin/env bash
# Tern's one test command (see README): installs what the tests need on a fresh Debian machine,
# builds, checks formatting and lints, and runs every test. Media and browser tests run inside a
# private network namespace that has only loopback, so nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

step "system packages (chromium and firefox-esr for browser tests; iproute2, nftables, util-linux for test networks; python3-venv for schemathesis and aiortc; GStreamer webrtcbin for interop; prometheus and coturn for the operations tests)"
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v unshare >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v turnserver >/dev/null || missing+=(coturn)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# The GStreamer interop client: webrtcbin, its codecs and libnice, driven from Debian's python3.
for pkg in python3-gi python3-websockets gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  # Packages install their services but must not start them (the tests start their own).
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" >/dev/null
fi
chromium --version 2>/dev/null | grep -v 'unexpected operator' || true

step "npm packages for the browser tests"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

step "Python packages for the aiortc interop client (PyPI, pinned in tests/interop/requirements.txt)"
TERN_TEST_INTEROP_VENV=$(bash tests/interop/venv.sh)
export TERN_TEST_INTEROP_VENV

step "build (debug, all targets)"
cargo fetch --locked
cargo build --locked --workspace --all-targets

step "format and lints"
if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
  cargo clippy --locked --workspace --all-targets --offline -- -D warnings
else
  echo "(rustfmt/clippy not installed with this toolchain: skipping format and lint checks)"
fi

# Runs a command in a fresh network namespace with only `lo` up (root or user namespaces
# needed); falls back to the host network, loudly, where that is not allowed.
isolated() {
  if unshare -n true 2>/dev/null; then
    unshare -n bash -c 'ip link set lo up && exec "$@"' isolated "$@"
  else
    echo "(unshare -n not permitted here: running on the host network)"
    "$@"
  fi
}

step "unit, simulation and end-to-end tests (real WebRTC peers on loopback)"
isolated cargo test --locked --offline --workspace

step "patched webrtc-rs crates (patches/): their own unit tests"
bash tests/patches.sh

step "admin API: schemathesis (property-based, from PyPI) against the relay's OpenAPI document"
bash tests/api/schemathesis.sh target/debug/tern

step "deploy/: promtool, systemd-analyze, dashboard, Kubernetes and Helm manifests (static)"
"${TERN_TEST_SCHEMATHESIS_VENV:-$HOME/.cache/tern/schemathesis-venv}/bin/python" tests/deploy/check.py target/debug/tern

step "end-to-end encryption: the client's crypto under node's test runner (RFC 9605 vectors, frame format, key schedule, simulated calls, hostile messages)"
node --test tests/e2ee/

step "headless Chromium: two pages call each other through the relay"
isolated node tests/browser/smoke.mjs

step "headless Chromium: the web page, three people (media, layout, stats panel, mute, screen share, chat, listener, resume, leave)"
isolated node tests/browser/call.mjs

step "headless Chromium: the lobby (preview, microphone meter, device pickers, join with the camera off, blocked devices) and switching cameras mid-call"
isolated node tests/browser/lobby.mjs

step "headless Chromium: an operator mutes a participant through the admin API; the page shows it"
isolated node tests/browser/operator.mjs

step "headless Chromium: a media worker over its load limit refuses a join; the page tries again until it is taken"
isolated node tests/browser/busy.mjs

step "headless Firefox and Chromium in one call (Firefox in a network namespace)"
isolated node tests/browser/firefox.mjs

step "headless Chromium: end-to-end encrypted call (decoding, safety codes, a wrong passphrase, what the relay forwards, a leave and a late join rotate keys, a relay that swaps keys)"
isolated node tests/browser/e2ee.mjs

step "headless Firefox and three Chromium pages in one end-to-end encrypted call (one safety code on all four)"
isolated node tests/browser/firefox.mjs e2ee

step "headless Chromium: VP9 and AV1 SVC, dynacast, the active speaker, loss in network namespaces (NACK/RTX, the quality indicator), a killed browser, ICE-TCP to the second media worker with UDP blocked"
isolated node tests/browser/media.mjs

step "headless Chromium with three IPv4 networks and IPv6 stays in a call for a minute; its path dies midway and it moves to another"
isolated node tests/browser/multihome.mjs

step "headless Chromium and Firefox: bandwidth control (simulcast layer by downlink under tc limits, drop and recovery, a room budget through the admin API, Firefox receiving simulcast)"
isolated node tests/browser/bandwidth.mjs

step "WHIP: a browser (fetch + RTCPeerConnection: trickle, ICE restart, DELETE), GStreamer webrtcbin and aiortc publish over HTTP; a Chromium viewer decodes each"
isolated node tests/browser/whip.mjs

step "WHEP: a fetch-only Chromium player and aiortc watch a Chromium participant; a player behind a 400 kbit/s tbf gets a lower layer; following a named participant and the next publisher"
isolated node tests/browser/whep.mjs

step "interop: Chromium, aiortc and GStreamer webrtcbin in one call (three Opus parameter sets; aiortc leaves and rejoins)"
isolated node tests/browser/interop.mjs

step "all tests passed in $(( $(date +%s) - started )) s"
