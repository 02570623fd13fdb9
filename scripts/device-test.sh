#!/usr/bin/env bash
# `make device-test`: install our aarch64 wheel with `[device]` into an emulated Debian arm64 userland and run
# `edgeprune doctor`, `edgeprune bench` and the runtimes' outputs there, and the C example app (examples/classify,
# cross-built by `make example` against the installed aarch64 package), on each device CPU model.
#
# The userland (Debian bookworm arm64, Python 3.11, extracted by scripts/device-userland.sh) and the aarch64 wheels
# of numpy, onnxruntime and ai-edge-litert are cached under build/device; the venvs are made afresh each run. Each
# command runs chrooted in the userland, in a private mount namespace where /proc/cpuinfo is an ARM one (runtimes
# read it and some fail on the host's x86 text), under qemu-aarch64-static with QEMU_CPU set. Timings under
# emulation mean nothing: this proves the path works.
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/device
ROOT=$B/rootfs
SHARE=$B/share
CPUS=${DEVICE_CPUS:-cortex-a72 neoverse-n1}
EP=${EP:-.venv/bin/edgeprune}
PY=${PY:-.venv/bin/python}
say() { printf 'device-test: [%s] %s\n' "$(date +%T)" "$*"; }

scripts/device-userland.sh

mkdir -p "$SHARE/wheels"
if [ ! -f "$SHARE/wheels/.complete" ]; then
  say "fetching the aarch64 wheels of the device dependencies"
  plats=""
  for g in 17 27 28 31 34; do plats="$plats --platform manylinux_2_${g}_aarch64"; done
  # shellcheck disable=SC2086
  $PY -m pip download -q --dest "$SHARE/wheels" $plats --platform manylinux2014_aarch64 --python-version 3.11 \
    --implementation cp --abi cp311 --only-binary=:all: numpy onnxruntime 'ai-edge-litert==2.3.0' rich
  touch "$SHARE/wheels/.complete"
fi

wheel=$(ls -t dist/edgeprune-*_aarch64.whl 2>/dev/null | head -1 || true)
[ -n "$wheel" ] || { echo "device-test: no aarch64 wheel in dist/: run make wheels" >&2; exit 2; }
cp "$wheel" "$SHARE/"
cp tests/device/outputs.py "$SHARE/"

# dev CPU CMD...: run CMD in the userland as the device CPU would see it.
dev() {
  local cpu=$1
  shift
  unshare -m bash -c '
    set -e
    root=$1 cpu=$2 share=$3
    shift 3
    mount --bind /proc "$root/proc"
    mount --bind "tests/device/cpuinfo/$cpu" "$root/proc/cpuinfo"
    mount --bind /dev "$root/dev"
    mount --bind /sys "$root/sys"
    mkdir -p "$root/mnt/share"
    mount --bind "$share" "$root/mnt/share"
    # QEMU_CPU stays in the environment: every program the device starts runs on the same CPU model
    exec chroot "$root" env -i QEMU_CPU="$cpu" PATH=/opt/ep/bin:/usr/bin:/bin HOME=/root "$@"
  ' _ "$ROOT" "$cpu" "$PWD/$SHARE" "$@"
}

# expect_refusal FAIL_LABEL OK_LABEL PATTERN CMD...: CMD on the device must exit 2 with PATTERN in its stderr
expect_refusal() {
  local fail_label=$1 ok_label=$2 pattern=$3 msg rc
  shift 3
  set +e
  msg=$(dev cortex-a72 "$@" 2>&1 >/dev/null)
  rc=$?
  set -e
  if [ "$rc" != 2 ] || ! grep -q "$pattern" <<< "$msg"; then
    echo "device-test: $fail_label on the device gave exit $rc: $msg" >&2
    exit 1
  fi
  say "$ok_label on the device: exit 2, $msg"
}

# device_venv VENV WHEELS SPEC...: a venv at VENV in the userland, made by the device's Python, with SPEC installed
# by the host's pip for the device's platform (aarch64, CPython 3.11, glibc 2.36) from the wheels in WHEELS. pip
# resolves the same requirements and wheels it would on the board; run under qemu, its unpacking and byte-compiling
# of numpy, onnxruntime and LiteRT took about three minutes, here seconds. The console scripts pip writes name the
# host's Python, so they move to VENV/bin naming the venv's. (pip's conflict check after a --target install looks
# at the host's packages, not the target's, so it is off.)
device_venv() {
  local venv=$1 wheels=$2 site f
  shift 2
  site=$ROOT$venv/lib/python3.11/site-packages
  dev cortex-a72 /usr/bin/python3.11 -m venv --clear --without-pip "$venv"
  local plats=(--platform manylinux2014_aarch64)
  for g in 17 27 28 31 34 35 36; do plats+=(--platform "manylinux_2_${g}_aarch64"); done
  $PY -m pip install -q --disable-pip-version-check --no-warn-conflicts --no-index --find-links "$wheels" --target "$site" \
    "${plats[@]}" --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: "$@"
  if [ -d "$site/bin" ]; then
    for f in "$site"/bin/*; do
      sed "1s|^#!.*|#!$venv/bin/python|" "$f" > "$ROOT$venv/bin/${f##*/}"
      chmod 755 "$ROOT$venv/bin/${f##*/}"
    done
    rm -rf "$site/bin"
  fi
}

say "installing $(basename "$wheel") with [device] in the userland (/opt/ep)"
device_venv /opt/ep "$SHARE/wheels" "$SHARE/$(basename "$wheel")[device]"
# torch must not come with the device install
if dev cortex-a72 /opt/ep/bin/python -c "import torch" 2>/dev/null; then
  echo "device-test: torch was installed on the device" >&2
  exit 1
fi

# host-only commands refuse in one line on a torch-free install
for cmd in "build --model edgeprune:demo-cnn --target rpi4 --out /tmp/ep-build" \
  "prune --model edgeprune:demo-cnn --ratio 0.5 --out /tmp/ep-prune"; do
  # shellcheck disable=SC2086
  expect_refusal "'edgeprune $cmd'" "edgeprune ${cmd%% *}" "needs the torch package" /opt/ep/bin/edgeprune $cmd
done

# Artifacts from the host, as a user would copy them to the board.
if [ ! -f "$SHARE/rpi4/model.int8.tflite" ]; then
  say "building the demo CNN for rpi4 on the host"
  $EP train --model edgeprune:demo-cnn --data digits --epochs 3 --seed 0 --out "$SHARE/trained" --force >/dev/null
  $EP build --model "$SHARE/trained" --target rpi4 --data digits --ratio 0.5 --out "$SHARE/rpi4" --force >/dev/null
fi
$PY - "$SHARE/input.npy" <<'PY'
import sys
import numpy as np
np.save(sys.argv[1], np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32))
PY

# artifact:runtime pairs the device runs (int8 on our runtime must equal the host bit for bit: the runtime
# uses TFLite's integer arithmetic on every path)
pairs=(model.int8.tflite:litert model.tflite:litert model.tflite:edgeprune model.int8.tflite:edgeprune
  model.int8.onnx:onnxruntime model.onnx:onnxruntime)
for a in "${pairs[@]}"; do
  [ -f "$SHARE/rpi4/${a%%:*}" ] || { echo "device-test: the rpi4 build wrote no ${a%%:*}" >&2; exit 1; }
done
host_pairs=() dev_pairs=()
for a in "${pairs[@]}"; do
  host_pairs+=("$SHARE/rpi4/$a")
  dev_pairs+=("/mnt/share/rpi4/$a")
done
$PY tests/device/outputs.py "$SHARE/input.npy" "$SHARE/host-" "${host_pairs[@]}"

# The C example app: `make example` built it natively and cross-built it for aarch64 against the installed
# package (build/pkg-arm/install); the device gets the binary and libedgeprune.so, as a user would copy them.
for f in build/classify/classify build/classify-arm/classify; do
  [ -x "$f" ] || { echo "device-test: no $f: run make example" >&2; exit 2; }
done
rm -rf "$SHARE/classify" && mkdir -p "$SHARE/classify/lib"
cp build/classify-arm/classify "$SHARE/classify/"
cp -P build/pkg-arm/install/lib/libedgeprune.so* "$SHARE/classify/lib/"
build/classify/classify "$SHARE/rpi4/model.tflite" "$SHARE/input.npy" > "$SHARE/classify-host.txt"

# a wheel for another machine: its compiled core does not load, and bench says which wheel to install. The
# x86_64 wheel's files when dist/ has one, else the same tree from the host's install (the package and its
# compiled x86_64 core), which spares make test a second x86_64 compile
x86=$(ls -t dist/edgeprune-*_x86_64.whl 2>/dev/null | head -1 || true)
rm -rf "$SHARE/x86"
if [ -n "$x86" ]; then
  $PY -m zipfile -e "$x86" "$SHARE/x86"
else
  mkdir -p "$SHARE/x86" && cp -r edgeprune "$SHARE/x86/"
  cp "$($PY -c 'import edgeprune._core as c; print(c.__file__)')" "$SHARE/x86/edgeprune/"
fi
expect_refusal "an x86_64 wheel" "an x86_64 wheel" "install the wheel built for it" \
  env PYTHONPATH=/mnt/share/x86 /opt/ep/bin/edgeprune bench /mnt/share/rpi4/model.tflite --runtime edgeprune

for cpu in $CPUS; do
  say "$cpu: edgeprune doctor"
  dev "$cpu" /opt/ep/bin/edgeprune doctor --json > "$SHARE/doctor-$cpu.json"
  $PY - "$SHARE/doctor-$cpu.json" "$cpu" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
want = "neon-dotprod" if sys.argv[2] in ("neoverse-n1", "cortex-a76") else "neon"
got = d["core"]["selected_isa"]
assert d["platform"].endswith("aarch64"), d["platform"]
assert got == want, f"{sys.argv[2]}: selected ISA {got}, expected {want}"
print(f"device-test: {sys.argv[2]}: machine aarch64, ISA {got}")
PY
  if [ "$cpu" = "${CPUS%% *}" ]; then
    dev "$cpu" /opt/ep/bin/edgeprune inspect /mnt/share/rpi4/model.int8.tflite --json > "$SHARE/inspect.json"
    $PY -c "import json, sys; d = json.load(open(sys.argv[1])); assert d['ops']['CONV_2D'] > 0, d['ops']; \
print('device-test: inspect model.int8.tflite on the device:', d['ops'])" "$SHARE/inspect.json"
  fi
  dev "$cpu" /opt/ep/bin/python /mnt/share/outputs.py /mnt/share/input.npy "/mnt/share/dev-$cpu-" "${dev_pairs[@]}"
  dev "$cpu" env LD_LIBRARY_PATH=/mnt/share/classify/lib /mnt/share/classify/classify /mnt/share/rpi4/model.tflite \
    /mnt/share/input.npy > "$SHARE/classify-$cpu.txt"
  $PY tests/device/top5.py "$SHARE/classify-host.txt" "$SHARE/classify-$cpu.txt" "$cpu"
  for a in "${pairs[@]}"; do
    f=${a%%:*} rt=${a##*:}
    # `bench` of every runtime on the first CPU; on the others, of our runtime only, whose kernels are the ones
    # this CPU model changes (outputs.py above already ran every pair on each CPU; each bench process costs
    # seconds of emulated start-up)
    if [ "$cpu" != "${CPUS%% *}" ] && [ "$rt" != edgeprune ]; then continue; fi
    dev "$cpu" /opt/ep/bin/edgeprune bench "/mnt/share/rpi4/$f" --runtime "$rt" --runs 3 --warmup 1 --json \
      > "$SHARE/bench-$cpu-$f-$rt.json"
    $PY - "$SHARE" "$cpu" "$f" "$rt" <<'PY'
import json, sys
import numpy as np
share, cpu, f, rt = sys.argv[1:5]
b = json.load(open(f"{share}/bench-{cpu}-{f}-{rt}.json"))
assert b["runtime"] == rt and b["runs"] == 3, b
host = np.load(f"{share}/host-{f}-{rt}.npy")
dev = np.load(f"{share}/dev-{cpu}-{f}-{rt}.npy")
if "int8" in f and rt == "edgeprune":
    assert np.array_equal(host, dev), f"{cpu} {f} {rt}: int8 outputs differ from the host's"
else:
    # fp32 within 1e-4 of the host; other runtimes' int8 kernels may round differently per ISA: one step
    tol = 1e-4 if "int8" not in f else 1.0 / 8
    err = float(np.max(np.abs(host - dev)) / max(1e-6, float(np.max(np.abs(host)))))
    assert err <= tol, f"{cpu} {f} {rt}: relative difference {err:.2e} > {tol}"
if f == "model.int8.onnx" and rt == "onnxruntime":
    # ONNX Runtime's aarch64 kernels, from its own profile: every conv and gemm an int8 kernel
    ops = {row["op_type"] for row in b["layers"]}
    assert "QLinearConv" in ops and not ops & {"Conv", "FusedConv", "Gemm", "MatMul"}, f"{cpu}: float kernels in {ops}"
print(f"device-test: {cpu}: bench {f} on {rt}: median {b['median_ms']:.3f} ms under emulation, outputs match")
PY
  done
done
# tflite-runtime's aarch64 wheel in the same userland (sourced: it uses dev, say and the paths above)
. scripts/device-tflite-runtime.sh
say "passed on: $CPUS"
