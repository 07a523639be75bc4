"""Does explicit alignment help? The independent baseline (understand + execute) against the mirror run
(positives by instruction) on one `standard` dataset, for several seeds.

    python benchmarks/mirror_effect.py [--seeds 0 1 2] [--root runs/benchmarks] [--data DIR]

Resumable: every run, evaluation and analysis is cached under ROOT by its config, so re-running after an
interruption continues where it stopped. Results are rewritten after every seed (partial results say which
seeds are in), as benchmarks/results/mirror_effect.{json,md}; the report of the first seed goes to
benchmarks/results/mirror_effect_report.html.
"""

from __future__ import annotations

import json

from _common import RESULTS, seeded_parser, write_results
from _mirror import UNSEEN_VIEW, baseline_arm, compare, config_for, generated, mirror_arm, pct, signed_pct

from mirroralign.report import report

ROWS = [("recognition", "recognition top-1, training view"),
        ("recognition_unseen_view", f"recognition top-1, unseen view ({UNSEEN_VIEW})"),
        ("recognition_early", "recognition top-1, first half of each clip"),
        ("success", "task success (rollouts)"),
        ("probe_r1_u2e", "probe Recall@1 understanding -> execution"),
        ("probe_r1_e2u", "probe Recall@1 execution -> understanding"),
        ("probe_r1_episode_u2e", "probe Recall@1 understanding -> execution, same episode"),
        ("probe_r1_episode_e2u", "probe Recall@1 execution -> understanding, same episode"),
        ("mutual_knn", "mutual k-NN (k=10)"),
        ("cknna", "CKNNA (k=10)"),
        ("cka", "CKA (linear)")]


def table(comparison: dict, rows=ROWS) -> list[tuple[str, str, str]]:
    out = []
    for key, label in rows:
        c = comparison[key]
        n = c["difference"]["n"]
        out.append((label, f"{pct(c['baseline'])} -> {pct(c['treatment'])}",
                    f"difference {signed_pct(c['difference'])} (paired over {n} seeds, t 95 % CI)"))
    if "success_pooled" in comparison:
        c = comparison["success_pooled"]
        out.append(("task success, pooled episodes", f"{pct(c['baseline'])} -> {pct(c['treatment'])}",
                    f"difference {signed_pct(c['difference'])} over {c['baseline']['n']} paired episodes "
                    "(bootstrap 95 % CI: rollout noise of these models only, not seed variance)"))
    return out


def main() -> None:
    parser = seeded_parser(__doc__, "standard", [0, 1, 2])
    parser.add_argument("--rewrite-report", action="store_true",
                        help="render the seed-0 report again even if benchmarks/results has one (3 MB)")
    args = parser.parse_args()
    data = args.data or args.root / f"data-{args.preset}"
    generated(args.preset, data)

    baseline, mirror = [], []
    for i, seed in enumerate(args.seeds):
        b, b_paths = baseline_arm(args.preset, seed, data, args.root)
        m, m_paths = mirror_arm(args.preset, seed, ["align.positives=instruction"], data, args.root)
        baseline.append(b)
        mirror.append(m)
        if i == 0 and (args.rewrite_report or not (RESULTS / "mirror_effect_report.html").is_file()):
            report([*b_paths["evals"], *m_paths["evals"], b_paths["analysis"], m_paths["analysis"]],
                   RESULTS / "mirror_effect_report.html")
        comparison = compare(baseline, mirror)
        write_results("mirror_effect", {
            "question": "independent understand+execute (baseline) vs mirror (explicit alignment, positives by "
                        "instruction): same data, steps and batch", "preset": args.preset,
            "seeds": args.seeds[: i + 1], "seeds_planned": args.seeds, "complete": i + 1 == len(args.seeds),
            "config": config_for(args.preset, 0, []).to_dict(), "data": str(data), "unseen_view": UNSEEN_VIEW,
            "comparison": comparison,
            "per_seed": {"baseline": baseline, "mirror": mirror}}, table(comparison))
        print(json.dumps({k: comparison[k]["difference"]["mean"] for k, _ in ROWS}, indent=1))


if __name__ == "__main__":
    main()
