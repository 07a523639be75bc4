"""Training throughput per mode on the `quick` preset, and the share of step time spent waiting for data.

    python benchmarks/training.py [--data DIR] [--steps N]

Runs the real trainer (`mirroralign.train.train`) for each mode in one process, logging every step, and
reads the per-step timings back from metrics.jsonl (the first steps are warm-up and skipped).
Target: data_wait_share <= 0.10.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.config import load_config  # noqa: E402
from mirroralign.data.generate import generate  # noqa: E402
from mirroralign.train import MODES, train  # noqa: E402

WARMUP = 5


def measure(mode: str, data: Path, steps: int) -> dict:
    config = load_config("quick", overrides=[f"train.steps={steps}", "train.log_every=1",
                                             f"train.checkpoint_every={steps}"])
    with tempfile.TemporaryDirectory() as tmp:
        run = train(config, mode, data, Path(tmp) / "run", progress=False)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][WARMUP:]
    step_s = sum(r["step_s"] for r in rows)
    data_s = sum(r["data_s"] for r in rows)
    return {"samples_per_s": len(rows) * config.train.batch_size / step_s, "data_wait_share": data_s / step_s,
            "step_ms": 1000 * step_s / len(rows), "steps_measured": len(rows), "batch_size": config.train.batch_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/quick", help="a quick-preset dataset (generated here if missing)")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    data = generate(load_config("quick"), args.data)
    results = {"modes": {mode: measure(mode, data, args.steps) for mode in MODES}, "target_data_wait_share": 0.10,
               "preset": "quick"}
    write_results("training", results, [
        (f"{mode}", f"{r['samples_per_s']:.0f} samples/s", f"data wait {100 * r['data_wait_share']:.1f} % of step "
                                                          f"time (target <= 10 %), {r['step_ms']:.0f} ms/step at "
                                                          f"batch {r['batch_size']}")
        for mode, r in results["modes"].items()])


if __name__ == "__main__":
    main()
