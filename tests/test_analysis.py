import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from mirroralign.analysis.metrics import all_metrics
from mirroralign.analysis.probe import chance_recall, probe_scores, recall_at_1, shared_space, train_probe
from mirroralign.analysis.run import (WINDOWS_PER_EPISODE, agent_steps, episode_representations, execution_run,
                                      initialized, over_training, split_episodes, time_aligned_representations,
                                      time_aligned_scores)
from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore, write_episode
from mirroralign.train import load_run


def _split(g, n, d):
    return torch.randn(n, d, generator=g)


def test_probe_recovers_a_planted_linear_relation_and_finds_none_in_noise():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(24, 16, generator=g)
    u_train, u_test = _split(g, 400, 24), _split(g, 100, 24)
    e_train = u_train @ W + 0.05 * torch.randn(400, 16, generator=g)
    e_test = u_test @ W + 0.05 * torch.randn(100, 16, generator=g)
    labels = torch.arange(100)  # every test sample its own instruction: only the partner counts
    scores, _ = probe_scores(u_train, e_train, torch.arange(400), u_test, e_test, labels)
    assert scores["r1_u2e"] > 0.9 and scores["r1_e2u"] > 0.9
    assert scores["chance"] == pytest.approx(0.01)
    # one label per sample: retrieval by instruction is retrieval by episode
    assert (scores["r1_episode_u2e"], scores["r1_episode_e2u"]) == (scores["r1_u2e"], scores["r1_e2u"])
    assert scores["chance_episode"] == pytest.approx(0.01)

    # by hand: both episodes share an instruction and each retrieves the other one's partner
    a, b = torch.tensor([[1.0, 0.0], [1.0, 0.1]]), torch.tensor([[1.0, 0.1], [1.0, 0.0]])
    assert recall_at_1(a, b, torch.tensor([0, 0])) == 1.0 and recall_at_1(a, b, torch.arange(2)) == 0.0

    labels = torch.arange(100) % 10  # ten instructions, no relation between the two spaces
    noise_train, noise_test = _split(g, 400, 16), _split(g, 100, 16)
    scores, _ = probe_scores(u_train, noise_train, torch.arange(400) % 10, u_test, noise_test, labels)
    assert scores["chance"] == pytest.approx(0.1)
    assert abs(scores["r1_u2e"] - 0.1) < 0.12 and abs(scores["r1_e2u"] - 0.1) < 0.12


def test_chance_recall_by_hand():
    assert chance_recall(torch.tensor([0, 0, 1, 2])) == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)


def test_analyze_mirror_run(mirror_run, tiny_dataset, tmp_path):
    out = tmp_path / "analysis"
    r = run_cli("analyze", "--runs", mirror_run, "--data", tiny_dataset, "--out", out)
    assert r.returncode == 0, r.stderr
    a = json.loads((out / "analysis.json").read_text())
    reps = load_file(str(out / "representations.safetensors"))
    n = 6
    assert reps["understanding"].shape == (n, 32) and reps["execution"].shape == (n, 32)
    assert reps["instruction_id"].tolist() == sorted(reps["instruction_id"].tolist())
    assert reps["episode_id"].tolist() == list(range(n))
    recomputed = all_metrics(reps["understanding"], reps["execution"], a["k"])
    for key, value in recomputed.items():
        assert a[key] == pytest.approx(value, abs=1e-9), key
    assert a["probe"]["chance"] == pytest.approx(1 / 6)
    # the stored Recall@1 is that of the stored shared space (retrieval with the same instruction counts)
    su, se, labels = reps["shared_understanding"], reps["shared_execution"], reps["instruction_id"]
    assert a["probe"]["r1_u2e"] == pytest.approx(recall_at_1(su, se, labels))
    assert a["probe"]["r1_e2u"] == pytest.approx(recall_at_1(se, su, labels))
    episode = reps["episode_id"]
    assert a["probe"]["r1_episode_u2e"] == pytest.approx(recall_at_1(su, se, episode))
    assert a["probe"]["r1_episode_e2u"] == pytest.approx(recall_at_1(se, su, episode))
    assert set(a["aligner"]) == {"r1_u2e", "r1_e2u"}
    assert [row["step"] for row in a["over_training"]] == [0, 20]  # initialization, then each checkpoint
    # the rows analyze reuses (step 0 from at_init, the last step from the main probe) equal computed ones
    runs = [load_run(mirror_run)]
    store = EpisodeStore(tiny_dataset)
    (train_eps, groups), (test_eps, labels) = split_episodes(store, "train"), split_episodes(store, "test")
    frames = runs[0].config.model.understanding.frames
    computed = over_training(runs, frames, train_eps, groups, test_eps, labels, a["k"])
    assert len(computed) == len(a["over_training"])
    assert all(c == pytest.approx(r) for c, r in zip(computed, a["over_training"]))
    assert a["over_training"][0]["r1_u2e"] == pytest.approx(a["at_init"]["probe"]["r1_u2e"])
    assert a["over_training"][-1]["r1_u2e"] == pytest.approx(a["probe"]["r1_u2e"])
    # the controls, and every probe at step 0 as well
    for probe in ("probe_blind", "probe_time"):
        for scores in (a[probe], a["at_init"][probe]):
            assert 0 <= scores["r1_u2e"] <= 1 and 0 <= scores["r1_e2u"] <= 1
    assert a["probe_blind"]["chance"] == pytest.approx(1 / 6)
    assert a["probe_time"]["n_test"] == n * WINDOWS_PER_EPISODE and a["probe_time"]["chance"] == 1 / (n * 4)
    assert a["probe_time"]["chance_episode"] == pytest.approx(1 / n) and a["probe_time"]["window"] == 16
    assert a["at_init"]["probe"]["chance"] == a["probe"]["chance"]
    assert a["at_init"]["probe"] != a["probe"]  # other weights, other retrievals (a copy would be equal)


def test_the_instruction_blind_probe_feeds_the_null_instruction(mirror_run, tiny_dataset):
    """Blind, the policy's instruction input is the zero vector whatever the episode's instruction, so its
    representation cannot depend on the instruction; not blind, it does."""
    run = load_run(mirror_run)
    policy, u_model = run.models["execution"], run.models["understanding"]
    episodes, _ = split_episodes(EpisodeStore(tiny_dataset), "test")
    seen = []
    hook = policy.instruction.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].clone()))
    ep = episodes[0]
    ts = np.array([0, 3])
    blind = policy.representation(agent_steps(ep, ts, blind=True))
    assert len(seen) == 1 and torch.equal(seen[0], torch.zeros(2, 384))
    other = {**ep, "text_index": ep["text_index"] + 1}  # another instruction's row
    assert torch.equal(policy.representation(agent_steps(other, ts, blind=True)), blind)
    assert not torch.equal(policy.representation(agent_steps(other, ts)), policy.representation(agent_steps(ep, ts)))
    assert not torch.equal(seen[-1], torch.zeros(2, 384))
    hook.remove()
    _, e_blind = episode_representations(u_model, policy, episodes[:2], 4, blind=True)
    _, e_told = episode_representations(u_model, policy, episodes[:2], 4)
    assert not torch.allclose(e_blind, e_told)


def test_time_aligned_pairs_are_the_window_around_each_step(mirror_run, tiny_dataset):
    run = load_run(mirror_run)
    episodes, _ = split_episodes(EpisodeStore(tiny_dataset), "test")
    u, e, episode = time_aligned_representations(run.models["understanding"], run.models["execution"], episodes[:2],
                                                 4, window=6)
    assert u.shape == (8, 32) and e.shape == (8, 32) and episode.tolist() == [0] * 4 + [1] * 4
    ep = episodes[1]  # pair 5 is the second step of episode 1: the clip of the 6-step window around it
    t = int(np.floor(np.linspace(0, ep["length"] - 1, 4)[1] + 0.5))
    start = max(0, min(t - 3, ep["length"] - 6))
    clip = torch.from_numpy(ep["observer"][np.floor(np.linspace(start, start + 6, 4) + 0.5).astype(int)])[None]
    torch.testing.assert_close(u[5], run.models["understanding"].representation({"video": clip})[0])
    torch.testing.assert_close(e[5], run.models["execution"].representation(agent_steps(ep, np.array([t])))[0])


def test_time_aligned_scores_need_the_very_pair():
    """A planted one-to-one relation between pairs is found both ways; retrieving the right episode at the wrong
    time counts for `r1_episode` but not for `r1`."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(12, 10, generator=g)
    train_u, test_u = torch.randn(300, 12, generator=g), torch.randn(40, 12, generator=g)
    scores = time_aligned_scores(train_u, train_u @ W, test_u, test_u @ W, torch.arange(40) // 4, window=8)
    assert scores["r1_u2e"] > 0.9 and scores["r1_e2u"] > 0.9 and scores["r1_episode_u2e"] >= scores["r1_u2e"]
    assert scores["chance"] == 1 / 40 and scores["chance_episode"] == pytest.approx(0.1)
    # the execution side only knows the episode (every step of an episode alike): the episode is found, the time not
    episode_only = (torch.arange(40) // 4)[:, None].float() * torch.ones(1, 10) + 0.01 * torch.randn(40, 10, generator=g)
    train_episode = (torch.arange(300) // 4)[:, None].float() * torch.ones(1, 10)
    scores = time_aligned_scores(train_u, train_episode, test_u, episode_only, torch.arange(40) // 4, window=8)
    assert scores["r1_u2e"] < 0.3


def test_a_probe_with_one_positive_per_pair_equals_the_one_given_those_groups():
    """groups None is the CLIP loss: the same maps as groups that pair each row with itself alone."""
    g = torch.Generator().manual_seed(2)
    u, e = torch.randn(50, 6, generator=g), torch.randn(50, 5, generator=g)
    a = train_probe(u, e, None, dim=4, steps=20)
    b = train_probe(u, e, torch.arange(50), dim=4, steps=20)
    for x, y in zip(a.maps.parameters(), b.maps.parameters()):
        torch.testing.assert_close(x, y)


def test_a_mini_batched_probe_draws_its_batches_and_still_finds_a_planted_relation():
    """batch_size < N trains on drawn subsets (other maps than full batch, the same on a rerun) and still recovers a
    one-to-one linear relation; batch_size >= N is full batch exactly."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(12, 10, generator=g)
    u, test_u = torch.randn(400, 12, generator=g), torch.randn(60, 12, generator=g)
    full = train_probe(u, u @ W, None, dim=16, steps=150)
    batched, again = (train_probe(u, u @ W, None, dim=16, steps=150, batch_size=64) for _ in range(2))
    as_full = train_probe(u, u @ W, None, dim=16, steps=150, batch_size=400)
    first = lambda probe: next(probe.maps.parameters())  # noqa: E731
    assert not torch.allclose(first(full), first(batched))
    torch.testing.assert_close(first(batched), first(again))
    torch.testing.assert_close(first(full), first(as_full))
    a, b = shared_space(batched, test_u, test_u @ W)
    assert recall_at_1(a, b, torch.arange(60)) > 0.9


@pytest.mark.parametrize("runs", [["mirror", "mirror"], ["dataset"]])
def test_analyze_rejects_wrong_runs(mirror_run, tiny_dataset, tmp_path, runs):
    paths = [mirror_run if r == "mirror" else tiny_dataset for r in runs]
    out = tmp_path / "analysis"
    r = run_cli("analyze", "--runs", *paths, "--data", tiny_dataset, "--out", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_analyze_refuses_data_with_other_variations(mirror_run, tmp_path):
    # the models index instructions by position: another suite's data would silently mislabel everything
    other = tmp_path / "other"
    r = run_cli("generate", "--preset", "tiny", "--tasks", "reach", "--episodes", 4, "--out", other)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "analysis"
    r = run_cli("analyze", "--runs", mirror_run, "--data", other, "--out", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "other variations or instructions than the run" in r.stderr and not out.exists()


def _analyze_with_one_rollout(mirror_run, data, tmp_path, arrays: dict, meta: dict, evaluated: dict | None = None):
    """`analyze --rollouts` on an evaluation holding one real (checksummed) rollout folder and `evaluated` as its
    metrics.json (default: an evaluation of the run's latest checkpoint; {}: none); (result, output)."""
    write_episode(tmp_path / "eval" / "rollouts", f"{meta['variation_id']}/rollout-0000", arrays, meta)
    if evaluated is None:
        latest = json.loads((mirror_run / "checkpoints" / "latest.json").read_text())
        evaluated = {"run": str(mirror_run), "mode": "mirror", "step": latest["step"],
                     "checkpoint_sha256": latest["sha256"]}
    if evaluated:
        (tmp_path / "eval" / "metrics.json").write_text(json.dumps(evaluated))
    out = tmp_path / "analysis"
    return run_cli("analyze", "--runs", mirror_run, "--data", data, "--out", out, "--rollouts", tmp_path / "eval"), out


@pytest.mark.parametrize("evaluated, message", [
    ({}, "has no metrics.json"),
    ({"run": "elsewhere", "mode": "execute", "step": 20}, "does not say which checkpoint"),
    ({"run": "elsewhere", "mode": "execute", "step": 20, "checkpoint_sha256": "0" * 64},
     "are of checkpoint 000000000000 (elsewhere, step 20), not of the analysed execution model"),
], ids=["unfinished", "older", "another_checkpoint"])
def test_analyze_refuses_rollouts_of_another_checkpoint(evaluated, message, mirror_run, tiny_dataset, tmp_path):
    # success vs failure scores the rollouts with the analysed models: someone else's rollouts would mislead
    r, out = _analyze_with_one_rollout(mirror_run, tiny_dataset, tmp_path, *_one_real_rollout(tiny_dataset),
                                       evaluated)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr and not out.exists()


def _one_real_rollout(data) -> tuple[dict, dict]:
    store = EpisodeStore(data)
    arrays = store.load(store.episode_ids("test")[0])
    meta = {"variation_id": store.variations[0].id, "k": 0, "scene_seed": 1, "success": True,
            "steps": len(arrays["proprio"]) - 1}
    return {k: v for k, v in arrays.items() if k != "actions"}, meta


def test_analyze_refuses_rollouts_of_an_earlier_checkpoint_of_the_same_run(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--mode", "mirror", "--data", tiny_dataset, "--preset", "tiny", "train.steps=40",
                "train.checkpoint_every=20", "--out", run)
    assert r.returncode == 0, r.stderr
    earlier = json.loads((run / "checkpoints" / "step_0000020.json").read_text())
    evaluated = {"run": str(run.resolve()), "mode": "mirror", "step": 20, "checkpoint_sha256": earlier["sha256"]}
    r, out = _analyze_with_one_rollout(run, tiny_dataset, tmp_path, *_one_real_rollout(tiny_dataset), evaluated)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"of checkpoint {earlier['sha256'][:12]}" in r.stderr and "step 40)" in r.stderr and not out.exists()


def test_analyze_names_a_damaged_checkpoint_sha256(mirror_run, tiny_dataset, tmp_path):
    evaluated = {"run": str(mirror_run), "mode": "mirror", "step": 20, "checkpoint_sha256": 7}
    r, out = _analyze_with_one_rollout(mirror_run, tiny_dataset, tmp_path, *_one_real_rollout(tiny_dataset),
                                       evaluated)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "evaluation metrics damaged" in r.stderr and not out.exists()


def test_the_rollouts_of_an_independent_pair_are_the_execute_runs():
    runs = [SimpleNamespace(mode="understand"), SimpleNamespace(mode="execute")]
    assert execution_run(runs).mode == "execute" and execution_run(runs[::-1]).mode == "execute"
    assert execution_run([SimpleNamespace(mode="mirror")]).mode == "mirror"


def test_analyze_refuses_rollouts_of_another_dataset(mirror_run, tiny_dataset, tmp_path):
    meta = {"variation_id": "elsewhere", "k": 0, "scene_seed": 1, "success": True, "steps": 2}
    r, out = _analyze_with_one_rollout(mirror_run, tiny_dataset, tmp_path, {"proprio": np.zeros((3, 4), np.float32)},
                                       meta)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "'elsewhere', which --data does not have" in r.stderr and not out.exists()


@pytest.mark.parametrize("meta_change", [{"steps": 9}, {"success": None, "steps": None}], ids=["steps", "missing"])
def test_analyze_names_a_rollout_whose_meta_disagrees_with_its_arrays(meta_change, mirror_run, tiny_dataset,
                                                                      tmp_path):
    store = EpisodeStore(tiny_dataset)
    arrays = store.load(store.episode_ids("test")[0])  # real arrays of the right cameras, 1 more frame than steps
    meta = {"variation_id": store.variations[0].id, "k": 0, "scene_seed": 1, "success": True,
            "steps": len(arrays["proprio"]) - 1}
    meta = {k: v for k, v in {**meta, **meta_change}.items() if v is not None}
    r, out = _analyze_with_one_rollout(mirror_run, tiny_dataset, tmp_path,
                                       {k: v for k, v in arrays.items() if k != "actions"}, meta)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "rollout-0000 is damaged" in r.stderr and not out.exists()


def test_initialized_rebuilds_the_weights_training_started_from(tiny_dataset, tmp_path):
    # one step at a vanishing learning rate: the checkpoint still holds the initial parameters (to ~1e-12)
    run = tmp_path / "run"
    r = run_cli("train", "--mode", "mirror", "--data", tiny_dataset, "--preset", "tiny", "train.steps=1",
                "train.lr=1e-12", "align.lr=1e-12", "train.checkpoint_every=1", "--out", run)
    assert r.returncode == 0, r.stderr
    trained = load_run(run)
    start = initialized(trained)
    assert start.step == 0 and trained.step == 1
    after, before = dict(trained.models.named_parameters()), dict(start.models.named_parameters())
    assert after.keys() == before.keys()
    for name, value in after.items():
        torch.testing.assert_close(before[name], value, atol=1e-8, rtol=0, msg=name)
    # another seed gives other weights: the comparison above can fail
    other = dict(initialized(replace(trained, config=load_config("tiny", overrides=["train.seed=7"]))).models
                 .named_parameters())
    assert any(not torch.allclose(other[n], v) for n, v in after.items())
