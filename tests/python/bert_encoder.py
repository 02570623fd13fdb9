"""Test and benchmark helper: a ``transformers`` BertModel as a sentence encoder, with random
weights from a config (no download), and seeded token ids whose last ``pad`` tokens are masked.

Consumes: BertConfig fields. Produces: (model, ids, mask); the model takes (ids, attention mask)
and returns the last hidden state. Not a product API: tests and benchmarks only.
"""

from __future__ import annotations

import torch
import transformers


class BertEncoder(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.bert = transformers.BertModel(cfg, add_pooling_layer=False)

    def forward(self, ids, mask):
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


def bert_encoder(seq: int, pad: int, seed: int = 0, input_seed: int = 2, **config):
    """(model in eval mode, ids [1, seq] int64, mask [1, seq] int64 with the last ``pad`` zero)."""
    cfg = transformers.BertConfig(**config)
    torch.manual_seed(seed)
    model = BertEncoder(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, seq), generator=torch.Generator().manual_seed(input_seed))
    mask = torch.ones(1, seq, dtype=torch.int64)
    if pad:
        mask[0, seq - pad :] = 0
    return model, ids, mask
