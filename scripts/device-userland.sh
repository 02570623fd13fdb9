#!/usr/bin/env bash
# The emulated device's Debian bookworm arm64 userland (Python 3.11) in build/device/rootfs, built once and cached;
# `make device-userland`, and the first step of scripts/device-test.sh.
#
# The packages are extracted, not installed (mmdebstrap's `extract` variant: python3.11 and the libraries it and
# the runtimes' wheels link, with their hard dependencies, and coreutils for `env`). Their maintainer scripts
# (byte-compiling, alternatives, the certificate bundle) would run under qemu and took about nine minutes of one
# core; nothing the device test runs needs what they make, and the extraction takes seconds. Python packages come
# from scripts/device-venv.sh, without apt or pip on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=build/device/rootfs
scripts/device-binfmt.sh
mkdir -p "$(dirname "$ROOT")"  # mmdebstrap wants the parent of its target to exist (a fresh clone has no build/)
# one build at a time: two device tests started together would otherwise build the same directory
exec 9> "$(dirname "$ROOT")/.userland.lock"
flock 9
if [ ! -x "$ROOT/usr/bin/python3.11" ] || [ ! -f "$ROOT/.extracted" ]; then
  printf 'device-test: [%s] extracting the Debian arm64 userland in %s (cached afterwards)\n' "$(date +%T)" "$ROOT"
  # apt's download from Debian's mirror has failed in a CI run ("apt download failed") where the same
  # command worked by hand minutes later: three tries, 20 s apart, the later ones without --quiet so
  # apt says why
  for try in 1 2 3; do
    rm -rf "$ROOT" "$ROOT.tmp"
    quiet=--quiet
    [ "$try" = 1 ] || quiet=
    # shellcheck disable=SC2086
    if mmdebstrap $quiet --variant=extract --architectures=arm64 \
      --include=python3.11,libgomp1,libstdc++6,coreutils \
      bookworm "$PWD/$ROOT.tmp" http://deb.debian.org/debian; then
      break
    fi
    [ "$try" = 3 ] && { echo "device-test: mmdebstrap failed 3 times (Debian's mirror unreachable?)" >&2; exit 1; }
    printf 'device-test: [%s] mmdebstrap failed (try %s of 3); again in 20 s\n' "$(date +%T)" "$try"
    sleep 20
  done
  mkdir -p "$ROOT.tmp/root" "$ROOT.tmp/proc" "$ROOT.tmp/sys" "$ROOT.tmp/dev" "$ROOT.tmp/tmp"
  chmod 1777 "$ROOT.tmp/tmp"
  touch "$ROOT.tmp/.extracted"
  mv "$ROOT.tmp" "$ROOT"
  printf 'device-test: [%s] userland ready\n' "$(date +%T)"
fi
