"""The `mirroralign` command line. Bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mirroralign.errors import DataError, SimulatorError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage plus the error; we keep it to one line
        raise UsageError(message)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="tiny | quick | standard | full")
    p.add_argument("--config", help="YAML file validated against the typed config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. env.image_size=48")


def _load(args, flags: dict) -> "Config":  # noqa: F821
    from mirroralign.config import load_config

    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return load_config(args.preset, args.config, [*overrides, *args.overrides])


def cmd_suites(args) -> int:
    from mirroralign.suites import suites_json

    suites = suites_json()
    if args.json:
        print(json.dumps(suites, indent=1))
        return 0
    for name, entries in suites.items():
        if entries and "variations" in entries[0]:  # an RLBench suite
            print(f"{name}: {len(entries)} RLBench tasks, {sum(e['variations'] for e in entries)} variations "
                  f"(instructions come with the demonstrations: mirroralign import-rlbench)")
            for e in entries:
                print(f"  {e['task']:<28} {e['variations']} variations")
            continue
        print(f"{name}: {len({e['task'] for e in entries})} tasks, {len(entries)} variations")
        for e in entries:
            print(f"  {e['id']:<28} {e['instruction']}")
    return 0


def cmd_generate(args) -> int:
    from mirroralign.data.generate import generate

    tasks = None if args.tasks is None else "[" + args.tasks + "]"
    config = _load(args, {"data.suite": args.suite, "data.episodes": args.episodes, "data.workers": args.workers,
                          "data.seed": args.seed, "data.tasks": tasks})
    root = generate(config, args.out)
    print(f"dataset: {root}")
    return 0


def cmd_import_rlbench(args) -> int:
    from mirroralign.data.rlbench import import_rlbench

    def names(values):  # `--tasks a b` and `--tasks a,b` both work
        return None if values is None else [n for v in values for n in v.split(",") if n]

    root = import_rlbench(args.src, args.out, tasks=names(args.tasks), cameras=names(args.cameras),
                          observer=args.observer, image_size=args.image_size)
    print(f"dataset: {root}")
    return 0


def cmd_export_lerobot(args) -> int:
    from mirroralign.data.lerobot import export_lerobot

    root = export_lerobot(args.dir, args.out, version=args.format, fps=args.fps, vcodec=args.vcodec, crf=args.crf)
    print(f"LeRobot dataset ({args.format}): {root}")
    return 0


def cmd_import_lerobot(args) -> int:
    from mirroralign.data.lerobot import import_lerobot

    def names(values):  # `--cameras a b` and `--cameras a,b` both work
        return None if values is None else [n for v in values for n in v.split(",") if n]

    root = import_lerobot(args.src, args.out, observer=args.observer, cameras=names(args.cameras), state=args.state,
                          action=args.action, tasks=args.tasks, image_size=args.image_size)
    print(f"dataset: {root}")
    return 0


def cmd_verify(args) -> int:
    from mirroralign.data.store import DATASET_FILES, MANIFEST, TEXT_EMBEDDINGS, EpisodeStore, read_text_embeddings
    from mirroralign.text import ENCODER, encoder_sha256

    root = Path(args.dir)
    if not (root / MANIFEST).is_file():
        raise UsageError(f"not a mirroralign dataset (no {MANIFEST}): {root}")
    store = EpisodeStore(root, check_files=False)
    damaged = store.verify()
    for eid, files in damaged.items():
        what = "dataset files" if eid == DATASET_FILES else f"episode {eid}"
        print(f"damaged {what}: {', '.join(files)}", file=sys.stderr)
    n = len(store.episodes)
    if damaged:
        episodes = len([e for e in damaged if e != DATASET_FILES])
        files = " and dataset files" if DATASET_FILES in damaged else ""
        print(f"verify: {episodes} of {n} episodes{files} damaged in {root}", file=sys.stderr)
        return 1
    print(f"verify: all {n} episodes match their checksums ({root})")
    if TEXT_EMBEDDINGS in store.manifest.get("files", {}):
        record = read_text_embeddings(root / TEXT_EMBEDDINGS)[0]
        same = (record["encoder"], record["encoder_sha256"]) == (ENCODER, encoder_sha256())
        print(f"verify: text embeddings of {len(record['texts'])} instructions, encoder {record['encoder']} "
              f"({'the installed one' if same else 'not the installed one: train and evaluate will refuse them'})")
    return 0


def cmd_train(args) -> int:
    from mirroralign.train import NumericalError, train

    config = _load(args, {"train.seed": args.seed})
    try:
        run = train(config, args.mode, args.data, args.out)
    except NumericalError as err:
        raise DataError(str(err)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, once
        print(f"run: {run}")
    return 0


def cmd_finetune(args) -> int:
    from mirroralign.finetune.run import finetune
    from mirroralign.train import NumericalError

    overrides = [*([f"finetune.seed={args.seed}"] if args.seed is not None else []),
                 *([f"finetune.iterations={args.iterations}"] if args.iterations is not None else []), *args.overrides]
    try:
        run = finetune(args.run, args.data, args.out, reward=args.reward, scorer=args.scorer, algo=args.algo,
                       preset=args.preset, overrides=overrides)
    except NumericalError as err:
        raise DataError(str(err)) from None
    print(f"run: {run}")
    return 0


def cmd_evaluate(args) -> int:
    from mirroralign.evaluate.run import evaluate

    out = evaluate(args.run, args.data, args.out, view=args.view, episodes=args.episodes, workers=args.workers,
                   rollouts=not args.no_rollouts, condition=args.condition, demo_split=args.demo_split,
                   demo_view=args.demo_view, variations=args.variations)
    print(f"evaluation: {out / 'metrics.json'}")
    return 0


def cmd_analyze(args) -> int:
    from mirroralign.analysis.run import analyze

    out = analyze(args.runs, args.data, args.out, rollouts=args.rollouts)
    print(f"analysis: {out / 'analysis.json'}")
    return 0


def cmd_report(args) -> int:
    from mirroralign.report import report

    print(f"report: {report(args.inputs, args.out)}")
    return 0


def cmd_demo(args) -> int:
    from mirroralign.demo import run_demo

    path = run_demo(args.preset, args.out)
    print(f"report ({args.preset} preset): {path.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mirroralign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("suites", help="list the task suites and their variations")
    p.add_argument("--json", action="store_true", help="print every suite as JSON")
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("generate", help="collect scripted-expert episodes (resumable)")
    p.add_argument("--suite")
    p.add_argument("--tasks", help="comma-separated subset of the suite's tasks")
    p.add_argument("--episodes", type=int, help="successful episodes per variation")
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", required=True)
    _config_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("import-rlbench", help="convert RLBench demonstration folders into a dataset")
    p.add_argument("src", help="RLBench data: <task>/variation<N>/... or <task>/all_variations/... (PerAct), "
                               "optionally under train/ val/ test/")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", nargs="+", help="task folders to import, by name (default: every task folder)")
    p.add_argument("--cameras", nargs="+", help="agent cameras (default: front left_shoulder right_shoulder wrist)")
    p.add_argument("--observer", help="observer camera (default: overhead)")
    p.add_argument("--image-size", type=int, help="resize every image to this square size (default: as stored)")
    p.set_defaults(func=cmd_import_rlbench)

    p = sub.add_parser("export-lerobot", help="write a dataset as a LeRobotDataset (v3.0 or v2.1)")
    p.add_argument("dir", help="a mirroralign dataset")
    p.add_argument("--out", required=True, help="the LeRobot dataset folder to write")
    p.add_argument("--format", default="v3.0", help="v3.0 (default) | v2.1")
    p.add_argument("--fps", type=int, help="frames per second (default: the simulator's, Meta-World 80)")
    p.add_argument("--vcodec", default="libx264",
                   help="libx264 (default: yuv444p, crf 6) | libsvtav1 (LeRobot's own: yuv420p, crf 30) | "
                        "libx264rgb (crf 0: lossless)")
    p.add_argument("--crf", type=int, help="constant rate factor (default: the codec's, above)")
    p.set_defaults(func=cmd_export_lerobot)

    p = sub.add_parser("import-lerobot", help="convert a LeRobotDataset (v3.0 or v2.1) into a dataset")
    p.add_argument("src", help="a local LeRobotDataset folder (meta/info.json, data/, videos/)")
    p.add_argument("--out", required=True)
    p.add_argument("--observer", required=True, help="camera feature key of the observer, e.g. observation.images.top")
    p.add_argument("--cameras", nargs="+", help="agent camera feature keys (default: every other camera)")
    p.add_argument("--state", default="observation.state", help="proprioception feature key")
    p.add_argument("--action", default="action", help="action feature key")
    p.add_argument("--tasks", nargs="+", help="subset of the tasks, by task string or task index")
    p.add_argument("--image-size", type=int, help="resize every image to this square size (default: as stored)")
    p.set_defaults(func=cmd_import_lerobot)

    p = sub.add_parser("verify", help="check every stored file against its checksum")
    p.add_argument("dir")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("train", help="train understand | execute | mirror (resumable)")
    p.add_argument("--mode", required=True, choices=["understand", "execute", "mirror"])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    _config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="RL fine-tuning of a run's policy in simulation, on train scenes (resumable)")
    p.add_argument("--run", required=True, help="the execute or mirror run whose policy starts")
    p.add_argument("--data", required=True, help="the dataset: its variations, train scenes and demonstrations")
    p.add_argument("--out", required=True, help="the fine-tuned run (an execute run: evaluate takes it)")
    p.add_argument("--reward", required=True, help="success (the simulator's flag), understanding (the scorer's "
                                                   "recognition of the clip) or aligned (the mirror run's shared "
                                                   "space); checked with the other settings")
    p.add_argument("--scorer", help="the run that scores the clips (learned rewards): an understand or mirror run for "
                                    "understanding, a mirror run for aligned")
    p.add_argument("--algo", default="awr", help="awr: advantage-weighted regression / filtered BC (default); ppo: "
                                                 "clipped policy gradient; checked with the other settings")
    p.add_argument("--preset", help="budget (finetune.* defaults; default: the run's preset)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="finetune.*, eval.* or train.device overrides")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="recognition accuracy and simulator rollouts of a trained run")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--view", help="camera the clips are seen from (default: the dataset's observer camera)")
    p.add_argument("--episodes", type=int, help="rollout episodes per variation")
    p.add_argument("--variations", nargs="+", metavar="ID", help="roll out only these variations (default: all; "
                                                                 "recognition still scores every test clip)")
    p.add_argument("--no-rollouts", action="store_true", help="recognition only (e.g. from another --view)")
    p.add_argument("--workers", type=int, help="simulator worker processes")
    p.add_argument("--condition", default="text", choices=["text", "video", "sibling", "null"],
                   help="how rollouts are told their task: the instruction (default), a demonstration clip of the "
                        "variation from another scene, a clip of a sibling variation of the same task, or nothing")
    p.add_argument("--demo-split", choices=["train", "test"], help="where the demonstrations come from (default: train)")
    p.add_argument("--demo-view", help="camera or view the demonstrations are seen from (default: the dataset's "
                                       "observer camera; another one replays them)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("analyze", help="probe, metrics and success-vs-failure of the two models' representations")
    p.add_argument("--runs", nargs="+", required=True, help="one mirror run, or an understand and an execute run")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rollouts", help="an evaluation directory whose rollouts get success-vs-failure scores")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="one self-contained HTML report from evaluations and analyses")
    p.add_argument("--inputs", nargs="+", required=True, help="EVAL and ADIR directories")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="run the whole chain on a small preset and print where the result is")
    p.add_argument("--out", default="mirroralign-demo")
    p.add_argument("--preset", default="quick")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as err:
        print(f"mirroralign: error: {err}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"mirroralign: data error: {err}", file=sys.stderr)
        return 1
    except SimulatorError as err:
        print(f"mirroralign: simulator error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, read-only or permission denied while writing: what was written stays
        where = f": {err.filename}" if err.filename else ""
        print(f"mirroralign: I/O error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mirroralign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
