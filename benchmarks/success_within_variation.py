"""Is the alignment score higher on successful rollouts *within* a variation, or only between tasks (easy ones
succeed and may align better)? Reads the cached analyses and evaluations of mirror_effect.py; trains nothing.

    python benchmarks/success_within_variation.py [--root runs/benchmarks]

Analyses made before `analyze` compared within variations hold the pooled scores only, in the order of the
rollout folders (successes, then failures): the scores are matched back to their rollouts' variations here.
Runs are found by their stored config, which must equal today's `config_for` on every setting it stored (a
setting added since then takes its default in both).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from _common import RESULTS, write_results
from _mirror import analysis_dir, config_for, eval_dir

from mirroralign.data.store import EPISODES
from mirroralign.stats import within_group_difference


def stored_the_same(stored, current) -> bool:
    if isinstance(stored, dict):
        return isinstance(current, dict) and all(k in current and stored_the_same(v, current[k])
                                                 for k, v in stored.items())
    return stored == current


def find_run(root: Path, mode: str, seed: int, overrides: list[str]) -> Path:
    want = asdict(config_for("standard", seed, overrides))
    found = [run for run in sorted((root / "runs").glob(f"{mode}-seed{seed}-*"))
             if (run / "run.json").is_file() and stored_the_same(
                 json.loads((run / "run.json").read_text())["identity"]["config"], want)]
    if len(found) != 1:
        raise SystemExit(f"{len(found)} {mode} runs of seed {seed} under {root} match the benchmark's config")
    return found[0]


def within(analysis_folder: Path, rollouts_of: Path) -> dict:
    analysis = json.loads((analysis_folder / "analysis.json").read_text())["success_vs_failure"]
    if "within_variation" in analysis:
        return {**analysis["within_variation"], "pooled_rank_biserial": analysis["rank_biserial"]}
    metas = [json.loads((f / "meta.json").read_text())
             for f in sorted((rollouts_of / "rollouts" / EPISODES).glob("*/rollout-*"))]
    ok, bad = iter(analysis["success_scores"]), iter(analysis["failure_scores"])
    scores = [next(ok) if m["success"] else next(bad) for m in metas]
    if next(ok, None) is not None or next(bad, None) is not None:
        raise SystemExit(f"{analysis_folder} holds more scores than {rollouts_of} has rollouts")
    result = within_group_difference(scores, [m["success"] for m in metas], [m["variation_id"] for m in metas])
    return {**result, "pooled_rank_biserial": analysis["rank_biserial"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    seeds = json.loads((RESULTS / "mirror_effect.json").read_text())["seeds"]
    per_seed = {"baseline": {}, "mirror": {}}
    for seed in seeds:
        understand, execute = (find_run(args.root, mode, seed, []) for mode in ("understand", "execute"))
        per_seed["baseline"][seed] = within(analysis_dir([understand, execute], args.root), eval_dir(execute, args.root))
        mirror = find_run(args.root, "mirror", seed, ["align.positives=instruction"])
        per_seed["mirror"][seed] = within(analysis_dir([mirror], args.root), eval_dir(mirror, args.root))
    rows = []
    for arm, label in (("baseline", "independent pair"), ("mirror", "mirror run")):
        for seed, w in per_seed[arm].items():
            p = "n/a" if w["p_value"] is None else f"{w['p_value']:.3g}"
            rows.append((f"{label}, seed {seed}", f"{w['mean_difference']:+.3f} (higher on successes in "
                         f"{w['positive']} of {w['groups']} variations, Wilcoxon p = {p})",
                         f"pooled over all rollouts: rank-biserial {w['pooled_rank_biserial']:+.2f}"))
    write_results("success_within_variation", {
        "question": "alignment score (cosine in the probe's space) of successful minus failed rollouts, within "
                    "each variation holding both, then over variations", "seeds": seeds, "per_seed": per_seed},
        rows, header=("arm", "success - failure, within a variation", "note"))


if __name__ == "__main__":
    main()
