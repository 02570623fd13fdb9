#!/usr/bin/env bash
# The emulated device's Debian bookworm arm64 userland (Python 3.11) in build/device/rootfs, built once with
# mmdebstrap and cached; `make device-userland`, and the first step of scripts/device-test.sh. `make test` starts it
# beside the other lanes: under qemu, Debian's package scripts take about five minutes of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=build/device/rootfs
scripts/device-binfmt.sh
mkdir -p "$(dirname "$ROOT")"  # mmdebstrap wants the parent of its target to exist (a fresh clone has no build/)
# one build at a time: device-test waits here while `make test` is still building the userland beside it
exec 9> "$(dirname "$ROOT")/.userland.lock"
flock 9
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  printf 'device-test: [%s] building the Debian arm64 userland in %s (cached afterwards)\n' "$(date +%T)" "$ROOT"
  rm -rf "$ROOT.tmp"
  mmdebstrap --quiet --variant=apt --architectures=arm64 \
    --include=python3.11,python3.11-venv,python3-pip-whl,python3-setuptools-whl,libgomp1,libstdc++6,ca-certificates \
    bookworm "$PWD/$ROOT.tmp" http://deb.debian.org/debian
  mv "$ROOT.tmp" "$ROOT"
  printf 'device-test: [%s] userland ready\n' "$(date +%T)"
fi
