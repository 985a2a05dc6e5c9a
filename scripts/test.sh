#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then lint, type-check and test.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v prometheus >/dev/null || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v cc >/dev/null || missing+=(gcc libc6-dev)  # the load generator's C client
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The documentation site, strict: a broken link or anchor fails (the site is not kept).
.venv/bin/mkdocs build --strict --site-dir "$(mktemp -d)"
# The load generator end to end, small: it must keep working (figures: loadtest/README.md).
.venv/bin/python -m loadtest smoke --out "$(mktemp -d)/smoke.json" >/dev/null
.venv/bin/pytest "$@"
