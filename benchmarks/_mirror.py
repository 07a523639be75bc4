"""Shared by mirror_effect.py and ablations.py: one arm of the comparison for one seed, cached by config.

An *arm* is either the independent baseline (an `understand` run and an `execute` run) or a `mirror` run with
some overrides. Every artefact lives under ROOT in a directory named by a hash of its resolved config, so a
re-run (or another script asking for the same run) reuses it: train resumes from its last checkpoint, an
evaluation or analysis with a metrics file is read back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from mirroralign.analysis.probe import recall_at_1
from mirroralign.analysis.run import analyze
from mirroralign.config import Config, load_config
from mirroralign.data.generate import generate
from mirroralign.data.store import EpisodeStore
from mirroralign.evaluate.run import evaluate
from mirroralign.stats import mean_ci, paired_t, proportion_ci
from mirroralign.train import train

UNSEEN_VIEW = "corner2"  # neither the observer camera (corner) nor an agent camera (corner3, gripperPOV)


def config_for(preset: str, seed: int, overrides: list[str]) -> Config:
    return load_config(preset, overrides=[f"train.seed={seed}", *overrides])


def generated(preset: str, data: Path) -> None:
    """The preset's dataset at `data`: generated, or resumed (at once when complete), then verified."""
    generate(config_for(preset, 0, []), data)
    if EpisodeStore(data).verify():
        raise SystemExit(f"dataset {data} failed verification")


def config_key(config: Config, mode: str) -> str:
    text = json.dumps({"mode": mode, "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def trained(config: Config, mode: str, data: Path, root: Path) -> Path:
    run = root / "runs" / f"{mode}-seed{config.train.seed}-{config_key(config, mode)}"
    return train(config, mode, data, run)


def eval_dir(run: Path, root: Path, view: str | None = None) -> Path:
    return root / "eval" / f"{run.name}-{view or 'train-view'}"


def evaluated(run: Path, data: Path, root: Path, view: str | None = None, rollouts: bool = True) -> dict:
    out = eval_dir(run, root, view)
    if not (out / "metrics.json").is_file():
        evaluate(run, data, out, view=view, rollouts=rollouts)
    return _read(out / "metrics.json")


def analysis_dir(runs: list[Path], root: Path) -> Path:
    return root / "analysis" / "+".join(r.name for r in runs)


def analyzed(runs: list[Path], data: Path, root: Path, rollouts_of: Path) -> dict:
    out = analysis_dir(runs, root)
    if not (out / "analysis.json").is_file():
        analyze(runs, data, out, rollouts=rollouts_of)
    analysis = _read(out / "analysis.json")
    if "r1_episode_u2e" not in analysis["probe"]:  # made before analyze counted it: from the stored shared space
        reps = load_file(str(out / "representations.safetensors"))
        u, e, episode = reps["shared_understanding"], reps["shared_execution"], reps["episode_id"]
        analysis["probe"].update(r1_episode_u2e=recall_at_1(u, e, episode), r1_episode_e2u=recall_at_1(e, u, episode),
                                 chance_episode=1 / len(episode))
    return analysis


def arm_metrics(recognition: dict, recognition_unseen: dict | None, rollouts: dict, analysis: dict) -> dict:
    """The numbers one arm contributes for one seed (fractions in [0, 1], metrics in their own units; None for
    what was not measured)."""
    sf = analysis.get("success_vs_failure", {})
    return {
        "recognition": recognition["recognition"]["top1"],
        "recognition_unseen_view": recognition_unseen["recognition"]["top1"] if recognition_unseen else None,
        "recognition_early": recognition["recognition_early"]["top1"],
        "success": rollouts["rollouts"]["success_rate"],
        "probe_r1_u2e": analysis["probe"]["r1_u2e"],
        "probe_r1_e2u": analysis["probe"]["r1_e2u"],
        "probe_r1_episode_u2e": analysis["probe"]["r1_episode_u2e"],  # the very episode, not only its instruction
        "probe_r1_episode_e2u": analysis["probe"]["r1_episode_e2u"],
        "mutual_knn": analysis["mutual_knn"],
        "cka": analysis["cka"],
        "cknna": analysis["cknna"],
        "success_vs_failure_rank_biserial": sf.get("rank_biserial"),
        "success_vs_failure_p": sf.get("p_value"),
        "_probe_chance": analysis["probe"]["chance"],  # "_": reported, not compared between arms
        "_probe_chance_episode": analysis["probe"]["chance_episode"],
        "_rollout_outcomes": [bool(e["success"]) for e in  # in scene order, so that two arms pair up
                              sorted(rollouts["rollouts"]["episodes"], key=lambda e: (e["variation_id"], e["k"]))],
    }


def baseline_arm(preset: str, seed: int, data: Path, root: Path) -> tuple[dict, dict]:
    """Independent understand + execute runs. Returns (metrics, paths)."""
    config = config_for(preset, seed, [])
    execute = trained(config, "execute", data, root)
    rollouts = evaluated(execute, data, root)  # first: the success rate is the slowest number to see
    understand = trained(config, "understand", data, root)
    recognition = evaluated(understand, data, root)
    unseen = evaluated(understand, data, root, view=UNSEEN_VIEW)
    analysis = analyzed([understand, execute], data, root, rollouts_of=eval_dir(execute, root))
    paths = {"runs": [understand, execute], "analysis": analysis_dir([understand, execute], root),
             "evals": [eval_dir(execute, root), eval_dir(understand, root), eval_dir(understand, root, UNSEEN_VIEW)]}
    return arm_metrics(recognition, unseen, rollouts, analysis), paths


def mirror_arm(preset: str, seed: int, overrides: list[str], data: Path, root: Path,
               unseen_view: bool = True) -> tuple[dict, dict]:
    """A mirror run with `overrides`. `unseen_view=False` skips the replay from UNSEEN_VIEW (minutes per run)."""
    config = config_for(preset, seed, overrides)
    mirror = trained(config, "mirror", data, root)
    both = evaluated(mirror, data, root)  # recognition and rollouts from the same run
    unseen = evaluated(mirror, data, root, view=UNSEEN_VIEW, rollouts=False) if unseen_view else None
    analysis = analyzed([mirror], data, root, rollouts_of=eval_dir(mirror, root))
    paths = {"runs": [mirror], "analysis": analysis_dir([mirror], root),
             "evals": [eval_dir(mirror, root)] + ([eval_dir(mirror, root, UNSEEN_VIEW)] if unseen_view else [])}
    return arm_metrics(both, unseen, both, analysis), paths


def paired_on_rollouts(a: dict, b: dict) -> dict:
    """a - b success on the rollouts both ran (outcomes keyed by rollout: one test scene of one variation; per
    rollout +1 gained, -1 lost, 0 kept), in points, with a t 95 % CI over those rollouts: one seed's own evidence
    (the benchmark's unit of replication stays the seed)."""
    keys = sorted(set(a) & set(b))
    diff = np.array([int(a[k]) - int(b[k]) for k in keys])
    ci = paired_t(100 * diff)
    return {"mean": ci["mean"], "low": ci["low"], "high": ci["high"], "scenes": len(diff),
            "gained": int((diff > 0).sum()), "lost": int((diff < 0).sum())}


def seed_ci(values) -> dict:
    """Mean and Student-t 95 % CI over seeds (mirroralign.stats.paired_t; the seed is the unit of replication: a
    bootstrap over 3 seeds would be far too narrow)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) < 2 or np.ptp(x) < 1e-6:  # no spread (float32 rounding aside): a t-interval would claim certainty
        return {"mean": float(x.mean()) if len(x) else None, "low": None, "high": None, "n": len(x)}
    return {k: v for k, v in paired_t(x).items() if k in ("mean", "low", "high", "n")}


def compare(baseline: list[dict], treatment: list[dict]) -> dict:
    """Per metric: per-seed values, mean and t-CI of both arms and of the paired (treatment - baseline)
    difference. Success is also pooled over every rollout episode (same scenes in both arms, so paired)."""
    out = {}
    for key in [k for k in baseline[0] if not k.startswith("_")]:
        b, t = [s[key] for s in baseline], [s[key] for s in treatment]
        diff = [y - x for x, y in zip(b, t) if x is not None and y is not None]
        out[key] = {"baseline": {"per_seed": b, **seed_ci(b)}, "treatment": {"per_seed": t, **seed_ci(t)},
                    "difference": {"per_seed": diff, **seed_ci(diff)}}
    b_eps = np.concatenate([s["_rollout_outcomes"] for s in baseline]).astype(float)
    t_eps = np.concatenate([s["_rollout_outcomes"] for s in treatment]).astype(float)
    if len(b_eps) == len(t_eps):
        out["success_pooled"] = {"baseline": proportion_ci(b_eps), "treatment": proportion_ci(t_eps),
                                 "difference": mean_ci(t_eps - b_eps)}
    return out


def pct(entry: dict, signed: bool = False) -> str:
    """A fraction as percent with its CI, e.g. `45.0 [35.8, 54.2]`; `signed` for differences (`+2.5 [...]`)."""
    f = "+.1f" if signed else ".1f"
    if entry["mean"] is None:
        return "n/a"
    if entry["low"] is None:
        why = "1 seed" if entry["n"] < 2 else f"same on all {entry['n']} seeds"
        return f"{100 * entry['mean']:{f}} ({why}, no CI)"
    lowest = -100 if signed else 0  # a t-interval can run past what a percentage can be: shown clipped
    low, high = max(100 * entry["low"], lowest), min(100 * entry["high"], 100)
    return f"{100 * entry['mean']:{f}} [{low:{f}}, {high:{f}}]"


def signed_pct(entry: dict) -> str:
    return pct(entry, signed=True)
