"""The whole chain on one preset: generate, verify, train the three modes, evaluate, analyze the independent
pair and the mirror run, report. Every stage resumes or reuses what an earlier call left in `out`."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from mirroralign.analysis.run import analyze
from mirroralign.config import load_config
from mirroralign.data.generate import generate
from mirroralign.data.store import EpisodeStore
from mirroralign.errors import DataError
from mirroralign.evaluate.run import evaluate, is_evaluation_of
from mirroralign.report import report
from mirroralign.train import MODES, train


def run_demo(preset: str, out: str | Path, timings: dict[str, float] | None = None) -> Path:
    """Returns the report's path; `timings`, when given, receives the wall time of every stage."""
    timings = {} if timings is None else timings

    @contextmanager
    def stage(name):
        start = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - start

    config = load_config(preset)
    out = Path(out)
    with stage("generate"):
        data = generate(config, out / "data")
        damaged = EpisodeStore(data).verify()
        if damaged:
            raise DataError(f"demo dataset failed verification: {', '.join(damaged)}")
    runs = {}
    for mode in MODES:
        with stage(f"train_{mode}"):
            runs[mode] = train(config, mode, data, out / "runs" / mode)
    evals = {mode: out / "eval" / mode for mode in MODES}
    analyses = {"independent": ([runs["understand"], runs["execute"]], evals["execute"]),
                "mirror": ([runs["mirror"]], evals["mirror"])}
    for mode in MODES:
        with stage(f"evaluate_{mode}"):
            if not is_evaluation_of(evals[mode], runs[mode]):
                for name, (_, rollouts) in analyses.items():  # first: an analysis of the old rollouts is stale
                    if rollouts == evals[mode]:
                        (out / "analysis" / name / "analysis.json").unlink(missing_ok=True)
                evaluate(runs[mode], data, evals[mode])
    for name, (run_dirs, rollouts) in analyses.items():
        with stage(f"analyze_{name}"):
            if not (out / "analysis" / name / "analysis.json").is_file():
                analyze(run_dirs, data, out / "analysis" / name, rollouts=rollouts)
    with stage("report"):
        return report([*evals.values(), *(out / "analysis" / name for name in analyses)], out / "report.html")
