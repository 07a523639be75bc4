"""RLBench data path: the restricted unpickler, both on-disk layouts, keyframes, the rlbench18 suite, training on
an import, and the live adapter (skipped where RLBench, which needs CoppeliaSim, is not installed).

RLBench cannot be installed here, so `rlbench_fixture` writes RLBench-format folders itself: the same pickled
structure under RLBench's module names, and PNGs. That writer is the only stand-in; everything read back goes
through the real importer, store, datasets and trainer.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from rlbench_fixture import (CAMERAS, GRIPPER_OPEN, KEYFRAMES, Demo, descriptions_of, dumps, image,
                             make_observations, write_rlbench)

from mirroralign.data.datasets import AgentSteps, PairedSamples
from mirroralign.data.rlbench import discover_keyframes, import_rlbench
from mirroralign.data.rlbench_pickle import Observation, load_rlbench_pickle
from mirroralign.data.store import TEXT_EMBEDDINGS, EpisodeStore, read_text_embeddings
from mirroralign.envs.rlbench_spec import RLBenchUnavailable, canonical_pose
from mirroralign.errors import DataError, UsageError
from mirroralign.suites import RLBENCH18

# ------------------------------------------------------------------------------------------------ keyframes


def test_keyframes_follow_the_peract_rule():
    moving, rest = np.full(7, 0.5), np.zeros(7)
    # the fixture's demo: rests at 3 and 8, closes at 5, opens at 10 (dropped: next to the last frame, 11)
    v = [rest if i in (3, 8) else moving for i in range(12)]
    assert discover_keyframes(GRIPPER_OPEN, v).tolist() == list(KEYFRAMES) == [3, 5, 8, 11]
    # resting over frames 2..6: a rest keyframe at 2, then none in the 4 frames after it; resting on to 7: 7 is one
    v = [rest if 2 <= i <= 6 else moving for i in range(10)]
    assert discover_keyframes([1] * 10, v).tolist() == [2, 9]
    v = [rest if 2 <= i <= 7 else moving for i in range(10)]
    assert discover_keyframes([1] * 10, v).tolist() == [2, 7, 9]
    # a rest on the second-to-last frame does not count
    assert discover_keyframes([1] * 10, [rest if i == 8 else moving for i in range(10)]).tolist() == [9]
    # velocities just above the threshold are motion
    assert discover_keyframes([1] * 10, [np.full(7, 0.11)] * 10).tolist() == [9]
    # rest needs the gripper unchanged on frames i-2..i+1
    g = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert discover_keyframes(g, [rest if i == 4 else moving for i in range(10)]).tolist() == [3, 9]


# ------------------------------------------------------------------------------------------ restricted pickle


def _demo(seed=0, extras=True):
    return Demo(make_observations(seed, extras), random_seed=np.random.RandomState(seed).get_state())


@pytest.mark.parametrize("numpy_names,protocol", [("1", 3), ("2", 3), ("2", 4), ("2", 5)])
def test_unpickler_reads_rlbench_demos_under_numpy_1_and_2_names(numpy_names, protocol, tmp_path):
    source = _demo()
    data = dumps(source, numpy_names, protocol)
    if protocol == 3:  # the file really names the numpy generation under test
        assert (b"numpy.core.multiarray" in data) == (numpy_names == "1")
        assert (b"numpy._core.multiarray" in data) == (numpy_names == "2")
    assert b"rlbench.backend.observation" in data and b"rlbench.demo" in data
    (tmp_path / "low_dim_obs.pkl").write_bytes(data)
    demo = load_rlbench_pickle(tmp_path / "low_dim_obs.pkl", "demo")
    assert "rlbench" not in sys.modules  # nothing imported RLBench
    assert len(demo.observations) == len(source._observations)
    for got, want in zip(demo.observations, source._observations):
        assert isinstance(got, Observation)
        assert set(vars(got)) == set(vars(want))
        np.testing.assert_array_equal(got.gripper_pose, want.gripper_pose)
        assert got.gripper_open == want.gripper_open and got.front_rgb is None
        assert got.misc["front_camera_near"] == np.float64(0.01) and type(got.misc["front_camera_near"]) is np.float64
        np.testing.assert_array_equal(got.misc["front_camera_extrinsics"], np.eye(4))
    np.testing.assert_array_equal(demo.random_seed[1], source.random_seed[1])


def _payload(marker: Path):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return Payload()


def test_a_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker, control = tmp_path / "pwned", tmp_path / "control"
    demo = _demo()
    demo._observations[2].misc["x"] = _payload(marker)  # hidden deep inside a real-looking demo
    path = tmp_path / "low_dim_obs.pkl"
    path.write_bytes(dumps(demo))
    # the payload is real: plain pickle runs it (in a child process, writing the control file)
    control_bytes = dumps(_payload(control))
    subprocess.run([sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=control_bytes, check=True)
    assert control.exists()
    with pytest.raises(DataError, match=r"refused to unpickle .*(posix|os)\.system.*nothing was executed"):
        load_rlbench_pickle(path, "demo")
    assert not marker.exists()
    # other callables a payload might reach for are refused the same way
    for fn in (eval, exec, getattr, __import__, pickle.loads):
        path.write_bytes(pickle.dumps([fn]))
        with pytest.raises(DataError, match="refused"):
            load_rlbench_pickle(path, "demo")


def test_a_truncated_pickle_is_damaged_data(tmp_path):
    path = tmp_path / "low_dim_obs.pkl"
    path.write_bytes(dumps(_demo())[:-50])
    with pytest.raises(DataError, match="damaged"):
        load_rlbench_pickle(path, "demo")


def test_an_observation_without_a_required_field_is_named(tmp_path):
    write_rlbench(tmp_path / "src", "generator", {"open_drawer": [0]}, episodes=2)
    observations = make_observations(1)
    del observations[4].joint_velocities  # needed for keyframes; optional fields may be missing, this one not
    folder = tmp_path / "src" / "open_drawer" / "variation0" / "episodes" / "episode1"
    (folder / "low_dim_obs.pkl").write_bytes(dumps(Demo(observations)))
    with pytest.raises(DataError, match=r"observation 4 of .*episode1/low_dim_obs.pkl lacks joint_velocities"):
        import_rlbench(tmp_path / "src", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


# ---------------------------------------------------------------------------------------------------- import


def _same_image(arr, seed, cam, i):
    np.testing.assert_array_equal(arr, image(seed, cam, i, arr.shape[0]))


def test_import_generator_layout(tmp_path):
    """RLBench's own generator layout, pickled under numpy 1 names, with the fields of a recent RLBench."""
    src, out = tmp_path / "rlbench", tmp_path / "data"
    written = write_rlbench(src, "generator", {"open_drawer": [0, 2], "turn_tap": [1]}, episodes=3, numpy_names="1")
    r = run_cli("import-rlbench", src, "--out", out)
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", out)
    assert r.returncode == 0 and "all 9 episodes" in r.stdout, r.stderr

    store = EpisodeStore(out)
    m = store.manifest
    assert m["simulator"] == "rlbench" and m["image_size"] == 32
    assert m["cameras"] == {"observer": ["overhead"], "agent": ["front", "left_shoulder", "right_shoulder", "wrist"]}
    assert [v.id for v in store.variations] == ["open_drawer-variation0", "open_drawer-variation2",
                                                "turn_tap-variation1"]  # suite order: open_drawer before turn_tap
    for v in store.variations:
        assert list(v.instructions) == descriptions_of(v.task, int(v.variant.removeprefix("variation")))
    assert {s: len(ids) for s, ids in store.splits.items()} == {"train": 3, "val": 3, "test": 3}
    # the demonstrations' own instructions are embedded at import, in the store's order, and verified
    record, emb = read_text_embeddings(out / TEXT_EMBEDDINGS)
    assert record["texts"] == store.texts and emb.shape == (len(store.texts), 384)
    assert TEXT_EMBEDDINGS in m["files"] and "text embeddings of" in r.stdout

    by_source = {str(src / e["source"]): eid for eid, e in store.episodes.items()}
    assert set(by_source) == set(written)
    for folder, info in written.items():
        eid = by_source[folder]
        assert store.episodes[eid]["variation"] == f"{info['task']}-variation{info['variation']}"
        arrays = store.load(eid)
        source = make_observations(info["seed"])
        T = len(source) - 1
        assert arrays["actions"].shape == (T, 8) and arrays["proprio"].shape == (T + 1, 15)
        for t, o in enumerate(source):
            want = np.concatenate([o.joint_positions, canonical_pose(o.gripper_pose), [o.gripper_open]])
            np.testing.assert_allclose(arrays["proprio"][t], want, rtol=1e-6)
        for t in range(T):  # the action at t is the pose and open state reached at t + 1
            nxt = source[t + 1]
            np.testing.assert_allclose(arrays["actions"][t], [*canonical_pose(nxt.gripper_pose), nxt.gripper_open],
                                       rtol=1e-6)
        assert (arrays["proprio"][:, 13] >= 0).all() and any(o.gripper_pose[6] < 0 for o in source)  # one sign
        assert arrays["keyframes"].tolist() == list(KEYFRAMES)
        assert arrays["rewards"].tolist() == [0.0] * (T - 1) + [1.0]
        for i in (0, T):
            _same_image(arrays["observer.overhead"][i], info["seed"], "overhead", i)
            _same_image(arrays["agent.wrist"][i], info["seed"], "wrist", i)

    # verify checks an import like any dataset: one flipped byte is named
    assert (out / "manifest.sha256").is_file()
    chunk = next(p for p in sorted((out / "episodes").rglob("*")) if p.is_file() and "agent.front/c/" in p.as_posix())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    r = run_cli("verify", out)
    assert r.returncode == 1 and "1 of 9 episodes damaged" in r.stderr


def test_import_peract_layout_with_split_folders(tmp_path):
    """PerAct's released layout (all_variations, variation number per episode) under train/ val/ test/, numpy 2
    names, an older RLBench's observations (no misc, no ignore_collisions); a task subset, chosen cameras, resized."""
    src, out = tmp_path / "peract", tmp_path / "data"
    written = {}
    for split, episodes in (("train", 2), ("val", 1), ("test", 1)):
        written[split] = write_rlbench(src / split, "peract", {"open_drawer": [1, 0], "turn_tap": [0]},
                                       episodes=episodes, extras=False)
    r = run_cli("import-rlbench", src, "--out", out, "--tasks", "open_drawer", "--cameras", "front,wrist",
                "--observer", "front", "--image-size", 16)
    assert r.returncode == 0, r.stderr
    assert run_cli("verify", out).returncode == 0
    store = EpisodeStore(out)
    assert [v.id for v in store.variations] == ["open_drawer-variation0", "open_drawer-variation1"]
    assert store.manifest["cameras"] == {"observer": ["front"], "agent": ["front", "wrist"]}
    assert store.manifest["image_size"] == 16
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        ids = store.episode_ids(split)
        assert len(ids) == count
        for eid in ids:
            entry = store.episodes[eid]
            info = written[split][str(src / entry["source"])]
            assert entry["variation"] == f"open_drawer-variation{info['variation']}" and entry["split"] == split
    arrays = store.load(store.episode_ids("train")[0])
    assert arrays["agent.front"].shape == (12, 16, 16, 3) and "agent.overhead" not in arrays
    np.testing.assert_array_equal(arrays["observer.front"], arrays["agent.front"])


def test_import_any_rlbench_task_in_either_layout(tmp_path):
    """Tasks outside rlbench18 (RLBench has ~100; other papers use 10 or 74 of them) import in both layouts,
    their variations taken from disk (there is no count to check them against); `--tasks` selects by name."""
    src = tmp_path / "src"
    written = write_rlbench(src, "generator", {"close_drawer": [0, 7], "open_drawer": [1]}, episodes=3)
    written |= write_rlbench(src, "peract", {"take_lid_off_saucepan": [0]}, episodes=3)
    r = run_cli("import-rlbench", src, "--out", tmp_path / "all")
    assert r.returncode == 0, r.stderr
    store = EpisodeStore(tmp_path / "all")
    # rlbench18's tasks first, in suite order, then the others by name
    assert [v.id for v in store.variations] == ["open_drawer-variation1", "close_drawer-variation0",
                                                "close_drawer-variation7", "take_lid_off_saucepan-variation0"]
    assert {str(src / e["source"]) for e in store.episodes.values()} == set(written)
    assert list(store.variations[3].instructions) == descriptions_of("take_lid_off_saucepan", 0)
    assert len(store.episode_ids("test")) == 4  # one per variation

    r = run_cli("import-rlbench", src, "--out", tmp_path / "one", "--tasks", "close_drawer")
    assert r.returncode == 0, r.stderr
    assert [v.id for v in EpisodeStore(tmp_path / "one").variations] == ["close_drawer-variation0",
                                                                        "close_drawer-variation7"]
    r = run_cli("import-rlbench", src, "--out", tmp_path / "none", "--tasks", "pick_up_cup")
    _one_line(r, 2, "mirroralign: error: task 'pick_up_cup' not found in")
    assert "close_drawer, open_drawer, take_lid_off_saucepan" in r.stderr and _nothing_written(tmp_path / "none")


# ----------------------------------------------------------------------------------- datasets and training


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rlbench")
    write_rlbench(root / "src", "generator", {"open_drawer": [0, 1, 2], "turn_tap": [0, 1]}, episodes=3)
    r = run_cli("import-rlbench", root / "src", "--out", root / "data", "--cameras", "front", "wrist")
    assert r.returncode == 0, r.stderr
    return root / "data"


def test_execution_dataset_keyframe_option(imported):
    steps = AgentSteps(imported, "train", horizon=3, keyframes=True)
    dense = AgentSteps(imported, "train", horizon=3)
    n = len(steps.episodes)
    assert n == 5 and len(steps) == 4 * n and len(dense) == 11 * n
    assert [t for e, t in steps.index if e == 0] == [0, 3, 5, 8]
    actions = steps.episodes[0]["actions"]
    item = steps[steps.index.index((0, 3))]  # the chunk is the actions arriving at keyframes 5, 8, 11
    np.testing.assert_array_equal(item["actions"].numpy(), actions[[4, 7, 10]])
    assert item["action_is_pad"].tolist() == [False, False, False]
    item = steps[steps.index.index((0, 8))]  # one keyframe left: padded with it
    np.testing.assert_array_equal(item["actions"].numpy(), actions[[10, 10, 10]])
    assert item["action_is_pad"].tolist() == [False, True, True]
    assert item["images"].shape == (2, 3, 32, 32)
    pairs = PairedSamples(imported, "train", frames=4, horizon=2, keyframes=True)
    assert pairs.index == steps.index and pairs[0]["video"].shape == (4, 3, 32, 32)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode,extra", [("execute", ["train.keyframes=true"]), ("mirror", [])])
def test_train_tiny_on_an_import_and_evaluate_recognition(imported, tmp_path, mode, extra):
    run = tmp_path / mode
    r = run_cli("train", "--mode", mode, "--data", imported, "--out", run, "--preset", "tiny", "train.steps=4",
                "train.log_every=1", *extra)
    assert r.returncode == 0, r.stderr
    losses = _losses(run)
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert (run / "checkpoints" / "latest.json").is_file()
    # rollouts need the simulator: without RLBench, one line before any work; recognition works from the import
    r = run_cli("evaluate", "--run", run, "--data", imported, "--out", tmp_path / "eval")
    _one_line(r, 2, "mirroralign: error: RLBench is not installed")
    assert "--no-rollouts" in r.stderr and not (tmp_path / "eval").exists()
    if mode == "mirror":
        # another view would be a replay, which needs scene seeds that recorded demonstrations do not have
        r = run_cli("evaluate", "--run", run, "--data", imported, "--out", tmp_path / "eval", "--no-rollouts",
                    "--view", "wrist")
        _one_line(r, 2, "mirroralign: error: recognition from 'wrist' replays the test episodes")
        assert "(overhead)" in r.stderr and not (tmp_path / "eval").exists()
        r = run_cli("evaluate", "--run", run, "--data", imported, "--out", tmp_path / "eval", "--no-rollouts")
        assert r.returncode == 0, r.stderr
        recognition = json.loads((tmp_path / "eval" / "metrics.json").read_text())["recognition"]
        assert recognition["n"] == 5 and recognition["view"] == "overhead" and 0 <= recognition["top1"] <= 1


# ------------------------------------------------------------------------------------------------ bad input


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


def _one_line(r, code: int, prefix: str) -> None:
    assert r.returncode == code, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(prefix), r.stderr


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    write_rlbench(src, "generator", {"open_drawer": [0]}, episodes=2)
    return src


BAD_USAGE = {
    "unknown task": ["--tasks", "open_drawer,fly_to_the_moon"],
    "task not in the folder": ["--tasks", "turn_tap"],
    "unknown camera": ["--cameras", "front", "eyeball"],
    "unknown observer": ["--observer", "depth"],
    "tiny images": ["--image-size", "4"],
}


@pytest.mark.parametrize("case", BAD_USAGE, ids=list(BAD_USAGE))
def test_import_rejects_bad_input(case, source, tmp_path):
    out = tmp_path / "out"
    r = run_cli("import-rlbench", source, "--out", out, *BAD_USAGE[case])
    _one_line(r, 2, "mirroralign: error:")
    assert _nothing_written(out)


def test_import_rejects_missing_source_a_folder_that_is_no_task_and_used_output(source, tmp_path):
    out = tmp_path / "out"
    _one_line(run_cli("import-rlbench", tmp_path / "nope", "--out", out), 2, "mirroralign: error:")
    (source / "notes" / "episodes").mkdir(parents=True)  # no variation<N>/ or all_variations/: not a task folder
    r = run_cli("import-rlbench", source, "--out", out)
    _one_line(r, 2, f"mirroralign: error: {source / 'notes'} is not an RLBench task folder")
    assert _nothing_written(out)
    assert run_cli("import-rlbench", source, "--out", out, "--tasks", "open_drawer").returncode == 0
    before = sorted(str(p) for p in out.rglob("*"))
    _one_line(run_cli("import-rlbench", source, "--out", out, "--tasks", "open_drawer"), 2, "mirroralign: error:")
    assert sorted(str(p) for p in out.rglob("*")) == before


def _damage_variation(src: Path):
    (src / "open_drawer" / "variation0").rename(src / "open_drawer" / "variation3")  # open_drawer has 0..2


def _damage_png(src: Path):
    (src / "open_drawer" / "variation0" / "episodes" / "episode1" / "wrist_rgb" / "7.png").unlink()


def _damage_pickle(src: Path):
    path = src / "open_drawer" / "variation0" / "episodes" / "episode1" / "low_dim_obs.pkl"
    path.write_bytes(path.read_bytes()[:100])


def _poison(name: str):
    def damage(src: Path):
        var = src / "open_drawer" / "variation0"
        path = var / "variation_descriptions.pkl" if name == "descriptions" else var / "episodes/episode1/low_dim_obs.pkl"
        path.write_bytes(dumps(["open the drawer", _payload(src.parent / "pwned")]))
    return damage


DAMAGED = {"variation out of range": (_damage_variation, "out of range"), "missing image": (_damage_png, "images"),
           "truncated pickle": (_damage_pickle, "damaged"),
           "malicious descriptions": (_poison("descriptions"), "refused to unpickle"),
           "malicious demo": (_poison("demo"), "refused to unpickle")}


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_import_refuses_damaged_data_and_writes_nothing(case, source, tmp_path):
    damage, message = DAMAGED[case]
    damage(source)
    out = tmp_path / "new" / "out"  # its parent is made for the import and removed with it
    r = run_cli("import-rlbench", source, "--out", out)
    _one_line(r, 1, "mirroralign: data error:")
    assert message in r.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "pwned").exists()


def test_images_of_different_sizes_need_image_size(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_rlbench(src, "generator", {"open_drawer": [0]}, episodes=2)
    folder = src / "open_drawer" / "variation0" / "episodes" / "episode1"
    for cam in CAMERAS:
        for png in (folder / f"{cam}_rgb").glob("*.png"):
            Image.new("RGB", (24, 24)).save(png)
    _one_line(run_cli("import-rlbench", src, "--out", out), 2, "mirroralign: error:")
    assert _nothing_written(out)
    assert run_cli("import-rlbench", src, "--out", out, "--image-size", 24).returncode == 0


# ----------------------------------------------------------------------------------------------------- suite


def test_rlbench18_suite(tmp_path):
    assert len(RLBENCH18) == 18 and sum(RLBENCH18.values()) == 249  # PerAct: 18 tasks, 249 variations
    assert RLBENCH18["open_drawer"] == 3 and RLBENCH18["stack_blocks"] == 60 and RLBENCH18["push_buttons"] == 50
    r = run_cli("suites")
    assert r.returncode == 0 and "rlbench18: 18 RLBench tasks, 249 variations" in r.stdout
    r = run_cli("generate", "--suite", "rlbench18", "--out", tmp_path / "out")
    assert r.returncode == 2 and "import-rlbench" in r.stderr and not (tmp_path / "out").exists()


def test_predicted_poses_reach_the_controller_in_metres():
    """RLBench actions are absolute poses (tabletop heights ~0.75-1.5 m): the policy must not clip them to
    [-1, 1]; the adapter only makes the quaternion a unit one and the open state a value in [0, 1]."""
    import torch

    from mirroralign.config import ExecutionConfig
    from mirroralign.envs.rlbench_spec import executable_action
    from mirroralign.models.execution import ExecutionPolicy

    c = ExecutionConfig(dim=16, heads=2, layers=1, horizon=2, tokens_per_camera=2)
    policy = ExecutionPolicy(c, n_cameras=1, proprio_dim=15, action_dim=8, text_embeddings=torch.zeros(3, 384))
    target = torch.tensor([0.3, -0.2, 1.35, 0.0, 0.0, 0.6, 0.8, 1.2])
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.copy_(target.repeat(2))
    batch = {"images": torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8), "proprio": torch.zeros(1, 15),
             "text_index": torch.tensor([0])}
    chunk = policy.eval().act(batch)
    assert torch.allclose(chunk[0, 0], target)  # as predicted: z = 1.35 m, open 1.2

    a = executable_action(np.array([0.3, -0.2, 1.35, 0.0, 0.0, -1.2, -1.6, 1.2]))
    assert np.allclose(a[:3], [0.3, -0.2, 1.35])
    assert np.allclose(a[3:7], [0.0, 0.0, 0.6, 0.8])  # unit length, w >= 0 (q and -q: one rotation)
    assert a[7] == 1.0
    assert np.allclose(executable_action(np.zeros(8))[3:7], [0, 0, 0, 1])  # a zero quaternion: no rotation
    assert executable_action(np.zeros(8))[7] == 0.0


# -------------------------------------------------------------------------------------------- live adapter


def _live_adapter():
    try:
        from mirroralign.envs import rlbench
    except RLBenchUnavailable as err:
        pytest.skip(str(err))
    return rlbench


def test_live_adapter_without_rlbench_says_what_to_install():
    try:
        import rlbench  # noqa: F401
        pytest.skip("RLBench is installed here")
    except ImportError:
        pass
    with pytest.raises(RLBenchUnavailable, match="CoppeliaSim.*import-rlbench"):
        import mirroralign.envs.rlbench  # noqa: F401
    from mirroralign.envs import make_env

    with pytest.raises(UsageError, match="RLBench is not installed"):
        make_env("rlbench", "open_drawer")


@pytest.mark.slow
def test_live_adapter_resets_steps_and_renders():
    rlbench = _live_adapter()
    from mirroralign.envs.base import Variation

    env = rlbench.RLBenchEnv("open_drawer", image_size=64, render_cameras=("front", "wrist"))
    try:
        v = Variation("open_drawer-variation0", "open_drawer", "variation0", "open the bottom drawer", ())
        obs = env.reset(v, 0)
        assert obs.images["front"].shape == (64, 64, 3) and obs.proprio.shape == (env.proprio_dim,)
        action = np.concatenate([obs.proprio[7:14], [1.0]])  # stay where it is
        obs2, _, success = env.step(action)
        assert obs2.images["wrist"].shape == (64, 64, 3) and not success
    finally:
        env.close()
