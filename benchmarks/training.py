"""Training throughput per mode on the `quick` preset, and the share of step time spent waiting for data; then
mirror mode on 2 processes (torchrun, DDP over gloo) against 1 process, in the same run.

    python benchmarks/training.py [--data DIR] [--steps N]

Runs the real trainer (`mirroralign.train.train`) for each mode in one process, logging every step, and
reads the per-step timings back from metrics.jsonl (the first steps are warm-up and skipped); the 2-process
run is the real command line under torchrun, timed by rank 0 the same way (same global batch).
Target: data_wait_share <= 0.10. The 2-process ratio is reported, not targeted: on a 2-core machine the two
ranks share the cores one process already uses.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.config import load_config  # noqa: E402
from mirroralign.data.generate import generate  # noqa: E402
from mirroralign.train import MODES, train  # noqa: E402

WARMUP = 5
PRESET = "quick"


def overrides(steps: int) -> list[str]:
    return [f"train.steps={steps}", "train.log_every=1", f"train.checkpoint_every={steps}"]


def measure(mode: str, data: Path, steps: int) -> dict:
    config = load_config(PRESET, overrides=overrides(steps))
    with tempfile.TemporaryDirectory() as tmp:
        run = train(config, mode, data, Path(tmp) / "run", progress=False)
        return throughput(run, config.train.batch_size)


def measure_processes(mode: str, data: Path, steps: int, processes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                        str(processes), "-m", "mirroralign", "train", "--mode", mode, "--data", str(data), "--preset",
                        PRESET, "--out", f"{tmp}/run", *overrides(steps)], check=True, capture_output=True)
        return {**throughput(Path(tmp) / "run", load_config(PRESET).train.batch_size), "processes": processes}


def throughput(run: Path, batch_size: int) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][WARMUP:]
    step_s = sum(r["step_s"] for r in rows)
    data_s = sum(r["data_s"] for r in rows)
    return {"samples_per_s": len(rows) * batch_size / step_s, "data_wait_share": data_s / step_s,
            "step_ms": 1000 * step_s / len(rows), "steps_measured": len(rows), "batch_size": batch_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/quick", help="a quick-preset dataset (generated here if missing)")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    data = generate(load_config("quick"), args.data)
    results = {"modes": {mode: measure(mode, data, args.steps) for mode in MODES}, "target_data_wait_share": 0.10,
               "preset": "quick"}
    ddp = measure_processes("mirror", data, args.steps, processes=2)
    ratio = ddp["samples_per_s"] / results["modes"]["mirror"]["samples_per_s"]
    results["mirror_2_processes"] = {**ddp, "ratio_vs_1_process": ratio}
    table = [(mode, f"{r['samples_per_s']:.0f} samples/s",
              f"data wait {100 * r['data_wait_share']:.1f} % of step time (target <= 10 %), "
              f"{r['step_ms']:.0f} ms/step at batch {r['batch_size']}")
             for mode, r in results["modes"].items()]
    table.append(("mirror, 2 processes", f"{ddp['samples_per_s']:.0f} samples/s",
                  f"{ratio:.2f}x 1 process (torchrun, DDP over gloo, global batch {ddp['batch_size']}, "
                  f"{ddp['step_ms']:.0f} ms/step)"))
    write_results("training", results, table)


if __name__ == "__main__":
    main()
