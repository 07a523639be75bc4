"""Rewards of a rollout, and how well a learned reward tells success from failure.

    success        Meta-World's sparse success flag at the end of the episode: the oracle.
    understanding  the frozen understanding model's score of the rollout's observer clip against its instruction,
                   made comparable across instructions: the probability of the true variation under the softmax,
                   at the model's own learned temperature, over the suite's variations. A raw cosine similarity is
                   not comparable (some instructions sit closer to every clip than others); the probability is,
                   with chance at 1 / V for every instruction. Given at the end of the episode, as RoboCLIP does;
                   with `windows` W > 1, the mean of the scores of W consecutive windows of the clip (a denser
                   signal: each part of the episode must look like the instruction).
    aligned        scored in a mirror run's shared space (its aligner): the rollout's observer clip, projected from
                   the understanding side, against the execution side's projection of the rollout's own agent steps
                   as that run's policy represents them when told each of the suite's instructions in turn (its
                   representation averaged over ALIGNED_STEPS evenly spaced steps, as `analyze` averages an
                   episode's): the probability of the true variation under the softmax at the aligner's
                   temperature, so comparable across instructions as above. It asks whether what an observer sees
                   matches what the aligned policy makes of these very observations when told this instruction
                   rather than another: the mirror of seeing and doing, as a reward.

Reward-model quality on the scored rollouts: ROC-AUC of the learned reward against true success (0.5: no better
than chance), and their Pearson correlation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as scipy_stats

from mirroralign.data.datasets import to_chw, uniform_indices

REWARDS = ("success", "understanding", "aligned")
ALIGNED_STEPS = 4  # agent steps per rollout for `aligned`: each is read once per instruction of the suite


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
    device = next(scorer.parameters()).device
    sims = torch.cat([scorer.recognize({"video": clips[i:i + batch_size].to(device)}).cpu()
                      for i in range(0, len(clips), batch_size)])
    return instruction_probability(sims, scale, labels).view(len(records), windows).mean(1).numpy()


@torch.no_grad()
def aligned_rewards(scorer, records: list[dict], camera: str, batch_size: int = 256) -> np.ndarray:
    """[N] the `aligned` reward of each rollout record (its `observer.<camera>` frames, `agent.<cam>` frames and
    proprio); `scorer`: a loaded mirror run (its understanding and execution models and aligner, its dataset's
    instructions)."""
    u_model, e_model, aligner = (scorer.models[k] for k in ("understanding", "execution", "aligner"))
    cams = scorer.store.manifest["cameras"]["agent"]
    texts = torch.tensor(scorer.store.canonical_text)  # [V] the instruction of each variation
    clips = torch.cat([window_clips(r["arrays"][f"observer.{camera}"], u_model.config.frames, 1) for r in records])
    device = next(aligner.parameters()).device
    seen = torch.cat([u_model.representation({"video": clips[i:i + batch_size].to(device)})
                      for i in range(0, len(clips), batch_size)])
    rows = []
    for r, u in zip(records, seen):
        ts = uniform_indices(0, len(r["arrays"]["actions"]) - 1, ALIGNED_STEPS)
        images = torch.from_numpy(np.stack([to_chw(r["arrays"][f"agent.{c}"][ts]) for c in cams], axis=1))
        proprio = torch.from_numpy(r["arrays"]["proprio"][ts])
        steps = {"images": images.repeat(len(texts), 1, 1, 1, 1), "proprio": proprio.repeat(len(texts), 1),
                 "text_index": texts.repeat_interleave(len(ts))}  # every step told every instruction
        told = torch.cat([e_model.representation({k: v[i:i + batch_size].to(device) for k, v in steps.items()})
                          for i in range(0, len(steps["text_index"]), batch_size)])
        shared_u, shared_e = aligner.project(u[None], told.view(len(texts), len(ts), -1).mean(1))
        rows.append((shared_e @ shared_u[0]).cpu())
    labels = torch.tensor([r["variation"] for r in records])
    return instruction_probability(torch.stack(rows), 1 / aligner.temperature, labels).numpy()


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
