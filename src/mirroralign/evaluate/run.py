"""`mirroralign evaluate`: recognition (understand / mirror runs) and rollouts (execute / mirror runs) into
EVAL/metrics.json, rollout episodes into EVAL/rollouts (store format), a few mp4 videos into EVAL/videos."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from mirroralign.stats import proportion_ci
from mirroralign.data.datasets import empty_split_error
from mirroralign.data.generate import scene_seed
from mirroralign.data.store import EpisodeStore, read_json, require_writable, write_episode, write_json_atomic
from mirroralign.envs import check_simulator
from mirroralign.errors import DataError, UsageError
from mirroralign.evaluate.conditioning import Conditioning
from mirroralign.evaluate.recognition import known_views, recognition_scores, test_clips
from mirroralign.evaluate.rollouts import run_rollouts
from mirroralign.train import CHECKPOINTS, conditioning_model, load_run, read_checkpoint_record

METRICS = "metrics.json"
OUTPUTS = (METRICS, "rollouts", "videos")  # what an evaluation directory holds; a rerun replaces them
EPISODE_KEYS = ("variation_id", "k", "scene_seed", "success", "steps")
CONDITION_KEYS = ("demo", "shown_success")  # a rollout told by a clip: which one, and (sibling) what it did


def write_mp4(path: Path, frames: np.ndarray, fps: int = 20) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def rollout_metrics(records: list[dict], store: EpisodeStore) -> dict:
    success = [r["success"] for r in records]
    by_variation, by_task = defaultdict(list), defaultdict(list)
    for r in records:
        by_variation[r["variation_id"]].append(r["success"])
        by_task[store.variations[r["variation"]].task].append(r["success"])
    rates = lambda groups: {k: {"success_rate": float(np.mean(v)), "n": len(v)} for k, v in groups.items()}  # noqa: E731
    ci = proportion_ci(success)
    return {"success_rate": ci["mean"], "ci95": [ci["low"], ci["high"]], "n": len(records),
            "per_variation": rates(by_variation), "per_task": rates(by_task),
            "episodes": [rollout_meta(r) for r in records]}


def rollout_meta(record: dict) -> dict:
    return {k: record[k] for k in (*EPISODE_KEYS, *CONDITION_KEYS) if k in record}


def is_evaluation_of(out: Path, run: Path) -> bool:
    """Whether OUT holds a finished evaluation of RUN's latest checkpoint (a rerun may keep it)."""
    try:
        done = read_json(Path(out) / METRICS, "evaluation metrics").get("checkpoint_sha256")
        return done == read_checkpoint_record(Path(run) / CHECKPOINTS / "latest.json").get("sha256")
    except DataError:  # missing or unreadable: evaluate again
        return False


def rolled_out(store, variations: list[str] | None) -> list[int]:
    """The indices of the variations to roll out: all, or the named ones (in the suite's order)."""
    if variations is None:
        return list(range(len(store.variations)))
    unknown = sorted(set(variations) - set(store.variation_index))
    if unknown or not variations:
        ids = [v.id for v in store.variations]
        raise UsageError(f"--variations: {', '.join(unknown) or 'none given'} not in this dataset "
                         f"({len(ids)} variations, e.g. {', '.join(ids[:3])})")
    return sorted({store.variation_index[v] for v in variations})


def evaluate(run: str | Path, data: str | Path, out: str | Path, view: str | None = None,
             episodes: int | None = None, workers: int | None = None, progress: bool = True,
             rollouts: bool = True, condition: str = "text", demo_split: str | None = None,
             demo_view: str | None = None, variations: list[str] | None = None) -> Path:
    """`variations`: roll out only these variation ids (recognition still scores every test clip)."""
    loaded = load_run(run)
    try:
        store = EpisodeStore(data)
    except DataError as err:
        raise UsageError(f"--data is not a verified dataset: {err}") from None
    loaded.require_same_tasks(store)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(p.name not in OUTPUTS for p in out.iterdir())):
        raise UsageError(f"output exists and is not an evaluation directory: {out}")
    require_writable(out)
    if not rollouts and "understanding" not in loaded.models:
        raise UsageError(f"--no-rollouts leaves nothing to evaluate: {loaded.mode} runs have no recognition model")
    config = loaded.config
    if workers is not None:
        config.eval.workers = workers
    if episodes is not None and episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {episodes}")
    if workers is not None and workers <= 0:
        raise UsageError(f"--workers must be positive, got {workers}")
    observers = store.manifest["cameras"]["observer"]
    view = view or observers[0]
    # an import without a simulator (LeRobot) renders nothing: its recorded cameras are all there is
    known = known_views(store.manifest["simulator"]) or (*observers, *store.manifest["cameras"]["agent"])
    if view not in known:
        raise UsageError(f"unknown camera or view {view!r} (known: {', '.join(known)})")
    if "understanding" in loaded.models and not store.episode_ids("test"):
        raise empty_split_error(store, "test", "recognition is scored on")
    if "understanding" in loaded.models and view not in observers and any(
            store.episodes[e]["scene_seed"] is None for e in store.episode_ids("test")):
        # another view is re-rendered by replaying each episode from its scene seed; imports have none
        raise UsageError(f"recognition from {view!r} replays the test episodes, but they have no scene seeds "
                         f"(recorded elsewhere, e.g. imported): use a recorded observer camera "
                         f"({', '.join(observers)})")
    if rollouts and "execution" in loaded.models:  # e.g. RLBench data without CoppeliaSim: say so before any work
        try:
            check_simulator(store.manifest["simulator"])
        except UsageError as err:
            raise UsageError(f"{err} (--no-rollouts evaluates recognition alone)") from None
    # the test scenes of --data (imports have no generator seed: then the run's)
    seed = store.config.get("data", {}).get("seed", config.data.seed)
    if condition != "text" and not (rollouts and "execution" in loaded.models):
        raise UsageError(f"--condition {condition} tells a policy its task in rollouts: this evaluation has none")
    if variations is not None and not (rollouts and "execution" in loaded.models):
        raise UsageError("--variations picks the variations rolled out: this evaluation has no rollouts")
    told_by_video = config.train.condition != "text"
    rolled = rolled_out(store, variations)
    plan = [(i, k, scene_seed(seed, "test", k)) for i in rolled for k in range(episodes or config.eval.episodes)]
    conditioning = Conditioning(store, condition, loaded.models["execution"] if "execution" in loaded.models else None,
                                conditioning_model(loaded.models) if told_by_video else None, plan, seed,
                                config.model.understanding.frames, demo_split, demo_view)
    metrics = {"run": str(loaded.path.resolve()), "mode": loaded.mode, "step": loaded.step,
               "checkpoint_sha256": loaded.checkpoint_sha256, "data": str(store.root),
               "condition": {**conditioning.record(), "trained": config.train.condition}}
    ids, tasks = [v.id for v in store.variations], [v.task for v in store.variations]

    if "understanding" in loaded.models:
        model, frames = loaded.models["understanding"], config.model.understanding.frames
        early = config.eval.early_fraction
        (videos, labels), (early_videos, _) = test_clips(store, view, frames, (1.0, early), progress=progress)
        metrics["recognition"] = {**recognition_scores(model, videos, labels, ids, tasks), "view": view}
        metrics["recognition_early"] = {**recognition_scores(model, early_videos, labels, ids, tasks), "view": view,
                                        "fraction": early}
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(missing_ok=True)  # first: an interrupted rerun must not leave metrics of old rollouts
    for name in OUTPUTS[1:]:
        shutil.rmtree(out / name, ignore_errors=True)
    if rollouts and "execution" in loaded.models:
        told = {"plan": plan} if condition == "text" else {"plan": conditioning.plan, "act": conditioning.act_hook()}
        records, stats = run_rollouts(loaded.models["execution"], store, config, seed=seed, episodes=episodes,
                                      progress=progress, **told)
        conditioning.annotate(records)
        metrics["rollouts"] = {**rollout_metrics(records, store), **stats,
                               "variations_subset": None if variations is None else [store.variations[i].id
                                                                                     for i in rolled]}
        if condition == "sibling":  # how often the rollout did what it was shown instead
            scored = [r["shown_success"] for r in records if r["shown_success"] is not None]
            ci = proportion_ci(scored) if scored else {"mean": None, "low": None, "high": None}
            metrics["rollouts"]["shown_variation"] = {"success_rate": ci["mean"], "ci95": [ci["low"], ci["high"]],
                                                      "n_scored": len(scored), "n": len(records)}
        (out / "videos").mkdir(exist_ok=True)
        for r in records:
            eid = f"{r['variation_id']}/rollout-{r['k']:04d}"
            meta = rollout_meta(r)
            write_episode(out / "rollouts", eid, r["arrays"], meta)
        for r in records[:: max(1, len(records) // max(1, config.eval.videos))][: config.eval.videos]:
            name = f"{r['variation_id']}-{r['k']:04d}-{'success' if r['success'] else 'failure'}"
            for key, arr in r["arrays"].items():
                if key.startswith(("observer.", "agent.")):
                    write_mp4(out / "videos" / f"{name}-{key}.mp4", arr)
    write_json_atomic(out / METRICS, metrics)
    return out
