"""Advantage-weighted regression on the policy's own rollouts, mixed with the demonstrations (`--algo awr`).

Why this algorithm. The BC policy regresses action chunks with L1, i.e. it is the location of a Laplace
distribution; exploring with Laplace noise of a fixed scale around it makes the weighted L1 below exactly the
weighted negative log-likelihood of the executed actions. Reward-weighted regression (Peters & Schaal 2007) and
AWR (Peng et al. 2019) then improve the policy by supervised learning alone: the executed chunks of an episode are
regressed with weight exp(A / beta), A its advantage. With beta = 0 it is filtered BC (only episodes above their
baseline are imitated), the success-filtered self-imitation that RoboCLIP-style and self-imitation work (Oh et al.
2018) fine-tune with. Against PPO it needs no critic (the baseline is the mean return of the same instruction's
rollouts in the iteration, or of all rollouts where those do not vary), no importance ratios and no KL early
stopping, and it cannot collapse the policy away from the data: every batch also holds demonstration steps (weight
`demo_weight`), so the BC objective stays in the loss and a reward that says nothing leaves the policy near BC. That is
what fine-tunes stably with a few hundred to a few thousand episodes on 2 CPU cores. Its limit: it improves only by
re-weighting what exploration noise already produced, so success that needs far-off behaviour is out of reach.

Returns are normalised by their standard deviation over the iteration, so one beta serves the 0/1 success reward
and a learned probability with a spread of a few hundredths alike.
"""

from __future__ import annotations

import numpy as np
import torch


def varying_groups(returns, groups) -> dict:
    """{group: whether its returns differ}: only such a group tells its episodes apart."""
    returns, groups = np.asarray(returns, dtype=np.float64), np.asarray(groups)
    return {g: bool(np.ptp(returns[groups == g]) > 0) for g in np.unique(groups)}


def advantages(returns, groups, uniform: str = "pooled") -> np.ndarray:
    """Per episode: A = (R - baseline) / std of all R (std 0: A = 0), the baseline the mean R of its group (the
    same instruction's rollouts; with finetune.repeats > 1 the same scene's, so that A is what the exploration noise
    did rather than how hard the layout was). Where a group's returns do not vary nothing tells its episodes apart;
    `uniform` says what such a group's episodes get: "pooled", the mean of all R as baseline, so that a group all of
    whose rollouts succeeded is compared with the others (and imitated) rather than dropped, and one all of whose
    rollouts failed is not imitated; "zero", A = 0, as GRPO's group-normalised advantage (with repeats, a scene's
    outcome that no noise draw changed says how easy the layout is, not what the exploration did)."""
    returns, groups = np.asarray(returns, dtype=np.float64), np.asarray(groups)
    varies = varying_groups(returns, groups)
    means = {g: returns[groups == g].mean() if v else returns.mean() for g, v in varies.items()}
    baseline = np.array([means[g] for g in groups])
    std = returns.std()
    advantage = (returns - baseline) / std if std > 0 else np.zeros_like(returns)
    if uniform == "zero":
        advantage[~np.array([varies[g] for g in groups], dtype=bool)] = 0.0
    return advantage


def mixed_share(returns, groups) -> float:
    """The share of groups whose returns differ: the only ones whose advantages tell their episodes apart (with
    finetune.repeats > 1, the scenes that some noise draws solved and others not)."""
    return float(np.mean(list(varying_groups(returns, groups).values())))


def advantage_weights(advantage, temperature: float, max_weight: float) -> np.ndarray:
    """Per episode: weight min(exp(A / beta), max_weight) of its advantage A (`advantages`), or with beta = 0
    (filtered BC) 1 where A > 0 and 0 elsewhere."""
    advantage = np.asarray(advantage, dtype=np.float64)
    if temperature == 0:
        return (advantage > 0).astype(np.float64)
    return np.minimum(np.exp(advantage / temperature), max_weight)


def per_sample_l1(chunk: torch.Tensor, actions: torch.Tensor, action_is_pad: torch.Tensor) -> torch.Tensor:
    """[B] mean |chunk - actions| of each sample over its real (unpadded) steps and the action dimensions (BC's)."""
    real = (~action_is_pad).to(chunk.dtype)
    return ((chunk - actions).abs().mean(-1) * real).sum(1) / real.sum(1).clamp(min=1)


def awr_loss(chunk: torch.Tensor, actions: torch.Tensor, action_is_pad: torch.Tensor,
             weight: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * l_i / sum_i w_i, l_i the mean |chunk - actions| of sample i over its real (unpadded) steps and
    the action dimensions. chunk, actions [B, H, A]; action_is_pad [B, H]; weight [B] (demonstration steps carry
    `demo_weight`, rollout steps their episode's advantage weight). Zero when every weight is zero."""
    return (weight * per_sample_l1(chunk, actions, action_is_pad)).sum() / weight.sum().clamp(min=1e-12)
