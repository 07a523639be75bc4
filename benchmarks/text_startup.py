"""Start-up time that stored instruction embeddings save each command that builds models (train, evaluate,
analyze; finetune will): a fresh process opens the dataset and builds the mirror models, once reading the embeddings
from DATA/text_embeddings.safetensors and once from a copy of DATA without that file (a dataset made before
they were stored: the sentence encoder is loaded and run). Repeats alternate; medians are compared.

    python benchmarks/text_startup.py [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.data.store import MANIFEST, TEXT_EMBEDDINGS, read_json, write_manifest  # noqa: E402

# what every model-building command does before its first step, in a new process
BUILD = """
import sys, time
t0 = time.perf_counter()
from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore
from mirroralign.train import build_models
build_models(load_config("tiny"), "mirror", EpisodeStore(sys.argv[1]))
print(time.perf_counter() - t0, "sentence_transformers" in sys.modules)
"""


def without_embeddings(data: Path, dst: Path) -> Path:
    shutil.copytree(data, dst)
    m = read_json(dst / MANIFEST, "manifest")
    del m["files"][TEXT_EMBEDDINGS]
    (dst / TEXT_EMBEDDINGS).unlink()
    write_manifest(dst, m)
    return dst


def start_up(data: Path) -> tuple[float, float, bool]:
    """(wall time of the whole process, time from the first import to built models, whether the encoder loaded)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", BUILD, str(data)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    inside, loaded = r.stdout.split()
    return wall, float(inside), loaded == "True"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a dataset with stored embeddings (default: generate a small tiny-preset one)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    load_before = os.getloadavg()  # other work on a shared machine slows the encoder's side most
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "tiny"
        if not args.data:
            subprocess.run([sys.executable, "-m", "mirroralign", "generate", "--preset", "tiny", "--episodes", "1",
                            "--out", str(data)], check=True, capture_output=True)
        old = without_embeddings(data, Path(tmp) / "no-embeddings")
        runs = {"stored": [], "encoder": []}
        for _ in range(args.repeats):
            for name, root in (("stored", data), ("encoder", old)):
                runs[name].append(start_up(root))
    assert not any(r[2] for r in runs["stored"]) and all(r[2] for r in runs["encoder"])  # what is compared
    wall = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    build = {k: statistics.median(r[1] for r in v) for k, v in runs.items()}
    results = {"repeats": args.repeats, "wall_s": wall, "imports_and_build_s": build,
               "runs": {k: [list(r) for r in v] for k, v in runs.items()},
               "ratio_wall": wall["encoder"] / wall["stored"], "ratio_build": build["encoder"] / build["stored"],
               "saved_s": wall["encoder"] - wall["stored"],
               "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]}}
    note = f"median of {args.repeats} fresh processes"
    write_results("text_startup", results, [
        ("start-up, stored embeddings", f"{wall['stored']:.2f} s", note + "; the encoder is not imported"),
        ("start-up, encoder loaded", f"{wall['encoder']:.2f} s", note + "; dataset without the file"),
        ("saved per command", f"{results['saved_s']:.2f} s", "train, evaluate, analyze"),
        ("ratio (whole process)", f"{results['ratio_wall']:.1f}x", "encoder / stored"),
        ("ratio (imports and model building)", f"{results['ratio_build']:.1f}x", "interpreter start excluded"),
        ("load average (1 min)", f"{load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}", "before -> after"),
    ])


if __name__ == "__main__":
    main()
