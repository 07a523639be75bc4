"""Import RLBench demonstrations from disk into the episode store (`mirroralign import-rlbench`).

RLBench needs CoppeliaSim, but its demonstrations are folders researchers already have. Two layouts are read:

    RLBench's dataset generator, one folder per variation:
        SRC/<task>/variation<N>/variation_descriptions.pkl
        SRC/<task>/variation<N>/episodes/episode<K>/low_dim_obs.pkl
    PerAct's released data, variations mixed, the variation named in each episode:
        SRC/<task>/all_variations/episodes/episode<K>/{low_dim_obs, variation_number, variation_descriptions}.pkl

with the images of every episode in per-camera folders of `<i>.png` (`front_rgb/`, `wrist_rgb/`, ...; the
`_depth` and `_mask` folders are not needed by our models and not read). SRC may hold `train/`, `val/` and
`test/` folders with the tasks inside (PerAct's splits); otherwise each variation's episodes are split in
episode order with the usual fractions. Any RLBench task folder is read (RLBench ships about 100 tasks); the
variation numbers of the rlbench18 tasks are checked against their known counts, other tasks' variations are the
ones found on disk. Pickles are read only through `rlbench_pickle`'s restricted unpickler.

Each demonstration becomes one store episode: RGB frames of the observer and agent cameras, proprioception,
actions (the next frame's gripper pose and open state), a sparse reward (1 on the last step: RLBench keeps only
successful demonstrations) and the PerAct/RVT keyframes. The dataset is written under a temporary name and
renamed into place, so DIR is either complete or absent.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from mirroralign.data.generate import split_counts
from mirroralign.data.rlbench_pickle import Demo, load_rlbench_pickle
from mirroralign.data.store import (CONFIG, FORMAT, META, SPLITS, VERSION, episode_path, require_writable, sha256_file,
                                    write_episode, write_json_atomic, write_manifest, write_text_embeddings)
from mirroralign.envs.base import Variation
from mirroralign.envs.rlbench_spec import (ACTION_FIELDS, AGENT_CAMERAS, CAMERAS, OBSERVER_CAMERA, PROPRIO_FIELDS,
                                           REQUIRED_FIELDS, pose_action, proprio_vector)
from mirroralign.errors import DataError, UsageError
from mirroralign.suites import get_rlbench_suite

SUITE = "rlbench18"
LOW_DIM = "low_dim_obs.pkl"
DESCRIPTIONS = "variation_descriptions.pkl"
VARIATION_NUMBER = "variation_number.pkl"
ALL_VARIATIONS = "all_variations"


# --------------------------------------------------------------------------------------------- keyframes

def discover_keyframes(gripper_open, joint_velocities, stopping_delta: float = 0.1) -> np.ndarray:
    """Frame indices of the keyframes of a demonstration, by the rule of PerAct and RVT (from ARM).

    Frame i > 0 is a keyframe when the gripper's open state differs from frame i-1's, when it is the last
    frame, or when the arm comes to rest: every joint velocity within `stopping_delta`, the open state the
    same on frames i-2..i+1, i not the second-to-last frame, and no rest keyframe in the 4 frames before.
    When the last two keyframes are adjacent frames, the earlier one is dropped. As in the reference, the
    neighbours of frames 0 and 1 wrap around to the end of the episode.
    """
    g = np.asarray(gripper_open, np.float64)
    v = np.asarray(joint_velocities, np.float64)
    n = len(g)
    keys, rest_buffer = [], 0
    for i in range(n):
        steady = i < n - 2 and g[i] == g[i + 1] == g[i - 1] and g[i - 2] == g[i - 1]
        at_rest = rest_buffer <= 0 and np.allclose(v[i], 0, atol=stopping_delta) and i != n - 2 and steady
        rest_buffer = 4 if at_rest else rest_buffer - 1
        if i > 0 and (g[i] != g[i - 1] or i == n - 1 or at_rest):
            keys.append(i)
    if len(keys) > 1 and keys[-1] - 1 == keys[-2]:
        keys.pop(-2)
    return np.asarray(keys, np.int64)


# ------------------------------------------------------------------------------------------------ layouts

@dataclass
class SourceEpisode:
    task: str
    number: int  # K of episode<K>
    folder: Path
    split: str | None  # from a train/val/test folder, else assigned later
    variation: int = -1
    descriptions: list[str] = field(default_factory=list)


def _numbered(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    """(N, path) of the `<prefix><N>` subfolders, in numeric order."""
    found = []
    for p in folder.iterdir() if folder.is_dir() else ():
        m = re.fullmatch(rf"{prefix}(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _descriptions(path: Path) -> list[str]:
    descriptions = load_rlbench_pickle(path, "variation descriptions")
    if not isinstance(descriptions, (list, tuple)) or not descriptions \
            or not all(isinstance(d, str) and d.strip() for d in descriptions):
        raise DataError(f"variation descriptions damaged: {path} (not a non-empty list of texts)")
    return list(descriptions)


def _variation_number(path: Path) -> int:
    number = load_rlbench_pickle(path, "variation number")
    if isinstance(number, (bool, np.bool_)) or not isinstance(number, (int, np.integer)):
        raise DataError(f"variation number damaged: {path} (not an integer)")
    return int(number)


def _check_variation(task: str, number: int, where: Path) -> None:
    """Variation numbers are checked where the task's count is known (the rlbench18 tasks); any other RLBench
    task's variations are the ones found on disk."""
    count = get_rlbench_suite(SUITE).get(task)
    if number < 0 or (count is not None and number >= count):
        raise DataError(f"variation {number} of {task} is out of range: {SUITE} has {count} variations "
                        f"(0..{count - 1}) ({where})" if count is not None else
                        f"variation {number} of {task} is negative ({where})")


def scan_task(task_dir: Path, split: str | None) -> list[SourceEpisode]:
    """Every episode of one task folder, in either layout, with its variation and descriptions."""
    task = task_dir.name
    episodes = []
    mixed = task_dir / ALL_VARIATIONS / "episodes"
    if mixed.is_dir():  # PerAct: the variation is recorded in each episode folder
        for k, folder in _numbered(mixed, "episode"):
            ep = SourceEpisode(task, k, folder, split, _variation_number(folder / VARIATION_NUMBER))
            _check_variation(task, ep.variation, folder / VARIATION_NUMBER)
            ep.descriptions = _descriptions(folder / DESCRIPTIONS)
            episodes.append(ep)
    for n, var_dir in _numbered(task_dir, "variation"):  # the generator: one folder per variation
        _check_variation(task, n, var_dir)
        descriptions = _descriptions(var_dir / DESCRIPTIONS)
        for k, folder in _numbered(var_dir / "episodes", "episode"):
            if (folder / VARIATION_NUMBER).is_file() and _variation_number(folder / VARIATION_NUMBER) != n:
                raise DataError(f"{folder / VARIATION_NUMBER} names another variation than its folder {var_dir.name}")
            episodes.append(SourceEpisode(task, k, folder, split, n, descriptions))
    if not episodes:
        raise UsageError(f"no RLBench episodes in {task_dir} (expected variation<N>/episodes/episode<K>/ or "
                         f"{ALL_VARIATIONS}/episodes/episode<K>/)")
    return episodes


def split_roots(src: Path) -> dict[str | None, Path]:
    """PerAct's train/val/test folders when SRC has them, else SRC itself (split later)."""
    roots = {s: src / s for s in SPLITS if (src / s).is_dir()}
    return roots or {None: src}


# ---------------------------------------------------------------------------------------------- episodes

def _frames(folder: Path, camera: str, count: int, size: int | None) -> np.ndarray:
    """The `count` RGB frames of one camera as uint8 [count, S, S, 3], resized to `size` when given."""
    cam_dir = folder / f"{camera}_rgb"
    if not cam_dir.is_dir():
        raise DataError(f"camera folder missing: {cam_dir} (choose cameras with --cameras and --observer)")
    pngs = len(list(cam_dir.glob("*.png")))
    if pngs != count:
        raise DataError(f"{cam_dir} holds {pngs} images for {count} observations")
    frames = []
    for i in range(count):
        path = cam_dir / f"{i}.png"
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                frames.append(np.asarray(im, np.uint8))
        except FileNotFoundError:
            raise DataError(f"image missing: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DataError(f"image damaged: {path} ({err})") from None
    return np.stack(frames)


def _observations(folder: Path) -> list:
    path = folder / LOW_DIM
    demo = load_rlbench_pickle(path, "low-dimensional observations")
    observations = demo.observations if isinstance(demo, Demo) else demo
    if not isinstance(observations, list) or len(observations) < 2:
        raise DataError(f"low-dimensional observations damaged: {path} (not a demo of at least two observations)")
    for i, obs in enumerate(observations):
        missing = [f for f in REQUIRED_FIELDS if getattr(obs, f, None) is None]
        if missing:
            raise DataError(f"observation {i} of {path} lacks {', '.join(missing)}")
    return observations


def convert_episode(folder: Path, observer: str, agents: list[str], size: int | None) -> dict[str, np.ndarray]:
    """One RLBench episode folder as store arrays (T + 1 observations, T actions)."""
    observations = _observations(folder)
    try:
        proprio = np.stack([proprio_vector(o.joint_positions, o.gripper_pose, o.gripper_open) for o in observations])
        actions = np.stack([pose_action(o.gripper_pose, o.gripper_open) for o in observations[1:]])
        open_state = np.asarray([float(o.gripper_open) for o in observations])
        velocities = np.stack([np.asarray(o.joint_velocities, np.float64).ravel() for o in observations])
    except (ValueError, TypeError) as err:  # ragged or wrongly shaped fields
        raise DataError(f"low-dimensional observations damaged: {folder / LOW_DIM} ({err})") from None
    if not (np.isfinite(proprio).all() and np.isfinite(actions).all()):
        raise DataError(f"non-finite poses or joint positions in {folder / LOW_DIM}")
    count = len(observations)
    rewards = np.zeros(count - 1, np.float32)
    rewards[-1] = 1.0
    arrays = {f"observer.{observer}": _frames(folder, observer, count, size)}
    arrays |= {f"agent.{c}": _frames(folder, c, count, size) for c in agents}
    arrays |= {"proprio": proprio, "actions": actions, "rewards": rewards,
               "keyframes": discover_keyframes(open_state, velocities)}
    return arrays


# ------------------------------------------------------------------------------------------------- driver

def _names(values, known, what: str) -> list[str]:
    unknown = [v for v in values if v not in known]
    if unknown:
        raise UsageError(f"unknown {what} {unknown[0]!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(values))


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path is a file, not a directory: {out}")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"output directory is not empty: {out}; use another --out")
    require_writable(out.parent)  # the import is written beside OUT and renamed into place


def is_task_folder(folder: Path) -> bool:
    """An RLBench task folder holds variation<N>/ folders (the generator) or all_variations/ (PerAct)."""
    return (folder / ALL_VARIATIONS).is_dir() or bool(_numbered(folder, "variation"))


def collect_sources(src: Path, tasks: list[str] | None) -> list[SourceEpisode]:
    """Every episode of the task folders under SRC (any RLBench task, of either layout), or of those named in
    `tasks`."""
    episodes, seen = [], set()
    for split, root in split_roots(src).items():
        for task_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            seen.add(task_dir.name)
            if tasks is not None and task_dir.name not in tasks:
                continue
            if not is_task_folder(task_dir):
                raise UsageError(f"{task_dir} is not an RLBench task folder (no variation<N>/ or {ALL_VARIATIONS}/ "
                                 f"inside); pass --tasks to import the others")
            episodes += scan_task(task_dir, split)
    found = {e.task for e in episodes}
    for task in tasks or ():
        if task not in found:
            there = ", ".join(sorted(seen)) or "none"
            raise UsageError(f"task {task!r} not found in {src} (task folders there: {there})")
    if not episodes:
        raise UsageError(f"no RLBench task folders in {src}")
    return episodes


def _variations(episodes: list[SourceEpisode]) -> list[Variation]:
    """One variation per (task, N): rlbench18 tasks in suite order, then the others by name; its texts are every
    description seen, first one canonical."""
    texts: dict[tuple[str, int], dict[str, None]] = {}
    for e in episodes:
        texts.setdefault((e.task, e.variation), {}).update(dict.fromkeys(e.descriptions))
    order = list(get_rlbench_suite(SUITE))
    rank = lambda task: order.index(task) if task in order else len(order)  # noqa: E731
    variations = []
    for task, n in sorted(texts, key=lambda key: (rank(key[0]), key[0], key[1])):
        first, *rest = texts[(task, n)]
        variations.append(Variation(f"{task}-variation{n}", task, f"variation{n}", first, tuple(rest)))
    return variations


def _assign_splits(episodes: list[SourceEpisode], val_fraction: float,
                   test_fraction: float) -> dict[str, tuple[SourceEpisode, int]]:
    """Episode id -> (source, k), split by folder (train/val/test) or, per variation, in episode order."""
    groups: dict[tuple[str, int], list[SourceEpisode]] = {}
    for e in sorted(episodes, key=lambda e: (e.task, e.variation, SPLITS.index(e.split) if e.split else 0, e.number)):
        groups.setdefault((e.task, e.variation), []).append(e)
    assigned = {}
    for (task, n), group in groups.items():
        if group[0].split is None:
            need = split_counts(len(group), val_fraction, test_fraction)
            names = [s for s in SPLITS for _ in range(need[s])]
            for e, s in zip(group, names):
                e.split = s
        ks = {s: 0 for s in SPLITS}
        for e in group:
            assigned[f"{task}-variation{n}/{e.split}-{ks[e.split]:04d}"] = (e, ks[e.split])
            ks[e.split] += 1
    return assigned


def import_rlbench(src: str | Path, out: str | Path, tasks: list[str] | None = None,
                   cameras: list[str] | None = None, observer: str | None = None, image_size: int | None = None,
                   val_fraction: float = 0.1, test_fraction: float = 0.2, progress: bool = True) -> Path:
    """Convert the RLBench demonstrations under `src` into a finished mirroralign dataset at `out`."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UsageError(f"RLBench folder not found: {src}")
    agents = _names(cameras or AGENT_CAMERAS, CAMERAS, "camera")
    observer = _names([observer or OBSERVER_CAMERA], CAMERAS, "camera")[0]
    tasks = None if not tasks else list(dict.fromkeys(tasks))  # any RLBench task: a name to find in SRC
    if image_size is not None and image_size < 8:
        raise UsageError(f"--image-size must be >= 8, got {image_size}")
    _check_output(out)
    sources = collect_sources(src, tasks)
    variations = _variations(sources)
    assigned = _assign_splits(sources, val_fraction, test_fraction)
    # "suite": what variation numbers were checked against, for the tasks it knows
    identity = {"source": "rlbench", "src": str(src.resolve()), "suite": SUITE, "tasks": tasks,
                "cameras": {"observer": [observer], "agent": agents}, "image_size": image_size,
                "val_fraction": val_fraction, "test_fraction": test_fraction}

    missing = [d for d in (out.parent, *out.parent.parents) if not d.exists()]  # folders made here, undone on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    done = False
    try:
        tmp.mkdir()
        write_json_atomic(tmp / CONFIG, {"format": FORMAT, "version": VERSION, "identity": identity})
        size = image_size
        entries, splits = {}, {s: [] for s in SPLITS}
        # no bar when stderr is not a terminal (disable=None), so a failure stays a one-line message there
        for eid, (e, k) in tqdm(assigned.items(), desc="import-rlbench", unit="ep", disable=None if progress else True):
            arrays = convert_episode(e.folder, observer, agents, image_size)  # resized only when asked
            frame = arrays[f"observer.{observer}"].shape[1:3]
            if size is None:  # the first episode fixes the size; RLBench renders square images
                if frame[0] != frame[1]:
                    raise UsageError(f"images in {e.folder} are {frame[1]}x{frame[0]}, not square: pass --image-size")
                size = frame[0]
            elif frame != (size, size):
                raise UsageError(f"images in {e.folder} are {frame[1]}x{frame[0]}, unlike the first episode's "
                                 f"{size}x{size}: pass --image-size to resize all")
            meta = {"variation": f"{e.task}-variation{e.variation}", "split": e.split, "k": k,
                    "scene_seed": None, "length": len(arrays["actions"]), "success": True,
                    "source": str(e.folder.relative_to(src)), "keyframes": len(arrays["keyframes"])}
            meta = write_episode(tmp, eid, arrays, meta)
            entries[eid] = {key: meta[key] for key in ("variation", "split", "k", "scene_seed", "length", "files",
                                                       "source")}
            entries[eid]["meta_sha256"] = sha256_file(episode_path(tmp, eid) / META)
            splits[e.split].append(eid)
        write_manifest(tmp, {
            "format": FORMAT, "version": VERSION, "config": identity, "simulator": "rlbench", "image_size": size,
            "cameras": identity["cameras"], "variations": [v.to_dict() for v in variations],
            "episodes_per_split": {s: len(ids) for s, ids in splits.items()}, "splits": splits,
            "episodes": entries, "attempts": {}, "expert_failures": 0,
            "proprio_fields": list(PROPRIO_FIELDS), "action_fields": list(ACTION_FIELDS),
            # files outside the episodes have checksums too
            "files": {CONFIG: sha256_file(tmp / CONFIG), **write_text_embeddings(tmp, variations)},
        })
        os.replace(tmp, out)  # an empty `out` directory is replaced; a non-empty one was refused above
        done = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not done and missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
    return out
