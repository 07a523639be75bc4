"""`mirroralign analyze`: representations of both models on the same episodes, the probes, the metrics,
success vs failure of rollouts, and the probe over training checkpoints -> ADIR/analysis.json and
ADIR/representations.safetensors.

Three probes, each also on the untrained models (step 0), so that "spontaneous alignment" is always shown against
what initialisation alone gives:
- `probe`: episode-level, a retrieval counting as right when it has the same instruction (the paper's);
- `probe_blind`: the same with the execution model fed one fixed null instruction, so what it shares with the
  understanding model comes from vision and proprioception alone (the normal probe is at its ceiling before
  training because the policy reads the instruction);
- `probe_time`: each agent step paired with the observer clip window around the same time; right only when it
  finds the very episode and window.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors

from mirroralign.analysis.metrics import all_metrics, mutual_knn
from mirroralign.analysis.probe import chance_recall, probe_scores, recall_at_1, shared_space, train_probe
from mirroralign.stats import mann_whitney, within_group_difference
from mirroralign.data.datasets import ObserverClips, to_chw, uniform_indices, window_bounds
from mirroralign.data.store import (
    EPISODES,
    EpisodeStore,
    load_episode_folder,
    read_json,
    require_writable,
    write_bytes_atomic,
    write_json_atomic,
)
from mirroralign.errors import DataError, UsageError
from mirroralign.evaluate.run import METRICS
from mirroralign.text import TEXT_DIM
from mirroralign.train import CHECKPOINTS, CONDITION_PART, LoadedRun, build_models, load_run

STEPS_PER_EPISODE = 8  # the execution representation of an episode: the mean over this many evenly spaced steps
WINDOWS_PER_EPISODE = 4  # the time-aligned probe's (step, clip window) pairs per episode
TIME_WINDOW = 16  # its window (steps) when the understanding model was trained on whole episodes
TIME_PROBE_BATCH = 1024  # pairs per step of the time-aligned probe (full batch is quadratic in 4 x train episodes)


def agent_steps(ep: dict, ts: np.ndarray, blind: bool = False, task_dim: int = TEXT_DIM) -> dict:
    """A batch of episode `ep`'s agent steps `ts`; `blind`: the policy is fed the null instruction (zeros of its task
    input's width) instead."""
    steps = {"images": torch.from_numpy(ep["agent"][ts]), "proprio": torch.from_numpy(ep["proprio"][ts]),
             "text_index": torch.full((len(ts),), ep["text_index"])}
    if blind:
        steps["instruction_embedding"] = torch.zeros(len(ts), task_dim)
    return steps


@torch.no_grad()
def episode_representations(u_model, e_model, episodes: list[dict], frames: int,
                            blind: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, Du] of each episode's observer clip and [N, De] mean over evenly spaced agent steps. `episodes`:
    dicts with observer [T+1, 3, H, W], agent [T+1, C, 3, H, W], proprio [T+1, P], length, text_index."""
    us, es = [], []
    for ep in episodes:
        clip = torch.from_numpy(ep["observer"][uniform_indices(0, ep["length"], frames)])[None]
        us.append(u_model.representation({"video": clip})[0])
        ts = uniform_indices(0, ep["length"] - 1, STEPS_PER_EPISODE)
        es.append(e_model.representation(agent_steps(ep, ts, blind, e_model.task_dim)).mean(0))
    return torch.stack(us), torch.stack(es)


@torch.no_grad()
def time_aligned_representations(u_model, e_model, episodes: list[dict], frames: int,
                                 window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per episode, WINDOWS_PER_EPISODE evenly spaced steps t: [N, Du] of the observer clip of the `window`-step window
    around t, [N, De] of the agent step t itself, and [N] the episode of each pair."""
    us, es, episode = [], [], []
    for e, ep in enumerate(episodes):
        ts = uniform_indices(0, ep["length"] - 1, WINDOWS_PER_EPISODE)
        clips = [ep["observer"][uniform_indices(*window_bounds(int(t), window, ep["length"]), frames)] for t in ts]
        us.append(u_model.representation({"video": torch.from_numpy(np.stack(clips))}))
        es.append(e_model.representation(agent_steps(ep, ts)))
        episode += [e] * len(ts)
    return torch.cat(us), torch.cat(es), torch.tensor(episode)


def split_episodes(store: EpisodeStore, split: str) -> tuple[list[dict], torch.Tensor]:
    ds = ObserverClips(store, split, train=False)
    for ep in ds.episodes:
        ep["text_index"] = store.canonical_text[ep["variation"]]
    return ds.episodes, torch.tensor([ep["variation"] for ep in ds.episodes])


def require_rollouts_of(eval_dir: Path, run: LoadedRun) -> None:
    """Success vs failure scores rollouts with the analysed models: they must be rollouts of that very checkpoint
    (an evaluation of another run, or of an earlier checkpoint, would score someone else's successes)."""
    if not (eval_dir / METRICS).is_file():
        raise UsageError(f"{eval_dir} has no {METRICS}: not an evaluation, or one cut short (run `mirroralign "
                         f"evaluate` again)")
    metrics = read_json(eval_dir / METRICS, "evaluation metrics")
    if "checkpoint_sha256" not in metrics:
        raise UsageError(f"{eval_dir / METRICS} does not say which checkpoint it evaluated (written by an older "
                         f"mirroralign): run `mirroralign evaluate` again")
    sha = metrics["checkpoint_sha256"]
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise DataError(f"evaluation metrics damaged: {eval_dir / METRICS} (checkpoint_sha256 {sha!r})")
    if sha != run.checkpoint_sha256:
        raise UsageError(f"the rollouts in {eval_dir} are of checkpoint {sha[:12]} ({metrics.get('run')}, step "
                         f"{metrics.get('step')}), not of the analysed execution model: checkpoint "
                         f"{run.checkpoint_sha256[:12]} ({run.path.resolve()}, step {run.step})")


def rollout_episodes(eval_dir: Path, store: EpisodeStore) -> tuple[list[dict], list[bool]]:
    cams = store.manifest["cameras"]
    episodes, success = [], []
    for folder in sorted((Path(eval_dir) / "rollouts" / EPISODES).glob("*/rollout-*")):
        meta, arrays = load_episode_folder(folder)
        if not isinstance(meta.get("variation_id"), str):
            raise DataError(f"rollout {folder} is damaged (no variation_id)")
        if meta["variation_id"] not in store.variation_index:
            raise UsageError(f"rollout {folder} is of variation {meta['variation_id']!r}, which --data does not "
                             f"have (evaluated on another dataset?)")
        v = store.variation_index[meta["variation_id"]]
        try:  # checksums cover the arrays, not what meta.json says about them
            episode = {"observer": to_chw(arrays[f"observer.{cams['observer'][0]}"]),
                       "agent": to_chw(np.stack([arrays[f"agent.{c}"] for c in cams["agent"]], axis=1)),
                       "proprio": arrays["proprio"], "length": int(meta["steps"]), "variation": v,
                       "text_index": store.canonical_text[v]}
            frames = {len(episode[k]) for k in ("proprio", "observer", "agent")}
            if not 0 < episode["length"] == min(frames) - 1 == max(frames) - 1:
                raise ValueError(f"{episode['length']} steps but {len(episode['proprio'])} frames")
            success.append(bool(meta["success"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"rollout {folder} is damaged ({type(err).__name__}: {err})") from None
        episodes.append(episode)
    if not episodes:
        raise UsageError(f"no rollouts in {eval_dir} (run `mirroralign evaluate` on an execute or mirror run)")
    return episodes, success


def pick_models(runs: list[LoadedRun]) -> tuple:
    modes = sorted(r.mode for r in runs)
    if modes == ["mirror"]:
        return runs[0].models["understanding"], runs[0].models["execution"]
    if modes == ["execute", "understand"]:
        by_mode = {r.mode: r for r in runs}
        return by_mode["understand"].models["understanding"], by_mode["execute"].models["execution"]
    raise UsageError(f"analyze takes one mirror run, or an understand run and an execute run (got: {', '.join(modes)})")


def understanding_run(runs: list[LoadedRun]) -> LoadedRun:
    return next(r for r in runs if r.mode in ("mirror", "understand"))


def execution_run(runs: list[LoadedRun]) -> LoadedRun:
    return next(r for r in runs if r.mode in ("mirror", "execute"))


def _representations_at(runs: list[LoadedRun], frames, train_eps, test_eps, blind: bool = False):
    u_model, e_model = pick_models(runs)
    return episode_representations(u_model, e_model, train_eps, frames, blind), \
        episode_representations(u_model, e_model, test_eps, frames, blind)


def time_window(runs: list[LoadedRun]) -> int:
    """The clip window the understanding model was trained on, else TIME_WINDOW."""
    return understanding_run(runs).config.train.clip_window or TIME_WINDOW


def control_probes(runs, frames, train_eps, train_groups, test_eps, test_labels) -> dict:
    """The instruction-blind and the time-aligned probes (see the module's docstring)."""
    (tu, te), (su, se) = _representations_at(runs, frames, train_eps, test_eps, blind=True)
    blind, _ = probe_scores(tu, te, train_groups, su, se, test_labels)
    u_model, e_model = pick_models(runs)
    window = time_window(runs)
    tu, te, _ = time_aligned_representations(u_model, e_model, train_eps, frames, window)
    su, se, episode = time_aligned_representations(u_model, e_model, test_eps, frames, window)
    return {"probe_blind": blind, "probe_time": time_aligned_scores(tu, te, su, se, episode, window)}


def time_aligned_scores(train_u, train_e, test_u, test_e, test_episode, window: int) -> dict:
    """Probe trained with each (clip window, step) pair its own positive; Recall@1 of the very pair (episode and time
    window) both ways, of the right episode at any time, and their chance levels."""
    probe = train_probe(train_u, train_e, None, batch_size=TIME_PROBE_BATCH)
    a, b = shared_space(probe, test_u, test_e)
    pair = torch.arange(len(test_u))
    return {"r1_u2e": recall_at_1(a, b, pair), "r1_e2u": recall_at_1(b, a, pair), "chance": 1 / len(test_u),
            "r1_episode_u2e": recall_at_1(a, b, test_episode), "r1_episode_e2u": recall_at_1(b, a, test_episode),
            "chance_episode": chance_recall(test_episode), "window": window,
            "windows_per_episode": WINDOWS_PER_EPISODE,
            "batch_size": min(TIME_PROBE_BATCH, len(train_u)), "n_train": len(train_u), "n_test": len(test_u)}


def analyze(run_dirs: list[str | Path], data: str | Path, out: str | Path, rollouts: str | Path | None = None,
            k: int = 10) -> Path:
    if not 1 <= len(run_dirs) <= 2:
        raise UsageError("analyze takes one mirror run, or an understand run and an execute run")
    runs = [load_run(r) for r in run_dirs]
    pick_models(runs)  # validates the modes before anything is computed or written
    try:
        store = EpisodeStore(data)
    except DataError as err:
        raise UsageError(f"--data is not a verified dataset: {err}") from None
    for r in runs:
        r.require_same_tasks(store)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path is a file: {out}")
    require_writable(out)
    frames = understanding_run(runs).config.model.understanding.frames  # the clip length it was trained on
    train_eps, train_groups = split_episodes(store, "train")
    test_eps, test_labels = split_episodes(store, "test")
    if len(test_eps) < 4:
        raise UsageError(f"the test split has {len(test_eps)} episodes; the metrics need at least 4")
    k = min(k, len(test_eps) - 1)
    if rollouts is not None:  # read (and checked) before any work
        require_rollouts_of(Path(rollouts), execution_run(runs))
        episodes, success = rollout_episodes(Path(rollouts), store)

    (train_u, train_e), (test_u, test_e) = _representations_at(runs, frames, train_eps, test_eps)
    probe, probe_model = probe_scores(train_u, train_e, train_groups, test_u, test_e, test_labels)
    shared_u, shared_e = shared_space(probe_model, test_u, test_e)
    controls = control_probes(runs, frames, train_eps, train_groups, test_eps, test_labels)
    result = {"runs": {r.mode: str(r.path.resolve()) for r in runs}, "data": str(store.root), "k": k,
              "probe": probe, **controls, **all_metrics(test_u, test_e, k)}
    if runs[0].mode == "mirror":  # retrieval in the space the aligner was trained for
        a, b = runs[0].models["aligner"].project(test_u, test_e)
        result["aligner"] = {"r1_u2e": recall_at_1(a, b, test_labels), "r1_e2u": recall_at_1(b, a, test_labels)}

    if rollouts is not None:
        u_model, e_model = pick_models(runs)
        ru, re = shared_space(probe_model, *episode_representations(u_model, e_model, episodes, frames))
        score = F.cosine_similarity(ru, re).tolist()
        ok = [s for s, good in zip(score, success) if good]
        bad = [s for s, good in zip(score, success) if not good]
        result["success_vs_failure"] = {"success_scores": ok, "failure_scores": bad,
                                        "mean_success": float(np.mean(ok)) if ok else None,
                                        "mean_failure": float(np.mean(bad)) if bad else None,
                                        **mann_whitney(ok, bad),
                                        "within_variation": within_group_difference(
                                            score, success, [store.variations[e["variation"]].id for e in episodes])}

    init = [initialized(r) for r in runs]  # every probe at step 0 too: what initialisation alone gives
    (tu, te), (su, se) = _representations_at(init, frames, train_eps, test_eps)
    init_probe = probe_scores(tu, te, train_groups, su, se, test_labels)[0]
    known = {0: row(0, init_probe, mutual_knn(su, se, k))}  # rows computed above are not computed again
    if len({r.step for r in runs}) == 1:  # the analysed models are the checkpoints of one step
        known[runs[0].step] = row(runs[0].step, probe, result["mutual_knn"])
    result["over_training"] = over_training(runs, frames, train_eps, train_groups, test_eps, test_labels, k, known)
    result["at_init"] = {"probe": init_probe,
                         **control_probes(init, frames, train_eps, train_groups, test_eps, test_labels)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").unlink(missing_ok=True)  # written last: a rerun cut short never pairs old with new
    write_bytes_atomic(out / "representations.safetensors", save_safetensors(
        {"understanding": test_u.contiguous(), "execution": test_e.contiguous(), "instruction_id": test_labels,
         "episode_id": torch.arange(len(test_eps)), "shared_understanding": shared_u.contiguous(),
         "shared_execution": shared_e.contiguous()}))
    write_json_atomic(out / "analysis.json", result)
    return out


def initialized(run: LoadedRun) -> LoadedRun:
    """The run's models as training created them, before step 1 (same seed, same order as `train`); the
    caller's random state is left as it was. An execute run told by video starts from a trained, frozen
    understanding model (train.condition_run): at step 0 its policy already reads that model, not a random one."""
    with torch.random.fork_rng():
        torch.manual_seed(run.config.train.seed)
        models = build_models(run.config, run.mode, run.store)
    if CONDITION_PART in models:
        models[CONDITION_PART].load_state_dict(run.models[CONDITION_PART].state_dict())
    return replace(run, models=models.eval(), step=0, checkpoint_sha256=None)


def over_training(runs, frames, train_eps, train_groups, test_eps, test_labels, k,
                  known: dict | None = None) -> list[dict]:
    """The probe's Recall@1 and mutual k-NN at initialization (step 0: what the probe finds in untrained
    models, the baseline for "alignment emerges") and at every checkpoint step the run(s) share; `known`: rows
    already computed, by step (the same seeds give the same numbers)."""
    known = known or {}
    steps = set.intersection(*[{p.name for p in (r.path / CHECKPOINTS).glob("step_*.json")} for r in runs])
    rows = []
    for name in [None, *sorted(steps)]:  # None: initialization
        step = 0 if name is None else int(name.removeprefix("step_").removesuffix(".json"))
        if step in known:
            rows.append(known[step])
            continue
        at = [initialized(r) if name is None else load_run(r.path, checkpoint=name) for r in runs]
        rows.append(alignment_row(at, frames, train_eps, train_groups, test_eps, test_labels, k))
    return rows


def row(step: int, scores: dict, knn: float) -> dict:
    return {"step": step, "r1_u2e": scores["r1_u2e"], "r1_e2u": scores["r1_e2u"], "mutual_knn": knn}


def alignment_row(runs, frames, train_eps, train_groups, test_eps, test_labels, k) -> dict:
    """The probe's Recall@1 (a fresh probe on these models' train representations) and mutual k-NN."""
    (tu, te), (su, se) = _representations_at(runs, frames, train_eps, test_eps)
    scores, _ = probe_scores(tu, te, train_groups, su, se, test_labels)
    return row(runs[0].step, scores, mutual_knn(su, se, k))
