"""Torch datasets over the store: observer clips (understanding), agent steps (execution), and paired
samples (alignment). A split is loaded into memory once, checksums verified, images kept uint8 [3, H, W]
until batched, so reading never holds training up.

Randomness (clip jitter, paraphrase choice) draws from torch's RNG, which `DataLoader` seeds per worker.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mirroralign.data.store import EpisodeStore
from mirroralign.errors import UsageError


def uniform_indices(start: int, end: int, frames: int) -> np.ndarray:
    """`frames` frame indices evenly over [start, end], both ends included."""
    return np.floor(np.linspace(start, end, frames) + 0.5).astype(np.int64)


def window_bounds(t: int, window: int, last: int) -> tuple[int, int]:
    """[start, end] of the `window`-step window around step t, kept inside frames 0..last."""
    start = max(0, min(t - window // 2, last - window))
    return start, min(last, start + window)


def to_chw(frames: np.ndarray) -> np.ndarray:
    """[..., H, W, 3] -> contiguous [..., 3, H, W]."""
    return np.ascontiguousarray(np.moveaxis(frames, -1, -3))


def empty_split_error(store: EpisodeStore, split: str, needed_for: str | None = None) -> UsageError:
    """What a command that needs `split` says when the dataset has none of its episodes, and how to make some."""
    if store.config.get("source") == "rlbench":
        how = (f"give import-rlbench at least 3 demonstrations per variation, or a {split}/ folder beside the tasks"
               if split != "train" else "give import-rlbench more demonstrations per variation, or a train/ folder")
    elif split == "train":
        how = "generate more --episodes per variation, or lower data.val_fraction and data.test_fraction"
    else:  # split_counts gives val and test at least one episode each from 3 per variation on
        how = f"generate with --episodes >= 3 (and data.{split}_fraction > 0), or a larger data.{split}_fraction"
    why = f", which {needed_for}" if needed_for else ""
    return UsageError(f"dataset {store.root} has no {split} episodes{why}: {how}")


class _Episodes(Dataset):
    def __init__(self, store: EpisodeStore | str, split: str = "train", train: bool | None = None,
                 observer_camera: str | None = None, agent_cameras: list[str] | None = None,
                 fraction: float = 1.0, keyframes: bool = False, demo_frames: int | None = None,
                 demo_p: float = 1.0):
        self.fraction = fraction  # whole-episode clips cover this leading fraction (early recognition)
        # keyframes (PerAct/RVT): steps are taken at the start and at each keyframe, and their action chunk is
        # the actions that arrive at the next keyframes; needs the `keyframes` array of an RLBench import
        self.keyframes = keyframes
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        cams = self.store.manifest["cameras"]
        self.observer_camera = observer_camera or cams["observer"][0]
        self.agent_cameras = list(agent_cameras or cams["agent"])
        for cam, kind in [(self.observer_camera, "observer"), *[(c, "agent") for c in self.agent_cameras]]:
            if cam not in cams[kind]:
                raise ValueError(f"dataset has no {kind} camera {cam!r} (has: {', '.join(cams[kind])})")
        self.split = split
        self.train = (split == "train") if train is None else train
        self.variations = self.store.variations
        self.texts, self.text_variation = self.store.texts, self.store.text_variation
        self.tasks = sorted({v.task for v in self.variations})
        self.episode_ids = self.store.episode_ids(split)
        if not self.episode_ids:  # an empty split only fails later, deep inside torch (an empty stack or randint)
            raise empty_split_error(self.store, split)
        self.episodes = [self._load(eid) for eid in self.episode_ids]
        if keyframes and any(ep["keyframes"] is None for ep in self.episodes):
            raise UsageError(f"dataset {self.store.root} has no keyframes (RLBench imports carry them)")
        # the policy told by video (train.condition): each sample also brings a demonstration, a `demo_frames` clip
        # of another episode of its variation (another scene), used instead of the instruction with probability demo_p
        self.demo_frames, self.demo_p = demo_frames, demo_p
        self.demo_pool = [[d for d, other in enumerate(self.episodes) if other["variation"] == ep["variation"] and d != e]
                          or [e] for e, ep in enumerate(self.episodes)]  # a variation's only episode: its own clip

    def _load(self, eid: str) -> dict:
        arrays = self.store.load(eid)
        meta = self.store.episodes[eid]
        variation = self.store.variation_index[meta["variation"]]
        return {
            "observer": to_chw(arrays[f"observer.{self.observer_camera}"]),
            "agent": np.stack([to_chw(arrays[f"agent.{c}"]) for c in self.agent_cameras], axis=1),  # [T+1, C, 3, H, W]
            "proprio": arrays["proprio"], "actions": arrays["actions"], "length": int(meta["length"]),
            "keyframes": arrays.get("keyframes"),
            "variation": variation, "task": self.tasks.index(self.variations[variation].task),
        }

    def text_index(self, variation: int) -> int:
        """A random paraphrase (canonical included) when training, the canonical instruction otherwise."""
        n = len(self.variations[variation].instructions)
        return self.store.canonical_text[variation] + (int(torch.randint(n, ())) if self.train else 0)

    def _labels(self, e: int) -> dict:
        ep = self.episodes[e]
        text = self.text_index(ep["variation"])
        return {"variation": ep["variation"], "task": ep["task"], "episode": e, "text_index": text,
                "instruction": self.texts[text]}

    def _demonstration(self, e: int) -> dict:
        """Drawn after everything else a sample draws, so samples without demonstrations stay as they were."""
        if self.demo_frames is None:
            return {}
        pool = self.demo_pool[e]
        d = pool[int(torch.randint(len(pool), ()))]
        return {"demo_video": self._clip(d, self.demo_frames, None, None), "demo_episode": d,
                "demo_is_video": bool(torch.rand(()) < self.demo_p)}

    def _clip_indices(self, start: int, end: int, frames: int) -> np.ndarray:
        """`frames` indices spread over [start, end]: evenly, first and last included (eval), or a random one
        per segment (train)."""
        if not self.train:
            return uniform_indices(start, end, frames)
        edges = np.linspace(start, end + 1, frames + 1)
        idx = edges[:-1] + torch.rand(frames).numpy() * (edges[1:] - edges[:-1])
        return np.clip(np.floor(idx), start, end).astype(np.int64)

    def _clip(self, e: int, frames: int, window: int | None, t: int | None) -> torch.Tensor:
        ep = self.episodes[e]
        last = ep["length"]  # frames 0..T
        if window is None:
            start, end = 0, round(last * self.fraction)
        else:
            start, end = window_bounds(int(torch.randint(last + 1, ())) if t is None else t, window, last)
        return torch.from_numpy(ep["observer"][self._clip_indices(start, end, frames)])

    def _step(self, e: int, t: int, horizon: int) -> dict:
        ep = self.episodes[e]
        if self.keyframes:  # action k - 1 is the one that arrives at frame k
            ahead = ep["keyframes"][ep["keyframes"] > t][:horizon] - 1
            is_pad = np.arange(horizon) >= len(ahead)
            actions = ep["actions"][np.concatenate([ahead, np.repeat(ahead[-1:], horizon - len(ahead))])]
        else:
            idx = np.arange(t, t + horizon)
            is_pad = idx >= ep["length"]
            actions = ep["actions"][np.minimum(idx, ep["length"] - 1)]  # pad by repeating the last action
        return {"images": torch.from_numpy(ep["agent"][t]), "proprio": torch.from_numpy(ep["proprio"][t]),
                "actions": torch.from_numpy(actions), "action_is_pad": torch.from_numpy(is_pad), "t": t}

    def _step_index(self) -> list[tuple[int, int]]:
        if self.keyframes:  # the first frame and every keyframe but the last
            return [(e, int(t)) for e, ep in enumerate(self.episodes) for t in [0, *ep["keyframes"][:-1]]]
        return [(e, t) for e, ep in enumerate(self.episodes) for t in range(ep["length"])]

    def __len__(self) -> int:
        return len(self.index)  # each subclass sets `index`: what one item is


class ObserverClips(_Episodes):
    """Observer-camera clips of `frames` frames with their instruction (action understanding).

    `window=None`: the whole episode, uniformly sampled, one item per episode. `window=W`: a W-step
    window, one item per step (the window around it).
    """

    def __init__(self, store, split="train", frames: int = 8, window: int | None = None, **kw):
        super().__init__(store, split, **kw)
        self.frames, self.window = frames, window
        self.index = [(e, None) for e in range(len(self.episodes))] if window is None else self._step_index()

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        return {"video": self._clip(e, self.frames, self.window, t), **self._labels(e)}


class AgentSteps(_Episodes):
    """Agent images and proprioception at step t with the next `horizon` actions (embodied execution); with
    `keyframes=True`, at the start and at each keyframe, with the actions arriving at the next keyframes."""

    def __init__(self, store, split="train", horizon: int = 8, **kw):
        super().__init__(store, split, **kw)
        self.horizon = horizon
        self.index = self._step_index()

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        return {**self._step(e, t, self.horizon), **self._labels(e), **self._demonstration(e)}


class PairedSamples(_Episodes):
    """A step and an observer clip from the same episode, time-aligned (alignment). With `window=None` the
    clip is the whole episode; with `window=W` it is the W-step window around the step."""

    def __init__(self, store, split="train", frames: int = 8, horizon: int = 8, window: int | None = None, **kw):
        super().__init__(store, split, **kw)
        self.frames, self.horizon, self.window = frames, horizon, window
        self.index = self._step_index()

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        return {"video": self._clip(e, self.frames, self.window, t), **self._step(e, t, self.horizon),
                **self._labels(e), **self._demonstration(e)}
