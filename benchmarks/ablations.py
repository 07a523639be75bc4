"""Ablations of the mirror run on the `standard` dataset: positives (episode, task), temperature (0.02, 0.2),
lambda_align (0.1, 1.0), shared dimension 256; each against the default mirror run (positives by instruction,
tau 0.1, lambda_align 0.5, dimension 1024) and the independent baseline of the same seed. (Whether alignment
emerges during training is benchmarks/emergence.py.)

    python benchmarks/ablations.py [--seeds 0 1] [--root runs/benchmarks] [--data DIR]

Shares its cache with mirror_effect.py (same ROOT): the baseline and default mirror runs are reused, not
retrained. The variants skip recognition from the unseen view: it sits at the floor (0-4 %) for every run of the
main comparison and costs minutes of replay per run. Resumable; results are rewritten after every finished run as
benchmarks/results/ablations.{json,md}.
"""

from __future__ import annotations

from _common import seeded_parser, write_results
from _mirror import baseline_arm, compare, config_for, mirror_arm, pct, seed_ci, signed_pct

from mirroralign.data.generate import generate

DEFAULT = ["align.positives=instruction"]
VARIANTS = {
    "positives=episode": ["align.positives=episode"],
    "positives=task": ["align.positives=task"],
    "temperature=0.02": ["align.temperature=0.02"],
    "temperature=0.2": ["align.temperature=0.2"],
    "lambda_align=0.1": ["align.lambda_align=0.1"],
    "lambda_align=1.0": ["align.lambda_align=1.0"],
    "dim=256": ["align.dim=256"],
}
METRICS = [("recognition", "recognition"), ("recognition_early", "recognition, first half of clip"),
           ("success", "success"), ("probe_r1_u2e", "probe R@1 u->e"),
           ("probe_r1_episode_u2e", "probe R@1 u->e, same episode"), ("mutual_knn", "mutual k-NN")]


def main() -> None:
    parser = seeded_parser(__doc__, "standard", [0, 1])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    data = args.data or args.root / f"data-{args.preset}"
    generate(config_for(args.preset, 0, []), data)

    baseline, default = {}, {}
    results = {name: {} for name in args.variants}
    for seed in args.seeds:  # seed-major: after the first seed every variant has one point
        baseline[seed], _ = baseline_arm(args.preset, seed, data, args.root)
        default[seed], _ = mirror_arm(args.preset, seed, DEFAULT, data, args.root)
        for name in args.variants:
            results[name][seed], _ = mirror_arm(args.preset, seed, VARIANTS[name], data, args.root,
                                                unseen_view=False)
            write(args, baseline, default, results)


def write(args, baseline: dict, default: dict, results: dict) -> None:
    rows, out = [], {}
    for name, per_seed in results.items():
        seeds = sorted(per_seed)
        if not seeds:
            continue
        variant = [per_seed[s] for s in seeds]
        out[name] = {"overrides": VARIANTS[name], "seeds": seeds,
                     "vs_default_mirror": compare([default[s] for s in seeds], variant),
                     "vs_baseline": compare([baseline[s] for s in seeds], variant)}
        c = out[name]["vs_default_mirror"]
        rows.append((name, " / ".join(pct(c[key]["treatment"]) for key, _ in METRICS),
                     "vs default mirror: " + " / ".join(signed_pct(c[key]["difference"]) for key, _ in METRICS)
                     + f" ({len(seeds)} seed{'s' * (len(seeds) > 1)})"))
    seeds = sorted(default)
    reference = {key: seed_ci([default[s][key] for s in seeds]) for key, _ in METRICS}
    rows.insert(0, ("default mirror (instruction, tau 0.1, lambda 0.5, dim 1024)",
                    " / ".join(pct(reference[key]) for key, _ in METRICS), f"{len(seeds)} seeds"))
    write_results("ablations", {
        "question": "which choices of the mirror run matter: positives, temperature, lambda_align, shared dimension",
        "preset": args.preset, "seeds_planned": args.seeds, "metrics": [key for key, _ in METRICS],
        "complete": all(len(r) == len(args.seeds) for r in results.values()),
        "default_overrides": DEFAULT, "default_mirror": {"per_seed": [default[s] for s in seeds], **reference},
        "variants": out},
        rows, header=("variant", " / ".join(label for _, label in METRICS) + ", mean [t 95 % CI] over seeds",
                      "paired difference"))


if __name__ == "__main__":
    main()
