# Sourced by scripts/run and scripts/test: installs uv (pinned) and syncs .venv from uv.lock.
# A sync runs only when uv.lock, pyproject.toml or the Python changed since the last one, so
# a second start needs no package index.
# shellcheck shell=bash

UV_VERSION=0.13.9
python=${PYTHON:-python3}
export UV_PYTHON_DOWNLOADS=never # the machine's Python, never a downloaded one
export UV_PROJECT_ENVIRONMENT=.venv

# uv itself: the one on PATH if it is this version, else a private copy in .tools/
uv_bin() {
  if command -v uv >/dev/null && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    command -v uv
    return
  fi
  if ! [ -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "installing uv $UV_VERSION into .tools/" >&2
    "$python" -m venv .tools
    .tools/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
  fi
  echo .tools/bin/uv
}

# the fingerprint of what a sync installs: the lock, the project file and the interpreter
sync_fingerprint() {
  { cat uv.lock pyproject.toml; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

# sync MODE: "run" (the service's dependencies, leaving anything else in place) or "test"
# (exactly the lock, test tools included); a test sync also serves a later run
sync_venv() {
  local mode=$1 stamp=.venv/.srm-sync-$1 fingerprint
  fingerprint=$(sync_fingerprint)
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
    return
  fi
  local uv
  uv=$(uv_bin)
  if [ "$mode" = run ]; then
    "$uv" sync --locked --quiet --python "$python" --no-dev --inexact
  else
    "$uv" sync --locked --quiet --python "$python"
    echo "$fingerprint" >.venv/.srm-sync-run
  fi
  echo "$fingerprint" >"$stamp"
}
