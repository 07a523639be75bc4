"""Expert-data generation throughput against the bare renderer, measured in one run.

    python benchmarks/generation.py [--episodes N] [--tasks a,b,...]

raw_render_fps: frames/s of `env.render()` in a loop on the same cameras and image size (one process).
gen_fps_Wworkers: stored frames/s of `generate` end to end (process start-up, simulation, scripted expert,
rendering, compression, checksums, atomic writes) with W worker processes. Targets: ratio_per_worker =
gen_fps_1worker / raw_render_fps >= 0.8; ratio_2v1 = gen_fps_2workers / gen_fps_1worker >= 1.7.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.config import load_config  # noqa: E402
from mirroralign.data.generate import generate  # noqa: E402
from mirroralign.data.store import EpisodeStore  # noqa: E402
from mirroralign.envs import make_env  # noqa: E402
from mirroralign.suites import get_suite  # noqa: E402


def raw_render_fps(config, seconds: float = 20.0) -> float:
    e = config.env
    cams = [*e.observer_cameras, *e.agent_cameras]
    variation = next(v for v in get_suite(config.data.suite) if v.task == config.data.tasks[0])
    env = make_env(e.simulator, variation.task, e.image_size, cams, e.fidelity)
    env.reset(variation, 0)
    env.render()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.render()
        n += 1
    return n * len(cams) / (time.perf_counter() - start)


def gen_fps(config, workers: int) -> tuple[float, dict]:
    config.data.workers = workers
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = generate(config, Path(tmp) / "data", progress=False)
        wall = time.perf_counter() - start
        store = EpisodeStore(root)
        cams = len(config.env.observer_cameras) + len(config.env.agent_cameras)
        frames = sum((e["length"] + 1) * cams for e in store.episodes.values())
        return frames / wall, {"wall_s": wall, "frames": frames, "episodes": len(store.episodes),
                               "expert_failures": store.manifest["expert_failures"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=6, help="per variation")
    p.add_argument("--tasks", default="drawer-open,push,hammer,faucet-close")
    args = p.parse_args()
    config = load_config("quick", overrides=[f"data.tasks=[{args.tasks}]", f"data.episodes={args.episodes}"])
    raw = raw_render_fps(config)
    fps1, run1 = gen_fps(config, 1)
    fps2, run2 = gen_fps(config, 2)
    e = config.env
    results = {
        "raw_render_fps": raw, "gen_fps_1worker": fps1, "gen_fps_2workers": fps2,
        "ratio_per_worker": fps1 / raw, "ratio_2v1": fps2 / fps1,
        "targets": {"ratio_per_worker": 0.8, "ratio_2v1": 1.7},
        "setup": {"image_size": e.image_size, "cameras": [*e.observer_cameras, *e.agent_cameras],
                  "fidelity": e.fidelity, "tasks": config.data.tasks, "episodes_per_variation": config.data.episodes},
        "runs": {"1worker": run1, "2workers": run2},
    }
    cams = ", ".join(results["setup"]["cameras"])
    write_results("generation", results, [
        ("raw_render_fps", f"{raw:.1f}", f"bare renderer, {len(results['setup']['cameras'])} cameras ({cams}), "
                                         f"{e.image_size}x{e.image_size}"),
        ("gen_fps_1worker", f"{fps1:.1f}", f"{run1['episodes']} episodes, {run1['frames']} frames, "
                                           f"{run1['wall_s']:.0f} s"),
        ("gen_fps_2workers", f"{fps2:.1f}", f"{run2['wall_s']:.0f} s"),
        ("ratio_per_worker", f"{fps1 / raw:.2f}", "target >= 0.8"),
        ("ratio_2v1", f"{fps2 / fps1:.2f}", "target >= 1.7"),
    ])


if __name__ == "__main__":
    main()
