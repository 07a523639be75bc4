"""What leaving the observer camera unrendered saves a rollout step (`run_rollouts(observe=False)`, which a `success`
fine-tune uses: it scores no clip): a simulator worker's CPU time per `env.step` with the agent cameras and the
observer, and with the agent cameras alone, on the `fine` preset's cameras, image size and fidelity, alternating
between the two in one process (the same seeded random actions on the same scenes; the physics alone besides).
The worker's step is what a fine-tune's rollouts spend their time on (the policy's forward pass, once per
executed chunk of 4 steps, ~2.6 ms at batch 1 on one thread, is ~4 % of it). Medians over the rounds.

    python benchmarks/rollout_cost.py [--variation push-back-middle] [--steps 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

import numpy as np  # noqa: E402

from mirroralign.config import load_config  # noqa: E402
from mirroralign.data.generate import select_variations  # noqa: E402
from mirroralign.envs import make_env  # noqa: E402


def cpu_ms_per_step(env, variation, scene: int, steps: int) -> float:
    env.reset(variation, scene)
    rng = np.random.default_rng(scene)
    t = time.process_time()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    return 1000 * (time.process_time() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variation", default="push-back-middle", help="a variation of the `fine` preset's suite")
    p.add_argument("--steps", type=int, default=100, help="steps per measurement (within Meta-World's 500)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    config = load_config("fine")
    variation = {v.id: v for v in select_variations(config)}[args.variation]
    agent, observer = list(config.env.agent_cameras), config.env.observers
    arms = {"physics only": [], "agent cameras": agent, "agent cameras + observer": agent + observer}
    envs = {name: make_env("metaworld", variation.task, config.env.image_size, cams, config.env.fidelity)
            for name, cams in arms.items()}
    times = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, env in envs.items():
            times[name].append(cpu_ms_per_step(env, variation, 1000 + r, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["agent cameras"] / med["agent cameras + observer"]
    results = {"question": "simulator CPU per rollout step with and without rendering the observer camera",
               "variation": args.variation, "agent_cameras": agent, "observer_cameras": observer,
               "image_size": config.env.image_size, "fidelity": config.env.fidelity, "steps": args.steps,
               "rounds": args.rounds, "cpu_ms_per_step": times, "median_ms": med, "ratio_without_observer": ratio}
    write_results("rollout_cost", results, [
        *[(f"CPU per step: {name}", f"{med[name]:.1f} ms", ", ".join(arms[name]) or "MuJoCo and Meta-World")
          for name in arms],
        ("without / with the observer", f"x{ratio:.2f}", f"medians of {args.rounds} alternating rounds of "
                                                          f"{args.steps} steps of {args.variation}")])


if __name__ == "__main__":
    main()
