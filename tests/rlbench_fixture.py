"""Writes folders in RLBench's on-disk format without RLBench (which needs CoppeliaSim and cannot be installed
here): the same pickled structure — a `Demo` of `Observation`s pickled under the `rlbench.demo` and
`rlbench.backend.observation` names, descriptions and variation numbers — and per-camera PNG folders.

The stand-in classes are pickled under RLBench's module names by registering stand-in modules in `sys.modules`
while dumping (pickle checks that a class can be found under the name it records). Arrays can be written under
numpy 1's (`numpy.core`) or numpy 2's (`numpy._core`) module names, whichever numpy runs the tests.
"""

from __future__ import annotations

import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

CAMERAS = ("front", "wrist", "left_shoulder", "right_shoulder", "overhead")

# One demonstration's gripper states and the frames where the arm rests; by PerAct's rule its keyframes are
# 3 (rest), 5 (closes), 8 (rest) and 11 (last; 10, where it opens, is dropped as the last one's neighbour).
GRIPPER_OPEN = (1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1)
REST_FRAMES = (3, 8)
KEYFRAMES = (3, 5, 8, 11)


class Observation:
    def __init__(self, **fields):
        self.__dict__.update(fields)


class Demo:
    def __init__(self, observations, random_seed=None, num_reset_attempts=None):
        self._observations = observations
        self.random_seed = random_seed
        self.num_reset_attempts = num_reset_attempts


Observation.__module__, Observation.__qualname__ = "rlbench.backend.observation", "Observation"
Demo.__module__, Demo.__qualname__ = "rlbench.demo", "Demo"


@contextmanager
def _rlbench_names():
    modules = {name: types.ModuleType(name) for name in ("rlbench", "rlbench.backend", "rlbench.backend.observation",
                                                         "rlbench.demo")}
    modules["rlbench.backend.observation"].Observation = Observation
    modules["rlbench.demo"].Demo = Demo
    assert not any(name in sys.modules for name in modules), "a real rlbench is imported"
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            del sys.modules[name]


_NUMPY_MODULES = (b"multiarray", b"numeric")


def dumps(obj, numpy_names: str = "2", protocol: int = 3) -> bytes:
    """Pickle `obj` as RLBench would; protocol <= 3 records globals as text, so numpy's module names can be set."""
    with _rlbench_names():
        data = pickle.dumps(obj, protocol=protocol)
    if protocol <= 3:
        new, old = (b"numpy.core.", b"numpy._core.") if numpy_names == "1" else (b"numpy._core.", b"numpy.core.")
        for mod in _NUMPY_MODULES:
            data = data.replace(b"c" + old + mod + b"\n", b"c" + new + mod + b"\n")
    return data


def make_observations(seed: int, extras: bool = True) -> list[Observation]:
    """A 12-frame demonstration. `extras`: fields of recent RLBench versions (`misc`, `ignore_collisions`,
    touch forces); without them it looks like an older version's."""
    rng = np.random.default_rng(seed)
    observations = []
    for i, g in enumerate(GRIPPER_OPEN):
        quat = rng.normal(size=4)
        quat /= np.linalg.norm(quat)
        quat *= -1 if i % 2 else 1  # some quaternions with w < 0, as RLBench stores them
        fields = dict(
            joint_positions=rng.normal(size=7), gripper_pose=np.concatenate([[0.1 * i, 0.2, 0.8 - 0.02 * i], quat]),
            gripper_open=float(g), joint_velocities=np.full(7, 0.01 if i in REST_FRAMES else 0.5),
            joint_forces=rng.normal(size=7), gripper_matrix=np.eye(4), gripper_joint_positions=np.array([0.04, 0.04]),
            task_low_dim_state=rng.normal(size=10),
            **{f"{c}_{kind}": None for c in CAMERAS for kind in ("rgb", "depth", "mask", "point_cloud")},
        )
        if extras:
            fields.update(ignore_collisions=np.array(1.0), gripper_touch_forces=rng.normal(size=6),
                          misc={"front_camera_near": np.float64(0.01), "front_camera_extrinsics": np.eye(4),
                                "descriptions": ["unused"]})
        observations.append(Observation(**fields))
    return observations


def image(seed: int, camera: str, i: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, CAMERAS.index(camera), i]).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_episode(folder: Path, seed: int, size: int = 32, cameras=CAMERAS, extras: bool = True,
                  numpy_names: str = "2", descriptions=None, variation=None) -> list[Observation]:
    folder.mkdir(parents=True)
    observations = make_observations(seed, extras)
    demo = Demo(observations, random_seed=np.random.RandomState(seed).get_state(), num_reset_attempts=1)
    (folder / "low_dim_obs.pkl").write_bytes(dumps(demo, numpy_names))
    if descriptions is not None:
        (folder / "variation_descriptions.pkl").write_bytes(dumps(descriptions, numpy_names))
    if variation is not None:
        (folder / "variation_number.pkl").write_bytes(dumps(variation, numpy_names))
    for cam in cameras:
        for kind in ("rgb", "depth"):  # depth (and mask) folders exist in real data and are not read
            (folder / f"{cam}_{kind}").mkdir()
        for i in range(len(observations)):
            Image.fromarray(image(seed, cam, i, size)).save(folder / f"{cam}_rgb" / f"{i}.png")
            Image.fromarray(image(seed + 1, cam, i, size)).save(folder / f"{cam}_depth" / f"{i}.png")
    return observations


def descriptions_of(task: str, n: int) -> list[str]:
    words = task.replace("_", " ")
    return [f"{words}, variation {n}", f"please {words} ({n})", f"carry out {words} number {n}"]


def write_rlbench(root: Path, layout: str, tasks: dict[str, list[int]], episodes: int = 3, size: int = 32,
                  numpy_names: str = "2", extras: bool = True) -> dict[str, dict]:
    """An RLBench folder in the `generator` (variation<N>/) or `peract` (all_variations/) layout; returns
    episode folder -> {task, variation, seed}."""
    written, seed = {}, 0
    for task, variations in tasks.items():
        k = 0
        for n in variations:
            if layout == "generator":
                var_dir = root / task / f"variation{n}"
                var_dir.mkdir(parents=True)
                (var_dir / "variation_descriptions.pkl").write_bytes(dumps(descriptions_of(task, n), numpy_names))
            for e in range(episodes):
                if layout == "generator":
                    folder = var_dir / "episodes" / f"episode{e}"
                    write_episode(folder, seed, size, extras=extras, numpy_names=numpy_names)
                else:
                    folder = root / task / "all_variations" / "episodes" / f"episode{k}"
                    write_episode(folder, seed, size, extras=extras, numpy_names=numpy_names,
                                  descriptions=descriptions_of(task, n), variation=n)
                written[str(folder)] = {"task": task, "variation": n, "seed": seed}
                seed, k = seed + 1, k + 1
    return written
