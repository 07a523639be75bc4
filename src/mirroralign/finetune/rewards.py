"""Rewards of a rollout, and how well a learned reward tells success from failure.

    success        Meta-World's sparse success flag at the end of the episode: the oracle.
    understanding  the frozen understanding model's score of the rollout's observer clip against its instruction,
                   made comparable across instructions: the probability of the true variation under the softmax,
                   at the model's own learned temperature, over the suite's variations. A raw cosine similarity is
                   not comparable (some instructions sit closer to every clip than others); the probability is,
                   with chance at 1 / V for every instruction. Given at the end of the episode, as RoboCLIP does;
                   with `windows` W > 1, the mean of the scores of W consecutive windows of the clip (a denser
                   signal: each part of the episode must look like the instruction).

Reward-model quality on the scored rollouts: ROC-AUC of the learned reward against true success (0.5: no better
than chance), and their Pearson correlation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as scipy_stats

from mirroralign.data.datasets import to_chw, uniform_indices

REWARDS = ("success", "understanding")


def instruction_probability(similarities: torch.Tensor, scale: float, labels: torch.Tensor) -> torch.Tensor:
    """[B] probability of the true variation `labels` among all V: softmax(scale * similarities)[label]."""
    return torch.softmax(scale * similarities, dim=1).gather(1, labels[:, None])[:, 0]


def window_clips(frames: np.ndarray, n_frames: int, windows: int) -> torch.Tensor:
    """[windows, n_frames, 3, H, W] uint8: frames [T+1, H, W, 3] split into `windows` consecutive windows of
    (about) equal length, each sampled uniformly, both ends included; windows=1 is the whole-episode clip the
    understanding model is evaluated on."""
    last = len(frames) - 1
    edges = np.linspace(0, last, windows + 1)
    idx = [uniform_indices(round(edges[w]), round(edges[w + 1]), n_frames) for w in range(windows)]
    return torch.from_numpy(to_chw(frames[np.stack(idx)]))


@torch.no_grad()
def understanding_rewards(scorer, records: list[dict], camera: str, windows: int = 1,
                          batch_size: int = 32) -> np.ndarray:
    """[N] the `understanding` reward of each rollout record (its `observer.<camera>` frames)."""
    frames = scorer.config.frames
    clips = torch.cat([window_clips(r["arrays"][f"observer.{camera}"], frames, windows) for r in records])
    labels = torch.tensor([r["variation"] for r in records]).repeat_interleave(windows)
    scale = math.exp(min(scorer.logit_scale.item(), math.log(scorer.config.max_logit_scale)))
    sims = torch.cat([scorer.recognize({"video": clips[i:i + batch_size]}) for i in range(0, len(clips), batch_size)])
    return instruction_probability(sims, scale, labels).view(len(records), windows).mean(1).numpy()


def roc_auc(scores, positive) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half): the Mann-Whitney U
    over the product of the group sizes. None without both positives and negatives."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    return float(scipy_stats.mannwhitneyu(scores[positive], scores[~positive]).statistic
                 / (positive.sum() * (~positive).sum()))


def correlation(a, b) -> float | None:
    """Pearson correlation; None when either side is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
