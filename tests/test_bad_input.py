"""Every bad invocation: one line on stderr, exit code 2, nothing created or changed."""

import pytest
from conftest import run_cli


def _tree(root):
    return sorted(str(p) for p in root.rglob("*"))


BAD_GENERATE = {
    "unknown suite": ["--suite", "nope"],
    "unknown task": ["--tasks", "reach,fly-to-the-moon"],
    "unknown camera": ["env.agent_cameras=[corner3,eyeball]"],
    "unknown preset": ["--preset", "huge"],
    "zero episodes": ["--episodes", "0"],
    "negative workers": ["--workers", "-1"],
    "unknown config key": ["data.nope=1"],
    "wrong type": ["data.episodes=many"],
    "not key=value": ["episodes"],
    "bad fidelity": ["env.fidelity=ultra"],
    "too many steps": ["env.max_steps=900"],
    "non-integer flag": ["--episodes", "2.5"],
}


@pytest.mark.parametrize("case", BAD_GENERATE, ids=list(BAD_GENERATE))
def test_generate_rejects_bad_input(case, tmp_path):
    out = tmp_path / "out"
    r = run_cli("generate", "--preset", "tiny", "--out", out, *BAD_GENERATE[case])
    assert r.returncode == 2, (case, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("mirroralign: error:")
    assert not out.exists()


def test_generate_rejects_an_output_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    for out in (f, f / "sub"):
        r = run_cli("generate", "--preset", "tiny", "--out", out)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f.read_text() == "keep me"


def test_generate_refuses_a_non_dataset_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    r = run_cli("generate", "--preset", "tiny", "--out", tmp_path)
    assert r.returncode == 2 and "not empty" in r.stderr
    assert _tree(tmp_path) == before


def test_generate_refuses_to_resume_with_a_different_config(dataset_copy):
    before = _tree(dataset_copy)
    r = run_cli("generate", "--preset", "tiny", "--episodes", 4, "--out", dataset_copy)
    assert r.returncode == 2 and "different config" in r.stderr
    assert _tree(dataset_copy) == before


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  episods: 3\n")  # misspelt key: an error, not ignored
    r = run_cli("generate", "--config", cfg, "--out", tmp_path / "out")
    assert r.returncode == 2 and "episods" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("generate", "--config", tmp_path / "missing.yaml", "--out", tmp_path / "out")
    assert r.returncode == 2
    assert not (tmp_path / "out").exists()


def test_verify_rejects_what_is_not_a_dataset(tmp_path):
    for target in (tmp_path, tmp_path / "missing"):
        r = run_cli("verify", target)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_unknown_command_and_missing_arguments():
    for args in (["fly"], ["generate"], []):
        r = run_cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_an_existing_output_file_is_writable_but_a_file_as_a_folder_is_not(tmp_path):
    from mirroralign.data.store import require_writable
    from mirroralign.errors import UsageError

    report = tmp_path / "report.html"
    report.write_text("the last report")
    require_writable(report)  # replaced by an atomic rename, as `report` and a second `demo` do
    require_writable(tmp_path / "new" / "deeper")
    with pytest.raises(UsageError, match="not writable"):
        require_writable(report / "inside")


def test_train_on_cuda_without_cuda_is_a_usage_error(tiny_dataset, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run_cli("train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.device=cuda",
                "--out", tmp_path / "run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "CUDA" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_a_dataset_without_test_episodes_trains_but_is_refused_where_test_episodes_are_needed(tmp_path):
    """2 episodes per variation make a valid dataset with empty val and test splits (what a new user tries
    first): training needs neither; recognition and analysis need test episodes and say how to make some."""
    data, run = tmp_path / "data", tmp_path / "run"
    r = run_cli("generate", "--suite", "mirror10", "--episodes", 2, "--preset", "tiny", "--out", data)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--mode", "mirror", "--data", data, "--preset", "tiny", "train.steps=2", "--out", run)
    assert r.returncode == 0, r.stderr
    before = _tree(tmp_path)
    for argv in (["evaluate", "--run", run, "--data", data, "--out", tmp_path / "eval", "--view", "corner3",
                  "--episodes", 1],  # a replayed view
                 ["evaluate", "--run", run, "--data", data, "--out", tmp_path / "eval"],  # the stored observer view
                 ["analyze", "--runs", run, "--data", data, "--out", tmp_path / "analysis"]):
        r = run_cli(*argv)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"dataset {data} has no test episodes" in r.stderr and "--episodes >= 3" in r.stderr, r.stderr
    assert _tree(tmp_path) == before
