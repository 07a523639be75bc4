"""Calibration of the `fine` preset (one seed): are the baselines off their ceiling and floor?

Targets (issue "Observers that move"): per-task recognition from `train` views between 40 % and 85 %, from `held-out`
views at least 3x chance and below the `train`-view figure, and the execution baseline's success between 25 % and
75 %. Each attempt is a named list of overrides of the preset; runs, evaluations and analyses are cached by config
(benchmarks/_mirror.py), so a rerun resumes. Results: benchmarks/results/fine_calibration.{json,md}, one entry per
attempt, in the order run.

    python benchmarks/calibrate_fine.py --data /work/data/fine --root /work/data/calib \\
        --attempt base --attempt frames12:model.understanding.frames=12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, machine, write_results
from _mirror import analysis_dir, analyzed, config_for, eval_dir, evaluated, trained

TARGETS = {"recognition_per_task_train": (0.40, 0.85), "success": (0.25, 0.75)}


def attempt(name: str, overrides: list[str], data: Path, root: Path, analyse: bool, understand_only: bool) -> dict:
    config = config_for("fine", 0, overrides)
    seconds, t = {}, time.monotonic()

    def lap(stage):
        nonlocal t
        seconds[stage] = round(time.monotonic() - t, 1)
        t = time.monotonic()

    understand = trained(config, "understand", data, root)
    lap("train_understand")
    train_view = evaluated(understand, data, root, rollouts=False)
    lap("recognition_train_view")
    held_out = evaluated(understand, data, root, view="held-out", rollouts=False)
    lap("recognition_held_out")
    r, h = train_view["recognition"], held_out["recognition"]
    ro = {"success_rate": None, "ci95": [None, None], "n": 0, "per_task": {}}
    if not understand_only:
        execute = trained(config, "execute", data, root)
        lap("train_execute")
        ro = evaluated(execute, data, root)["rollouts"]
        lap("rollouts")
    result = {
        "attempt": name, "overrides": overrides, "seconds": seconds,
        "recognition_per_task_train": r["per_task_top1"], "recognition_per_task_heldout": h["per_task_top1"],
        "chance_per_task": r["chance_per_task"], "recognition_all_train": r["top1"],
        "recognition_all_heldout": h["top1"], "chance_all": r["chance"],
        "recognition_early_train": train_view["recognition_early"]["per_task_top1"],
        "success": ro["success_rate"], "success_ci95": ro["ci95"], "rollouts": ro["n"],
        "recognition_per_task_train_by_task": {k: v["top1"] for k, v in r["per_task"].items()},
        "recognition_per_task_heldout_by_task": {k: v["top1"] for k, v in h["per_task"].items()},
        "success_by_task": {k: v["success_rate"] for k, v in ro["per_task"].items()},
        "paths": {"understand": str(understand), "evals": [str(eval_dir(understand, root)),
                                                         str(eval_dir(understand, root, "held-out"))]},
    }
    if not understand_only:
        result["paths"] |= {"execute": str(execute), "evals": [*result["paths"]["evals"], str(eval_dir(execute, root))]}
    if analyse and not understand_only:  # the probes and their controls, for the independent pair
        a = analyzed([understand, execute], data, root, rollouts_of=eval_dir(execute, root))
        lap("analysis")
        result["probes"] = {key: {"r1_u2e": a[key]["r1_u2e"], "r1_e2u": a[key]["r1_e2u"], "chance": a[key]["chance"],
                                  "step0_r1_u2e": a["at_init"][key]["r1_u2e"],
                                  "step0_r1_e2u": a["at_init"][key]["r1_e2u"]}
                            for key in ("probe", "probe_blind", "probe_time")}
        result["paths"]["analysis"] = str(analysis_dir([understand, execute], root))
    low, high = TARGETS["recognition_per_task_train"]
    result["meets"] = {
        "recognition_per_task_train": low <= result["recognition_per_task_train"] <= high,
        "recognition_per_task_heldout": 3 * result["chance_per_task"] <= result["recognition_per_task_heldout"]
                                        < result["recognition_per_task_train"],
        "success": None if understand_only else TARGETS["success"][0] <= result["success"] <= TARGETS["success"][1],
    }
    return result


def write(done: list[dict]) -> None:
    """fine_calibration.{json,md}: every attempt, in the order run."""
    pct = lambda x: f"{100 * x:.1f} %"  # noqa: E731
    table = []
    for d in done:
        table += [(f"{d['attempt']}: per-task recognition, train views", pct(d["recognition_per_task_train"]),
                   f"target 40-85 %; chance {pct(d['chance_per_task'])}"),
                  (f"{d['attempt']}: per-task recognition, held-out views", pct(d["recognition_per_task_heldout"]),
                   f"target >= {pct(3 * d['chance_per_task'])} (3x chance) and below train views"),
                  (f"{d['attempt']}: all-variation recognition, train / held-out",
                   f"{pct(d['recognition_all_train'])} / {pct(d['recognition_all_heldout'])}",
                   f"chance {pct(d['chance_all'])}"),
                  (f"{d['attempt']}: execution success", "-" if d["success"] is None else pct(d["success"]),
                   f"target 25-75 %; {d['rollouts']} rollouts; overrides {' '.join(d['overrides']) or '-'}")]

    write_results("fine_calibration", {"preset": "fine", "seed": 0, "attempts": done}, table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a dataset made with `generate --preset fine`")
    p.add_argument("--root", type=Path, default=Path("runs/calibration"))
    p.add_argument("--attempt", action="append", required=True, help="NAME[:key=value,key=value...]")
    p.add_argument("--no-analysis", action="store_true")
    p.add_argument("--understand-only", action="store_true", help="train and evaluate the understanding baseline alone")
    args = p.parse_args()
    path = RESULTS / "fine_calibration.json"
    done = json.loads(path.read_text())["attempts"] if path.is_file() else []
    for spec in args.attempt:
        name, _, rest = spec.partition(":")
        overrides = [o for o in rest.split(",") if o]
        result = attempt(name, overrides, args.data, args.root, not args.no_analysis, args.understand_only)
        result["mirroralign_commit"] = machine()["mirroralign_commit"]  # attempts may run from other snapshots
        done = [d for d in done if d["attempt"] != name] + [result]
        write(done)


if __name__ == "__main__":
    main()
