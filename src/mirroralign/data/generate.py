"""Scripted-expert collection with parallel worker processes; resumable after a kill at any moment.

Each (variation, split) needs a number of successful episodes. Attempt k of a group uses scene seed
`seed * 1_000_000 + SPLIT_OFFSET[split] + k`, so splits never share a scene, and the same scene seed shows
the same object layout to every variation of a task (one scene, several instructions). A failed attempt
is recorded and the next k is tried; the episodes kept are the first successes in k order, whatever the
number of workers or interruptions, so a resumed run ends with the same content as an uninterrupted one.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mirroralign.config import Config
from mirroralign.data.store import (ATTEMPTS, CONFIG, EPISODES, FORMAT, MANIFEST, META, SPLITS, VERSION,
                                    episode_path, is_atomic_write_leftover, read_json, require_writable, sha256_file,
                                    write_episode, write_json_atomic, write_manifest, write_text_embeddings)
from mirroralign.envs import make_env, simulator_cameras
from mirroralign.envs.base import Variation
from mirroralign.errors import DataError, UsageError
from mirroralign.suites import get_suite

SPLIT_OFFSET = {"train": 0, "val": 300_000, "test": 600_000}


def scene_seed(seed: int, split: str, k: int) -> int:
    return seed * 1_000_000 + SPLIT_OFFSET[split] + k


def split_counts(episodes: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Episodes per split for one variation; val and test get at least one each when there are >= 3."""
    n_val, n_test = round(episodes * val_fraction), round(episodes * test_fraction)
    if episodes >= 3:
        n_val, n_test = max(n_val, 1 if val_fraction > 0 else 0), max(n_test, 1 if test_fraction > 0 else 0)
    n_train = max(episodes - n_val - n_test, 0)
    return {"train": n_train, "val": n_val, "test": episodes - n_train - n_val}


def select_variations(config: Config) -> list[Variation]:
    suite = get_suite(config.data.suite)
    if not config.data.tasks:
        return list(suite)
    tasks = {v.task for v in suite}
    unknown = [t for t in config.data.tasks if t not in tasks]
    if unknown:
        raise UsageError(f"unknown task {unknown[0]!r} for suite {config.data.suite} "
                         f"(known: {', '.join(sorted(tasks))})")
    return [v for v in suite if v.task in config.data.tasks]


def check_config(config: Config) -> list[Variation]:
    """Names the config refers to must exist; returns the selected variations."""
    cameras = simulator_cameras(config.env.simulator)
    if config.env.observer_view != "fixed" and config.env.simulator != "metaworld":
        raise UsageError(f"env.observer_view={config.env.observer_view} needs free cameras, which only the "
                         f"metaworld simulator offers")
    named = config.env.observer_cameras if config.env.observer_view == "fixed" else []
    for cam in [*named, *config.env.agent_cameras]:
        if cam not in cameras:
            raise UsageError(f"unknown camera {cam!r} (known: {', '.join(cameras)})")
    return select_variations(config)


# ---------------------------------------------------------------------------------------------- episode

def run_expert_episode(env, variation: Variation, seed: int, max_steps: int, observer: list[str],
                       agent: list[str]) -> tuple[dict[str, np.ndarray] | None, int]:
    """Roll the scripted expert out until success; returns (arrays, steps), arrays None on failure. The observer
    views' poses are `env.observer_poses` after the call.

    Observations are recorded before every action and once after the last (T + 1 frames), so the
    observer clip ends on the finished task.
    """
    obs = env.reset(variation, seed)
    frames, proprio, actions, rewards = [obs.images], [obs.proprio], [], []
    for _ in range(max_steps):
        action = env.expert_action()
        obs, reward, success = env.step(action)
        frames.append(obs.images)
        proprio.append(obs.proprio)
        actions.append(action)
        rewards.append(reward)
        if success:
            break
    else:
        return None, max_steps
    arrays = {f"observer.{c}": np.stack([f[c] for f in frames]) for c in observer}
    arrays |= {f"agent.{c}": np.stack([f[c] for f in frames]) for c in agent}
    arrays |= {"proprio": np.stack(proprio), "actions": np.stack(actions),
               "rewards": np.asarray(rewards, np.float32)}
    return arrays, len(actions)


# ----------------------------------------------------------------------------------------------- worker

@dataclass(frozen=True)
class Job:
    variation: Variation
    split: str
    k: int
    scene_seed: int

    @property
    def episode_id(self) -> str:
        return f"{self.variation.id}/{self.split}-{self.k:04d}"


_WORKER: dict = {}


def die_with_parent() -> None:
    # A worker orphaned by a killed parent must not go on writing into a dataset that is being resumed.
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_worker(config: Config, root: str) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent
    _WORKER.update(config=config, root=Path(root), envs={})


def collect(job: Job) -> dict:
    """Worker entry point: one expert attempt; a success is written to the store, a failure recorded."""
    config, root, envs = _WORKER["config"], _WORKER["root"], _WORKER["envs"]
    e = config.env
    env = envs.get(job.variation.task)
    if env is None:
        env = envs[job.variation.task] = make_env(e.simulator, job.variation.task, e.image_size,
                                                  [*e.observers, *e.agent_cameras], e.fidelity)
    arrays, steps = run_expert_episode(env, job.variation, job.scene_seed, e.max_steps, e.observers,
                                       e.agent_cameras)
    record = {"variation": job.variation.id, "split": job.split, "k": job.k, "scene_seed": job.scene_seed,
              "length": steps}
    if e.observer_view != "fixed":  # where the observer stood, so anyone can render the episode again
        record["observer_view"] = env.observer_poses[e.observer_view].to_dict()
    if arrays is None:
        path = root / ATTEMPTS / f"{job.episode_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**record, "success": False})
        return {**record, "success": False}
    meta = write_episode(root, job.episode_id, arrays, {**record, "success": True})
    return meta


# ------------------------------------------------------------------------------------------------ driver

def prepare_output(root: Path, identity: dict) -> None:
    """Create DIR, or accept an existing one only if it holds this same dataset (finished or not)."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"output path is a file, not a directory: {root}")
    if root.is_dir() and any(root.iterdir()):
        if not (root / CONFIG).is_file():
            raise UsageError(f"output directory is not empty and holds no mirroralign dataset: {root}")
        stored = read_json(root / CONFIG, "dataset config")
        if stored.get("identity") != identity:
            raise UsageError(f"{root} holds a dataset made with a different config; use another --out")
        return
    require_writable(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / CONFIG, {"format": FORMAT, "version": VERSION, "identity": identity})


def _known_results(root: Path) -> dict[str, dict]:
    """Attempts finished by an earlier (possibly killed) run; unfinished leftovers are removed."""
    known = {}
    leftovers = [p for p in root.iterdir() if is_atomic_write_leftover(p.name)]  # e.g. the text embeddings'
    for tmp in leftovers + list((root / EPISODES).glob("*/.tmp-*")) + list((root / ATTEMPTS).glob("*/.*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    for meta_path in (root / EPISODES).glob(f"*/*/{META}"):
        try:
            meta = read_json(meta_path, "episode meta")
            known[meta["id"]] = meta
        except (DataError, KeyError):
            shutil.rmtree(meta_path.parent, ignore_errors=True)  # will be collected again
    for path in (root / ATTEMPTS).glob("*/*.json"):
        try:
            rec = read_json(path, "attempt record")
            known[f"{rec['variation']}/{rec['split']}-{rec['k']:04d}"] = rec
        except (DataError, KeyError):
            path.unlink(missing_ok=True)
    return known


def generate(config: Config, out: str | Path, progress: bool = True) -> Path:
    """Collect the dataset described by `config` into `out` (resuming whatever is already there)."""
    variations = check_config(config)
    root = Path(out)
    prepare_output(root, config.dataset_identity())
    if (root / MANIFEST).is_file():
        return root  # already complete
    d = config.data
    need = split_counts(d.episodes, d.val_fraction, d.test_fraction)
    known = _known_results(root)
    groups = [(v, s) for v in variations for s in SPLITS if need[s] > 0]
    state = {(v.id, s): {"next_k": 0, "ok": [], "failed": 0, "inflight": 0} for v, s in groups}
    max_attempts = 3 * max(need.values()) + 10
    total = sum(need[s] for _, s in groups)

    pool = ProcessPoolExecutor(max_workers=d.workers, mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(config, str(root)))
    pending = {}
    bar = tqdm(total=total, desc=f"generate {d.suite}", unit="ep", disable=not progress)

    def record(st, result):
        if result["success"]:
            st["ok"].append(result)
            bar.update(1)
        else:
            st["failed"] += 1
            bar.set_postfix(expert_failures=sum(s["failed"] for s in state.values()))

    def schedule(v: Variation, split: str):
        st = state[(v.id, split)]
        while len(st["ok"]) + st["inflight"] < need[split]:
            if st["next_k"] >= max_attempts:
                raise DataError(f"the scripted expert failed {st['failed']} times on {v.id} ({split}); "
                                f"raise env.max_steps or check the variation")
            job = Job(v, split, st["next_k"], scene_seed(d.seed, split, st["next_k"]))
            st["next_k"] += 1
            if job.episode_id in known:
                record(st, known[job.episode_id])
            else:
                pending[pool.submit(collect, job)] = (v, split)
                st["inflight"] += 1

    try:
        for v, s in groups:
            schedule(v, s)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                v, s = pending.pop(fut)
                state[(v.id, s)]["inflight"] -= 1
                record(state[(v.id, s)], fut.result())
                schedule(v, s)
    finally:
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)

    text_files = write_text_embeddings(root, variations)  # before the manifest, which holds its checksum
    _write_manifest(root, config, variations, state, need, text_files)
    return root


def _write_manifest(root: Path, config: Config, variations: list[Variation], state: dict, need: dict,
                    text_files: dict[str, str]) -> None:
    episodes, splits = {}, {s: [] for s in SPLITS}
    attempts = {}
    for v in variations:
        attempts[v.id] = {"successes": 0, "failures": 0}
        for s in SPLITS:
            st = state.get((v.id, s))
            if st is None:
                continue
            attempts[v.id]["successes"] += len(st["ok"])
            attempts[v.id]["failures"] += st["failed"]
            for meta in sorted(st["ok"], key=lambda m: m["k"]):
                eid = meta["id"]
                keys = ("variation", "split", "k", "scene_seed", "length", "files", "observer_view")
                episodes[eid] = {key: meta[key] for key in keys if key in meta}
                episodes[eid]["meta_sha256"] = sha256_file(episode_path(root, eid) / META)
                splits[s].append(eid)
    # every file outside the episodes has a checksum too (the episodes' are in their entries)
    others = [root / CONFIG, *sorted((root / ATTEMPTS).glob("*/*.json"))]
    files = {str(p.relative_to(root)): sha256_file(p) for p in others} | text_files
    e = config.env
    write_manifest(root, {
        "format": FORMAT, "version": VERSION, "config": config.dataset_identity(),
        "simulator": e.simulator, "image_size": e.image_size,
        "cameras": {"observer": e.observers, "agent": list(e.agent_cameras)}, "observer_view": e.observer_view,
        "variations": [v.to_dict() for v in variations], "episodes_per_split": need,
        "splits": splits, "episodes": episodes, "attempts": attempts,
        "expert_failures": sum(a["failures"] for a in attempts.values()), "files": files,
    })
