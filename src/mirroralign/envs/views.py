"""Observer viewpoint distributions: a free camera pose drawn per scene seed from a named band around the workspace.

`fixed` is the dataset's named observer camera (no pose). Every other view is a distribution: azimuth, elevation,
distance and a look-at point jittered around the workspace centre, drawn from the scene seed alone, so the same
scene is seen from the same place by every variation of its task (the pose never tells variations apart) and a
replay of an episode sees what its recording saw. `train` and `held-out` cover disjoint azimuths *and* elevations,
so recognition from `held-out` is a cross-view test (as NTU RGB+D's cross-view protocol).

Angles follow MuJoCo's free camera (degrees): the camera looks along (cos el cos az, cos el sin az, sin el) at the
look-at point, from `distance` away. Azimuth 90 looks from behind the robot's base along +y; 270 faces the robot
from across the table.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass

import numpy as np

from mirroralign.errors import UsageError

FIXED = "fixed"
WORKSPACE_CENTRE = (0.0, 0.7, 0.1)  # Meta-World's table top, between the robot and its goal regions (metres)


@dataclass(frozen=True)
class Band:
    """A distribution of poses: uniform over the union of `azimuth` intervals, over `elevation` and `distance`; the
    look-at point is the workspace centre moved by up to `jitter` metres along each axis."""

    azimuth: tuple[tuple[float, float], ...]
    elevation: tuple[float, float]
    distance: tuple[float, float]
    jitter: float = 0.05

    def contains(self, pose: ObserverPose) -> bool:
        az = pose.azimuth % 360  # intervals may run past 360 (350-390 is 350-30)
        return (any(lo <= az + turn <= hi for lo, hi in self.azimuth for turn in (0, 360))
                and self.elevation[0] <= pose.elevation <= self.elevation[1]
                and self.distance[0] <= pose.distance <= self.distance[1])


@dataclass(frozen=True)
class ObserverPose:
    view: str  # the distribution it was drawn from
    azimuth: float
    elevation: float
    distance: float
    lookat: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {**asdict(self), "lookat": list(self.lookat)}

    @classmethod
    def from_dict(cls, d: dict) -> ObserverPose:
        return cls(str(d["view"]), float(d["azimuth"]), float(d["elevation"]), float(d["distance"]),
                   tuple(float(x) for x in d["lookat"]))


# Checked by eye on renders of every band (and by tests/test_views.py: the end effector and the task object project
# inside the image in >= 95 % of sampled views). Azimuths near 90 look through the arm's base and are left out.
VIEWS: dict[str, Band] = {
    # a front half-circle facing the robot from across the table, looking down 20-45 degrees
    "train": Band(azimuth=((200.0, 340.0),), elevation=(-45.0, -20.0), distance=(1.0, 1.4)),
    # the two sides of the table, from further up: no azimuth and no elevation in common with `train`
    "held-out": Band(azimuth=((150.0, 190.0), (350.0, 390.0)), elevation=(-65.0, -50.0), distance=(1.2, 1.6)),
}
VIEW_NAMES = (FIXED, *VIEWS)


def check_view(name: str) -> None:
    if name not in VIEW_NAMES:
        raise UsageError(f"unknown observer view {name!r} (known: {', '.join(VIEW_NAMES)})")


def is_distribution(name: str) -> bool:
    return name in VIEWS


def sample_pose(view: str, scene_seed: int) -> ObserverPose:
    """The pose of `view` for a scene seed: deterministic, and independent of the layout drawn from the same seed."""
    band = VIEWS[view]
    rng = np.random.default_rng([scene_seed, zlib.crc32(view.encode())])
    widths = np.array([hi - lo for lo, hi in band.azimuth])
    at = rng.random() * widths.sum()  # a point on the azimuth intervals laid end to end
    i = int(np.searchsorted(np.cumsum(widths), at, side="right").clip(max=len(widths) - 1))
    azimuth = band.azimuth[i][0] + at - (np.cumsum(widths)[i] - widths[i])
    elevation = rng.uniform(*band.elevation)
    distance = rng.uniform(*band.distance)
    lookat = np.asarray(WORKSPACE_CENTRE) + rng.uniform(-band.jitter, band.jitter, 3)
    return ObserverPose(view, round(float(azimuth), 6), round(float(elevation), 6), round(float(distance), 6),
                        tuple(round(float(x), 6) for x in lookat))
