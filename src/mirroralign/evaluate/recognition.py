"""Recognition accuracy of an understanding model on the test scenes, from any camera or observer view.

Clips for the dataset's own observer camera are read from the store. For any other camera, or a view distribution
(`envs/views.py`: a pose drawn per episode from its scene seed), the stored expert actions are replayed from the
stored scene seeds and rendered from there (the simulator is deterministic: a replay reproduces the episode), so
recognition from a viewpoint never seen in training is one flag away.

Recognition is top-1 among all the dataset's variations, and per task: each clip classified among its own task's
variations only (the fine-grained measure), averaged over the tasks that have at least two.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from mirroralign.data.datasets import ObserverClips, to_chw, uniform_indices
from mirroralign.data.store import EpisodeStore
from mirroralign.envs import make_env, simulator_cameras
from mirroralign.envs.views import ObserverPose, VIEWS
from mirroralign.errors import UsageError

_ENVS: dict = {}  # kept for the life of the process: under OSMesa a collected renderer breaks later ones


def known_views(simulator: str) -> tuple[str, ...]:
    """Named cameras, and for Meta-World the observer view distributions."""
    return (*simulator_cameras(simulator), *(VIEWS if simulator == "metaworld" else ()))


def replay_frames(store: EpisodeStore, episode_id: str, camera: str, pose: ObserverPose | None = None,
                  indices=None) -> np.ndarray:
    """[T+1, H, W, 3] frames of a stored episode re-rendered from `camera` by replaying its actions, at the
    fidelity the dataset was rendered with; with `indices`, [len(indices), H, W, 3]: only those frames are rendered
    (the other steps are simulated alone, a small fraction of a render). A view camera is posed from the episode's
    scene seed, or at `pose` (e.g. the one recorded in its meta.json)."""
    meta = store.episodes[episode_id]
    variation = store.variations[store.variation_index[meta["variation"]]]
    key = (store.manifest["simulator"], variation.task, store.manifest["image_size"], camera, store.fidelity)
    if key not in _ENVS:
        _ENVS[key] = make_env(*key[:3], [camera], store.fidelity)
    env = _ENVS[key]
    actions = store.load(episode_id)["actions"]
    order = list(range(len(actions) + 1)) if indices is None else [int(t) for t in indices]
    if not order or min(order) < 0 or max(order) > len(actions):
        raise ValueError(f"frame indices must be in 0..{len(actions)} for episode {episode_id}")
    wanted = set(order)
    first = env.reset(variation, meta["scene_seed"], poses=None if pose is None else {camera: pose})
    frames = {0: first.images[camera]}
    for t, action in enumerate(actions[: max(wanted)], start=1):
        obs = env.step(action, render=t in wanted)[0]
        if t in wanted:
            frames[t] = obs.images[camera]
    return np.stack([frames[t] for t in order])


def test_clips(store: EpisodeStore, view: str, frames: int, fractions=(1.0,),
               progress: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each leading fraction of the episodes: test-split clips [N, F, 3, H, W] uint8 seen from `view`, and
    their variation indices [N]. The split is read (or replayed, rendering only the clips' frames) once for all
    fractions."""
    if view in store.manifest["cameras"]["observer"]:
        ds = ObserverClips(store, "test", frames=frames, train=False, observer_camera=view)
        labels = torch.tensor([ep["variation"] for ep in ds.episodes])
        out = []
        for fraction in fractions:
            ds.fraction = fraction
            out.append((torch.stack([ds[i]["video"] for i in range(len(ds))]), labels))
        return out
    known = known_views(store.manifest["simulator"])
    if view not in known:
        raise UsageError(f"unknown camera or view {view!r} (known: {', '.join(known)})")
    videos, labels = [[] for _ in fractions], []
    for eid in tqdm(store.episode_ids("test"), desc=f"render {view}", disable=not progress):
        length = int(store.episodes[eid]["length"])
        per_fraction = [uniform_indices(0, round(length * fraction), frames) for fraction in fractions]
        needed = np.unique(np.concatenate(per_fraction))
        rendered = dict(zip(needed.tolist(), to_chw(replay_frames(store, eid, view, indices=needed))))
        for clips, idx in zip(videos, per_fraction):
            clips.append(torch.from_numpy(np.stack([rendered[t] for t in idx.tolist()])))
        labels.append(store.variation_index[store.episodes[eid]["variation"]])
    return [(torch.stack(clips), torch.tensor(labels)) for clips in videos]


def per_task_top1(logits: torch.Tensor, labels: torch.Tensor, tasks: list[str]) -> dict:
    """Each clip classified among its own task's variations only (`tasks[v]`: variation v's task). Per task: top-1,
    clips, variations and chance (1 / variations); `top1` and `chance` are their means over the tasks with >= 2
    variations (with one, there is nothing to tell apart), None when no task has two."""
    per_task = {}
    for task in sorted(set(tasks)):
        members = torch.tensor([v for v, t in enumerate(tasks) if t == task])
        sel = torch.isin(labels, members)
        if len(members) < 2 or not sel.any():
            continue
        predicted = members[logits[sel][:, members].argmax(1)]
        per_task[task] = {"top1": (predicted == labels[sel]).float().mean().item(), "n": int(sel.sum()),
                          "variations": len(members), "chance": 1 / len(members)}
    mean = (lambda key: float(np.mean([r[key] for r in per_task.values()])) if per_task else None)  # noqa: E731
    return {"top1": mean("top1"), "chance": mean("chance"), "tasks": per_task}


@torch.no_grad()
def recognition_scores(model, videos: torch.Tensor, labels: torch.Tensor, variation_ids: list[str],
                       tasks: list[str], batch_size: int = 32) -> dict:
    """Top-1 and top-5 accuracy among all variations, overall and per variation, with its chance; per-task top-1
    (`per_task_top1`); `predictions` for a confusion matrix."""
    logits = torch.cat([model.recognize({"video": videos[i:i + batch_size]}) for i in range(0, len(videos), batch_size)])
    ranked = logits.argsort(dim=1, descending=True)
    top1 = ranked[:, 0] == labels
    top5 = (ranked[:, :5] == labels[:, None]).any(1)
    per_variation = {}
    for v, vid in enumerate(variation_ids):
        sel = labels == v
        if sel.any():
            per_variation[vid] = {"top1": top1[sel].float().mean().item(), "top5": top5[sel].float().mean().item(),
                                  "n": int(sel.sum())}
    per_task = per_task_top1(logits, labels, tasks)
    return {"top1": top1.float().mean().item(), "top5": top5.float().mean().item(), "n": len(labels),
            "chance": 1 / len(variation_ids), "per_task_top1": per_task["top1"], "chance_per_task": per_task["chance"],
            "per_task": per_task["tasks"], "per_variation": per_variation, "predictions": ranked[:, 0].tolist(),
            "labels": labels.tolist(), "variation_ids": list(variation_ids)}
