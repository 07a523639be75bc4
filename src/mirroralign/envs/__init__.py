"""Simulator adapters behind one small interface (`Env`)."""

from __future__ import annotations

from mirroralign.envs.base import Env, Observation, Variation
from mirroralign.errors import UsageError

SIMULATORS = ("metaworld", "rlbench")
RECORDED = ("lerobot",)  # datasets imported from elsewhere, with no simulator to roll out in


def make_env(simulator: str, task: str, image_size: int = 64, render_cameras=(), fidelity: str = "fast") -> Env:
    if simulator == "metaworld":
        from mirroralign.envs.metaworld import MetaWorldEnv

        return MetaWorldEnv(task, image_size=image_size, render_cameras=render_cameras, fidelity=fidelity)
    if simulator == "rlbench":
        from mirroralign.envs.rlbench_spec import RLBenchUnavailable

        try:
            from mirroralign.envs.rlbench import RLBenchEnv
        except RLBenchUnavailable as err:
            raise UsageError(str(err)) from None
        return RLBenchEnv(task, image_size=image_size, render_cameras=render_cameras, fidelity=fidelity)
    raise UsageError(f"unknown simulator {simulator!r} (known: {', '.join(SIMULATORS)})")


def check_simulator(simulator: str) -> None:
    """UsageError when `simulator` cannot run here (RLBench without CoppeliaSim), before any work starts."""
    if simulator == "rlbench":
        from mirroralign.envs.rlbench_spec import RLBenchUnavailable

        try:
            import mirroralign.envs.rlbench  # noqa: F401
        except RLBenchUnavailable as err:
            raise UsageError(str(err)) from None
    elif simulator in RECORDED:
        raise UsageError(f"a {simulator} import has no simulator to roll out in")
    elif simulator not in SIMULATORS:
        raise UsageError(f"unknown simulator {simulator!r} (known: {', '.join(SIMULATORS)})")


def simulator_cameras(simulator: str) -> tuple[str, ...]:
    if simulator == "metaworld":
        from mirroralign.envs.metaworld import CAMERAS

        return CAMERAS
    if simulator == "rlbench":
        from mirroralign.envs.rlbench_spec import CAMERAS as RLBENCH_CAMERAS

        return RLBENCH_CAMERAS
    if simulator in RECORDED:
        return ()  # nothing can be rendered: only the recorded cameras exist
    raise UsageError(f"unknown simulator {simulator!r} (known: {', '.join(SIMULATORS)})")


__all__ = ["Env", "Observation", "Variation", "make_env", "check_simulator", "simulator_cameras", "SIMULATORS"]
