"""Does alignment emerge during training? The probe's Recall@1 and mutual k-NN of the independent understand and
execute runs of the main comparison, from step 0 (the models as training initialised them: what a probe finds
before any learning) through every checkpoint.

    python benchmarks/emergence.py [--seeds 0 1 2] [--root runs/benchmarks] [--data DIR]

Trains nothing: reads the runs and analyses that mirror_effect.py cached under ROOT (run it first). Analyses
made before `analyze` measured step 0 lack that row; it is computed here from the runs' seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import write_results

from mirroralign.analysis.run import alignment_row, initialized, split_episodes, understanding_run
from mirroralign.data.store import EpisodeStore
from mirroralign.train import load_run


def baseline_analysis(root: Path, seed: int) -> Path:
    found = sorted((root / "analysis").glob(f"understand-seed{seed}-*+execute-seed{seed}-*/analysis.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one analysis of the seed-{seed} baseline pair under {root}/analysis, found "
                         f"{len(found)}: run benchmarks/mirror_effect.py first")
    return found[0].parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--data", type=Path, help="dataset (default: ROOT/data-standard)")
    args = parser.parse_args()
    store = EpisodeStore(args.data or args.root / "data-standard")
    train_eps, train_groups = split_episodes(store, "train")
    test_eps, test_labels = split_episodes(store, "test")

    per_seed = {}
    for seed in args.seeds:
        folder = baseline_analysis(args.root, seed)
        analysis = json.loads((folder / "analysis.json").read_text())
        rows = analysis["over_training"]
        if rows[0]["step"] != 0:
            runs = [load_run(args.root / "runs" / name) for name in folder.name.split("+")]
            frames = understanding_run(runs).config.model.understanding.frames
            rows = [alignment_row([initialized(r) for r in runs], frames, train_eps, train_groups, test_eps,
                                  test_labels, analysis["k"]), *rows]
        per_seed[seed] = {"analysis": str(folder), "k": analysis["k"], "chance": analysis["probe"]["chance"],
                          "rows": rows}
        print(f"seed {seed}: " + ", ".join(f"{r['step']}: {r['r1_u2e']:.2f}/{r['mutual_knn']:.2f}" for r in rows))

    steps = [r["step"] for r in per_seed[args.seeds[0]]["rows"]]
    table = []
    for i, step in enumerate(steps):
        cells = [per_seed[s]["rows"][i] if i < len(per_seed[s]["rows"]) else None for s in args.seeds]
        table.append((f"{step}{' (initialisation)' if step == 0 else ''}",
                      " / ".join("-" if c is None else f"{100 * c['r1_u2e']:.1f}" for c in cells),
                      " / ".join("-" if c is None else f"{100 * c['mutual_knn']:.1f}" for c in cells)))
    seeds = " / ".join(f"seed {s}" for s in args.seeds)
    write_results("emergence", {
        "question": "does alignment between independently trained understand and execute models emerge during "
                    "training? (probe Recall@1 and mutual k-NN at initialisation and at each checkpoint)",
        "seeds": args.seeds, "data": str(store.root), "per_seed": per_seed},
        table, header=("step", f"probe R@1 u->e, % ({seeds})", f"mutual k-NN, % ({seeds})"))


if __name__ == "__main__":
    main()
