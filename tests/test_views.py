"""Observer viewpoint distributions: deterministic per scene seed, disjoint bands, views that see the action, and
episodes that can be rendered again from the pose their meta.json records."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_cli

from mirroralign.data.store import EpisodeStore
from mirroralign.envs.metaworld import MetaWorldEnv, free_camera
from mirroralign.envs.views import VIEWS, ObserverPose, sample_pose
from mirroralign.evaluate.recognition import replay_frames
from mirroralign.suites import get_suite


def test_a_pose_is_fixed_by_the_scene_seed_alone():
    assert sample_pose("train", 123) == sample_pose("train", 123)
    poses = {sample_pose("train", s) for s in range(50)}
    assert len(poses) == 50  # every scene seed its own place
    assert sample_pose("held-out", 123) != sample_pose("train", 123)
    assert ObserverPose.from_dict(json.loads(json.dumps(sample_pose("train", 7).to_dict()))) == sample_pose("train", 7)


def test_train_and_held_out_poses_never_overlap():
    train, held = VIEWS["train"], VIEWS["held-out"]
    for a in train.azimuth:  # the bands themselves: no azimuth and no elevation in common
        for b in held.azimuth:
            for turn in (-360, 0, 360):
                assert a[1] < b[0] + turn or b[1] + turn < a[0]
    assert train.elevation[1] < held.elevation[0] or held.elevation[1] < train.elevation[0]
    for seed in range(2000):
        t, h = sample_pose("train", seed), sample_pose("held-out", seed)
        assert train.contains(t) and not held.contains(t)
        assert held.contains(h) and not train.contains(h)
    sides = {sample_pose("held-out", s).azimuth < 200 for s in range(200)}
    assert sides == {True, False}  # both sides of the held-out band are drawn


def _camera(pose: ObserverPose):
    """Position, forward, up of MuJoCo's free camera at `pose` (angles in degrees)."""
    az, el = np.radians(pose.azimuth), np.radians(pose.elevation)
    forward = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    right = np.cross(forward, [0, 0, 1])
    right /= np.linalg.norm(right)
    return np.asarray(pose.lookat) - pose.distance * forward, forward, np.cross(right, forward), right


def _in_image(point, pose, fovy) -> bool:
    pos, forward, up, right = _camera(pose)
    v = np.asarray(point) - pos
    depth = v @ forward
    half = np.tan(np.radians(fovy) / 2) * depth * 0.95  # a margin: the point itself must be well inside
    return depth > 0 and abs(v @ right) < half and abs(v @ up) < half


def test_the_pose_geometry_is_mujocos():
    """The projection below uses this geometry: it must be the camera MuJoCo renders."""
    env = MetaWorldEnv("reach", 32, ["train"])
    env.reset(get_suite("mirror10")[0], 5)
    for seed in (5, 6):
        pose = sample_pose("held-out" if seed % 2 else "train", seed)
        env._renderer.update_scene(env.raw.data, camera=free_camera(pose))
        gl = env._renderer.scene.camera[0]
        pos, forward, up, _ = _camera(pose)
        assert np.allclose(gl.pos, pos, atol=0.05)  # the two eyes sit a few mm either side of the centre
        assert np.allclose(gl.forward, forward, atol=1e-5) and np.allclose(gl.up, up, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("view", list(VIEWS))
def test_views_see_the_end_effector_and_the_object(view):
    """In >= 95 % of sampled views (10 tasks x 6 scenes, at the start and 40 expert steps in), both the end effector
    and the task's object project inside the image."""
    suite = {v.task: v for v in get_suite("mirror10")}
    tasks = ["reach", "push", "pick-place", "drawer-open", "window-close", "door-open", "faucet-open", "hammer",
             "peg-insert-side", "sweep-into"]
    seen = []
    for task in tasks:
        env = MetaWorldEnv(task, 32)  # geometry only: nothing is rendered
        fovy = env.raw.model.vis.global_.fovy
        for seed in range(6):
            env.reset(suite[task], 1000 + seed)
            pose = sample_pose(view, 1000 + seed)
            for step in range(41):
                if step in (0, 40):
                    points = [env.raw.tcp_center, env.raw._get_pos_objects()[:3]]
                    seen.append(all(_in_image(p, pose, fovy) for p in points))
                env.step(env.expert_action(), render=False)
    assert np.mean(seen) >= 0.95, f"{view}: {np.mean(seen):.0%} of views see both"


@pytest.fixture(scope="module")
def moving_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "train-view"
    r = run_cli("generate", "--preset", "tiny", "--tasks", "reach", "--out", out, "env.observer_view=train")
    assert r.returncode == 0, r.stderr
    return out


def test_episodes_record_their_pose_and_replay_from_it(moving_dataset):
    store = EpisodeStore(moving_dataset)
    assert store.manifest["cameras"]["observer"] == ["train"] and store.manifest["observer_view"] == "train"
    eid = store.episode_ids("test")[0]
    meta = json.loads((moving_dataset / "episodes" / eid / "meta.json").read_text())
    recorded = ObserverPose.from_dict(meta["observer_view"])
    assert recorded == sample_pose("train", meta["scene_seed"]) and recorded.view == "train"
    assert set(meta["observer_view"]) == {"view", "azimuth", "elevation", "distance", "lookat"}
    stored = store.load(eid)["observer.train"]
    assert np.array_equal(replay_frames(store, eid, "train", pose=recorded), stored)
    elsewhere = ObserverPose("train", recorded.azimuth + 20, recorded.elevation, recorded.distance, recorded.lookat)
    assert not np.array_equal(replay_frames(store, eid, "train", pose=elsewhere)[0], stored[0])
    # the scene's variations are seen from the same place: the pose never tells them apart
    same_scene = [e for e in store.episode_ids("test") if store.episodes[e]["scene_seed"] == meta["scene_seed"]]
    assert len(same_scene) == 4 and all(store.episodes[e]["observer_view"] == meta["observer_view"] for e in same_scene)


def test_kill_9_then_resume_gives_the_same_moving_dataset(moving_dataset, tmp_path):
    """Poses come from scene seeds, not from the order of work: a killed and resumed run stores the same bytes."""
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "mirroralign", "generate", "--preset", "tiny", "--tasks", "reach", "--workers", "2",
            "--out", str(out), "env.observer_view=train"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while len(list(out.glob("episodes/*/*/meta.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "generation finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    r = run_cli("generate", "--preset", "tiny", "--tasks", "reach", "--workers", 1, "--out", out,
                "env.observer_view=train")
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (moving_dataset, out))
    assert a["episodes"] == b["episodes"]  # every stored file, meta.json with its pose included, has the same sha256


def test_observer_view_must_be_known(tmp_path):
    r = run_cli("generate", "--preset", "tiny", "--out", tmp_path / "d", "env.observer_view=behind")
    assert r.returncode == 2 and "env.observer_view must be one of fixed, train, held-out" in r.stderr
    assert not (tmp_path / "d").exists()


def test_evaluate_from_a_view_distribution(moving_dataset, tmp_path):
    run = tmp_path / "u"
    r = run_cli("train", "--mode", "understand", "--data", moving_dataset, "--preset", "tiny", "train.steps=4",
                "--out", run)
    assert r.returncode == 0, r.stderr
    for view in ("held-out", "train", "corner"):  # another band, the stored one, and a named camera
        out = tmp_path / f"eval-{view}"
        r = run_cli("evaluate", "--run", run, "--data", moving_dataset, "--out", out, "--view", view, "--no-rollouts")
        assert r.returncode == 0, r.stderr
        rec = json.loads((out / "metrics.json").read_text())["recognition"]
        assert rec["view"] == view and rec["n"] == 4 and rec["chance_per_task"] == 0.25
    r = run_cli("evaluate", "--run", run, "--data", moving_dataset, "--out", tmp_path / "e", "--view", "behind",
                "--no-rollouts")
    assert r.returncode == 2 and "unknown camera or view 'behind'" in r.stderr
