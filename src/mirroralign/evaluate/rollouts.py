"""Policy rollouts in W simulator worker processes, with the policy batched in the main process.

Each worker owns its environments and runs one episode at a time: it sends observations, the main process
predicts action chunks for every worker waiting, and the worker executes `execute_steps` of its chunk. A
worker that crashes or stays silent past the timeout is replaced and its episode started again, so a run
never hangs. Every rollout keeps its observer-view clip (so the understanding model can be asked what the
policy did) and its agent-view frames, written to the store format; a caller that needs no clip (a fine-tune with
the `success` reward) leaves the observer unrendered: ~30 % of a step's simulator time (benchmarks/rollout_cost.py).
"""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import wait

import numpy as np
import torch
from tqdm import tqdm

from mirroralign.config import Config
from mirroralign.data.generate import die_with_parent, scene_seed
from mirroralign.envs import make_env
from mirroralign.envs.base import Variation
from mirroralign.errors import SimulatorError

# A fresh worker imports torch and MuJoCo and builds its first environment before it can answer: on a loaded
# machine that alone can outlast `eval.worker_timeout_s`, which is meant for silence in mid-episode.
STARTUP_TIMEOUT_S = 120.0


def _pack(obs, agent: list[str], observer: list[str]) -> dict:
    return {"agent": np.stack([obs.images[c] for c in agent]), "observer": [obs.images[c] for c in observer],
            "proprio": obs.proprio}


def _worker(conn, simulator: str, image_size: int, agent: list[str], observer: list[str], fidelity: str,
            max_steps: int) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs: dict = {}
    env, steps = None, 0
    while True:
        msg = conn.recv()
        if msg[0] == "close":
            return
        if msg[0] == "reset":
            variation = Variation.from_dict(msg[1])
            env = envs.get(variation.task)
            if env is None:
                env = envs[variation.task] = make_env(simulator, variation.task, image_size, [*agent, *observer],
                                                      fidelity)
            obs, steps = env.reset(variation, msg[2]), 0
            conn.send({"obs": _pack(obs, agent, observer), "frames": [], "done": False, "success": False, "steps": 0})
        else:  # ("act", actions [n, A])
            frames, success = [], False
            for action in msg[1]:
                obs, _, success = env.step(action)
                steps += 1
                frames.append(_pack(obs, agent, observer))
                if success or steps >= max_steps:
                    break
            conn.send({"obs": frames[-1], "frames": frames[:-1], "done": success or steps >= max_steps,
                       "success": success, "steps": steps})


@dataclass
class Episode:
    variation: int
    k: int
    scene_seed: int
    repeat: int = 0  # finetune: which of the rollouts of the same scene (each explores with its own noise)
    frames: list = field(default_factory=list)  # packed observations, in order
    actions: list = field(default_factory=list)
    attempts: int = 0


class _Slot:
    """One worker process and the episode it runs."""

    def __init__(self, ctx, args):
        self.ctx, self.args = ctx, args
        self.start()

    def start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        self.episode: Episode | None = None
        self.sent_at = time.monotonic()
        self.answered = False  # until its first reply, a worker gets STARTUP_TIMEOUT_S

    def timed_out(self, timeout_s: float) -> bool:
        limit = timeout_s if self.answered else max(timeout_s, STARTUP_TIMEOUT_S)
        return time.monotonic() - self.sent_at > limit

    def send(self, msg):
        self.conn.send(msg)
        self.sent_at = time.monotonic()

    def restart(self):
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        self.start()


def run_rollouts(policy, store, config: Config, seed: int = 0, episodes: int | None = None,
                 variations: list[int] | None = None, progress: bool = True,
                 plan: list[tuple[int, ...]] | None = None, act=None,
                 observe: bool = True) -> tuple[list[dict], dict]:
    """Roll `policy` out on the test scenes of every variation; returns (records, stats). Each record holds
    variation, k, repeat, scene seed, success, steps, and the arrays of the rollout (`observer.<camera>` only where
    `observe`: the agent's frames and the outcome do not depend on it). `plan` replaces the test scenes by
    (variation, k, scene seed[, repeat]) tuples (finetune: train scenes, each maybe more than once); `act` replaces
    `policy_actions` (same signature)."""
    v = config.eval
    cams = store.manifest["cameras"]
    agent, observer = cams["agent"], cams["observer"] if observe else []
    n = v.episodes if episodes is None else episodes
    if plan is None:
        plan = [(i, k, scene_seed(seed, "test", k))
                for i in (variations if variations is not None else range(len(store.variations))) for k in range(n)]
    todo = deque(Episode(*item) for item in plan)
    total = len(todo)
    ctx = get_context("spawn")
    args = (store.manifest["simulator"], store.manifest["image_size"], agent, observer, store.fidelity, v.max_steps)
    slots = [_Slot(ctx, args) for _ in range(min(v.workers, total))]
    records, restarts = [], 0
    device = next(policy.parameters()).device
    bar = tqdm(total=total, desc="rollouts", unit="ep", disable=not progress)

    def assign(slot):
        slot.episode = todo.popleft() if todo else None
        if slot.episode is not None:
            slot.episode.frames, slot.episode.actions = [], []
            slot.episode.attempts += 1
            slot.send(("reset", store.variations[slot.episode.variation].to_dict(), slot.episode.scene_seed))

    def retry(slot):
        nonlocal restarts
        restarts += 1
        episode = slot.episode
        slot.restart()
        if episode.attempts >= 3:
            raise SimulatorError(f"rollout of {store.variations[episode.variation].id} seed {episode.scene_seed} "
                               f"crashed its worker 3 times (died, or silent past eval.worker_timeout_s = "
                               f"{v.worker_timeout_s:g} s: a starved machine can be that slow)")
        todo.appendleft(episode)
        assign(slot)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores belong to the simulators; the policy's batches are small
    try:
        for slot in slots:
            assign(slot)
        while any(s.episode is not None for s in slots):
            active = [s for s in slots if s.episode is not None]
            ready = wait([s.conn for s in active] + [s.proc.sentinel for s in active], timeout=1.0)
            waiting = []
            for slot in active:
                if slot.conn in ready:
                    try:
                        reply = slot.conn.recv()
                    except (EOFError, OSError):
                        retry(slot)
                        continue
                    slot.answered = True
                    ep = slot.episode
                    ep.frames += reply["frames"] + [reply["obs"]]
                    if reply["done"]:
                        records.append(_record(store, ep, reply, observer))
                        bar.update(1)
                        assign(slot)
                    else:
                        waiting.append(slot)
                elif slot.proc.sentinel in ready or slot.timed_out(v.worker_timeout_s):
                    retry(slot)  # died without a reply, or hangs
            if waiting:
                chunks = (act or policy_actions)(policy, store, config, [s.episode for s in waiting], device)
                for slot, chunk in zip(waiting, chunks):
                    slot.episode.actions += list(chunk[: v.execute_steps])
                    slot.send(("act", chunk[: v.execute_steps]))
    finally:
        torch.set_num_threads(threads)
        bar.close()
        for slot in slots:
            try:
                slot.conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
            slot.proc.join(timeout=5)
            if slot.proc.is_alive():
                slot.proc.kill()
    records.sort(key=lambda r: (r["variation"], r["k"], r["repeat"]))
    return records, {"worker_restarts": restarts}


@torch.no_grad()
def policy_actions(policy, store, config: Config, episodes: list[Episode], device) -> np.ndarray:
    """One batched forward pass: [len(episodes), H, A] action chunks."""
    last = [ep.frames[-1] for ep in episodes]
    batch = {
        "images": torch.from_numpy(np.stack([o["agent"] for o in last])).permute(0, 1, 4, 2, 3).to(device),
        "proprio": torch.from_numpy(np.stack([o["proprio"] for o in last])).to(device),
        "text_index": torch.tensor([store.canonical_text[ep.variation] for ep in episodes], device=device),
    }
    return policy.act(batch).cpu().numpy()


def _record(store, ep: Episode, reply: dict, observer: list[str]) -> dict:
    arrays = {f"observer.{c}": np.stack([f["observer"][i] for f in ep.frames]) for i, c in enumerate(observer)}
    arrays |= {f"agent.{c}": np.stack([f["agent"][i] for f in ep.frames])
               for i, c in enumerate(store.manifest["cameras"]["agent"])}
    arrays["proprio"] = np.stack([f["proprio"] for f in ep.frames])
    arrays["actions"] = np.stack(ep.actions[: len(ep.frames) - 1]).astype(np.float32)  # as predicted (unclipped)
    return {"variation": ep.variation, "variation_id": store.variations[ep.variation].id, "k": ep.k,
            "repeat": ep.repeat, "scene_seed": ep.scene_seed, "success": bool(reply["success"]),
            "steps": int(reply["steps"]), "arrays": arrays}
