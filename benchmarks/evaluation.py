"""Rollout throughput: one simulator in the main process (serial) against W worker processes with the
policy batched in the main process, on the same episodes, in one run. Target: ratio >= 1.6 on 2 cores.

    python benchmarks/evaluation.py --run RUN [--episodes N]   (RUN: an execute or mirror run)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.data.generate import scene_seed  # noqa: E402
from mirroralign.envs import make_env  # noqa: E402
from mirroralign.evaluate.rollouts import run_rollouts  # noqa: E402
from mirroralign.train import load_run  # noqa: E402


@torch.no_grad()
def serial(policy, store, config, episodes: int) -> list[bool]:
    """The baseline: every episode in turn, in this process, the policy on a batch of one."""
    cams, e, v = store.manifest["cameras"], config.env, config.eval
    envs, results = {}, []
    for i, variation in enumerate(store.variations):
        if variation.task not in envs:  # one env (and renderer) per task, kept alive: see DESIGN's OSMesa note
            envs[variation.task] = make_env(store.manifest["simulator"], variation.task, store.manifest["image_size"],
                                            [*cams["agent"], *cams["observer"]], e.fidelity)
        env = envs[variation.task]
        for k in range(episodes):
            obs, steps, success = env.reset(variation, scene_seed(config.data.seed, "test", k)), 0, False
            while not success and steps < v.max_steps:
                batch = {"images": torch.from_numpy(np.stack([obs.images[c] for c in cams["agent"]]))[None]
                         .permute(0, 1, 4, 2, 3), "proprio": torch.from_numpy(obs.proprio)[None],
                         "text_index": torch.tensor([store.canonical_text[i]])}
                for action in policy.act(batch)[0, : v.execute_steps].numpy():
                    obs, _, success = env.step(action)
                    steps += 1
                    if success or steps >= v.max_steps:
                        break
            results.append(success)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--episodes", type=int, default=2, help="per variation")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    loaded = load_run(args.run)
    policy, store, config = loaded.models["execution"], loaded.store, loaded.config
    config.eval.workers = args.workers
    n = args.episodes * len(store.variations)

    start = time.perf_counter()
    serial_success = serial(policy, store, config, args.episodes)
    t_serial = time.perf_counter() - start
    start = time.perf_counter()
    records, _ = run_rollouts(policy, store, config, seed=config.data.seed, episodes=args.episodes, progress=False)
    t_parallel = time.perf_counter() - start
    parallel_success = [r["success"] for r in records]
    results = {"eps_per_min_serial": 60 * n / t_serial, "eps_per_min_parallel": 60 * n / t_parallel,
               "ratio": t_serial / t_parallel, "target_ratio": 1.6, "episodes": n, "workers": args.workers,
               "same_outcomes": serial_success == parallel_success,
               "run": str(loaded.path), "image_size": store.manifest["image_size"]}
    write_results("evaluation", results, [
        ("eps_per_min_serial", f"{results['eps_per_min_serial']:.1f}", f"{n} episodes, one simulator in-process"),
        ("eps_per_min_parallel", f"{results['eps_per_min_parallel']:.1f}",
         f"{args.workers} worker processes, policy batched in the main process"),
        ("ratio", f"{results['ratio']:.2f}", "target >= 1.6"),
        ("same outcomes", str(results["same_outcomes"]), "serial and parallel rollouts agree episode by episode"),
    ])


if __name__ == "__main__":
    main()
