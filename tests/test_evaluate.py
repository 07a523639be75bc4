import json
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from conftest import run_cli

from mirroralign.config import load_config
from mirroralign.data.datasets import to_chw, uniform_indices
from mirroralign.data.generate import scene_seed
from mirroralign.data.store import EpisodeStore
from mirroralign.envs import make_env
from mirroralign.evaluate import recognition  # its test_clips is not a test: imported by module
from mirroralign.evaluate.recognition import per_task_top1, recognition_scores, replay_frames
from mirroralign.errors import SimulatorError
from mirroralign.evaluate.rollouts import run_rollouts
from mirroralign.evaluate.run import evaluate
from mirroralign.stats import proportion_ci
from mirroralign.train import build_models, load_run


def test_replaying_stored_actions_reproduces_the_stored_frames(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    eid = store.episode_ids("test")[0]
    stored = store.load(eid)["observer.corner"]
    assert np.array_equal(replay_frames(store, eid, "corner"), stored)
    # only some frames rendered (the rest stepped without rendering): the same pixels, in the order asked
    assert np.array_equal(replay_frames(store, eid, "corner", indices=[5, 0, 3, 3]), stored[[5, 0, 3, 3]])
    with pytest.raises(ValueError, match="frame indices"):
        replay_frames(store, eid, "corner", indices=[len(stored)])  # past the last frame


def test_clips_from_another_camera_render_only_their_frames_and_match_a_full_replay(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    (full, labels), (early, _) = recognition.test_clips(store, "corner2", frames=4, fractions=(1.0, 0.5))
    for i, eid in enumerate(store.episode_ids("test")):
        frames = to_chw(replay_frames(store, eid, "corner2"))
        length = store.episodes[eid]["length"]
        assert np.array_equal(full[i].numpy(), frames[uniform_indices(0, length, 4)])
        assert np.array_equal(early[i].numpy(), frames[uniform_indices(0, round(length * 0.5), 4)])
        assert labels[i] == store.variation_index[store.episodes[eid]["variation"]]


def test_evaluation_renders_at_the_fidelity_of_the_dataset(tmp_path):
    """A dataset rendered with shadows (env.fidelity=full) is replayed and rolled out with shadows, whatever the
    run's own config says: recognition and policy see images like the ones they were trained on."""
    data = tmp_path / "full"
    r = run_cli("generate", "--preset", "tiny", "--tasks", "reach", "--out", data, "env.fidelity=full")
    assert r.returncode == 0, r.stderr
    store = EpisodeStore(data)
    assert store.fidelity == "full"
    eid = store.episode_ids("test")[0]
    stored = store.load(eid)["observer.corner"]
    assert np.array_equal(replay_frames(store, eid, "corner"), stored)

    meta = store.episodes[eid]
    variation = store.variation_index[meta["variation"]]
    fast = make_env("metaworld", "reach", store.manifest["image_size"], ["corner"], "fast")
    assert not np.array_equal(fast.reset(store.variations[variation], meta["scene_seed"]).images["corner"], stored[0])

    config = load_config("tiny", overrides=["env.fidelity=fast", "eval.max_steps=2", "eval.workers=1"])
    torch.manual_seed(0)
    policy = build_models(config, "execute", store)["execution"].eval()
    records, _ = run_rollouts(policy, store, config, episodes=1, variations=[variation], progress=False)
    assert records[0]["scene_seed"] == meta["scene_seed"]  # the stored test scene k = 0
    assert np.array_equal(records[0]["arrays"]["observer.corner"][0], stored[0])


def test_recognition_scores_by_hand():
    class Fixed:  # a stand-in model whose scores are chosen by hand
        def recognize(self, batch):
            return torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.4, 0.5, 0.1]])[: len(batch["video"])]

    labels = torch.tensor([0, 1, 1, 0])
    s = recognition_scores(Fixed(), torch.zeros(4, 2, 3, 8, 8), labels, ["a", "b", "c"], ["t", "t", "u"],
                           batch_size=4)
    assert s["top1"] == 0.5 and s["top5"] == 1.0 and s["n"] == 4  # 3 classes: every label is in the top 5
    assert s["per_variation"] == {"a": {"top1": 0.5, "top5": 1.0, "n": 2}, "b": {"top1": 0.5, "top5": 1.0, "n": 2}}
    assert s["predictions"] == [0, 2, 1, 1] and s["variation_ids"] == ["a", "b", "c"]
    # per task: a and b (task t) compete, c (task u, alone) is left out; clip 1 picks b over a (0.3 > 0.2) although
    # c scored higher overall, clip 3 picks b (0.5 > 0.4) and is wrong: 3 of 4 right among t's two variations
    assert s["per_task_top1"] == 0.75 and s["chance_per_task"] == 0.5 and s["chance"] == 1 / 3
    assert s["per_task"] == {"t": {"top1": 0.75, "n": 4, "variations": 2, "chance": 0.5}}


def test_per_task_recognition_averages_over_tasks_by_hand():
    logits = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0],   # task p (variations 0, 1): picks 0, right
                           [0.8, 0.2, 0.0, 0.0, 0.0],   # label 1: picks 0, wrong
                           [0.0, 0.0, 0.1, 0.2, 0.7],   # task q (2, 3, 4): label 4, picks 4, right
                           [0.0, 0.9, 0.3, 0.1, 0.2]])  # label 2: variation 1 of task p is ignored, picks 2, right
    s = per_task_top1(logits, torch.tensor([0, 1, 4, 2]), ["p", "p", "q", "q", "q"])
    assert s["tasks"]["p"]["top1"] == 0.5 and s["tasks"]["q"]["top1"] == 1.0
    assert s["top1"] == 0.75  # the mean over tasks, not over clips (which is also 0.75 here: see the next case)
    assert s["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    s = per_task_top1(logits[:3], torch.tensor([0, 1, 4]), ["p", "p", "q", "q", "q"])
    assert s["top1"] == 0.75 and s["tasks"]["q"]["n"] == 1  # over clips it would be 2/3
    assert per_task_top1(logits, torch.tensor([0, 1, 2, 3]), ["a", "b", "c", "d", "e"])["top1"] is None


def test_evaluate_mirror_run_from_an_unseen_view(mirror_run, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    r = run_cli("evaluate", "--run", mirror_run, "--data", tiny_dataset, "--out", out, "--view", "corner4",
                "--episodes", 1)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["recognition"]["view"] == "corner4" and m["recognition"]["n"] == 6
    for key in ("recognition", "recognition_early"):  # the stored accuracy is the stored predictions'
        rec = m[key]
        assert rec["top1"] == pytest.approx(np.mean(np.equal(rec["predictions"], rec["labels"])))
        assert rec["top1"] <= rec["top5"] and rec["labels"] == m["recognition"]["labels"]
    assert m["recognition_early"]["fraction"] == 0.5
    ro = m["rollouts"]
    assert ro["n"] == 6 and len(ro["episodes"]) == 6
    outcomes = [e["success"] for e in ro["episodes"]]
    ci = proportion_ci(outcomes)
    assert ro["success_rate"] == np.mean(outcomes) and ro["ci95"] == [ci["low"], ci["high"]]
    assert all(e["steps"] <= 40 for e in ro["episodes"])
    assert list((out / "videos").glob("*.mp4")) and (out / "rollouts").is_dir()
    # it names the weights it evaluated, so analyze can pair these rollouts with the same models
    assert m["checkpoint_sha256"] == json.loads((mirror_run / "checkpoints" / "latest.json").read_text())["sha256"]
    r = run_cli("analyze", "--runs", mirror_run, "--data", tiny_dataset, "--out", tmp_path / "a", "--rollouts", out)
    assert r.returncode == 0, r.stderr
    sf = json.loads((tmp_path / "a" / "analysis.json").read_text())["success_vs_failure"]
    assert sorted([True] * len(sf["success_scores"]) + [False] * len(sf["failure_scores"])) == sorted(outcomes)
    by_variation = {}  # the variations holding both a success and a failure are the ones compared within
    for e in ro["episodes"]:
        by_variation.setdefault(e["variation_id"], set()).add(e["success"])
    both = sorted(v for v, seen in by_variation.items() if seen == {True, False})
    assert sorted(sf["within_variation"]["per_group"]) == both and sf["within_variation"]["groups"] == len(both)


def test_evaluate_rolls_out_only_the_variations_asked_on_the_same_test_scenes(mirror_run, tiny_dataset, tmp_path):
    ids = [v.id for v in EpisodeStore(tiny_dataset).variations]
    asked = [ids[3], ids[1]]  # out of order: rolled out in the suite's order
    m = json.loads((evaluate(mirror_run, tiny_dataset, tmp_path / "some", episodes=2, progress=False,
                             variations=asked) / "metrics.json").read_text())
    ro, seed = m["rollouts"], EpisodeStore(tiny_dataset).config["data"]["seed"]
    assert ro["variations_subset"] == [ids[1], ids[3]] and ro["n"] == 4 and sorted(ro["per_variation"]) == sorted(asked)
    # the same test scenes a full evaluation rolls these variations out on
    assert [(e["variation_id"], e["k"], e["scene_seed"]) for e in ro["episodes"]] == [
        (v, k, scene_seed(seed, "test", k)) for v in (ids[1], ids[3]) for k in range(2)]
    assert m["recognition"]["n"] == 6  # recognition still scores every test clip


def test_rollouts_without_the_observer_leave_the_agent_frames_and_outcomes_unchanged(mirror_run):
    """observe=False (a `success` fine-tune, which scores no clip) renders no observer camera; what the policy sees,
    does and achieves is the same rollout as with it (the observer's pose is drawn from the scene seed alone)."""
    loaded = load_run(mirror_run)
    config = loaded.config
    config.eval.max_steps, config.eval.workers = 12, 1
    policy = loaded.models["execution"].eval()
    (seen,), _ = run_rollouts(policy, loaded.store, config, episodes=1, variations=[1], progress=False)
    (blind,), _ = run_rollouts(policy, loaded.store, config, episodes=1, variations=[1], progress=False, observe=False)
    observer = f"observer.{loaded.store.manifest['cameras']['observer'][0]}"
    assert observer in seen["arrays"] and not any(k.startswith("observer.") for k in blind["arrays"])
    assert seen["arrays"].keys() - {observer} == blind["arrays"].keys()
    for key, value in blind["arrays"].items():
        assert np.array_equal(value, seen["arrays"][key]), key
    assert (seen["success"], seen["steps"], seen["scene_seed"]) == (blind["success"], blind["steps"],
                                                                    blind["scene_seed"])


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["crash", "hang"])
def test_rollouts_survive_a_worker_crash_or_hang(mirror_run, fault):
    loaded = load_run(mirror_run)
    config = loaded.config
    # a crash is seen at once (the process sentinel); a hang only by the timeout, kept short but not so short
    # that a loaded machine's slow step counts as one
    # episodes long enough (the tiny policy rarely succeeds early) that the kill below lands mid-episode even on
    # an idle machine: with 40 steps every rollout could be done within the 10 s wait
    config.eval.max_steps, config.eval.workers = 300, 2
    config.eval.worker_timeout_s = 20.0 if fault == signal.SIGSTOP else 120.0
    result = {}

    def go():
        result["out"] = run_rollouts(loaded.models["execution"], loaded.store, config, episodes=2, progress=False)

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.time() + 120
    while len(multiprocessing.active_children()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(10)  # let the workers get into their episodes (a worker stopped before its first reply is only
    # declared hung after STARTUP_TIMEOUT_S)
    os.kill(multiprocessing.active_children()[0].pid, fault)  # SIGSTOP: alive but silent, i.e. hung
    thread.join(timeout=600)
    assert not thread.is_alive()
    records, stats = result["out"]
    assert stats["worker_restarts"] >= 1
    assert sorted((r["variation"], r["k"]) for r in records) == [(v, k) for v in range(6) for k in range(2)]


def test_an_episode_that_keeps_crashing_its_worker_is_a_simulator_error(mirror_run):
    loaded = load_run(mirror_run)
    config = loaded.config
    config.eval.max_steps, config.eval.workers = 40, 1
    stop = threading.Event()

    def kill_every_worker():  # each worker dies as soon as it is seen: the episode can never finish
        while not stop.is_set():
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_every_worker)
    killer.start()
    try:
        with pytest.raises(SimulatorError, match="crashed its worker 3 times"):
            run_rollouts(loaded.models["execution"], loaded.store, config, episodes=1, progress=False)
    finally:
        stop.set()
        killer.join()


@pytest.mark.parametrize("args, needle", [
    (["--view", "eyeball"], "unknown camera"),
    (["--episodes", "0"], "--episodes"),
    (["--variations", "reach-left-low", "fly-to-the-moon"], "--variations: fly-to-the-moon not in this dataset"),
    (["--variations", "reach-left-low", "--no-rollouts"], "this evaluation has no rollouts"),
])
def test_evaluate_rejects_bad_input(mirror_run, tiny_dataset, tmp_path, args, needle):
    out = tmp_path / "eval"
    r = run_cli("evaluate", "--run", mirror_run, "--data", tiny_dataset, "--out", out, *args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_evaluate_rejects_a_run_without_checkpoint(tiny_dataset, tmp_path):
    (tmp_path / "run").mkdir()
    r = run_cli("evaluate", "--run", tmp_path / "run", "--data", tiny_dataset, "--out", tmp_path / "eval")
    assert r.returncode == 2 and not (tmp_path / "eval").exists()


def test_no_rollouts_on_an_execute_run_is_a_usage_error(tiny_dataset, tmp_path):
    run = tmp_path / "execute"
    assert run_cli("train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.steps=2",
                   "--out", run).returncode == 0
    r = run_cli("evaluate", "--run", run, "--data", tiny_dataset, "--out", tmp_path / "eval", "--no-rollouts")
    assert r.returncode == 2 and "nothing to evaluate" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "eval").exists()
