"""Rollouts told their task by a demonstration video (`evaluate --condition`), through `run_rollouts`' `act` hook.

    text     the instruction (the policy's own path: its sentence embedding, or its joint-space embedding)
    video    the understanding model's embedding of a demonstration clip of the rollout's variation, from a stored
             episode of another scene (--demo-split), seen from the dataset's observer camera or --demo-view
    sibling  the same, of another variation of the same task (another goal): success on the rollout's own variation
             should drop, and how often the rollout completes the variation it was shown instead is scored where the
             simulator can tell (the two variations start from the same physical state)
    null     a fixed null task: zeros

Pairings are fixed by the evaluation seed and recorded per rollout (`demo`), so they can be reproduced: for rollout
k of variation v, the demonstration episode is the (offset + k)-th, in episode order, of the split's episodes of v
from scenes other than the rollout's, the offset drawn from (seed, v). A sibling is shown, where it has one, in the
very scene that the same-variation demonstration of that rollout shows, so the two conditions differ by the goal.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from mirroralign.data.datasets import to_chw, uniform_indices
from mirroralign.data.store import EpisodeStore
from mirroralign.envs import make_env
from mirroralign.errors import UsageError
from mirroralign.evaluate.recognition import known_views, replay_frames
from mirroralign.evaluate.rollouts import policy_actions

CONDITIONS = ("text", "video", "sibling", "null")
SHOWN = ("video", "sibling")  # the conditions that show a clip
_SIBLING_DRAW, _DEMO_DRAW = 1, 2  # which of the two draws per (seed, variation)


def siblings(store: EpisodeStore, v: int) -> list[int]:
    """The other variations of variation v's task."""
    task = store.variations[v].task
    return [i for i, other in enumerate(store.variations) if other.task == task and i != v]


def _draw(seed: int, variation_id: str, which: int, n: int) -> int:
    return int(np.random.default_rng([seed, zlib.crc32(variation_id.encode()), which]).integers(n))


@dataclass
class Pairing:
    """Which stored episode conditions rollout (variation, k) of scene `scene_seed`."""

    variation: int
    k: int
    scene_seed: int
    shown: int  # the variation the clip shows
    episode: str  # its episode id in the store

    def record(self, store: EpisodeStore, view: str) -> dict:
        return {"episode": self.episode, "variation_id": store.variations[self.shown].id,
                "scene_seed": store.episodes[self.episode]["scene_seed"], "view": view}


def pair_demonstrations(store: EpisodeStore, plan: list[tuple[int, int, int]], condition: str, split: str,
                        seed: int) -> list[Pairing]:
    """One pairing per (variation, k, scene seed) of `plan` (see the module's docstring); UsageError when a
    variation has no demonstration in `split` from a scene other than the rollout's."""
    by_variation: dict[int, list[str]] = {}
    for eid in store.episode_ids(split):
        by_variation.setdefault(store.variation_index[store.episodes[eid]["variation"]], []).append(eid)
    scene = lambda eid: store.episodes[eid]["scene_seed"]  # noqa: E731

    def others(v: int, s: int) -> list[str]:
        return [e for e in by_variation.get(v, []) if scene(e) != s]

    def nth(v: int, k: int, s: int) -> str:
        pool = others(v, s)
        if not pool:
            raise UsageError(f"no {split} episode of {store.variations[v].id} from a scene other than its rollout's "
                             f"(scene seed {s}) to show: use another --demo-split, or generate more --episodes")
        return pool[(_draw(seed, store.variations[v].id, _DEMO_DRAW, len(pool)) + k) % len(pool)]

    pairings = []
    for v, k, s in plan:
        if condition == "video":
            pairings.append(Pairing(v, k, s, v, nth(v, k, s)))
            continue
        sibs = siblings(store, v)
        shown = sibs[(_draw(seed, store.variations[v].id, _SIBLING_DRAW, len(sibs)) + k) % len(sibs)]
        video_scene = scene(nth(v, k, s)) if others(v, s) else None  # where the video condition's clip is
        same_scene = [e for e in others(shown, s) if scene(e) == video_scene]
        pairings.append(Pairing(v, k, s, shown, same_scene[0] if same_scene else nth(shown, k, s)))
    return pairings


def demo_clip(store: EpisodeStore, episode: str, view: str, frames: int) -> np.ndarray:
    """[F, H, W, 3] uint8: the episode's whole observer clip, evenly sampled as recognition samples it, from a
    recorded observer camera or re-rendered from `view` by replaying the episode."""
    idx = uniform_indices(0, int(store.episodes[episode]["length"]), frames)
    if view in store.manifest["cameras"]["observer"]:
        return store.load(episode)[f"observer.{view}"][idx]
    return replay_frames(store, episode, view, indices=idx)  # renders only the clip's frames


class _Told:
    """The policy, told the task by the embeddings given (the batch's instruction lookup is then not read)."""

    def __init__(self, policy, embeddings: torch.Tensor):
        self.policy, self.embeddings = policy, embeddings

    def act(self, batch: dict) -> torch.Tensor:
        return self.policy.act({**batch, "instruction_embedding": self.embeddings})


class Conditioning:
    """What `evaluate --condition` needs before, during and after the rollouts, checked before anything runs."""

    def __init__(self, store: EpisodeStore, condition: str, policy, understanding, plan: list[tuple[int, int, int]],
                 seed: int, frames: int, split: str | None = None, view: str | None = None):
        if condition not in CONDITIONS:
            raise UsageError(f"unknown --condition {condition!r} (known: {', '.join(CONDITIONS)})")
        if condition not in SHOWN and (split is not None or view is not None):
            raise UsageError("--demo-split and --demo-view choose the clip that --condition video or sibling shows")
        self.store, self.condition, self.policy, self.frames = store, condition, policy, frames
        self.split, self.view = split or "train", view or store.manifest["cameras"]["observer"][0]
        self.pairings: list[Pairing] = []
        if condition in SHOWN:
            if understanding is None:
                raise UsageError(f"--condition {condition} shows the policy a clip, but this run's policy was trained "
                                 f"with train.condition=text: it reads sentence embeddings only (train it with "
                                 f"train.condition=video or mixed)")
            if self.split not in ("train", "test"):
                raise UsageError(f"--demo-split must be train or test, got {self.split!r}")
            known = known_views(store.manifest["simulator"]) or tuple(store.manifest["cameras"]["observer"])
            if self.view not in known:
                raise UsageError(f"unknown --demo-view {self.view!r} (known: {', '.join(known)})")
            if self.view not in store.manifest["cameras"]["observer"] and any(
                    store.episodes[e]["scene_seed"] is None for e in store.episode_ids(self.split)):
                raise UsageError(f"--demo-view {self.view} replays the demonstrations, but they have no scene seeds "
                                 f"(imported): use a recorded observer camera")
            if condition == "sibling":
                plan = [p for p in plan if siblings(store, p[0])]
                if not plan:
                    raise UsageError("--condition sibling needs a task with two or more variations; --data has none")
            self.pairings = pair_demonstrations(store, plan, condition, self.split, seed)
        self.plan = plan
        self.understanding = understanding
        self.embeddings: dict[tuple[int, int], torch.Tensor] = {}
        self.clips: dict[str, np.ndarray] = {}

    def act_hook(self):
        """The `act` hook of `run_rollouts` (None: the policy's own instruction lookup); renders and embeds the
        demonstrations first."""
        if self.condition == "text":
            return None
        if self.condition == "null":
            null = torch.zeros(self.policy.task_dim)
            self.embeddings = {(v, k): null for v, k, _ in self.plan}
        else:
            self.embed()

        def act(policy, store, config, episodes, device):
            told = torch.stack([self.embeddings[(ep.variation, ep.k)] for ep in episodes]).to(device)
            return policy_actions(_Told(policy, told), store, config, episodes, device)

        return act

    @torch.no_grad()
    def embed(self) -> None:
        """Each demonstration's clip, rendered once, and its embedding per rollout."""
        for p in self.pairings:
            if p.episode not in self.clips:
                self.clips[p.episode] = demo_clip(self.store, p.episode, self.view, self.frames)
        ids = list(self.clips)
        video = torch.from_numpy(to_chw(np.stack([self.clips[e] for e in ids])))
        device = next(self.understanding.parameters()).device
        told = self.understanding.task_embedding({"demo_video": video.to(device),
                                                  "demo_is_video": torch.ones(len(ids), dtype=torch.bool,
                                                                              device=device)}).cpu()
        by_episode = dict(zip(ids, told))
        self.embeddings = {(p.variation, p.k): by_episode[p.episode] for p in self.pairings}

    def annotate(self, records: list[dict]) -> None:
        """Each record gets its pairing (`demo`) and the clip it was shown (array `condition.clip`); with sibling,
        `shown_success`: whether the rollout completed the variation it was shown (None: not scorable)."""
        by_rollout = {(p.variation, p.k): p for p in self.pairings}
        for r in records:
            p = by_rollout.get((r["variation"], r["k"]))
            if p is None:
                continue
            r["demo"] = p.record(self.store, self.view)
            r["arrays"]["condition.clip"] = self.clips[p.episode]
            if self.condition == "sibling":
                r["shown_success"] = shown_success(self.store, r, p.shown)

    def record(self) -> dict:
        out = {"kind": self.condition}
        if self.condition in SHOWN:
            out |= {"demo_split": self.split, "demo_view": self.view, "variations": sorted({
                self.store.variations[v].id for v, _, _ in self.plan})}
        return out


_ENVS: dict = {}  # render-free environments, one per task, kept for the process


def shown_success(store: EpisodeStore, record: dict, shown: int) -> bool | None:
    """Whether the rollout's actions, replayed in the scene of variation `shown` (same scene seed), complete it at
    some step. Scorable (else None) in Meta-World when both variations start from the same physical state and the
    replay retraces the rollout (the goal of a goal variant is an invisible site: it does not touch the physics);
    open/close pairs, a layout Meta-World redrew, or another simulator are not."""
    if store.manifest["simulator"] != "metaworld":
        return None
    own, other = store.variations[record["variation"]], store.variations[shown]
    if own.task != other.task:
        return None
    if own.task not in _ENVS:
        _ENVS[own.task] = make_env("metaworld", own.task, store.manifest["image_size"], (), store.fidelity)
    env = _ENVS[own.task]
    env.reset(own, record["scene_seed"])
    start = env.sim_state()
    env.reset(other, record["scene_seed"])
    if not np.array_equal(start, env.sim_state()):
        return None
    proprio, done = record["arrays"]["proprio"], False
    for t, action in enumerate(record["arrays"]["actions"]):
        obs, _, success = env.step(action, render=False)
        if not np.allclose(obs.proprio, proprio[t + 1], atol=1e-5):
            return None  # the replay left the rollout's path: the two scenes were not the same after all
        done = done or success
    return done
