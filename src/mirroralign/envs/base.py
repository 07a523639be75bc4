"""The small interface every simulator adapter offers, and what it resets to."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Variation:
    """A (task, variant) with a canonical instruction and paraphrases.

    `goal_low`/`goal_high` bound the region the goal is sampled from for each scene seed (goal variants);
    `None` keeps the simulator's own goal distribution. `object_low`/`object_high` likewise narrow where the
    objects are placed (to where the expert succeeds); a task's variations share them, so they share scenes.
    `widen_goal_space`: Meta-World clips what its expert observes of the goal to the task's own goal space, so
    a region beyond it is reached only up to the border; set, the observed space covers the region too
    (mirror10 predates these three and keeps Meta-World's object placement and clip).
    """

    id: str
    task: str
    variant: str
    instruction: str
    paraphrases: tuple[str, ...]
    goal_low: tuple[float, ...] | None = None
    goal_high: tuple[float, ...] | None = None
    object_low: tuple[float, ...] | None = None
    object_high: tuple[float, ...] | None = None
    widen_goal_space: bool = False

    @property
    def instructions(self) -> tuple[str, ...]:
        return (self.instruction, *self.paraphrases)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["paraphrases"] = list(self.paraphrases)
        for key in ("goal_low", "goal_high", "object_low", "object_high"):
            d[key] = None if d[key] is None else list(d[key])
        for key in ("object_low", "object_high", "widen_goal_space"):
            if not d[key]:  # left out at their defaults, so manifests written before them are unchanged
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Variation:
        def tup(x):
            return None if x is None else tuple(float(v) for v in x)

        return cls(d["id"], d["task"], d["variant"], d["instruction"], tuple(d["paraphrases"]),
                   tup(d.get("goal_low")), tup(d.get("goal_high")), tup(d.get("object_low")),
                   tup(d.get("object_high")), bool(d.get("widen_goal_space", False)))


@dataclass
class Observation:
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> uint8 [H, W, 3], upright
    proprio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


class Env(abc.ABC):
    """Reset to a variation and scene seed, step, render the configured cameras, report success."""

    cameras: tuple[str, ...]  # every camera this simulator can render
    action_dim: int
    proprio_dim: int

    @abc.abstractmethod
    def reset(self, variation: Variation, scene_seed: int, poses: dict | None = None) -> Observation:
        """Reset to the variation's scene for `scene_seed`. Observer views (`envs.views`) among the render cameras
        are posed from the scene seed, or from `poses` (view -> ObserverPose, e.g. recorded with an episode)."""

    @property
    def observer_poses(self) -> dict:
        """View -> ObserverPose of the current episode, for the view cameras being rendered (none by default)."""
        return {}

    @abc.abstractmethod
    def step(self, action: np.ndarray, render: bool = True) -> tuple[Observation, float, bool]:
        """Apply one action; returns (observation, reward, success). `render=False` skips the images."""

    @abc.abstractmethod
    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state (uses privileged state; never a model input)."""

    @abc.abstractmethod
    def sim_state(self) -> np.ndarray:
        """Full physical state (for determinism checks)."""
