"""Meta-World 3 (gymnasium, MuJoCo) behind the `Env` interface.

Layouts are steered, not re-sampled by Meta-World: for a scene seed we draw the task's random vector
(object and goal positions) ourselves, with the goal inside the variation's region, then freeze it on
the unwrapped env before its own `reset()`.
"""

from __future__ import annotations

import warnings

import numpy as np

from mirroralign.envs.gl import ensure_gl_backend

ensure_gl_backend()

import mujoco  # noqa: E402  (after the GL backend is chosen)
from gymnasium.spaces import Box  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3, MT50_V3  # noqa: E402
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402

from mirroralign.envs.base import Env, Observation, Variation  # noqa: E402
from mirroralign.envs.views import ObserverPose, is_distribution, sample_pose  # noqa: E402
from mirroralign.errors import UsageError  # noqa: E402

# Meta-World's experts warn on every episode that their gains may be clipped; they are, by design.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")

CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
TASKS = tuple(sorted(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS))
MAX_EPISODE_STEPS = 500  # Meta-World raises if stepped past this without a reset
BENCHMARK_TASKS = {
    "mt10": tuple(name.removesuffix("-v3") for name in MT10_V3),
    "mt50": tuple(name.removesuffix("-v3") for name in MT50_V3),
}

_OBJECT, _GOAL = slice(0, 3), slice(3, 6)  # goal tasks lay their random vector out as (object xyz, goal xyz)
# Every renderer made, never freed: under OSMesa a collected renderer frees the GL objects of whatever context is
# current and later renders come out garbage. An env is collected whenever the cyclic GC runs (its reset hook
# refers back to it), so holding the renderer on the env alone does not keep it.
_RENDERERS: list = []


class _LayoutRejected(Exception):
    """Meta-World asked for a second random vector: the first broke one of its layout constraints."""


class MetaWorldEnv(Env):
    cameras = CAMERAS
    action_dim = 4
    proprio_dim = 4  # end-effector xyz and gripper opening: what the robot knows of itself

    def __init__(self, task: str, image_size: int = 64, render_cameras=(), fidelity: str = "fast"):
        if task not in TASKS:
            raise UsageError(f"unknown Meta-World task {task!r}")
        unknown = [c for c in render_cameras if c not in CAMERAS and not is_distribution(c)]
        if unknown:
            raise UsageError(f"unknown camera {unknown[0]!r} (Meta-World has: {', '.join(CAMERAS)}, and the "
                             f"observer views of mirroralign.envs.views)")
        self.task = task
        self.render_cameras = tuple(render_cameras)
        env = ALL_V3_ENVIRONMENTS[f"{task}-v3"](width=image_size, height=image_size)
        env._set_task_called = True  # the layout is steered below instead of through set_task()
        env._partially_observable = False  # the scripted expert reads the goal; models never see it
        env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal bounds zeroed: recompute
        env._freeze_rand_vec = True
        self.raw = env
        self._own_goal_space = env.goal_space
        self._layout: np.ndarray | None = None
        self._layout_reads = 0
        reset_model = env.reset_model

        def reset_model_counting_reads():
            self._layout_reads = 0
            return reset_model()

        env.reset_model = reset_model_counting_reads
        env._get_state_rand_vec = self._frozen_layout
        self._expert = ENV_POLICY_MAP[f"{task}-v3"]()
        self._state_obs: np.ndarray | None = None
        self._flipped: dict[str, bool] = {}
        self._poses: dict[str, ObserverPose] = {}
        self._free_cameras: dict[str, mujoco.MjvCamera] = {}  # observer views: a free camera each, posed per reset
        self._renderer = None
        if self.render_cameras:
            if fidelity in ("fast", "draft"):
                env.model.vis.quality.shadowsize = 0
            if fidelity == "draft":  # no multisampling: llvmpipe renders a 64x64 frame ~3x faster (edges alias)
                env.model.vis.quality.offsamples = 0
            self._renderer = mujoco.Renderer(env.model, image_size, image_size)
            _RENDERERS.append(self._renderer)  # kept for the life of the process (see _RENDERERS)
            if fidelity in ("fast", "draft"):
                self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
                self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self._scene_option = mujoco.MjvOption()
            self._scene_option.sitegroup[:] = 0  # goal markers hidden, as in RLBench

    def sample_layout(self, variation: Variation, rng: np.random.Generator) -> np.ndarray:
        """One random vector: objects depend on the draw (and the task's object region) only, the goal also on the
        variant's region."""
        space = self.raw._random_reset_space
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        u = rng.random(low.size)
        vec = low + u * (high - low)
        for part, lo, hi in ((_OBJECT, variation.object_low, variation.object_high),
                             (_GOAL, variation.goal_low, variation.goal_high)):
            if lo is not None:
                vec[part] = np.asarray(lo) + u[part] * (np.asarray(hi) - np.asarray(lo))
        return vec

    def reset(self, variation: Variation, scene_seed: int, poses: dict | None = None) -> Observation:
        if variation.task != self.task:
            raise ValueError(f"variation {variation.id} is for task {variation.task}, not {self.task}")
        # Meta-World re-reads its random vector until the layout meets the task's constraints (e.g. object
        # and goal far enough apart); with a frozen vector that loop never ends. A second read therefore
        # rejects the draw, and the next one from the same seeded generator is tried.
        self._observe_goal_space(variation)
        rng = np.random.default_rng(scene_seed)
        for _ in range(1000):
            self._layout = self.sample_layout(variation, rng)
            self.raw._last_rand_vec = self._layout
            self.raw.seed(scene_seed)
            try:
                self._state_obs, _ = self.raw.reset()
                break
            except _LayoutRejected:
                continue
        else:
            raise RuntimeError(f"no valid layout for {variation.id} from scene seed {scene_seed}")
        # Some cameras are mounted upside down; an image is upright when the camera's up axis points up.
        data = self.raw.data
        named = [c for c in self.render_cameras if c in CAMERAS]
        self._flipped = {c: bool(data.cam(c).xmat.reshape(3, 3)[2, 1] < 0) for c in named}
        self._poses = {c: (poses or {}).get(c) or sample_pose(c, scene_seed)
                       for c in self.render_cameras if is_distribution(c)}
        self._free_cameras = {c: free_camera(pose) for c, pose in self._poses.items()}
        return self._observe()

    @property
    def observer_poses(self) -> dict[str, ObserverPose]:
        return dict(self._poses)

    def _observe_goal_space(self, variation: Variation) -> None:
        """Meta-World's own goal space, or (`widen_goal_space`) its union with the variation's goal region."""
        space = self._own_goal_space
        if variation.widen_goal_space and variation.goal_low is not None:
            space = Box(np.minimum(space.low, variation.goal_low), np.maximum(space.high, variation.goal_high),
                        dtype=np.float64)
        if space is not self.raw.goal_space:
            self.raw.goal_space = space
            self.raw.__dict__.pop("sawyer_observation_space", None)  # cached with the old bounds

    def render(self) -> dict[str, np.ndarray]:
        """The configured cameras' current images (upright uint8 [H, W, 3])."""
        return self._observe().images

    def _frozen_layout(self) -> np.ndarray:
        self._layout_reads += 1
        if self._layout_reads > 1:  # read again within one reset_model(): the draw broke a constraint
            raise _LayoutRejected
        return self._layout

    def step(self, action: np.ndarray, render: bool = True) -> tuple[Observation, float, bool]:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)  # Meta-World's normalised action space
        self._state_obs, reward, _, _, info = self.raw.step(action)
        return self._observe(render), float(reward), bool(info["success"])

    def expert_action(self) -> np.ndarray:
        return np.clip(self._expert.get_action(self._state_obs), -1.0, 1.0).astype(np.float32)

    def sim_state(self) -> np.ndarray:
        d = self.raw.data
        return np.concatenate([d.qpos, d.qvel, d.mocap_pos.ravel(), d.mocap_quat.ravel()])

    def _observe(self, render: bool = True) -> Observation:
        images = {}
        for cam in self.render_cameras if render else ():
            self._renderer.update_scene(self.raw.data, camera=self._free_cameras.get(cam, cam),
                                        scene_option=self._scene_option)
            img = self._renderer.render()
            images[cam] = np.ascontiguousarray(img[::-1, ::-1]) if self._flipped.get(cam) else img.copy()
        return Observation(images, self._state_obs[:4].astype(np.float32))


def free_camera(pose: ObserverPose) -> mujoco.MjvCamera:
    """A MuJoCo free camera at `pose` (renders upright: its up axis is the world's z)."""
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = pose.lookat
    cam.azimuth, cam.elevation, cam.distance = pose.azimuth, pose.elevation, pose.distance
    return cam
