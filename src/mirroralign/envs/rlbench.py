"""RLBench (CoppeliaSim, PyRep) behind the `Env` interface, for rollouts where RLBench is installed.

Importing this module without RLBench raises `RLBenchUnavailable` with what to install; recorded RLBench
demonstrations need none of it (`mirroralign import-rlbench`). Observations and actions are those of the
importer (`rlbench_spec`): a policy trained on imported demonstrations gives this adapter gripper poses and
open states, executed by RLBench's end-effector-pose planner, as in PerAct and RVT.
"""

from __future__ import annotations

import random

import numpy as np

from mirroralign.envs.base import Env, Observation, Variation
from mirroralign.envs.rlbench_spec import CAMERAS, RLBENCH18, RLBenchUnavailable, executable_action, proprio_vector
from mirroralign.errors import UsageError

try:
    from pyrep.errors import ConfigurationPathError, IKError
    from rlbench.action_modes.action_mode import MoveArmThenGripper
    from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning
    from rlbench.action_modes.gripper_action_modes import Discrete
    from rlbench.backend.exceptions import InvalidActionError
    from rlbench.backend.utils import task_file_to_task_class
    from rlbench.environment import Environment
    from rlbench.observation_config import ObservationConfig
except ImportError as err:
    raise RLBenchUnavailable(
        f"RLBench is not installed ({err}); the live RLBench adapter needs CoppeliaSim, PyRep and RLBench "
        f"(https://github.com/stepjam/RLBench). Recorded RLBench demonstrations need none of them: "
        f"mirroralign import-rlbench") from err


class RLBenchEnv(Env):
    cameras = CAMERAS
    action_dim = 8  # gripper pose (xyz, quaternion xyzw) and open state
    proprio_dim = 15  # 7 joint positions, gripper pose, open state (Panda)

    def __init__(self, task: str, image_size: int = 128, render_cameras=(), fidelity: str = "fast"):
        try:  # any task RLBench ships (rlbench.tasks.<task>), not only the rlbench18 suite
            task_class = task_file_to_task_class(task)
        except (ImportError, AttributeError, ValueError):
            raise UsageError(f"unknown RLBench task {task!r}: RLBench has no rlbench.tasks.{task} "
                             f"(e.g. {', '.join(list(RLBENCH18)[:3])})") from None
        unknown = [c for c in render_cameras if c not in CAMERAS]
        if unknown:
            raise UsageError(f"unknown camera {unknown[0]!r} (RLBench has: {', '.join(CAMERAS)})")
        self.task, self.render_cameras = task, tuple(render_cameras)
        obs_config = ObservationConfig()
        obs_config.set_all_high_dim(False)  # only the RGB images of the cameras asked for
        for cam in self.render_cameras:  # attributes rather than CameraConfig(...): its arguments vary by version
            config = getattr(obs_config, f"{cam}_camera")
            config.rgb, config.image_size = True, (image_size, image_size)
        action_mode = MoveArmThenGripper(arm_action_mode=EndEffectorPoseViaPlanning(), gripper_action_mode=Discrete())
        self._env = Environment(action_mode, obs_config=obs_config, headless=True)
        self._env.launch()
        self._task = self._env.get_task(task_class)
        self._last = None

    def close(self) -> None:
        self._env.shutdown()

    def reset(self, variation: Variation, scene_seed: int, poses: dict | None = None) -> Observation:
        if variation.task != self.task:
            raise ValueError(f"variation {variation.id} is for task {variation.task}, not {self.task}")
        number = int(variation.variant.removeprefix("variation"))
        # RLBench samples object poses from Python's and numpy's global generators
        random.seed(scene_seed)
        np.random.seed(scene_seed % 2**32)
        self._task.set_variation(number)
        _, obs = self._task.reset()
        self._last = self._observe(obs)
        return self._last

    def step(self, action: np.ndarray, render: bool = True) -> tuple[Observation, float, bool]:
        try:
            obs, reward, _ = self._task.step(executable_action(action))
        except (InvalidActionError, ConfigurationPathError, IKError):
            return self._last, 0.0, False  # an unreachable pose: the robot stays where it is
        self._last = self._observe(obs, render)
        return self._last, float(reward), bool(reward >= 1.0)  # RLBench's sparse reward is 1 on success

    def expert_action(self) -> np.ndarray:
        raise NotImplementedError("RLBench's expert plans whole demonstrations (TaskEnvironment.get_demos), not "
                                  "single actions: record them with RLBench's dataset generator and import them "
                                  "with `mirroralign import-rlbench`")

    def sim_state(self) -> np.ndarray:
        obs = self._task.get_observation()
        return np.concatenate([obs.joint_positions, obs.joint_velocities, obs.gripper_pose, [obs.gripper_open]])

    def _observe(self, obs, render: bool = True) -> Observation:
        images = {c: np.ascontiguousarray(getattr(obs, f"{c}_rgb")) for c in self.render_cameras} if render else {}
        return Observation(images, proprio_vector(obs.joint_positions, obs.gripper_pose, obs.gripper_open))
