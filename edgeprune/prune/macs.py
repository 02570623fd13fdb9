"""MAC and parameter counting.

Consumes: a model and example inputs. Produces: (MACs, params) as ints. MACs come from
``torch.utils.flop_counter`` (every conv, matmul, attention op at the aten level, so hand-written
attention is counted too), halved from FLOPs; params are the model's parameter elements.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def _sdpa_cpu_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:
    # (B, H, Lq, D) x (B, H, Lk, D) -> scores, then x (B, H, Lk, Dv): two matmuls, 2 flops per MAC
    b, h, lq, d = q
    lk, dv = k[-2], v[-1]
    return 2 * b * h * lq * lk * (d + dv)


def _custom_mapping() -> dict:
    ops = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        ops[op] = _sdpa_cpu_flops
    return ops


def count_macs_params(model: nn.Module, example_inputs) -> tuple:
    from ..graph import as_inputs

    inputs = as_inputs(example_inputs)
    was = model.training
    model.eval()
    # the fused MultiheadAttention fast path is one opaque kernel the counter cannot see into
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
            model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        model.train(was)
    macs = int(counter.get_total_flops()) // 2
    params = sum(p.numel() for p in model.parameters())
    return macs, int(params)
