"""The alignment head: two linear maps into a shared space and a symmetric, multi-positive InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mirroralign import distributed


def info_nce(a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor | None = None,
             temperature: float | torch.Tensor = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between row-paired batches `a` [B, Da] and `b` [B, Db] (Da == Db).

    a_i and b_j are positives when groups[i] == groups[j] (only i == j when `groups` is None, which is the
    CLIP loss). Each direction is, per row, minus the mean log-softmax over that row's positives, averaged
    over rows; the loss is the mean of the two directions.

    Under torch.distributed the columns are the samples of all ranks (gathered with their gradient, as
    open_clip's local loss does) and the rows this rank's own: the mean over ranks is the loss of the global
    batch, and so is the mean of the ranks' gradients.
    """
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    all_a, all_b = distributed.gather_with_grad(a), distributed.gather_with_grad(b)
    a_to_b = a @ all_b.T / temperature  # [B, world * B]
    b_to_a = b @ all_a.T / temperature
    if groups is None:
        target = torch.arange(len(a), device=a.device) + distributed.rank() * len(a)
        return (F.cross_entropy(a_to_b, target) + F.cross_entropy(b_to_a, target)) / 2
    positives = (groups[:, None] == distributed.gather(groups)[None, :]).to(a_to_b.dtype)  # symmetric relation
    loss_a = -(positives * a_to_b.log_softmax(dim=1)).sum(1) / positives.sum(1)
    loss_b = -(positives * b_to_a.log_softmax(dim=1)).sum(1) / positives.sum(1)
    return (loss_a.mean() + loss_b.mean()) / 2


POSITIVES = ("instruction", "episode", "task")


def positive_groups(batch: dict, positives: str) -> torch.Tensor:
    """Group ids for `info_nce`: same instruction (variation, any scene), same episode, or same task."""
    key = {"instruction": "variation", "episode": "episode", "task": "task"}[positives]
    return batch[key]


class Aligner(nn.Module):
    """Maps each model's tapped representation into one shared space (L2-normalised there)."""

    def __init__(self, understanding_dim: int, execution_dim: int, dim: int = 1024, temperature: float = 0.1,
                 positives: str = "instruction"):
        super().__init__()
        if positives not in POSITIVES:
            raise ValueError(f"align.positives must be one of {POSITIVES}, got {positives!r}")
        self.understanding = nn.Linear(understanding_dim, dim)
        self.execution = nn.Linear(execution_dim, dim)
        self.temperature, self.positives = temperature, positives

    def project(self, understanding: torch.Tensor, execution: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.understanding(understanding), dim=-1), F.normalize(self.execution(execution), dim=-1)

    def forward(self, understanding: torch.Tensor, execution: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        u, e = self.project(understanding, execution)
        loss = info_nce(u, e, positive_groups(batch, self.positives), self.temperature)
        return loss, {"loss_align": loss.item()}
