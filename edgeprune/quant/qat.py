"""Quantization-aware training: fine-tune through the fake-quant module.

Consumes: a QuantizedModel (its activation scales stay fixed, as calibrated) and labelled
training data: a DataSplits / (train, val) pair, which runs through the recovery loop of
``edgeprune.recover.finetune`` (distillation from the fp32 model, cosine LR, validation with the
best epoch kept), or a bare Dataset / DataLoader of (x, y), which runs a minimal loop here.
Produces: a new QuantizedModel whose folded weights were trained with int8 weight/bias
fake-quantization in the loop (straight-through gradients) and whose weight/bias scales are
recomputed from the trained weights; the training history is in ``metadata["qat"]``.
Under torchrun both loops run data-parallel (DDP, the same global batches sharded by rank).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .. import distributed
from ..progress import Progress
from .fakequant import quant_layers
from .quantize import QuantizedModel, _layer_scales


def _minimal_loop(gm, loader, epochs, lr, max_batches):
    opt = torch.optim.Adam([p for p in gm.parameters() if p.requires_grad], lr=lr)
    net = distributed.wrap(gm)  # DDP under torchrun: gradients averaged over ranks
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(epochs):
        total, n = 0.0, 0
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            opt.zero_grad()
            loss = loss_fn(net(x.float() if torch.is_floating_point(x) else x), y)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        total, n = distributed.all_reduce_sum([total, n])
        losses.append(total / max(n, 1))
    return {"loop": "minimal", "train_loss": losses}


def qat(
    qmodel: QuantizedModel,
    train_data,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    max_batches: int | None = None,
    distill: bool = True,
    progress: Progress | bool | None = None,
    **recover_overrides,
) -> QuantizedModel:
    """Fine-tune ``qmodel`` through fake quantization; see the module docstring.

    ``recover_overrides`` go to ``RecoverConfig`` (e.g. ``restore_best=False``, ``patience=1``).
    """
    torch.manual_seed(seed)
    gm = qmodel.fake_quant_module()
    splits = hasattr(train_data, "train") or (isinstance(train_data, (tuple, list)) and len(train_data) == 2)
    if splits:
        from ..recover import finetune  # the shared recovery loop (a lower layer)

        teacher = copy.deepcopy(qmodel.folded).eval() if distill else None
        gm, history = finetune(
            gm,
            train_data,
            teacher=teacher,
            epochs=epochs,
            lr=lr,
            optimizer="adamw",
            weight_decay=0.0,
            batch_size=batch_size,
            seed=seed,
            max_batches_per_epoch=max_batches,
            progress=progress,
            description="QAT",
            **recover_overrides,
        )
        history = {"loop": "edgeprune.recover.finetune", **history}
    else:
        if isinstance(train_data, torch.utils.data.Dataset):
            # every rank takes its slice of the same seeded global batches (one process: all of each)
            gen = torch.Generator().manual_seed(seed)
            sampler = distributed.GlobalBatchSampler(len(train_data), batch_size, gen)
            train_data = torch.utils.data.DataLoader(train_data, batch_sampler=sampler)
        gm.train()
        history = _minimal_loop(gm, train_data, epochs, lr, max_batches)
    gm.eval()
    folded = copy.deepcopy(qmodel.folded)
    for target, ql in quant_layers(gm).items():
        folded.get_submodule(target).load_state_dict(ql.layer.state_dict())
    layers = copy.deepcopy(qmodel.layers)
    _layer_scales(folded, layers, qmodel.points, qmodel.config)
    meta = dict(qmodel.metadata, qat={"epochs": epochs, "lr": lr, "seed": seed, "history": history})
    return QuantizedModel(
        qmodel.original,
        folded,
        qmodel.config,
        copy.deepcopy(qmodel.points),
        layers,
        list(qmodel.skipped),
        qmodel.input_shape,
        meta,
        copy.deepcopy(qmodel.ops),
    )
