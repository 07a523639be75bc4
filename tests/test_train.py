import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import run_cli
from safetensors.torch import load_file

from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore, sha256_file
from mirroralign.errors import UsageError
from mirroralign.train import (
    NumericalError,
    build_models,
    compute_loss,
    make_dataset,
    sample_batch,
    train,
)


def _setup(tiny_dataset, mode, *overrides):
    config = load_config("tiny", overrides=list(overrides))
    store = EpisodeStore(tiny_dataset)
    ds = make_dataset(store, config, mode)
    models = build_models(config, mode, store)
    return config, ds, models


def _grads(models):
    return {name: p.grad is not None and p.grad.abs().sum().item() > 0 for name, p in models.named_parameters()}


@pytest.mark.parametrize("mode, parts", [("understand", {"understanding"}), ("execute", {"execution"}),
                                         ("mirror", {"understanding", "execution", "aligner"})])
def test_each_mode_trains_exactly_its_parts(tiny_dataset, mode, parts):
    config, ds, models = _setup(tiny_dataset, mode, "model.execution.augment=false")
    assert set(models) == parts
    torch.manual_seed(0)
    loss, _ = compute_loss(mode, models, sample_batch(ds, config, 0, torch.device("cpu")), config)
    loss.backward()
    grads = _grads(models)
    missing = [n for n, g in grads.items() if not g]
    assert not missing, missing


def test_mirror_alignment_reaches_only_what_lies_below_the_tapped_layers(tiny_dataset):
    """With lambda_EE = 0, the policy's action head (above its tapped layer) gets no gradient, while the
    layers below the tap still learn from L_align; with lambda_align = 0 the aligner gets none."""
    config, ds, models = _setup(tiny_dataset, "mirror", "align.lambda_ee=0", "model.execution.augment=false")
    torch.manual_seed(0)
    loss, _ = compute_loss("mirror", models, sample_batch(ds, config, 0, torch.device("cpu")), config)
    loss.backward()
    g = _grads(models)
    assert not g["execution.head.weight"] and not g["execution.norm.weight"]
    assert g["execution.encoder.net.0.weight"] and g["execution.blocks.0.linear1.weight"]
    assert g["aligner.execution.weight"]

    config, ds, models = _setup(tiny_dataset, "mirror", "align.lambda_align=0")
    loss, _ = compute_loss("mirror", models, sample_batch(ds, config, 0, torch.device("cpu")), config)
    loss.backward()
    assert not any(v for k, v in _grads(models).items() if k.startswith("aligner."))


def test_tiny_models_overfit_a_handful_of_samples(tiny_dataset):
    torch.manual_seed(0)
    # understanding: the 6 training clips (one per variation, fixed), each paired with every one of its
    # instructions, since recognition compares a clip with the mean of its variation's instructions
    config, _, models = _setup(tiny_dataset, "understand")
    store = EpisodeStore(tiny_dataset)
    clips = make_dataset(store, config, "understand", train=False)
    pairs = [{**clips[i], "text_index": t} for i in range(len(clips))
             for t, v in enumerate(clips.text_variation) if v == clips[i]["variation"]]
    batch = torch.utils.data.default_collate(pairs)
    model = models["understanding"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(200):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model.recognize(batch).argmax(1) == batch["variation"]).all()

    # execution: 8 steps, action L1 falls at least 10x
    config, _, models = _setup(tiny_dataset, "execute", "model.execution.augment=false")
    steps = make_dataset(store, config, "execute", train=False)
    batch = torch.utils.data.default_collate([steps[i * 7] for i in range(8)])
    policy = models["execution"]
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    first = None
    for _ in range(300):
        loss, _ = policy(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, loss.item())


def _weights(run):
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    return latest["step"], load_file(str(run / "checkpoints" / latest["file"]))


@pytest.mark.parametrize("mode", ["mirror"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tiny_dataset, tmp_path, mode):
    args = ["train", "--mode", mode, "--data", tiny_dataset, "--preset", "tiny", "train.steps=60",
            "train.checkpoint_every=10"]
    r = run_cli(*args, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mirroralign", *map(str, args), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 480  # generous: a loaded 2-core machine can be 20x slower than an idle one
    latest = out / "checkpoints" / "latest.json"  # written (atomically) after the checkpoint and its record
    while not (latest.is_file() and json.loads(latest.read_text())["step"] >= 20) and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    step, _ = _weights(out)
    assert 20 <= step < 60
    r = run_cli(*args, "--out", out)
    assert r.returncode == 0, r.stderr

    (s1, a), (s2, b) = _weights(tmp_path / "straight"), _weights(out)
    assert s1 == s2 == 60 and a.keys() == b.keys()
    for k in a:
        if k != "rng.torch":
            assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(5, 61, 5))  # no duplicated or missing rows


def test_a_start_killed_before_its_records_are_written_is_redone(tiny_dataset, tmp_path):
    """A kill inside the atomic write of run.json leaves only its temporary file, one between run.json and
    config.yaml leaves no config.yaml: the same command then starts or resumes the run, where a folder holding
    anything else is refused."""
    args = ["train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.steps=10"]
    run = tmp_path / "run"
    run.mkdir()
    leftover = run / f".run.json.{'0' * 32}.tmp"
    leftover.write_text("{")
    r = run_cli(*args, "--out", run)
    assert r.returncode == 0, r.stderr
    assert not leftover.exists() and (run / "run.json").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 10

    (run / "config.yaml").unlink()
    r = run_cli(*args, "--out", run)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["steps"] == 10

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("train:\n  steps: 10\n")  # somebody's own file: kept, not overwritten
    r = run_cli(*args, "--out", other)
    assert r.returncode == 2 and "holds no mirroralign run" in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["config.yaml"]


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    import mirroralign.train as trainer

    real = trainer.compute_loss

    def poisoned(mode, models, batch, config):  # fault injection: the loss turns NaN at step 25
        loss, info = real(mode, models, batch, config)
        return (loss * float("nan"), info) if poisoned.calls >= 25 else (loss, info)

    def counting(*a):
        out = poisoned(*a)
        poisoned.calls += 1
        return out

    poisoned.calls = 0
    monkeypatch.setattr(trainer, "compute_loss", counting)
    config = load_config("tiny", overrides=["train.checkpoint_every=10"])
    with pytest.raises(NumericalError, match="step 25.*step_0000020"):
        train(config, "execute", tiny_dataset, tmp_path / "run", progress=False)
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 20
    assert sha256_file(tmp_path / "run" / "checkpoints" / latest["file"]) == latest["sha256"]


def test_non_finite_input_is_refused(tiny_dataset, tmp_path, monkeypatch):
    import mirroralign.data.datasets as datasets

    real = datasets._Episodes._load

    def load_with_nan(self, eid):
        ep = real(self, eid)
        ep["proprio"] = ep["proprio"].copy()
        ep["proprio"][:] = float("nan")
        return ep

    monkeypatch.setattr(datasets._Episodes, "_load", load_with_nan)
    with pytest.raises(NumericalError, match="proprio.*step 0"):
        train(load_config("tiny"), "execute", tiny_dataset, tmp_path / "run", progress=False)


def test_damaged_checkpoint_is_detected(tiny_dataset, tmp_path):
    r = run_cli("train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.steps=20",
                "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000020.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[-100] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    r = run_cli("train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.steps=20",
                "--out", tmp_path / "run")
    assert r.returncode == 1 and str(ckpt) in r.stderr


@pytest.mark.parametrize("identity", [None, {"mode": "execute"}, {"mode": "execute", "data": ".", "config": [1]}],
                         ids=["no identity", "no config", "config not a mapping"])
def test_damaged_run_record_is_named(mirror_run, tmp_path, identity):
    run = tmp_path / "run"
    shutil.copytree(mirror_run, run)
    record = json.loads((run / "run.json").read_text())
    if identity is None:
        del record["identity"]
    else:
        record["identity"] = identity
    (run / "run.json").write_text(json.dumps(record))
    r = run_cli("analyze", "--runs", run, "--data", mirror_run, "--out", tmp_path / "a")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"run record damaged: {run / 'run.json'}" in r.stderr


BAD_TRAIN = {
    "unknown mode": ["--mode", "dream"],
    "unknown preset": ["--mode", "execute", "--preset", "giant"],
    "bad positives": ["--mode", "mirror", "align.positives=scene"],
    "zero steps": ["--mode", "execute", "train.steps=0"],
    "bad tap layer": ["--mode", "understand", "model.understanding.tap_layer=temporal.9"],
    "unknown key": ["--mode", "execute", "train.stepz=3"],
    "negative lambda": ["--mode", "mirror", "align.lambda_align=-1"],
}


@pytest.mark.parametrize("case", BAD_TRAIN, ids=list(BAD_TRAIN))
def test_train_rejects_bad_input(tiny_dataset, tmp_path, case):
    args = BAD_TRAIN[case]
    if "--preset" not in args:
        args = [*args, "--preset", "tiny"]
    r = run_cli("train", "--data", tiny_dataset, "--out", tmp_path / "run", *args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_rejects_a_data_dir_that_is_not_a_dataset_and_a_changed_config(tiny_dataset, tmp_path):
    r = run_cli("train", "--mode", "execute", "--data", tmp_path, "--preset", "tiny", "--out", tmp_path / "run")
    assert r.returncode == 2 and not (tmp_path / "run").exists()
    r = run_cli("train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.steps=10",
                "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    r = run_cli("train", "--mode", "execute", "--data", tiny_dataset, "--preset", "tiny", "train.steps=12",
                "--out", tmp_path / "run")
    assert r.returncode == 2 and "different" in r.stderr
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before


def test_understand_run_exposes_usage_error_in_process(tiny_dataset, tmp_path):
    with pytest.raises(UsageError):
        train(load_config("tiny"), "nope", tiny_dataset, tmp_path / "run", progress=False)


def test_understanding_augmentation_shifts_a_clip_as_one():
    """model.understanding.augment: in training, every frame of a clip gets the same random shift (from the sample's
    seed, so any rank draws the same); in evaluation, frames go in untouched."""
    from mirroralign.models.blocks import to_float_image
    from mirroralign.models.understanding import UnderstandingModel

    c = load_config("tiny", overrides=["model.understanding.augment=true"]).model.understanding
    model = UnderstandingModel(c, 32, torch.randn(4, 384), torch.tensor([0, 0, 1, 1]))
    seen = []
    model.video.patchify.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 1, 3, 32, 32), dtype=torch.uint8, generator=g)
    video = image.repeat(3, c.frames, 1, 1, 1)  # 3 clips, every frame the same picture
    batch = {"video": video, "text_index": torch.tensor([0, 2, 1]), "variation": torch.tensor([0, 1, 0]),
             "sample_seed": torch.tensor([11, 12, 13])}
    model.train()
    model(batch)
    model(batch)
    shifted, again = (x.view(3, c.frames, 3, 32, 32) for x in seen)
    assert torch.equal(shifted, again)  # the seeds fix the shifts
    for clip in shifted:
        assert all(torch.equal(frame, clip[0]) for frame in clip)  # one shift for the whole clip
    plain = to_float_image(image[0, 0])
    assert any(not torch.equal(clip[0], plain) for clip in shifted)  # and it does shift
    # not the shift the policy gives its first camera from the same sample seed (a cue shared by a paired sample)
    from mirroralign.models.blocks import random_shift
    policy_shift = random_shift(plain.expand(3, -1, -1, -1), seeds=[11, 12, 13])
    assert any(not torch.equal(clip[0], policy) for clip, policy in zip(shifted, policy_shift))
    model.eval()
    seen.clear()
    model.recognize({"video": video})
    assert torch.equal(seen[0], to_float_image(video.flatten(0, 1)))
