#!/usr/bin/env bash
# Creates (or refreshes) the Python venv of the aiortc interop client from requirements.txt,
# prebuilt wheels only, and prints its path. The venv is reused while requirements.txt is
# unchanged. Usage: venv.sh   (TERN_TEST_INTEROP_VENV overrides ~/.cache/tern/interop-venv)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${TERN_TEST_INTEROP_VENV:-$HOME/.cache/tern/interop-venv}
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" || ! "$venv/bin/python" -c 'import aiortc' 2>/dev/null; then
  rm -rf "$venv"
  # Debian's python3 (python3-venv), as on CI: the GStreamer client uses its python3-gi.
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi
echo "$venv"
