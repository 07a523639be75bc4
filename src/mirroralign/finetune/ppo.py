"""Clipped policy gradient (PPO, Schulman et al. 2017) with group-relative advantages (`--algo ppo`).

Why this second algorithm. AWR / filtered BC (awr.py) only re-weights which rollouts are imitated; the pilots found it
moves the policy too little to help (README, RL fine-tuning). PPO follows the gradient of the expected return itself.
Its known failure on a BC policy, collapse, is held off by four brakes: the clipped ratio; a KL term to the starting
policy (`kl_coef`); early stopping of an iteration's updates once the KL from the policy that acted passes `target_kl`;
and, as in AWR, demonstration steps in every batch under the BC loss (`demo_fraction`, `demo_weight`). No critic: an
episode's advantage is its return against the mean of the same instruction's rollouts in the iteration (as GRPO, Shao
et al. 2024, and awr.advantages), since a value network fit on the ~1000 decisions of an iteration would be noise, and
its warm-up would cost rollouts. With `repeats` > 1 the group is the scene (each layout rolled out several times,
GRPO's several samples of one prompt), so the advantage credits the noise, not the layout. On-policy: it learns from
this iteration's rollouts only (`buffer` is AWR's).

The likelihood. The policy acts by adding Laplace(0, b) noise (b = `noise`) to its predicted chunk and executing the
chunk's first `eval.execute_steps` steps, then predicting again. A decision is therefore a chunk start t, and
log pi(a | s_t) = -sum |a - mu(s_t)| / b + const over its executed steps and the action dimensions. Meta-World clips
executed actions to [-1, 1]; at the bound the density is taken at the clipped value (an approximation). Between two
Laplace laws of the same scale KL = d / b + exp(-d / b) - 1 per dimension, d = |mu_1 - mu_2|, in closed form.
"""

from __future__ import annotations

import torch

from mirroralign.finetune.awr import per_sample_l1


def executed_mask(action_is_pad: torch.Tensor, execute_steps: int) -> torch.Tensor:
    """[B, H] True on the chunk's steps the simulator executed: the first `execute_steps`, none past the episode."""
    steps = torch.arange(action_is_pad.shape[1], device=action_is_pad.device)
    return (steps < execute_steps).unsqueeze(0) & ~action_is_pad


def laplace_log_ratio(chunk, old_chunk, actions, mask, scale: float) -> torch.Tensor:
    """[B] log pi_new(a) - log pi_old(a) for Laplace policies of locations chunk / old_chunk [B, H, A] and scale b."""
    per_step = ((actions - old_chunk).abs() - (actions - chunk).abs()).sum(-1) / scale
    return (per_step * mask).sum(1)


def laplace_kl(chunk, reference, mask, scale: float) -> torch.Tensor:
    """[B] KL between Laplace laws located at chunk and at reference, scale b, over the masked steps."""
    d = (chunk - reference).abs() / scale
    return ((d + torch.exp(-d) - 1).sum(-1) * mask).sum(1)


def ppo_loss(chunk, batch: dict, scale: float, clip_ratio: float, kl_coef: float, execute_steps: int):
    """Loss = -mean_r min(rho A, clip(rho, 1 -+ eps) A) + kl_coef * mean_r KL(pi || pi_start)
              + mean_d demo_weight * l1,
    r over the batch's rollout decisions, d over its demonstration steps (l1: mean |chunk - actions| over the real
    steps, as BC's). batch: actions, action_is_pad [B, H], is_demo [B] bool, weight [B] (the demonstrations'
    demo_weight), advantage [B], old_chunk and start_chunk [B, H, A] (the acting and the starting policy's locations).
    Returns (loss, info) with approx_kl (mean KL from the acting policy) and clip_fraction, as LeRobot's forward."""
    demo, rollout = batch["is_demo"], ~batch["is_demo"]
    l1 = per_sample_l1(chunk, batch["actions"], batch["action_is_pad"])
    bc = (batch["weight"] * l1)[demo].mean() if demo.any() else chunk.sum() * 0
    if not rollout.any():
        return bc, {"policy_loss": 0.0, "kl_start": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0, "bc": bc.item()}
    c, old, start = chunk[rollout], batch["old_chunk"][rollout], batch["start_chunk"][rollout]
    mask = executed_mask(batch["action_is_pad"][rollout], execute_steps).to(chunk.dtype)
    ratio = torch.exp(laplace_log_ratio(c, old, batch["actions"][rollout], mask, scale))
    advantage = batch["advantage"][rollout]
    clipped = ratio.clamp(1 - clip_ratio, 1 + clip_ratio)
    policy_loss = -torch.minimum(ratio * advantage, clipped * advantage).mean()
    kl_start = laplace_kl(c, start, mask, scale).mean()
    with torch.no_grad():
        approx_kl = laplace_kl(c, old, mask, scale).mean().item()
        clip_fraction = ((ratio - 1).abs() > clip_ratio).float().mean().item()
    loss = policy_loss + kl_coef * kl_start + bc
    return loss, {"policy_loss": policy_loss.item(), "kl_start": kl_start.item(), "approx_kl": approx_kl,
                  "clip_fraction": clip_fraction, "bc": bc.item()}
