"""What one seed of the `fine` benchmark costs, before and after the changes that halve it, measured in one run.

    python benchmarks/seed_cost.py [--before 1100ff9] [--work /tmp/seed-cost]

A seed (benchmarks/mirror_fine.py) trains three runs, rolls out two policies, replays the test clips of two
understanding models from `held-out` views and analyses two pairs. Timing a whole seed twice would take two hours,
so each stage is timed on units of real work, with the real functions, on the same small dataset made by each
code version (`generate --preset fine`, 14 variations), and the seed is composed from the units and the seed's
counts (3000 steps per run, 2 x 189 rollouts of 206 steps on average (the calibration's execute run), 2 x 378
held-out test clips, two analyses scaled by their episode count):

- before: the code at `--before` (a git worktree), its `fine` preset (fidelity fast), one process, torch's
  default threads, as a seed ran until now;
- after: this checkout, its `fine` preset (fidelity draft, replays that render only the clips' frames), two unit
  runs at once with one torch thread each, as mirror_fine.py runs two seeds at once: a unit's cost is its wall
  time divided by two (two seeds progress at once).

Both versions run back to back on the same machine; results: benchmarks/results/seed_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.tasks=[reach,push]", "data.episodes=6", "eval.episodes=1", "eval.max_steps=250"]
UNIT_STEPS = 150  # training steps per mode in a unit run (the first WARMUP are not counted)
WARMUP = 10
SEED = {"steps": 3000, "rollouts": 2 * 189, "rollout_steps": 206.0, "heldout_clips": 2 * 378,
        "analysis_episodes": 1323 + 378, "analyses": 2}


def units(work: Path) -> dict:
    """Time each stage on the small dataset, with the mirroralign on PYTHONPATH (run in a child process)."""
    import torch

    from mirroralign.analysis.run import analyze
    from mirroralign.config import load_config
    from mirroralign.data.generate import generate
    from mirroralign.data.store import EpisodeStore
    from mirroralign.evaluate.run import evaluate
    from mirroralign.train import train

    out, t = {"torch_threads": torch.get_num_threads()}, time.monotonic()
    config = load_config("fine", overrides=[*SMALL, f"train.steps={UNIT_STEPS}", "train.log_every=1",
                                            f"train.checkpoint_every={UNIT_STEPS}"])
    data = generate(config, work / "data", progress=False)
    out["generate_s_per_episode"] = (time.monotonic() - t) / len(EpisodeStore(data).episodes)
    runs = {}
    for mode in ("understand", "execute", "mirror"):
        t = time.monotonic()
        runs[mode] = train(config, mode, data, work / mode, progress=False)
        wall = time.monotonic() - t
        rows = [json.loads(line) for line in (runs[mode] / "metrics.jsonl").read_text().splitlines()]
        per_step = sum(r["step_s"] + r["data_s"] for r in rows[WARMUP:]) / len(rows[WARMUP:])
        out[f"train_{mode}_s_per_step"] = per_step
        out[f"train_{mode}_setup_s"] = wall - per_step * len(rows)
    t = time.monotonic()
    evaluate(runs["execute"], data, work / "eval-execute", progress=False)
    rollouts = json.loads((work / "eval-execute" / "metrics.json").read_text())["rollouts"]["episodes"]
    out["rollout_s_per_step"] = (time.monotonic() - t) / sum(e["steps"] for e in rollouts)
    t = time.monotonic()
    evaluate(runs["understand"], data, work / "eval-heldout", view="held-out", rollouts=False, progress=False)
    out["heldout_s_per_clip"] = (time.monotonic() - t) / len(EpisodeStore(data).episode_ids("test"))
    t = time.monotonic()
    analyze([runs["understand"], runs["execute"]], data, work / "analysis", rollouts=work / "eval-execute")
    store = EpisodeStore(data)
    out["analysis_s_per_episode"] = (time.monotonic() - t) / (len(store.episode_ids("train"))
                                                              + len(store.episode_ids("test")))
    return out


def per_seed(u: dict, share: float) -> dict:
    """Seconds per stage of one seed from unit costs; `share`: the fraction of the machine a unit run had."""
    stages = {
        "train": sum(SEED["steps"] * u[f"train_{m}_s_per_step"] + u[f"train_{m}_setup_s"]
                     for m in ("understand", "execute", "mirror")),
        "rollouts": SEED["rollouts"] * SEED["rollout_steps"] * u["rollout_s_per_step"],
        "heldout_replay": SEED["heldout_clips"] * u["heldout_s_per_clip"],
        "analysis": SEED["analyses"] * SEED["analysis_episodes"] * u["analysis_s_per_episode"],
    }
    stages = {k: v * share for k, v in stages.items()}
    return {**stages, "total": sum(stages.values())}


def run_units(tree: Path, work: Path, jobs: int, threads: int | None) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{Path(__file__).parent}",
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa"), "HF_HUB_OFFLINE": "1"}
    if threads is not None:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = []
    work.mkdir(parents=True, exist_ok=True)
    for j in range(jobs):
        result = work / f"units-{j}.json"
        result.unlink(missing_ok=True)
        procs.append((result, subprocess.Popen([sys.executable, __file__, "--units", str(work / f"job{j}")],
                                               env=env, stdout=open(result, "w"))))
    for _, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a unit run failed in {tree}")
    return [json.loads(result.read_text().strip().splitlines()[-1]) for result, _ in procs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="1100ff9", help="the commit a seed ran at until now")
    p.add_argument("--work", type=Path, default=Path("/tmp/seed-cost"))
    p.add_argument("--units", type=Path, help=argparse.SUPPRESS)  # internal: time the units into this folder
    args = p.parse_args()
    if args.units is not None:
        print(json.dumps(units(args.units)))
        return
    from _common import write_results

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    before_tree = args.work / "before-tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before_tree), args.before],
                   check=True)
    load = {"start": os.getloadavg()[0]}  # other work on the machine skews both versions: it is recorded
    try:
        before = run_units(before_tree, args.work / "before", jobs=1, threads=None)
        load["between"] = os.getloadavg()[0]
        after = run_units(ROOT, args.work / "after", jobs=2, threads=1)
        load["end"] = os.getloadavg()[0]
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_tree)], check=False)
    b = per_seed(before[0], 1.0)
    a_jobs = [per_seed(u, 0.5) for u in after]  # two seeds progress at once: each has half the machine's time
    a = {k: sum(j[k] for j in a_jobs) / len(a_jobs) for k in b}
    ratio = a["total"] / b["total"]
    table = [(stage, f"{b[stage] / 60:.1f} -> {a[stage] / 60:.1f} min",
              f"x{a[stage] / b[stage]:.2f}" + (" (target <= x0.50)" if stage == "total" else ""))
             for stage in b]
    write_results("seed_cost", {"before_commit": args.before, "seed_counts": SEED, "small_dataset": SMALL,
                                "units_before": before, "units_after": after, "per_seed_before_s": b,
                                "per_seed_after_s": a, "ratio": ratio, "meets_half": ratio <= 0.5,
                                "load_average_1min": load}, table,
                  header=("stage of one fine seed", "before -> after", "ratio"))


if __name__ == "__main__":
    main()
