"""Quantization-aware training: fine-tune through the fake-quant module.

Consumes: a QuantizedModel (its activation scales stay fixed, as calibrated) and labelled
training data (a Dataset of (x, y), a DataLoader, or a DataSplits whose ``.train`` is used).
Produces: a new QuantizedModel whose folded weights were trained with int8 weight/bias
fake-quantization in the loop (straight-through gradients) and whose weight/bias scales are
recomputed from the trained weights. The longer recovery loop (distillation, schedules) lives
in ``edgeprune.recover``; this is the minimal loop the quantizer needs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .fakequant import quant_layers
from .quantize import QuantizedModel, _layer_scales


def qat(qmodel: QuantizedModel, train_data, epochs: int = 1, lr: float = 1e-4, batch_size: int = 64,
        seed: int = 0, max_batches: int | None = None) -> QuantizedModel:
    if hasattr(train_data, "train") and hasattr(train_data, "num_classes"):
        train_data = train_data.train
    if isinstance(train_data, torch.utils.data.Dataset):
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=gen)
    else:
        loader = train_data
    torch.manual_seed(seed)
    gm = qmodel.fake_quant_module()
    gm.train()
    params = [p for p in gm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            opt.zero_grad()
            loss = loss_fn(gm(x.float() if torch.is_floating_point(x) else x), y)
            loss.backward()
            opt.step()
    gm.eval()
    folded = copy.deepcopy(qmodel.folded)
    for target, ql in quant_layers(gm).items():
        dst = folded.get_submodule(target)
        dst.load_state_dict(ql.layer.state_dict())
    layers = copy.deepcopy(qmodel.layers)
    _layer_scales(folded, layers, qmodel.points, qmodel.config)
    meta = dict(qmodel.metadata, qat={"epochs": epochs, "lr": lr, "seed": seed})
    return QuantizedModel(qmodel.original, folded, qmodel.config, copy.deepcopy(qmodel.points), layers,
                          list(qmodel.skipped), qmodel.input_shape, meta, copy.deepcopy(qmodel.ops))
