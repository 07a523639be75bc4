"""Observe, then do: does a policy shown a demonstration clip do the task as well as one told the instruction, and
does alignment make it do so better? Two arms per seed, each policy trained told by text and video (train.condition,
default mixed), each evaluated under four conditions on the same test scenes:

    arms        independent: an understand run, and an execute run told through that frozen understand run
                mirror:      a mirror run, its policy told through its own (jointly trained) understanding model
    conditions  text (the instruction), video (a clip of the variation from another scene), sibling (a clip of
                another variation of the same task: success should drop, and the rate at which the shown variation
                is done instead is scored by replay), null (nothing)

    python benchmarks/observe_then_do.py [--preset fine] [--seeds 0 1 2] [--root runs/benchmarks] [--data DIR]
                                         [--train-condition mixed]

Resumable and cached as mirror_effect.py (`_mirror.py`): every run under ROOT/runs named by a hash of its config
(train resumes from its last checkpoint), every evaluation under ROOT/eval by run and condition, kept while it is of
the run's latest checkpoint. Each arm of a seed is a job of its own, `--jobs` at a time (_common.run_parts), kept
once finished in benchmarks/results/observe_then_do_seeds/seed-N.ARM.json (committed: never rerun). Results are
written at the start from the seeds kept, and again after every job: benchmarks/results/observe_then_do.{json,md}
(another preset than `fine` writes observe_then_do_<preset>.*, so a smoke check never replaces the benchmark), and
the report of the first seed beside them.

Budget (`seconds_per_seed` in the JSON holds each arm's measured wall time): on `fine` (mirror-fine, 63 variations
x 3 test scenes) per seed three runs of 3000 steps and 8 evaluations of 189 rollouts; seed 0 took 5,405 s
(independent) and 5,515 s (mirror) with the two arms side by side on 2 cores, so ~1.5 h per seed, ~4.5 h for 3
(plus ~17 min to generate the dataset); `--preset tiny` is a smoke check of a few minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, SeedResults, machine, run_parts, seeded_parser, write_results
from _mirror import config_for, generated, paired_on_rollouts, pct, seed_ci, signed_pct, trained

from mirroralign.evaluate.run import evaluate, is_evaluation_of
from mirroralign.report import report

ARMS = ("independent", "mirror")
CONDITIONS = ("text", "video", "sibling", "null")
# (condition, against): the contrasts within an arm, per seed
CONTRASTS = [("video", "text", "does a shown clip work as well as the instruction?"),
             ("sibling", "video", "does the clip's content matter (another goal of the same task)?"),
             ("null", "video", "does the clip matter at all?")]


def eval_dir(run: Path, root: Path, condition: str) -> Path:
    return root / "eval" / f"{run.name}-condition-{condition}"


def conditioned(run: Path, data: Path, root: Path, condition: str) -> dict:
    out = eval_dir(run, root, condition)
    if not is_evaluation_of(out, run):
        evaluate(run, data, out, condition=condition)
    return json.loads((out / "metrics.json").read_text())


def arm_runs(arm: str, preset: str, seed: int, train_condition: str, data: Path, root: Path) -> Path:
    """The run whose policy the arm evaluates (trained or resumed)."""
    told = [f"train.condition={train_condition}"]
    if arm == "mirror":
        return trained(config_for(preset, seed, told), "mirror", data, root)
    understand = trained(config_for(preset, seed, []), "understand", data, root)
    return trained(config_for(preset, seed, [*told, f"train.condition_run={understand.resolve()}"]), "execute",
                   data, root)


def condition_values(metrics: dict) -> dict:
    ro = metrics["rollouts"]
    shown = ro.get("shown_variation")
    return {"success": ro["success_rate"], "ci95": ro["ci95"], "n": ro["n"],
            "shown_variation_success": shown["success_rate"] if shown else None,
            "shown_variation_scored": shown["n_scored"] if shown else None,
            "variations": metrics["condition"].get("variations"),
            "_outcomes": {f"{e['variation_id']}/{e['k']}": bool(e["success"]) for e in ro["episodes"]}}


def paired(a: dict, b: dict) -> dict:
    """Condition a - condition b of one seed, on the rollouts both ran (sibling runs only the variations that have
    siblings), in points with a t-CI over those rollouts (_mirror.paired_on_rollouts)."""
    return paired_on_rollouts(a["_outcomes"], b["_outcomes"])


def summarise(per_seed: dict) -> dict:
    """Per arm and condition: per-seed success and its t-CI over seeds; per arm the contrasts, per condition the
    mirror - independent difference, each paired by seed (and by rollout, on the rollouts both conditions ran: each
    seed's own evidence under `per_seed_paired`)."""
    def difference(pairs: list[dict]) -> dict:
        values = [p["mean"] / 100 for p in pairs]
        return {"per_seed": values, **seed_ci(values), "per_seed_paired": pairs}

    out = {"conditions": {}, "contrasts": {}, "alignment": {}}
    for arm in ARMS:
        seeds = per_seed[arm]
        for c in CONDITIONS:
            values = [s[c]["success"] for s in seeds]
            out["conditions"][f"{arm}/{c}"] = {"per_seed": values, **seed_ci(values)}
        shown = [s["sibling"]["shown_variation_success"] for s in seeds]
        out["conditions"][f"{arm}/sibling_shown_variation"] = {"per_seed": shown, **seed_ci(shown)}
        for c, against, _ in CONTRASTS:
            out["contrasts"][f"{arm}/{c}-{against}"] = difference([paired(s[c], s[against]) for s in seeds])
    for c in CONDITIONS:
        out["alignment"][c] = difference([paired(m[c], i[c])
                                          for m, i in zip(per_seed["mirror"], per_seed["independent"])])
    return out


def table(summary: dict) -> list[tuple[str, str, str]]:
    rows = []
    for arm in ARMS:
        for c in CONDITIONS:
            rows.append((f"{arm}: success told by {c}", pct(summary["conditions"][f"{arm}/{c}"]),
                         "mean over seeds, t 95 % CI"))
        rows.append((f"{arm}: shown sibling variation done instead",
                     pct(summary["conditions"][f"{arm}/sibling_shown_variation"]), "rollouts the replay can score"))
        for c, against, question in CONTRASTS:
            rows.append((f"{arm}: {c} - {against}", signed_pct(summary["contrasts"][f"{arm}/{c}-{against}"]), question))
    for c in CONDITIONS:
        rows.append((f"mirror - independent, told by {c}", signed_pct(summary["alignment"][c]),
                     "does alignment help?" if c == "video" else "paired by seed"))
    return rows


def main() -> None:
    parser = seeded_parser(__doc__, "fine", [0, 1, 2])
    parser.add_argument("--train-condition", default="mixed", choices=["video", "mixed"],
                        help="how the policies are trained to be told (mixed: text or video, half and half)")
    parser.add_argument("--jobs", type=int, default=2, help="arms (a seed's independent or mirror) run at once, one "
                                                           "torch thread each")
    parser.add_argument("--part-job", nargs=2, metavar=("SEED", "ARM"), help=argparse.SUPPRESS)  # run_parts
    args = parser.parse_args()
    name = "observe_then_do" if args.preset == "fine" else f"observe_then_do_{args.preset}"
    data = args.data or args.root / f"data-{args.preset}"
    finished = SeedResults(name, {"preset": args.preset, "train_condition": args.train_condition})
    if args.part_job is not None:
        seed, arm = int(args.part_job[0]), args.part_job[1]
        finished.put(seed, run_arm(arm, seed, args.preset, args.train_condition, data, args.root), part=arm)
        return
    todo = finished.missing(args.seeds, ARMS)
    if todo:
        generated(args.preset, data)

    def write_all():
        done = finished.complete(args.seeds, ARMS)
        if not done:
            return
        per_seed = {arm: [arms[arm] for _, arms in done] for arm in ARMS}
        report_to, first = RESULTS / f"{name}_report.html", [eval_dir(Path(per_seed[arm][0]["run"]), args.root, c)
                                                              for arm in ARMS for c in CONDITIONS]
        if not report_to.is_file() and all(d.is_dir() for d in first):  # the first seed's, while they exist
            report(first, report_to)
        summary = summarise(per_seed)
        write_results(name, {
            "question": "does a shown demonstration clip work as well as the instruction, and does alignment make it "
                        "work better? (independent understand + execute pair vs mirror run, both policies trained "
                        f"with train.condition={args.train_condition})", "preset": args.preset,
            "seeds": [s for s, _ in done], "seeds_planned": args.seeds, "complete": len(done) == len(args.seeds),
            "train_condition": args.train_condition, "data": str(data), "summary": summary,
            "seed_commits": SeedResults.commits([part for _, arms in done for part in arms.values()]),
            "seconds_per_seed": [{"seed": s, "arm_seconds": {arm: arms[arm]["seconds"] for arm in ARMS}}
                                 for s, arms in done],
            "per_seed": {arm: [{c: {k: v for k, v in s[c].items() if not k.startswith("_")} for c in CONDITIONS}
                               | {"run": s["run"]} for s in per_seed[arm]] for arm in ARMS}}, table(summary))

    write_all()  # at once from the seeds already kept (a change to the summary shows without measuring anything)
    run_parts(__file__, todo, args.jobs, on_done=write_all)


def run_arm(arm: str, seed: int, preset: str, train_condition: str, data: Path, root: Path) -> dict:
    """Every condition's values on the test scenes, the run evaluated, the wall time of this process (training
    resumed from a cached checkpoint counts only what was left) and the code that measured them."""
    start = time.monotonic()
    run = arm_runs(arm, preset, seed, train_condition, data, root)
    values = {c: condition_values(conditioned(run, data, root, c)) for c in CONDITIONS}
    return values | {"run": str(run), "seconds": round(time.monotonic() - start, 1), "machine": machine()}

if __name__ == "__main__":
    main()
