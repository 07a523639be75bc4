import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from mirroralign.analysis.metrics import all_metrics
from mirroralign.analysis.probe import chance_recall, probe_scores
from mirroralign.data.store import write_episode


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
    assert 0 <= a["probe"]["r1_u2e"] <= 1 and "aligner" in a
    assert [row["step"] for row in a["over_training"]] == [20]


@pytest.mark.parametrize("runs", [["mirror", "mirror"], ["dataset"]])
def test_analyze_rejects_wrong_runs(mirror_run, tiny_dataset, tmp_path, runs):
    paths = [mirror_run if r == "mirror" else tiny_dataset for r in runs]
    out = tmp_path / "analysis"
    r = run_cli("analyze", "--runs", *paths, "--data", tiny_dataset, "--out", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_analyze_refuses_rollouts_of_another_dataset(mirror_run, tiny_dataset, tmp_path):
    rollouts = tmp_path / "eval" / "rollouts"  # a real rollout folder, of a variation --data does not have
    write_episode(rollouts, "elsewhere/rollout-0000", {"proprio": np.zeros((3, 4), np.float32)},
                  {"variation_id": "elsewhere", "k": 0, "scene_seed": 1, "success": True, "steps": 2})
    out = tmp_path / "analysis"
    r = run_cli("analyze", "--runs", mirror_run, "--data", tiny_dataset, "--out", out, "--rollouts", tmp_path / "eval")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "'elsewhere', which --data does not have" in r.stderr and not out.exists()
