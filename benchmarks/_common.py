"""Shared by the benchmark scripts: machine facts, writing JSON plus a Markdown table, per-seed results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from mirroralign.data.store import write_json_atomic

RESULTS = Path(__file__).parent / "results"


def seeded_parser(doc: str, preset: str, seeds: list[int]) -> argparse.ArgumentParser:
    """The arguments every multi-seed benchmark on `_mirror.py`'s cache takes: --preset, --seeds, --root, --data."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--root", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--data", type=Path, help="dataset (default: ROOT/data-PRESET, generated if missing)")
    return parser


def _commit(where: Path) -> str:
    """HEAD's short hash, with "-dirty" when tracked files below `where` (results aside) differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=where).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


@lru_cache(maxsize=1)
def machine() -> dict:
    """Taken once, when the script starts (see below): the code a process loaded, not the HEAD of the moment it
    writes its results."""
    import torch

    import mirroralign

    # the package may be imported from a snapshot (a git worktree on PYTHONPATH) while a long benchmark runs
    return {"mirroralign_commit": _commit(Path(mirroralign.__file__).parent),
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "commit": _commit(Path(__file__).parent)}


machine()


def write_results(name: str, results: dict, table: list[tuple[str, str, str]],
                  header: tuple[str, str, str] = ("metric", "value", "note")) -> None:
    """`table`: (metric, value, note) rows for the Markdown file that README and BENCHMARKS.md quote."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {**results, "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| " + " | ".join(header) + " |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in table]]
    m = results["machine"]
    lines.append(f"\n_{m['cpus']} CPUs, {m['platform']}, MUJOCO_GL={m['mujoco_gl']}, commit {m['commit']}, "
                 f"{results['date']}_")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


class SeedResults:
    """Each finished seed's results, committed beside the benchmark's JSON (RESULTS/<name>_seeds/seed-N.json, or
    seed-N.PART.json for a part of a seed that runs on its own): a seed once finished is never rerun, even on a
    machine where the run folders (ROOT) did not survive. `settings` (JSON-able; None for none) is stored in every
    file, and a file of other settings is refused, not mixed in."""

    def __init__(self, name: str, settings=None, folder: Path | None = None):
        self.folder, self.settings = folder or RESULTS / f"{name}_seeds", settings

    def path(self, seed: int, part: str | None = None) -> Path:
        return self.folder / (f"seed-{seed}.json" if part is None else f"seed-{seed}.{part}.json")

    def get(self, seed: int, part: str | None = None) -> dict | None:
        path = self.path(seed, part)
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        if result.pop("settings", None) != self.settings:
            raise SystemExit(f"{path} was measured with other settings than these; remove it to measure this seed "
                             f"again")
        return result

    def put(self, seed: int, result: dict, part: str | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(seed, part),
                          result if self.settings is None else {**result, "settings": self.settings})

    def missing(self, seeds: list[int], parts: tuple[str, ...]) -> list[tuple[int, str]]:
        """The (seed, part) pairs not finished yet, seed by seed."""
        return [(s, part) for s in seeds for part in parts if self.get(s, part) is None]

    def complete(self, seeds: list[int], parts: tuple[str, ...]) -> list[tuple[int, dict[str, dict]]]:
        """(seed, {part: result}) of each seed whose every part is finished, in the order of `seeds`."""
        found = [(s, {part: self.get(s, part) for part in parts}) for s in seeds]
        return [(s, results) for s, results in found if None not in results.values()]

    @staticmethod
    def commits(results: list[dict]) -> list[str]:
        """The code that ran these seeds (each result holds the `machine()` of the process that measured it)."""
        return sorted({r["machine"]["mirroralign_commit"] for r in results})


def run_parts(script: str, parts: list[tuple[int, str]], jobs: int, on_done=lambda: None) -> None:
    """Each (seed, part) of a benchmark as a process of its own, `jobs` at a time with one torch thread each (on 2
    cores two one-thread jobs do ~1.15x the training work of one two-thread job: seed_cost.py): `python SCRIPT` with
    this process's own arguments and `--part-job SEED PART`, which the script answers by measuring that part and
    keeping it in its SeedResults. `on_done` after each part; a failed part stops the loop (a rerun resumes it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    todo, running = list(parts), []
    while todo or running:
        while todo and len(running) < jobs:
            seed, part = todo.pop(0)
            command = [sys.executable, script, *sys.argv[1:], "--part-job", str(seed), part]
            running.append(((seed, part), subprocess.Popen(command, env=env)))
        time.sleep(5)
        for (seed, part), proc in [r for r in running if r[1].poll() is not None]:
            running.remove(((seed, part), proc))
            if proc.returncode != 0:
                raise SystemExit(f"seed {seed} {part} failed (exit {proc.returncode}); rerun to resume it")
            on_done()
