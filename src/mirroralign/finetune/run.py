"""`mirroralign finetune`: RL fine-tuning of an execute or mirror run's policy in the simulator, on train scenes.

The output is a run directory of mode `execute` (run.json: the parent's config with the eval overrides, plus
`finetune`: the settings and the parent and scorer runs with their checkpoints' sha256) with the same checkpoint
layout as `train`'s (step = iteration), so `evaluate` and `analyze` take it as any execute run, on the test
scenes it never saw.

Iteration i: (1) roll the policy out with Laplace exploration noise, `episodes` rollouts per variation: S =
episodes / repeats train scenes, k = k0 + i * S + j (k0: see `first_scene`; with `scene_pool` N, k0 + (i * S + j)
mod N), each `repeats` times, the noise of
repeat r drawn from an RNG seeded by (seed, i, v, k, r), its chunks from a forward pass of its own (a batch of
one), so that no episode depends on which others the workers happen to run beside it; (2) reward them (the
advantage's baseline: the variation's rollouts, or with repeats > 1 the scene's) and measure the learned reward
against true success; (3) `updates` AdamW steps on batches of demonstration steps and rollout steps (this
iteration's, and with `buffer` the kept ones of earlier iterations, read back from OUT/rollouts on a resume) drawn
from an RNG seeded by (seed, i, u) (`algo=ppo`: clipped policy-gradient steps on this iteration's decisions
mixed with demonstration steps, stopped early once the policy is `target_kl` from the one that acted; ppo.py);
(4) checkpoint. A run resumed from its last checkpoint therefore redoes the
same rollouts and the same updates.
Ctrl-C during the updates finishes the iteration, checkpoints it and exits 130; during the rollouts it drops
that iteration's rollouts (the resume redoes them) and exits 130.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import default_collate
from tqdm import tqdm

from mirroralign.checkpoint import (
    CHECKPOINTS,
    last_checkpoint,
    prepare_run_dir,
    restore,
    safetensors_metadata,
    save_checkpoint,
    start_run_dir,
    truncate_metrics,
)
from mirroralign.data.datasets import AgentSteps, empty_split_error, to_chw
from mirroralign.data.generate import SPLIT_OFFSET, scene_seed
from mirroralign.data.store import EpisodeStore, write_bytes_atomic
from mirroralign.envs import check_simulator
from mirroralign.errors import DataError, UsageError
from mirroralign.evaluate.rollouts import policy_actions, run_rollouts
from mirroralign.finetune.awr import advantage_weights, advantages, awr_loss, mixed_share
from mirroralign.finetune.config import load_finetune_config, parent_config, split_overrides
from mirroralign.finetune.ppo import ppo_loss
from mirroralign.finetune.rewards import aligned_rewards, correlation, roc_auc, understanding_rewards
from mirroralign.train import NumericalError, load_run, pick_device, warmup_cosine

STEP_KEYS = ("images", "proprio", "actions", "action_is_pad", "text_index")


def first_scene(store: EpisodeStore, scenes: str) -> int:
    """k0, the first train scene rolled out: with `fresh`, one past the last scene any demonstration was recorded
    on, so the policy learns from layouts it was never shown (its successes there widen what BC covers; on the
    demonstrations' own layouts they mostly repeat the demonstrations); with `demonstrated`, 0."""
    return 0 if scenes == "demonstrated" else 1 + max(store.episodes[e]["k"] for e in store.episode_ids("train"))


def rollout_plan(variations: list[int], episodes: int, iteration: int, data_seed: int, first: int = 0,
                 repeats: int = 1, pool: int = 0) -> list[tuple[int, int, int, int]]:
    """(variation, k, scene seed, repeat) of iteration i's rollouts: S = `episodes // repeats` train scenes
    k = first + i * S + j, each rolled out `repeats` times, never a test one (the caller keeps k below the val
    split's offset); with `pool` = N > 0 (>= S) they cycle through N scenes, k = first + (i * S + j) mod N, so that
    the policy practises the same layouts again (with N = S, the same ones every iteration)."""
    scenes = episodes // repeats
    ks = [iteration * scenes + j for j in range(scenes)]
    ks = [first + (k % pool if pool else k) for k in ks]
    return [(v, k, scene_seed(data_seed, "train", k), r) for v in variations for k in ks for r in range(repeats)]


def exploring_act(ft, iteration: int, clip: bool):
    """`run_rollouts`'s act: each episode's chunk from a batch of one, plus Laplace noise from its own RNG."""
    rngs = {}

    def act(policy, store, config, episodes, device):
        chunks = []
        for ep in episodes:
            key = (ep.variation, ep.k, ep.repeat)
            if not ep.actions:  # the first chunk of this attempt: a retried episode starts its noise over
                repeat = [ep.repeat] if ep.repeat else []  # repeat 0: the stream of runs before finetune.repeats
                rngs[key] = np.random.default_rng([ft.seed, iteration, ep.variation, ep.k, *repeat])
            chunk = policy_actions(policy, store, config, [ep], device)[0]
            chunk = chunk + rngs[key].laplace(0.0, ft.noise, chunk.shape).astype(np.float32)
            chunks.append(np.clip(chunk, -1.0, 1.0) if clip else chunk)  # regress what the simulator executed
        return np.stack(chunks)

    return act


class RolloutSteps:
    """The steps of scored rollouts as execution samples (as `AgentSteps`), each with its episode's weight and
    advantage; with `every` = eval.execute_steps only the chunk starts, the policy's decisions (ppo).
    An episode: {"agent": [T, cameras, 3, H, W] uint8, "proprio", "actions", "text_index", "weight", "advantage"}.
    `acting` (ppo): per sample, the acting and the starting policy's chunks, set by `with_acting_chunks`."""

    def __init__(self, episodes: list[dict], horizon: int, every: int = 1):
        self.horizon = horizon
        self.episodes = episodes
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(0, len(ep["actions"]), every)]
        self.step_weights = torch.tensor([self.episodes[e]["weight"] for e, _ in self.index], dtype=torch.float64)
        self.acting = None

    @staticmethod
    def episodes_of(records: list[dict], store: EpisodeStore, weights, advantage) -> list[dict]:
        cams = store.manifest["cameras"]["agent"]
        return [{"agent": np.stack([to_chw(r["arrays"][f"agent.{c}"]) for c in cams], axis=1),
                 "proprio": r["arrays"]["proprio"], "actions": r["arrays"]["actions"],
                 "text_index": store.canonical_text[r["variation"]], "weight": float(w), "advantage": float(a)}
                for r, w, a in zip(records, weights, advantage)]

    def with_acting_chunks(self, policy, initial, device, batch_size: int = 64) -> RolloutSteps:
        """Record, once before an iteration's updates, the chunk the acting policy (`policy`, eval mode) and the
        starting one predict at every sample: the old locations of PPO's ratio and the reference of its KL."""
        old, start = [], []
        for lo in range(0, len(self), batch_size):
            batch = default_collate([{k: self[i][k] for k in STEP_KEYS} for i in range(lo, min(lo + batch_size,
                                                                                               len(self)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            old.append(policy.act(batch).cpu())
            start.append(initial.act(batch).cpu())
        self.acting = (torch.cat(old), torch.cat(start))
        return self

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        ep = self.episodes[e]
        idx = np.arange(t, t + self.horizon)
        length = len(ep["actions"])
        return {"images": torch.from_numpy(ep["agent"][t]), "proprio": torch.from_numpy(ep["proprio"][t]),
                "actions": torch.from_numpy(ep["actions"][np.minimum(idx, length - 1)]),
                "action_is_pad": torch.from_numpy(idx >= length), "text_index": ep["text_index"],
                "weight": ep["weight"], "advantage": ep.get("advantage", 0.0),
                **({} if self.acting is None else {"old_chunk": self.acting[0][i], "start_chunk": self.acting[1][i]})}


# The rollout buffer (finetune.buffer != 1): each iteration's episodes of weight > 0, the only ones a weighted draw
# of a later iteration can pick, in OUT/rollouts, their sha256 in that iteration's metrics row, so that a resumed
# run draws from the same episodes (and a damaged file is caught) without redoing rollouts of a policy long gone.
BUFFER = "rollouts"
EPISODE_ARRAYS = ("agent", "proprio", "actions")


def buffer_window(buffer: int, iteration: int) -> range:
    """The earlier iterations whose kept episodes iteration i's updates draw from."""
    return range(0 if buffer == 0 else max(0, iteration - buffer + 1), iteration)


def save_kept(out: Path, iteration: int, episodes: list[dict]) -> tuple[list[dict], str]:
    """Iteration i's episodes of weight > 0, written to OUT/rollouts; returns them and the file's sha256."""
    kept = [ep for ep in episodes if ep["weight"] > 0]
    tensors = {f"{j}.{k}": torch.from_numpy(np.ascontiguousarray(ep[k])) for j, ep in enumerate(kept)
               for k in EPISODE_ARRAYS}
    meta = [{"text_index": int(ep["text_index"]), "weight": ep["weight"]} for ep in kept]
    data = save_safetensors(tensors, metadata={"episodes": json.dumps(meta)})
    (out / BUFFER).mkdir(exist_ok=True)
    write_bytes_atomic(out / BUFFER / f"iteration_{iteration:07d}.safetensors", data)
    return kept, hashlib.sha256(data).hexdigest()


def load_kept(out: Path, iteration: int, sha256: str | None) -> list[dict]:
    """What `save_kept` wrote for iteration i, once its bytes match the sha256 its metrics row recorded."""
    path = out / BUFFER / f"iteration_{iteration:07d}.safetensors"
    if not path.is_file() or sha256 is None:
        raise DataError(f"rollout buffer missing: {path} (finetune.buffer draws from iteration {iteration}'s "
                        f"rollouts; start OUT afresh)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"rollout buffer damaged: {path} does not match the sha256 in metrics.jsonl")
    tensors = load_safetensors(data)
    meta = json.loads(safetensors_metadata(data)["episodes"])
    return [{**{k: tensors[f"{j}.{k}"].numpy() for k in EPISODE_ARRAYS}, **m} for j, m in enumerate(meta)]


def update_seed(seed: int, iteration: int, update: int) -> int:
    return (seed * 1_000_003 + iteration) * 100_003 + update


def update_lr(ft, iteration: int, update: int) -> float:
    if ft.schedule == "constant":
        return ft.lr
    return ft.lr * warmup_cosine(iteration * ft.updates + update, 0, ft.iterations * ft.updates)


def sample_update_batch(demos, rollouts: RolloutSteps, ft, iteration: int, update: int, device) -> dict:
    """`batch_size` samples, `demo_fraction` of them demonstration steps (weight `demo_weight`), the rest this
    iteration's rollout steps, all drawn (with their augmentation seeds) from an RNG seeded by (seed, i, u).
    Rollout steps: `weighted`, drawn with probability in proportion to their weight and weighing 1 (uniformly,
    weighing 0, when every weight is 0); `uniform`, drawn alike and weighing their own weight. With ppo, rollout
    steps are drawn uniformly and carry their advantage and acting chunks (a demonstration step: zeros, is_demo)."""
    g = torch.Generator().manual_seed(update_seed(ft.seed, iteration, update))
    n_demo = round(ft.batch_size * ft.demo_fraction)
    n_rollout = ft.batch_size - n_demo
    picks = [(demos, i) for i in torch.randint(len(demos), (n_demo,), generator=g).tolist()]
    ppo = ft.algo == "ppo"
    weighted = not ppo and ft.sampling == "weighted" and n_rollout and rollouts.step_weights.sum() > 0
    drawn = (torch.multinomial(rollouts.step_weights, n_rollout, replacement=True, generator=g) if weighted else
             torch.randint(len(rollouts), (n_rollout,), generator=g))
    picks += [(rollouts, i) for i in drawn.tolist()]
    seeds = torch.randint(2 ** 62, (len(picks),), generator=g).tolist()
    items = []
    for (source, i), seed in zip(picks, seeds):
        torch.default_generator.manual_seed(seed)  # the demonstrations' paraphrase choice
        item = source[i]
        weight = ft.demo_weight if source is demos else 1.0 if weighted else item["weight"]
        items.append({**{k: item[k] for k in STEP_KEYS}, "sample_seed": seed, "weight": float(weight)})
        if ppo:
            zeros = torch.zeros(item["actions"].shape)
            items[-1].update(is_demo=source is demos, advantage=float(item.get("advantage", 0.0)),
                             old_chunk=item.get("old_chunk", zeros), start_chunk=item.get("start_chunk", zeros))
    batch = default_collate(items)
    batch["weight"] = batch["weight"].float()
    if ppo:
        batch["advantage"] = batch["advantage"].float()
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _validated_scorer(scorer: str | Path, store: EpisodeStore, reward: str):
    loaded = load_run(scorer)
    if loaded.mode not in ("understand", "mirror"):
        raise UsageError(f"--scorer must be an understand or mirror run (an understanding model), got a "
                         f"{loaded.mode} run: {scorer}")
    if reward == "aligned" and loaded.mode != "mirror":
        raise UsageError(f"--reward aligned scores in a mirror run's shared space: --scorer must be a mirror run, "
                         f"got an {loaded.mode} run: {scorer}")
    try:
        loaded.require_same_tasks(store)
    except UsageError:
        raise UsageError(f"--scorer {scorer} was trained on other variations or instructions than --data: its "
                         f"score would not know the instructions it must tell apart") from None
    mine, its = store.manifest["cameras"]["observer"][0], loaded.store.manifest["cameras"]["observer"][0]
    if mine != its or store.manifest["image_size"] != loaded.store.manifest["image_size"]:
        raise UsageError(f"--scorer {scorer} watched {its!r} at {loaded.store.manifest['image_size']} px; the "
                         f"rollouts of --data film {mine!r} at {store.manifest['image_size']} px")
    return loaded


def finetune(run: str | Path, data: str | Path, out: str | Path, reward: str = "success",
             scorer: str | Path | None = None, algo: str = "awr", preset: str | None = None,
             overrides=(), progress: bool = True) -> Path:
    """Fine-tune RUN's policy into OUT (resuming OUT's latest checkpoint); returns OUT."""
    parent = load_run(run)
    if parent.mode not in ("execute", "mirror"):
        raise UsageError(f"--run must be an execute or mirror run (a policy to fine-tune), got a {parent.mode} "
                         f"run: {run}")
    if parent.config.train.condition != "text":  # its checkpoints hold the understanding model it reads too
        raise UsageError(f"--run's policy is told its task by video (train.condition={parent.config.train.condition}):"
                         f" finetune takes policies told by text only")
    try:
        store = EpisodeStore(data)
    except DataError as err:
        raise UsageError(f"--data is not a verified dataset: {err}") from None
    parent.require_same_tasks(store)
    try:
        check_simulator(store.manifest["simulator"])
    except UsageError as err:
        raise UsageError(f"{err} (finetune rolls the policy out in the simulator)") from None
    if not store.episode_ids("train"):
        raise empty_split_error(store, "train", "the demonstrations mixed into every update come from")
    own, theirs = split_overrides(overrides)
    ft = load_finetune_config(preset or parent.config.preset, [f"reward={reward}", f"algo={algo}", *own])
    if ft.reward == "success" and scorer is not None:
        raise UsageError("--scorer is for a learned reward (--reward understanding or aligned); success needs none")
    if ft.reward != "success" and scorer is None:
        raise UsageError(f"--reward {ft.reward} needs --scorer: an understand or mirror run that scores the clips")
    unknown = sorted(set(ft.variations) - set(store.variation_index))
    if unknown:
        raise UsageError(f"finetune.variations names variations --data does not have: {', '.join(unknown)}")
    rolled = sorted(store.variation_index[v] for v in ft.variations) or list(range(len(store.variations)))
    first = first_scene(store, ft.scenes)
    scenes = ft.iterations * ft.episodes // ft.repeats
    scenes = min(scenes, ft.scene_pool or scenes)
    if first + scenes > SPLIT_OFFSET["val"]:
        raise UsageError(f"the fine-tune's {scenes} train scenes (finetune.scene_pool, or iterations * episodes / "
                         f"repeats) from {first} on run past the train split's scene seeds ({SPLIT_OFFSET['val']})")
    judge = _validated_scorer(scorer, store, ft.reward) if scorer is not None else None
    config = parent_config(parent.config, theirs)
    out = Path(out)
    run_of = lambda r: {"run": str(r.path.resolve()), "mode": r.mode, "step": r.step,  # noqa: E731
                        "checkpoint_sha256": r.checkpoint_sha256}
    identity = {"mode": "execute", "data": str(store.root.resolve()), "config": config.to_dict(),
                "finetune": {**asdict(ft), "parent": run_of(parent), "scorer": run_of(judge) if judge else None}}
    record = prepare_run_dir(out, identity)
    device = pick_device(config)

    # validated: from here on OUT is written
    policy = parent.models["execution"].to(device)
    models = nn.ModuleDict({"execution": policy})  # the layout of an execute run's checkpoints
    initial = copy.deepcopy(policy).eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    horizon = config.model.execution.horizon
    demos = AgentSteps(store, "train", horizon=horizon, train=True)
    fixed = copy.copy(demos)  # the same frames, told the canonical instruction (a second load of the train split
    fixed.train = False  # doubled the fine-tune's RAM: 8 GB on `fine`)
    probe = default_collate([{k: fixed[int(i)][k] for k in STEP_KEYS}
                             for i in np.linspace(0, len(fixed) - 1, min(ft.probe_steps, len(fixed))).round()])
    probe = {k: v.to(device) for k, v in probe.items()}
    data_seed = store.config.get("data", {}).get("seed", config.data.seed)
    clip = store.manifest["simulator"] == "metaworld"  # its action space is [-1, 1]
    observer = store.manifest["cameras"]["observer"][0]
    if judge:
        judge.models.to(device)
    scoring = {"understanding": lambda records: understanding_rewards(judge.models["understanding"], records,
                                                                      observer, ft.windows),
               "aligned": lambda records: aligned_rewards(judge, records, observer)}.get(ft.reward)

    yaml_text = OmegaConf.to_yaml(OmegaConf.create({**asdict(config), "finetune": asdict(ft)}))
    start_run_dir(out, {**record, "parameters": {"execution": sum(p.numel() for p in policy.parameters())}},
                  yaml_text.encode())
    start = restore(out, models, optimizer)["step"] if (out / CHECKPOINTS / "latest.json").is_file() else 0
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        truncate_metrics(out / name, start)
    if start >= ft.iterations:
        return out
    history = _read_rows(out / "metrics.jsonl")
    env_steps_total = history[-1]["env_steps_total"] if history else 0
    kept, buffer_sha = {}, {row["iteration"]: row.get("buffer_sha256") for row in history}  # finetune.buffer != 1
    ppo = ft.algo == "ppo"
    buffered = not ppo and ft.buffer != 1  # ppo is on-policy: this iteration's rollouts only
    execute_steps = config.eval.execute_steps
    launch = {"world_size": 1, "backend": None, "device": device.type, "global_batch_size": ft.batch_size,
              "batch_size_per_rank": ft.batch_size}

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"), purge_step=start)
    metrics, episodes_log = open(out / "metrics.jsonl", "a"), open(out / "rollouts.jsonl", "a")
    bar = tqdm(range(start, ft.iterations), initial=start, total=ft.iterations, desc=f"finetune {ft.reward}",
               disable=not progress)
    interrupted = []
    # Ctrl-C during rollouts drops the iteration (KeyboardInterrupt), during updates it finishes it first (below);
    # installed here, since a process started in the background of a shell inherits SIGINT ignored
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for i in bar:
            t0 = time.perf_counter()
            policy.eval()
            records, stats = run_rollouts(policy, store, config, progress=False,
                                          plan=rollout_plan(rolled, ft.episodes, i, data_seed, first, ft.repeats,
                                                            ft.scene_pool),
                                          act=exploring_act(ft, i, clip), observe=scoring is not None)
            success = np.array([r["success"] for r in records], dtype=float)
            returns = success if scoring is None else scoring(records)
            groups = [f"{r['variation']}/{r['k']}" if ft.repeats > 1 else r["variation"] for r in records]
            advantage = advantages(returns, groups, ft.uniform_groups)
            weights = advantage_weights(advantage, ft.temperature, ft.max_weight)
            episodes = RolloutSteps.episodes_of(records, store, weights, advantage)
            if buffered:
                window = buffer_window(ft.buffer, i)  # read back from disk only on a resume
                kept = {j: kept[j] if j in kept else load_kept(out, j, buffer_sha.get(j)) for j in window}
                kept[i], buffer_sha[i] = save_kept(out, i, episodes)
            if ppo:  # the policy's decisions (chunk starts), with what the acting and the starting policy predicted
                rollouts = RolloutSteps(episodes, horizon, every=execute_steps).with_acting_chunks(policy, initial,
                                                                                                   device)
            else:
                rollouts = RolloutSteps(episodes + [ep for j in buffer_window(ft.buffer, i) for ep in kept[j]],
                                        horizon)
            steps = sum(r["steps"] for r in records)
            env_steps_total += steps
            t_rollout = time.perf_counter() - t0

            previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))  # finish the iteration
            try:
                policy.train(not ppo)  # ppo: its ratio must compare the function that acted (no augmentation)
                losses, norms, infos = [], [], []
                for u in range(ft.updates):
                    batch = sample_update_batch(demos, rollouts, ft, i, u, device)
                    torch.manual_seed(update_seed(ft.seed, i, u) + 1)  # whatever else draws from torch's RNG
                    chunk, _ = policy.features(batch)
                    if ppo:
                        loss, info = ppo_loss(chunk, batch, ft.noise, ft.clip_ratio, ft.kl_coef, execute_steps)
                        if infos and info["approx_kl"] > ft.target_kl:
                            break  # early stop: far enough from the policy that acted for one batch of rollouts
                        infos.append(info)
                    else:
                        loss = awr_loss(chunk, batch["actions"], batch["action_is_pad"], batch["weight"])
                    if not math.isfinite(loss.item()):
                        raise NumericalError(f"non-finite loss ({loss.item()}) at iteration {i} update {u}; last "
                                             f"good checkpoint: {last_checkpoint(out)}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    norms.append(float(nn.utils.clip_grad_norm_(policy.parameters(), ft.grad_clip)))
                    for group in optimizer.param_groups:  # a function of (i, u): a resume needs no scheduler state
                        group["lr"] = update_lr(ft, i, u)
                    optimizer.step()
                    losses.append(loss.item())
                policy.eval()
                divergence = (policy.act(probe) - initial.act(probe)).abs().mean().item()
                row = _row(i, records, success, returns, groups, weights, scoring is not None, history, steps,
                           env_steps_total, losses, norms, divergence, stats, t_rollout, time.perf_counter() - t0)
                row["lr"] = optimizer.param_groups[0]["lr"]  # the iteration's last update's
                if ppo:
                    row.update(updates_done=len(losses), approx_kl=infos[-1]["approx_kl"],
                               **{k: float(np.mean([x[k] for x in infos])) for k in ("clip_fraction", "kl_start",
                                                                                      "policy_loss")})
                if buffered:
                    row.update(buffer_episodes=len(rollouts.episodes), buffer_sha256=buffer_sha[i])
                # rows first, then the checkpoint (as train): a resume drops the rows of a step never checkpointed
                for r, ret, w in zip(records, returns, weights):
                    episodes_log.write(json.dumps({
                        "step": i + 1, "iteration": i, "variation_id": r["variation_id"], "k": r["k"],
                        "repeat": r["repeat"],
                        "scene_seed": r["scene_seed"], "success": r["success"], "steps": r["steps"],
                        "reward": float(ret), "weight": float(w)}) + "\n")
                episodes_log.flush()
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                save_checkpoint(out, i + 1, models, optimizer, launch)
            finally:
                signal.signal(signal.SIGINT, previous)
            history.append(row)
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None:
                    writer.add_scalar(f"finetune/{k}", float(v), i + 1)
            bar.set_postfix(success=f"{row['success_rate']:.2f}", reward=f"{row['reward_mean']:.3f}")
            if row.get("reward_hacking"):
                first = history[0]
                tqdm.write(f"mirroralign: warning: iteration {i}: the learned reward rose ({first['reward_mean']:.3f}"
                           f" -> {row['reward_mean']:.3f}) while its ROC-AUC against true success fell "
                           f"({first['reward_auc']:.3f} -> {row['reward_auc']:.3f}): the policy may be fooling "
                           f"the scorer", file=sys.stderr)
            if interrupted:
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, outer)
        bar.close()
        metrics.close()
        episodes_log.close()
        writer.close()
    return out


def _row(i, records, success, returns, groups, weights, learned, history, steps, env_steps_total, losses, norms,
         divergence, stats, t_rollout, t_total) -> dict:
    """One metrics.jsonl row: iteration i's rollouts (true success, the reward optimised, for a learned reward its
    ROC-AUC and correlation against true success, and whether it rose while the AUC fell since iteration 0; the
    share of advantage groups whose returns differ, the only ones that tell their episodes apart) and updates
    (loss, divergence from the starting policy: mean |action difference| on fixed demonstration steps)."""
    row = {"step": i + 1, "iteration": i, "episodes": len(records), "env_steps": steps,
           "env_steps_total": env_steps_total, "success_rate": float(success.mean()),
           "reward_mean": float(np.mean(returns)), "weight_mean": float(np.mean(weights)),
           "effective_episodes": float(weights.sum() ** 2 / (weights ** 2).sum()) if weights.any() else 0.0,
           "mixed_groups": mixed_share(returns, groups),
           "loss": float(np.mean(losses)), "grad_norm": float(np.mean(norms)), "divergence": divergence,
           "worker_restarts": stats["worker_restarts"], "rollout_s": t_rollout, "iteration_s": t_total}
    if learned:
        row["reward_auc"] = roc_auc(returns, success)
        row["reward_success_corr"] = correlation(returns, success)
        first = history[0] if history else row
        row["reward_hacking"] = bool(row["reward_mean"] > first["reward_mean"] and row["reward_auc"] is not None
                                     and first["reward_auc"] is not None and row["reward_auc"] < first["reward_auc"])
    return row
