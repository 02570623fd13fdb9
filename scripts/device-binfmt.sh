#!/usr/bin/env bash
# Registers qemu-aarch64-static for aarch64 ELF files (binfmt_misc), so that an emulated Debian arm64 userland
# can run programs that start other programs (pip, bench's worker process). Idempotent; needs root.
set -euo pipefail
dir=/proc/sys/fs/binfmt_misc
[ -f "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir"
if [ ! -f "$dir/qemu-aarch64" ]; then
  magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  # F: the interpreter is opened now, so it also works inside the userland's chroot.
  echo ":qemu-aarch64:M::$magic:$mask:/usr/bin/qemu-aarch64-static:F" > "$dir/register"
fi
grep -q enabled "$dir/qemu-aarch64"
