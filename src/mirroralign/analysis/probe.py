"""The spontaneous-alignment probe: both models frozen, only two linear maps trained with a bidirectional
InfoNCE on train episodes; Recall@1 both ways on test episodes, a retrieval counting as correct when it has
the same instruction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mirroralign.models.align import Aligner, info_nce


@dataclass
class Probe:
    """Two linear maps into a shared space, on representations standardised with train statistics (so one
    learning rate suits any representation scale)."""

    maps: Aligner
    mean_u: torch.Tensor
    std_u: torch.Tensor
    mean_e: torch.Tensor
    std_e: torch.Tensor

    def project(self, u: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maps.project((u - self.mean_u) / self.std_u, (e - self.mean_e) / self.std_e)


def train_probe(u: torch.Tensor, e: torch.Tensor, groups: torch.Tensor | None, dim: int = 256,
                temperature: float = 0.1, steps: int = 300, lr: float = 1e-3, seed: int = 0,
                batch_size: int | None = None) -> Probe:
    """Two linear maps trained on frozen representations u [N, Du] and e [N, De]; `groups` None: each pair its own
    positive. Full batch unless `batch_size` < N: then each step draws that many pairs (the loss is quadratic in
    the batch, and the time-aligned probe has several pairs per episode)."""
    torch.manual_seed(seed)
    probe = Probe(Aligner(u.shape[1], e.shape[1], dim, temperature), u.mean(0), u.std(0) + 1e-6, e.mean(0),
                  e.std(0) + 1e-6)
    opt = torch.optim.Adam(probe.maps.parameters(), lr=lr)
    draw, full = torch.Generator().manual_seed(seed), not batch_size or batch_size >= len(u)
    for _ in range(steps):
        rows = slice(None) if full else torch.randperm(len(u), generator=draw)[:batch_size]
        loss = info_nce(*probe.project(u[rows], e[rows]), None if groups is None else groups[rows], temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe


@torch.no_grad()
def shared_space(probe: Probe, u: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return probe.project(u, e)


@torch.no_grad()
def recall_at_1(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of `a` whose nearest row of `b` (cosine) has the same label."""
    nearest = (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).argmax(1)
    return (labels[nearest] == labels).float().mean().item()


def chance_recall(labels: torch.Tensor) -> float:
    """Expected Recall@1 of a random retrieval: the mean share of the gallery carrying the query's label."""
    same = (labels[:, None] == labels[None, :]).float()
    return same.mean(1).mean().item()


def probe_scores(train_u, train_e, train_groups, test_u, test_e, test_labels, **kw) -> tuple[dict, Probe]:
    probe = train_probe(train_u, train_e, train_groups, **kw)
    a, b = shared_space(probe, test_u, test_e)
    # by instruction (the paper's count) and by episode: the finer one is left when both models separate
    # every instruction, and a retrieval of the instruction alone reaches the ceiling
    episode = torch.arange(len(test_u))
    return {"r1_u2e": recall_at_1(a, b, test_labels), "r1_e2u": recall_at_1(b, a, test_labels),
            "chance": chance_recall(test_labels), "r1_episode_u2e": recall_at_1(a, b, episode),
            "r1_episode_e2u": recall_at_1(b, a, episode), "chance_episode": 1 / len(test_u),
            "n_train": len(train_u), "n_test": len(test_u)}, probe
