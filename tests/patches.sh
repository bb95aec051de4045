#!/usr/bin/env bash
# Unit tests of the webrtc-rs crates Tern carries fixes in (patches/README.md). Each runs in a
# scratch workspace of its own: cargo counts a `[patch]` path inside Tern's workspace as a
# member, so they cannot run in place. rtc-ice and rtc-dtls are left out: resolving them offline
# needs aws-lc-rs, an optional dependency Tern never builds; their fixes are tested through
# Tern's own end-to-end and browser tests, which patches/README.md names.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for crate in rtc-rtp rtc-interceptor; do
  cp -r "$root/patches/$crate" "$scratch/$crate"
  printf '\n[workspace]\n' >>"$scratch/$crate/Cargo.toml"
  echo "== $crate"
  # Offline when the registry cache already has their dev-dependencies (Tern's build does not
  # fetch those), else from crates.io.
  (cd "$scratch/$crate" && export CARGO_TARGET_DIR="$root/target/patches" &&
    { cargo generate-lockfile --offline >/dev/null 2>&1 || cargo generate-lockfile --quiet; } &&
    cargo test --lib --quiet)
done
