"""MAC and parameter counting.

Consumes: a model and example inputs. Produces: (MACs, params) as ints. MACs come from
``edgeprune.estimate.counting_macs`` (``torch.utils.flop_counter`` at the aten level: every conv,
matmul and attention op, so hand-written attention is counted too), the one MAC counter of the
package; params are the model's parameter elements.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..estimate import counting_macs


def count_macs_params(model: nn.Module, example_inputs) -> tuple:
    """(MACs, parameter elements) of one eval-mode forward on ``example_inputs``: a tensor, a
    tuple, or a dict of keyword inputs (a ``transformers`` ``BatchEncoding``)."""
    from ..graph import split_inputs

    args, kwargs = split_inputs(example_inputs)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), counting_macs() as macs:
            model(*args, **kwargs)
    finally:
        model.train(was)
    params = sum(p.numel() for p in model.parameters())
    return macs(), int(params)
