# shellcheck shell=bash
# Sourced by scripts/device-test.sh after its runtimes ran (one line: `. scripts/device-tflite-runtime.sh`):
# the .tflite files of the rpi4 build run in tflite-runtime 2.14.0 (the package many Pi images ship; its aarch64
# wheel needs glibc >= 2.34 and numpy < 2) inside the emulated Debian arm64 userland, and their outputs must equal
# the host's LiteRT outputs (fp32 within 1e-4 relative; int8 within one output step: the two XNNPACK builds may
# round a requantization differently).
#
# Uses what device-test.sh defines: dev CPU CMD... (run CMD in the userland as that CPU), device_venv, say, $ROOT,
# $SHARE, $PY, $CPUS, and the host's outputs $SHARE/host-<file>-litert.npy. tflite-runtime gets its own venv,
# /opt/tflrt, since the [device] install has numpy 2.

TFLRT_FILES=(model.int8.tflite model.tflite)
if [ ! -f "$SHARE/tflrt-wheels/.complete" ]; then
  say "fetching the aarch64 wheels of tflite-runtime 2.14.0 and numpy 1.26.4"
  $PY -m pip download -q --dest "$SHARE/tflrt-wheels" --platform manylinux_2_34_aarch64 \
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all: \
    numpy==1.26.4 tflite-runtime==2.14.0
  touch "$SHARE/tflrt-wheels/.complete"
fi
say "installing tflite-runtime 2.14.0 in the userland (/opt/tflrt)"
device_venv /opt/tflrt "$SHARE/tflrt-wheels" numpy==1.26.4 tflite-runtime==2.14.0
cat > "$SHARE/tflrt_outputs.py" <<'PY'
"""Run each .tflite in tflite-runtime on the shared NCHW input (transposed to the file's NHWC) and save output 0."""
import sys
import numpy as np
from tflite_runtime.interpreter import Interpreter

x = np.load(sys.argv[1])
prefix = sys.argv[2]
for path in sys.argv[3:]:
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    xi = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if tuple(d["shape"]) != x.shape else x
    it.set_tensor(d["index"], xi.astype(d["dtype"]))
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    np.save(f"{prefix}{path.rsplit('/', 1)[-1]}-tflite-runtime.npy", np.asarray(out, dtype=np.float32))
PY
for cpu in $CPUS; do
  dev "$cpu" /opt/tflrt/bin/python /mnt/share/tflrt_outputs.py /mnt/share/input.npy "/mnt/share/dev-$cpu-" \
    "${TFLRT_FILES[@]/#//mnt/share/rpi4/}"
  for f in "${TFLRT_FILES[@]}"; do
    $PY - "$SHARE" "$cpu" "$f" <<'PY'
import sys
import numpy as np
share, cpu, f = sys.argv[1:4]
host = np.load(f"{share}/host-{f}-litert.npy")
dev = np.load(f"{share}/dev-{cpu}-{f}-tflite-runtime.npy")
tol = 1e-4 if "int8" not in f else 1.0 / 8
err = float(np.max(np.abs(host - dev)) / max(1e-6, float(np.max(np.abs(host)))))
assert host.shape == dev.shape and err <= tol, f"{cpu} {f}: tflite-runtime differs from host LiteRT by {err:.2e}"
print(f"device-test: {cpu}: {f} in tflite-runtime 2.14.0 (aarch64): same outputs as host LiteRT ({err:.1e})")
PY
  done
done
