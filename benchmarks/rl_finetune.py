"""Does a learned model's score work as a reward? RL fine-tuning (`mirroralign finetune`, AWR / filtered BC) of the
baseline execute runs with the oracle `success` reward and two learned ones, `understanding` (the seed's baseline
understand run scores the observer clip) and `aligned` (the seed's mirror run scores it in its shared space), under
the same interaction budget, evaluated on the test scenes.

    python benchmarks/rl_finetune.py [--preset fine] [--seeds 0 1 2] [--root runs/benchmarks] [--data DIR]
                                     [--rewards R ...] [--variations ID ...] [key=value ...]

Resumable and cached: the baseline runs and their evaluations are the ones of `_mirror.py` (shared with
mirror_fine.py and mirror_effect.py), each fine-tune lives under ROOT/finetune in a folder named by its settings and
resumes from its last checkpoint, an evaluation with a metrics file is read back. The baseline runs of a seed are
made (or found) first; then each reward's fine-tune and evaluation is a job of its own, `--jobs` at a time
(_common.run_parts), kept once finished in benchmarks/results/NAME_seeds/seed-N.REWARD.json (committed: never
rerun). Results: benchmarks/results/NAME.{json,md} (rl_finetune on `fine`, the benchmark; rl_finetune_PRESET on
another preset, so a smoke check never replaces it), rewritten after every job.

The variations fine-tuned on (FINE_GRAINED, per suite) are six goal variants the instruction must disambiguate,
chosen to be off the success floor (on mirror-fine push-back and coffee-pull since the pilot on mirror_fine's seed 5,
rl_pilot_default.json, found the first choice, push and push-wall, at 4.4 % on its endpoint). The endpoint is
success on them, before and after, on `--episodes` (30) test scenes each: 180 rollouts per policy; --all-variations
adds the 189 of an evaluation of every variation (what fine-tuning on six does to the others). Why 30: at ~15 %
success a seed's after - before on 10 scenes each (60 rollouts) has a binomial standard error of ~5 points, so 3
seeds (t(2) = 4.3) could only detect a change of ~13 points or more; 180 rollouts bring it to ~3 points per seed
for ~4 min more per evaluation. Budget: 12 iterations x 4 episodes per variation = 288 episodes per fine-tune. On
`fine`, run with mirror_fine.py's ROOT and dataset, a seed's baseline execute, understand and mirror runs are
mirror_fine's own, so a seed costs its three fine-tunes and four endpoint evaluations; the wall time each took is
recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from _common import SeedResults, machine, run_parts, seeded_parser, write_results
from _mirror import config_for, evaluated, generated, paired_on_rollouts, pct, seed_ci, signed_pct, trained

from mirroralign.evaluate.run import evaluate, is_evaluation_of
from mirroralign.finetune.run import finetune

REWARDS = ("success", "understanding", "aligned")
# The variations fine-tuned on, per suite: goal variants the instruction must disambiguate, off the success floor
# (AWR re-weights the successes exploration finds: at 0-5 % there are none to re-weight). On mirror-fine, seed 5's
# baseline on 10 test scenes each: push-back short/middle/long 40/40/40 %, coffee-pull left/center/right 70/70/20 %
# (push and push-wall, the first choice, were at 4.4 % on 180 rollouts: rl_pilot_default.json); 6 on both suites.
FINE_GRAINED = {"mirror10": ["push-left", "push-center", "push-right",
                             "pick-place-left", "pick-place-center", "pick-place-right"],
                "mirror-fine": ["push-back-short", "push-back-middle", "push-back-long",
                                "coffee-pull-left", "coffee-pull-center", "coffee-pull-right"]}


def finetuned(execute: Path, scorer: Path | None, reward: str, data: Path, root: Path, preset: str,
              overrides: list[str]) -> Path:
    key = hashlib.sha256(json.dumps([reward, preset, overrides]).encode()).hexdigest()[:10]
    out = root / "finetune" / f"{reward}-{execute.name}-{key}"
    return finetune(execute, data, out, reward=reward, scorer=scorer, preset=preset, overrides=overrides)


def evaluated_on(run: Path, data: Path, root: Path, variations: list[str], episodes: int) -> dict:
    """The endpoint's evaluation: `episodes` test scenes of each fine-tuned variation (cached as `_mirror`'s)."""
    key = hashlib.sha256(json.dumps([variations, episodes]).encode()).hexdigest()[:10]
    out = root / "eval" / f"{run.name}-rl-{key}"
    if not is_evaluation_of(out, run):
        evaluate(run, data, out, episodes=episodes, variations=variations, progress=False)
    return json.loads((out / "metrics.json").read_text())


def success(metrics: dict) -> float:
    """An evaluation's success rate, in percent."""
    return 100 * metrics["rollouts"]["success_rate"]


def paired_on_scenes(before: dict, after: dict) -> dict:
    """after - before success on the same test scenes (per scene: +1 gained, -1 lost, 0 kept), in points, with a
    t 95 % CI over the scenes: one seed's own evidence (the benchmark's replication unit stays the seed)."""
    outcome = lambda m: {(e["variation_id"], e["scene_seed"]): e["success"]  # noqa: E731
                         for e in m["rollouts"]["episodes"]}
    b, a = outcome(before), outcome(after)
    if b.keys() != a.keys():
        raise ValueError("the two evaluations ran different test scenes")
    return paired_on_rollouts(a, b)


def run_summary(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"episodes": sum(r["episodes"] for r in rows), "env_steps": rows[-1]["env_steps_total"],
            "wall_s": sum(r["iteration_s"] for r in rows),
            "auc_before": rows[0].get("reward_auc"), "auc_after": rows[-1].get("reward_auc"),
            "learned_reward_before": rows[0]["reward_mean"], "learned_reward_after": rows[-1]["reward_mean"],
            "reward_hacking_flagged": any(r.get("reward_hacking") for r in rows),
            "train_success_first": rows[0]["success_rate"], "train_success_last": rows[-1]["success_rate"],
            # per iteration, for a pilot's diagnosis: on-policy success (fresh train scenes each iteration), how far
            # the policy has moved from its start (mean |action difference|), the episodes the weights imitate
            "train_success_per_iteration": [r["success_rate"] for r in rows],
            "divergence_per_iteration": [r["divergence"] for r in rows],
            "effective_episodes_per_iteration": [r["effective_episodes"] for r in rows],
            # the groups whose episodes' returns differ (with finetune.repeats > 1: scenes that some noise draws
            # solved and others not), the only ones whose advantages say anything; absent in runs before 2026-12-07
            "mixed_groups_per_iteration": [r.get("mixed_groups") for r in rows]}


def change(r: dict, before: str = "before", after: str = "after") -> tuple[dict, str]:
    """One reward's after - before success over seeds (fractions, t 95 % CI) and its verdict."""
    diff = seed_ci(np.array(r[after]) / 100 - np.array(r[before]) / 100)
    verdict = ("improves" if diff["low"] is not None and diff["low"] > 0 else
               "worsens" if diff["high"] is not None and diff["high"] < 0 else "no detectable change")
    return diff, verdict


def table(results: dict) -> list[tuple[str, str, str]]:
    rows = []
    for reward, r in results["rewards"].items():
        scopes = [("fine-tuned variations", "before", "after"), ("all variations", "before_all", "after_all")]
        for scope, before, after in scopes[:1 + ("after_all" in r)]:
            diff, verdict = change(r, before, after)
            rows.append((f"{reward}: success, {scope}", f"{pct(seed_ci(np.array(r[before]) / 100))} -> "
                                                        f"{pct(seed_ci(np.array(r[after]) / 100))}",
                         f"after - before {signed_pct(diff)} over {diff['n']} seeds (t 95 % CI): {verdict}"))
        auc = r["auc"]
        if any(v is not None for v in auc["before"]):
            mean = lambda v: f"{seed_ci(v)['mean']:.2f}" if seed_ci(v)["mean"] is not None else "n/a"  # noqa: E731
            hacked = sum(r["reward_hacking_flagged"])
            rows.append((f"{reward}: reward ROC-AUC vs true success", f"{mean(auc['before'])} -> {mean(auc['after'])}",
                         f"first -> last iteration, on the rollouts it scored, mean over seeds; reward rose while "
                         f"AUC fell on {hacked} of {len(auc['before'])} seeds"))
    return rows


def main() -> None:
    parser = seeded_parser(__doc__, "fine", [0, 1, 2])
    parser.add_argument("--variations", nargs="+", help="the variations fine-tuned on (default: the suite's "
                                                        "FINE_GRAINED)")
    parser.add_argument("--rewards", nargs="+", choices=REWARDS, default=list(REWARDS),
                        help="the rewards compared (each a fine-tune of its own per seed)")
    parser.add_argument("--episodes", type=int, default=30, help="test scenes per fine-tuned variation, before and "
                                                                  "after (the endpoint)")
    parser.add_argument("--all-variations", action="store_true", help="also evaluate each fine-tuned policy on "
                        "every variation (what fine-tuning on six does to the others; 189 more rollouts on fine)")
    parser.add_argument("--name", help="results file name (default: rl_finetune on `fine`, else rl_finetune_PRESET)")
    parser.add_argument("overrides", nargs="*", help="finetune.* / eval.* overrides of every fine-tune")
    parser.add_argument("--jobs", type=int, default=2, help="fine-tunes (a seed's reward) run at once, one torch "
                                                           "thread each")
    parser.add_argument("--part-job", nargs=2, metavar=("SEED", "REWARD"), help=argparse.SUPPRESS)  # run_parts
    args = parser.parse_args()
    data = args.data or args.root / f"data-{args.preset}"
    args.name = args.name or ("rl_finetune" if args.preset == "fine" else f"rl_finetune_{args.preset}")
    args.variations = args.variations or FINE_GRAINED[config_for(args.preset, 0, []).data.suite]
    overrides = [f"finetune.variations=[{','.join(args.variations)}]", *args.overrides]
    finished = SeedResults(args.name, {"preset": args.preset, "variations": args.variations, "overrides": overrides,
                                       "episodes": args.episodes, "all_variations": args.all_variations})
    if args.part_job is not None:
        seed, reward = int(args.part_job[0]), args.part_job[1]
        part = run_reward(seed, reward, data, args, overrides)
        finished.put(seed, part | {"machine": machine()}, part=reward)
        return
    todo = finished.missing(args.seeds, tuple(args.rewards))
    if todo:
        generated(args.preset, data)
    for seed in sorted({s for s, _ in todo}):  # what a seed's rewards start from, once, before they run at once
        execute = baseline(seed, data, args.root, args.preset)
        for reward in ("understanding", "aligned"):  # trained here, not by two parts at once
            if (seed, reward) in todo:
                scorer_of(reward, seed, data, args.root, args.preset)
        evaluated_on(execute, data, args.root, args.variations, args.episodes)
        if args.all_variations:
            evaluated(execute, data, args.root)

    def write_all():
        done = finished.complete(args.seeds, tuple(args.rewards))
        if done:
            out = summarise(done, args.seeds) | {"preset": args.preset, "variations": args.variations,
                                                 "episodes_per_variation": args.episodes, "overrides": overrides,
                                                 "data": str(data)}
            write_results(args.name, out, table(out))

    run_parts(__file__, todo, args.jobs, on_done=write_all)
    write_all()


def summarise(done: list[tuple[int, dict]], seeds_planned: list[int]) -> dict:
    """The finished seeds' parts [(seed, {reward: part})] as the results' per-reward lists, in the order of seeds."""
    per_seed = [rewards for _, rewards in done]
    values = lambda r, k: [s[r].get(k) for s in per_seed]  # noqa: E731  (None: a key its commit did not record)
    rewards = {r: {k: values(r, k) for k in per_seed[0][r] if k != "machine"} for r in per_seed[0]}
    return {"question": "RL fine-tuning with the oracle success reward vs learned ones (the understanding model's "
                        "score, the mirror run's shared space), same interaction budget, on the test scenes",
            "seeds": [s for s, _ in done], "seeds_planned": seeds_planned, "complete": len(done) == len(seeds_planned),
            "seed_commits": SeedResults.commits([part for s in per_seed for part in s.values()]),
            "rewards": {reward: {**{k: v for k, v in r.items() if not k.startswith("auc_")},
                                 "auc": {"before": r["auc_before"], "after": r["auc_after"]}}
                        for reward, r in rewards.items()}}


def baseline(seed: int, data: Path, root: Path, preset: str, mode: str = "execute") -> Path:
    """The seed's baseline execute run (what is fine-tuned) or its understand run (what scores for it): trained only
    where a reward needs it (the success arm alone needs no understand run)."""
    return trained(config_for(preset, seed, []), mode, data, root)


def scorer_of(reward: str, seed: int, data: Path, root: Path, preset: str) -> Path | None:
    """The frozen run whose score is the reward: none (success), the seed's understand run, or its mirror run
    (the shared space; the one mirror_fine.py trains)."""
    if reward == "success":
        return None
    if reward == "understanding":
        return baseline(seed, data, root, preset, "understand")
    return trained(config_for(preset, seed, ["align.positives=instruction"]), "mirror", data, root)


def run_reward(seed: int, reward: str, data: Path, args: argparse.Namespace, overrides: list[str]) -> dict:
    """Success before and after fine-tuning with one reward (in percent, on the fine-tuned variations; with
    --all-variations on all of them too) and the fine-tune's summary."""
    execute = baseline(seed, data, args.root, args.preset)
    t0 = time.perf_counter()
    ft = finetuned(execute, scorer_of(reward, seed, data, args.root, args.preset), reward, data, args.root,
                   args.preset, overrides)
    before, after = (evaluated_on(run, data, args.root, args.variations, args.episodes) for run in (execute, ft))
    out = {"before": success(before), "after": success(after), "paired": paired_on_scenes(before, after),
           **run_summary(ft)}
    if args.all_variations:
        out |= {"before_all": success(evaluated(execute, data, args.root)),
                "after_all": success(evaluated(ft, data, args.root))}
    print(f"seed {seed} {reward}: success {out['before']:.1f} -> {out['after']:.1f} % "
          f"({time.perf_counter() - t0:.0f} s this call)")
    return out


if __name__ == "__main__":
    main()
