"""Reliability and security (issue 7): pickled payloads, damaged records, non-finite stored data, Ctrl-C, a full
or read-only disk, and bad input to every command. Real files, real subprocesses, real signals and real OS limits
(RLIMIT_FSIZE, a read-only bind mount in a private namespace); `benchmarks/reliability.py` runs the same cases at
random and counts them."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import manifest, run_cli
from faults import (
    bad_invocations,
    cli,
    file_size_limit,
    patch_array,
    pickle_payload,
    read_only_mounts_work,
    reseal_checkpoint,
    reseal_episode,
    run_limited,
    torch_save_payload,
    tree_snapshot,
    with_read_only,
    zarr_v2_pickle_array,
)

from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore, load_episode_folder, write_json_atomic
from mirroralign.errors import DataError, UsageError
from mirroralign.train import load_run, make_dataset, sample_batch

# --------------------------------------------------------------------------------------- pickled payloads


def test_the_payloads_are_armed(tmp_path):
    """The payloads below would create their marker if anything unpickled them."""
    pickle.loads(pickle_payload(tmp_path / "a"))
    torch.load(__import__("io").BytesIO(torch_save_payload(tmp_path / "b")), weights_only=False)
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


def _chunks(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "data.zarr").rglob("*") if p.is_file() and "/c/" in str(p))


def _dataset_payload(kind: str, root: Path, marker: Path) -> tuple[str, Path]:
    """Plant a payload in a dataset, with every checksum updated (as a malicious editor would); returns the
    episode and the file a refusal must name."""
    eid = manifest(root)["splits"]["train"][0]
    folder = root / "episodes" / eid
    if kind == "chunk":
        target = _chunks(folder)[0]
        target.write_bytes(pickle_payload(marker))
        reseal_episode(root, eid)
        return eid, folder / "data.zarr" / target.relative_to(folder / "data.zarr").parts[0]  # its array
    if kind == "zarr_v2_pickle_codec":
        array = folder / "data.zarr" / "proprio"
        shutil.rmtree(array)
        array.mkdir()
        for name, data in zarr_v2_pickle_array(marker).items():
            (array / name).write_bytes(data)
        reseal_episode(root, eid)
        return eid, array / ".zarray"
    if kind == "meta":
        target = folder / "meta.json"
    else:
        target = root / "manifest.json"
    target.write_bytes(pickle_payload(marker))
    return eid, target


@pytest.mark.parametrize("kind", ["chunk", "zarr_v2_pickle_codec", "meta", "manifest"])
def test_a_dataset_carrying_a_pickled_payload_is_refused_unrun(dataset_copy, tmp_path, kind):
    marker = tmp_path / "ran"
    eid, target = _dataset_payload(kind, dataset_copy, marker)
    with pytest.raises(DataError) as err:
        EpisodeStore(dataset_copy).load(eid)
    assert str(target) in str(err.value), err.value
    if kind != "chunk":  # a resealed chunk has matching checksums: only decoding tells, and verify does not decode
        r = run_cli("verify", dataset_copy)
        assert r.returncode == 1 and str(target) in r.stderr
    assert not marker.exists()


def test_a_rollout_folder_with_a_pickle_codec_is_refused_unrun(dataset_copy, tmp_path):
    """Evaluation's rollouts are read back by analyze and report through `load_episode_folder`."""
    marker = tmp_path / "ran"
    eid, _ = _dataset_payload("zarr_v2_pickle_codec", dataset_copy, marker)
    with pytest.raises(DataError, match="zarr v2"):
        load_episode_folder(dataset_copy / "episodes" / eid)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch_save_checkpoint", "pickled_record"])
def test_a_checkpoint_carrying_a_pickled_payload_is_refused_unrun(mirror_run, tmp_path, kind):
    run, marker = tmp_path / "run", tmp_path / "ran"
    shutil.copytree(mirror_run, run)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    if kind == "torch_save_checkpoint":
        target = run / "checkpoints" / latest["file"]
        target.write_bytes(torch_save_payload(marker))
        reseal_checkpoint(run, latest["file"].replace(".safetensors", ".json"))
    else:
        target = run / "checkpoints" / "latest.json"
        target.write_bytes(pickle_payload(marker))
    with pytest.raises(DataError, match=str(target)):
        load_run(run)
    assert not marker.exists()


def test_a_config_file_with_a_python_tag_is_a_usage_error_and_runs_nothing(tmp_path):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"data:\n  suite: !!python/object/apply:os.system ['touch {tmp_path}/ran']\n")
    with pytest.raises(UsageError, match="python/object"):
        load_config("tiny", cfg)
    assert not (tmp_path / "ran").exists()


# -------------------------------------------------------------------------------- records and dataset files

@pytest.mark.parametrize("change", ["step", "base_lr", "whitespace"])
def test_a_changed_checkpoint_record_is_refused(mirror_run, tmp_path, change):
    """Valid JSON that says something else (or the same thing differently) is damage too."""
    run = tmp_path / "run"
    shutil.copytree(mirror_run, run)
    record_path = run / "checkpoints" / "latest.json"
    record = json.loads(record_path.read_text())
    if change == "whitespace":
        record_path.write_text(record_path.read_text().replace(": ", ":  ", 1))
    else:
        if change == "step":
            record["step"] += 1
        else:
            record["param_groups"][0]["base_lr"] *= 10
        write_json_atomic(record_path, record)
    with pytest.raises(DataError, match=str(record_path)):
        load_run(run)


def test_damaged_dataset_files_outside_episodes_are_caught(dataset_copy):
    config = dataset_copy / "config.json"
    config.write_text(config.read_text().replace('"seed": 0', '"seed": 1'))
    r = run_cli("verify", dataset_copy)
    assert r.returncode == 1 and f"damaged dataset files: {config}" in r.stderr
    with pytest.raises(DataError, match=str(config)):
        EpisodeStore(dataset_copy)

    m = json.loads((dataset_copy / "manifest.json").read_text())
    eid = m["splits"]["test"][0]
    m["episodes"][eid]["length"] += 1  # valid JSON, consistent with nothing: the manifest's checksum catches it
    (dataset_copy / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    with pytest.raises(DataError, match="manifest.json"):
        EpisodeStore(dataset_copy)


# ------------------------------------------------------------------------------------ non-finite stored data

def _poison_a_step(root: Path, config, after: int) -> tuple[str, int, int]:
    """A stored step (episode, t) that the training batches first draw after step `after`, and that step."""
    ds = make_dataset(EpisodeStore(root), config, "execute")
    first_draw = {}
    for step in range(config.train.steps):
        batch = sample_batch(ds, config, step, torch.device("cpu"))
        for e, t in zip(batch["episode"].tolist(), batch["t"].tolist()):
            first_draw.setdefault((e, t), step)
    (e, t), step = next(((e, t), s) for (e, t), s in sorted(first_draw.items(), key=lambda kv: kv[1]) if s > after)
    return ds.episode_ids[e], t, step


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_stored_input_stops_training_naming_the_step(dataset_copy, tmp_path, value):
    config = load_config("tiny", overrides=["train.checkpoint_every=10"])
    eid, t, step = _poison_a_step(dataset_copy, config, after=10)
    patch_array(dataset_copy, eid, "proprio", (t, 0), value)
    assert EpisodeStore(dataset_copy).verify() == {}  # checksums updated: not damage, bad values

    run = tmp_path / "run"
    r = run_cli("train", "--mode", "execute", "--data", dataset_copy, "--preset", "tiny", "train.checkpoint_every=10",
                "--out", run)
    last = f"step_{step // 10 * 10:07d}.safetensors"
    assert r.returncode == 1, r.stderr
    assert f"at step {step};" in r.stderr.splitlines()[-1] and last in r.stderr.splitlines()[-1]
    assert "Traceback" not in r.stderr
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["file"] == last
    assert load_run(run).step == step // 10 * 10  # checksum, seal and tensors intact


# --------------------------------------------------------------------------- Ctrl-C, full and read-only disk

def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    return {k: v for k, v in load_file(str(run / "checkpoints" / latest["file"])).items() if k != "rng.torch"}


def _ctrl_c_enabled() -> None:
    # a test runner started in the background (no job control) ignores SIGINT, and its children inherit that
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _error_line(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def test_train_ctrl_c_then_full_then_read_only_disk_then_resume_equals_uninterrupted(tiny_dataset, mirror_run,
                                                                                        tmp_path):
    # the same command as the session's mirror_run, which is the uninterrupted reference
    args = ["train", "--mode", "mirror", "--data", tiny_dataset, "--preset", "tiny", "train.steps=20",
            "eval.max_steps=40", "--out", tmp_path / "run"]
    run = tmp_path / "run"
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_enabled)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip()):
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "mirroralign: interrupted"
    stopped = load_run(run).step  # a checkpoint of the step it stopped at, whole
    assert 5 <= stopped < 20

    # the next checkpoint cannot be written: a file-size limit (EFBIG, as on a full disk), then a read-only folder
    before = tree_snapshot(run / "checkpoints")
    r = run_limited(cli(*args), preexec=file_size_limit(256 * 1024))
    assert r.returncode == 1 and _error_line(r).startswith("mirroralign: I/O error: File too large: ")
    assert str(run / "checkpoints" / "step_0000020.safetensors") in _error_line(r)
    assert tree_snapshot(run / "checkpoints") == before and load_run(run).step == stopped
    if read_only_mounts_work():
        r = run_limited(with_read_only(run / "checkpoints", cli(*args)))
        assert r.returncode == 1 and "Read-only file system" in _error_line(r), r.stderr
        assert tree_snapshot(run / "checkpoints") == before

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    a, b = _weights(mirror_run), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == [5, 10, 15, 20]


def test_generate_ctrl_c_then_full_then_read_only_disk_then_resume_equals_uninterrupted(tiny_dataset, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(tiny_dataset, out)
    # an unfinished dataset: no manifest, and the first episode of every variation's train split still to do
    (out / "manifest.json").unlink()
    (out / "manifest.sha256").unlink()
    todo = manifest(tiny_dataset)["splits"]["train"]
    for eid in todo:
        shutil.rmtree(out / "episodes" / eid)
    args = ["generate", "--preset", "tiny", "--workers", 1, "--out", out]

    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_ctrl_c_enabled)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (out / "episodes" / todo[0] / "meta.json").exists():
        time.sleep(0.02)
    assert proc.poll() is None, "generation ended before Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "mirroralign: interrupted"
    assert not (out / "manifest.json").exists() and not list(out.glob("episodes/*/.tmp-*"))

    before = tree_snapshot(out)
    r = run_limited(cli(*args), preexec=file_size_limit(1000))  # every episode has a file larger than this
    assert r.returncode == 1 and _error_line(r).startswith("mirroralign: I/O error: File too large")
    assert tree_snapshot(out) == before  # finished episodes untouched, nothing half-written left
    if read_only_mounts_work():
        r = run_limited(with_read_only(out / "episodes", cli(*args)))
        assert r.returncode == 1 and "Read-only file system" in _error_line(r), r.stderr
        assert tree_snapshot(out) == before

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert manifest(out)["episodes"] == manifest(tiny_dataset)["episodes"]  # every file byte-identical
    assert run_cli("verify", out).returncode == 0


# ---------------------------------------------------------------------------------------------- bad input

# cases not already covered by test_bad_input.py and test_train.py (the benchmark runs them all)
NEW_BAD = ["generate: config file with a python tag", "generate: config file not a mapping",
           "generate: fractions sum above 1", "verify: a file", "train: unknown device", "train: batch of one",
           "train: config file", "evaluate: missing run", "demo: unknown preset", "suites: unknown flag",
           "generate: seed out of range", "train: zero attention heads", "train: zero patch size",
           "train: seed out of range", "train: dataset without train episodes",
           "evaluate: dataset without test episodes", "evaluate: dataset without test episodes, replayed view", "analyze: dataset without train episodes",
           "analyze: dataset without test episodes"]


def test_bad_input_to_every_command_exits_2_in_one_line_and_changes_nothing(tiny_dataset, mirror_run, tmp_path):
    cases = bad_invocations(tiny_dataset, mirror_run, tmp_path / "scratch")
    cases["train: config file"] = ["train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny",
                                   "--config", tmp_path / "scratch" / "unknown_key.yaml", "--out", tmp_path / "out"]
    before = tree_snapshot(tmp_path, tiny_dataset, mirror_run)
    for name in NEW_BAD:
        r = run_cli(*cases[name])
        assert r.returncode == 2, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("mirroralign: error:"), (name, r.stderr)
    assert tree_snapshot(tmp_path, tiny_dataset, mirror_run) == before
    assert not (tmp_path / "scratch" / "ran").exists()


@pytest.mark.skipif(not read_only_mounts_work(), reason="no unprivileged user and mount namespaces here")
def test_a_read_only_output_place_is_a_usage_error_before_any_work(tiny_dataset, mirror_run, tmp_path):
    place = tmp_path / "ro"
    place.mkdir()
    for argv in (["train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "--out", place / "run"],
                 ["evaluate", "--run", mirror_run, "--data", tiny_dataset, "--out", place / "eval"]):
        r = run_limited(with_read_only(place, cli(*argv)))
        assert r.returncode == 2 and r.stderr.strip() == f"mirroralign: error: output path is not writable: " \
                                                         f"{argv[argv.index('--out') + 1]}", r.stderr
    assert not any(place.iterdir())


def test_bad_invocations_are_distinct_and_enough(tiny_dataset, tmp_path):
    cases = bad_invocations(tiny_dataset, Path("/r"), tmp_path)  # a real dataset: some cases need altered copies
    assert len(cases) >= 20 and len({tuple(map(str, v)) for v in cases.values()}) == len(cases)
    assert {name.split(":")[0] for name in cases} >= {"generate", "verify", "train", "evaluate", "analyze", "report",
                                                      "demo", "suites"}
