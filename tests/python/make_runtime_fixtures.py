"""Writes the .tflite fixtures of the C++ runtime tests (tests/data/runtime/): each model of
runtime_models.py, a seeded input and LiteRT's outputs on it, so the native and qemu (aarch64)
ctest runs compare our runtime with LiteRT without Python. The int8 files (edgeprune's own
quantizer and exporter) carry the outputs of LiteRT's builtin reference kernels, which our runtime
must equal bit for bit; they also seed the loader fuzzer with quantization parameters.

Consumes: nothing (seeded). Produces: <name>.tflite, <name>.in (float32 input, raw little-endian),
<name>.out (LiteRT's outputs, float32, concatenated). Run: python tests/python/make_runtime_fixtures.py [NAME ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_models import (  # noqa: E402
    conv_variants,
    depthwise_project_chain,
    encoder_block,
    expand_depthwise_chain,
    int8_attention_scores,
    int8_attention_softmax,
    int8_cnn,
    int8_sparse_wide,
    int8_transpose_conv,
    litert_reference_run,
    litert_run,
    mobilenet_block,
    more_ops_block,
    read_after_output,
    upsample_block,
    winograd_block,
)

OUT = Path(__file__).resolve().parents[1] / "data" / "runtime"
MODELS = {
    "dense": lambda: mobilenet_block(None, size=8),
    "sparse": lambda: mobilenet_block(1, size=8),
    "blocks4x1": lambda: mobilenet_block(4, size=8),
    "conv_variants": conv_variants,
    "int8": int8_cnn,
    "int8_sparse": lambda: int8_cnn(sparse=True),
    "int8_sparse_wide": int8_sparse_wide,
    "int8_attention": int8_attention_scores,
    "int8_upsample": int8_transpose_conv,
    "int8_softmax": int8_attention_softmax,
    "int8_softmax_unfused": lambda: int8_attention_softmax(expose=True),
    "encoder": encoder_block,
    "encoder_sparse": lambda: encoder_block(sparse=1),
    "upsample": upsample_block,
    "read_after_output": read_after_output,
    "winograd": winograd_block,
    "more_ops": more_ops_block,
    "expand_dw": expand_depthwise_chain,
    # 96 channels: three bands of a 30x29 plane
    "dw_project": lambda: depthwise_project_chain((1, 30, 29), cin=96),
}
SHAPES = {
    "dense": (1, 8, 8, 3),
    "sparse": (1, 8, 8, 3),
    "blocks4x1": (1, 8, 8, 3),
    "conv_variants": (2, 13, 11, 8),
    "int8": (1, 16, 16, 3),
    "int8_sparse": (1, 16, 16, 3),
    "int8_sparse_wide": (1, 16, 16, 3),
    "int8_attention": (2, 12, 16),
    "int8_upsample": (1, 5, 4, 8),
    "int8_softmax": (1, 4, 9, 24),
    "int8_softmax_unfused": (1, 4, 9, 24),
    "encoder": (12, 32),
    "encoder_sparse": (12, 32),
    "upsample": (1, 6, 5, 8),
    "read_after_output": (1, 6, 40),
    "winograd": (2, 41, 37, 12),
    "more_ops": (1, 9, 7, 6),
    "expand_dw": (2, 44, 41, 8),
    "dw_project": (1, 60, 58, 3),
}


def main(names=None) -> None:
    """Every fixture, or those named on the command line."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in MODELS.items():
        if names and name not in names:
            continue
        data = make()
        x = np.random.default_rng(7).standard_normal(SHAPES[name]).astype(np.float32)
        outs = (litert_reference_run if name.startswith("int8") else litert_run)(data, [x])
        (OUT / f"{name}.tflite").write_bytes(data)
        (OUT / f"{name}.in").write_bytes(x.astype("<f4").tobytes())
        (OUT / f"{name}.out").write_bytes(b"".join(o.astype("<f4").tobytes() for o in outs))


if __name__ == "__main__":
    main(sys.argv[1:])
