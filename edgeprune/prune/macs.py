"""MAC and parameter counting.

Consumes: a model and example inputs. Produces: (MACs, params) as ints. MACs come from
``torch.utils.flop_counter`` (every conv, matmul, attention op at the aten level, so hand-written
attention is counted too), halved from FLOPs; params are the model's parameter elements.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs_params(model: nn.Module, example_inputs) -> tuple:
    from ..graph import as_inputs

    inputs = as_inputs(example_inputs)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs)
    finally:
        model.train(was)
    macs = int(counter.get_total_flops()) // 2
    params = sum(p.numel() for p in model.parameters())
    return macs, int(params)
