"""Per-task recognition of a trained understanding run from candidate held-out bands, registered for this process
only, to choose the `held-out` band of envs/views.py (the figures in BENCHMARKS.md's calibration section):

    python benchmarks/heldout_bands.py --run RUN --data DIR --out EVALROOT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mirroralign.envs.views import VIEWS, Band
from mirroralign.evaluate.run import evaluate

CANDIDATES = {
    # just outside the train band's azimuths, at its elevations: disjoint in azimuth only
    "near-sides": Band(azimuth=((170.0, 195.0), (345.0, 370.0)), elevation=(-45.0, -20.0), distance=(1.0, 1.4)),
    # the train band's azimuths from higher up: disjoint in elevation only
    "above": Band(azimuth=((200.0, 340.0),), elevation=(-65.0, -50.0), distance=(1.0, 1.4)),
}

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    VIEWS.update(CANDIDATES)
    for name in CANDIDATES:
        out = args.out / f"{args.run.name}-{name}"
        if not (out / "metrics.json").is_file():
            evaluate(args.run, args.data, out, view=name, rollouts=False, progress=False)
        r = json.loads((out / "metrics.json").read_text())["recognition"]
        print(f"{name}: per-task {100 * r['per_task_top1']:.1f} % (chance {100 * r['chance_per_task']:.1f} %), "
              f"all variations {100 * r['top1']:.1f} %")
