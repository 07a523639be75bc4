"""Wall time of every stage of `mirroralign demo` (default: the quick preset, budget 15 minutes on 2 cores),
and of a second run over the same directory, which should reuse everything.

    python benchmarks/demo.py [--preset quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.demo import run_demo  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--out", help="demo directory (default: a temporary one, so the first run starts cold)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp) / "demo"
        first, second = {}, {}
        start = time.perf_counter()
        run_demo(args.preset, out, first)
        total = time.perf_counter() - start
        start = time.perf_counter()
        run_demo(args.preset, out, second)
        total_again = time.perf_counter() - start
    results = {"preset": args.preset, "stages_s": first, "total_s": total, "second_run_total_s": total_again,
               "budget_s": 15 * 60 if args.preset == "quick" else None}
    write_results(f"demo_{args.preset}" if args.preset != "quick" else "demo", results,
                  [(name, f"{s:.0f} s", "") for name, s in first.items()]
                  + [("total", f"{total / 60:.1f} min", "budget 15 min" if args.preset == "quick" else ""),
                     ("second run (cached)", f"{total_again:.0f} s", "reuses data, runs, evaluations, analyses")])


if __name__ == "__main__":
    main()
