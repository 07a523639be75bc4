"""Small building blocks shared by the two models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def transformer_block(dim: int, heads: int) -> nn.Module:
    # pre-norm, no dropout: training is deterministic on CPU, which exact resume relies on
    return nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                      norm_first=True)


def to_float_image(x: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float in [-0.5, 0.5]."""
    return x.float().div(255.0).sub(0.5)


def random_shift(x: torch.Tensor, pad: int = 4, seeds: list[int] | None = None) -> torch.Tensor:
    """DrQ's augmentation: pad by replication, crop back at a random offset per image. x: [N, 3, H, W].

    `seeds`, one per sample (N a multiple of their number, a sample's images consecutive): each sample's
    offsets come from its own seed, so they do not depend on which batch, or which rank, holds it. Without
    seeds they come from torch's RNG."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    if seeds is None:
        dx, dy = torch.randint(0, 2 * pad + 1, (2, n)).tolist()
    else:
        per_sample = n // len(seeds)
        offsets = torch.cat([torch.randint(0, 2 * pad + 1, (per_sample, 2),
                                           generator=torch.Generator().manual_seed(s)) for s in seeds])
        dx, dy = offsets.T.tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def resolve_tap(layer: str, names: list[str]) -> str:
    """`last` names the last block; anything else must be one of `names`."""
    if layer == "last":
        return names[-1]
    if layer not in names:
        raise ValueError(f"unknown tap layer {layer!r} (known: last, {', '.join(names)})")
    return layer
