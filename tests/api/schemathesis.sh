#!/usr/bin/env bash
# Property-based test of the admin API: schemathesis (PyPI) generates requests from the OpenAPI
# document the relay serves and checks every answer against it (status codes, content types,
# headers, response schemas, no 5xx, valid data accepted and invalid data refused, created rooms
# reachable, deleted rooms gone, auth really required). Usage: schemathesis.sh <tern binary>.
set -euo pipefail
tern=$(realpath "$1")
venv=${TERN_TEST_SCHEMATHESIS_VENV:-$HOME/.cache/tern/schemathesis-venv}
version=4.32.5

if [ ! -x "$venv/bin/schemathesis" ] || ! "$venv/bin/schemathesis" --version | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work=$(mktemp -d)
relay_pid=
cleanup() {
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export TERN_API_KEY=schemathesis
TERN_API_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export TERN_API_SECRET
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tern" --http-listen "127.0.0.1:$port" --media-listen 127.0.0.1:0 --log warn >"$work/relay.log" 2>&1 &
relay_pid=$!
token=$("$tern" token --room '*' --identity schemathesis --grant admin --ttl 1h)

# Rooms created by the run must not hit the node's room limit before it ends; everything else
# is as an operator would run it.
cd "$work"
status=0
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
  --wait-for-schema 20 \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-time "${TERN_TEST_SCHEMATHESIS_SECONDS:-60}" \
  --seed "${TERN_TEST_SCHEMATHESIS_SEED:-1}" \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- relay log" >&2
  tail -n 50 "$work/relay.log" >&2
fi
exit "$status"
