"""What mirroralign takes from an RLBench observation: cameras, proprioception and actions.

Shared by the importer of recorded demonstrations (`data/rlbench.py`) and the live adapter (`envs/rlbench.py`),
so that a policy trained on imported data sees the same vectors live. Imports no RLBench.
"""

from __future__ import annotations

import numpy as np

CAMERAS = ("front", "wrist", "left_shoulder", "right_shoulder", "overhead")
AGENT_CAMERAS = ("front", "left_shoulder", "right_shoulder", "wrist")  # the four views of PerAct and RVT
OBSERVER_CAMERA = "overhead"  # a spectator's view from above, not one of the policy's inputs

# Observation fields every conversion needs; anything else an RLBench version adds or drops is ignored.
REQUIRED_FIELDS = ("joint_positions", "joint_velocities", "gripper_pose", "gripper_open")
PROPRIO_FIELDS = ("joint_positions", "gripper_pose (xyz, quaternion xyzw with w >= 0)", "gripper_open")
ACTION_FIELDS = ("gripper_pose of the next frame (xyz, quaternion xyzw with w >= 0)", "gripper_open of the next frame")


def canonical_pose(pose) -> np.ndarray:
    """xyz + unit quaternion (xyzw) with w >= 0: q and -q are the same rotation, and one sign keeps an L1
    loss on poses meaningful (PerAct does the same)."""
    pose = np.asarray(pose, np.float64).reshape(7)
    quat = pose[3:] / np.linalg.norm(pose[3:])
    if quat[3] < 0:
        quat = -quat
    return np.concatenate([pose[:3], quat]).astype(np.float32)


def proprio_vector(joint_positions, gripper_pose, gripper_open) -> np.ndarray:
    """joint positions, canonical gripper pose, gripper open state: what the robot knows of itself."""
    return np.concatenate([np.asarray(joint_positions, np.float32).ravel(), canonical_pose(gripper_pose),
                           np.asarray([gripper_open], np.float32)])


def pose_action(gripper_pose, gripper_open) -> np.ndarray:
    """The target an end-effector-pose controller is given: the pose and open state to reach next."""
    return np.concatenate([canonical_pose(gripper_pose), np.asarray([gripper_open], np.float32)])


def executable_action(action) -> np.ndarray:
    """A predicted action made one the pose controller accepts: a unit quaternion (a regressed one is not) and an
    open state in [0, 1]. Positions stay as predicted (in metres; an unreachable pose is the planner's to refuse)."""
    action = np.asarray(action, np.float64).reshape(8)
    quat = action[3:7] if np.linalg.norm(action[3:7]) > 1e-8 else np.array([0.0, 0.0, 0.0, 1.0])
    return np.concatenate([canonical_pose(np.concatenate([action[:3], quat])),
                           [np.clip(action[7], 0.0, 1.0)]]).astype(np.float64)


class RLBenchUnavailable(ImportError):
    """RLBench (with PyRep and CoppeliaSim) is not installed here, so the live adapter cannot load."""

# The 18 RLBench tasks of PerAct (Shridhar et al., CoRL 2022) and RVT, with their numbers of variations
# (249 in all, as PerAct reports; each checked against the task's `variation_count()` in RLBench and, for
# slide_block_to_color_target, sweep_to_dustpan_of_size and place_wine_at_rack_location, PerAct's fork).
# Their instructions come with the demonstrations (each variation's `variation_descriptions.pkl`), so this
# suite validates `import-rlbench` rather than driving `generate`.
RLBENCH18: dict[str, int] = {
    "open_drawer": 3, "slide_block_to_color_target": 4, "sweep_to_dustpan_of_size": 2, "meat_off_grill": 2,
    "turn_tap": 2, "put_item_in_drawer": 3, "close_jar": 20, "reach_and_drag": 20, "stack_blocks": 60,
    "light_bulb_in": 20, "put_money_in_safe": 3, "place_wine_at_rack_location": 3, "put_groceries_in_cupboard": 9,
    "place_shape_in_shape_sorter": 5, "push_buttons": 50, "insert_onto_square_peg": 20, "stack_cups": 20,
    "place_cups": 3,
}
