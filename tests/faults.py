"""Fault injection shared by the reliability tests and `benchmarks/reliability.py`: real files damaged the way
disks, crashes and other people damage them, and commands run with real OS limits (no mocks)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mirroralign.data.store import (
    ARRAYS,
    MANIFEST,
    META,
    episode_path,
    sha256_file,
    write_json_atomic,
    write_manifest,
)

# ------------------------------------------------------------------------------------------ pickled payloads

class ArmedPayload:
    """Unpickling this opens `marker` for writing, i.e. creates it: the proof that a read ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(ArmedPayload(marker))


def torch_save_payload(marker: Path) -> bytes:
    """What `torch.save` writes for a state dict carrying a payload (torch.load(weights_only=False) runs it)."""
    import torch

    buf = io.BytesIO()
    torch.save({"model.weight": torch.zeros(2), "extra": ArmedPayload(marker)}, buf)
    return buf.getvalue()


def zarr_v2_pickle_array(marker: Path) -> dict[str, bytes]:
    """A zarr v2 array (metadata and one chunk) whose codec is numcodecs' pickle: an object array whose only
    element is the payload. Files relative to the array's folder."""
    zarray = {"zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None,
              "fill_value": None, "filters": [{"id": "pickle", "protocol": 5}], "order": "C"}
    chunk = pickle.dumps(np.array([ArmedPayload(marker)], dtype=object), protocol=5)
    return {".zarray": json.dumps(zarray).encode(), "0": chunk}


# ---------------------------------------------------------------------------------------------- damage

def flip_byte(path: Path, rng) -> str:
    data = bytearray(path.read_bytes())
    at = int(rng.integers(len(data)))
    data[at] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))
    return f"flip byte {at} of {len(data)}"


def truncate(path: Path, rng) -> str:
    data = path.read_bytes()
    keep = int(rng.integers(len(data)))
    path.write_bytes(data[:keep])
    return f"truncate {len(data)} -> {keep} bytes"


def reseal_episode(root: Path, episode_id: str) -> None:
    """Recompute every checksum of an episode (its meta.json, the manifest's entry, the manifest's own), as
    someone who edits a dataset on purpose would: what is then caught is not caught as damage."""
    folder = episode_path(root, episode_id)
    meta = json.loads((folder / META).read_text())
    meta["files"] = {str(p.relative_to(folder)): sha256_file(p) for p in sorted((folder / ARRAYS).rglob("*"))
                     if p.is_file()}
    write_json_atomic(folder / META, meta)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["episodes"][episode_id]["files"] = meta["files"]
    manifest["episodes"][episode_id]["meta_sha256"] = sha256_file(folder / META)
    write_manifest(root, manifest)


def without_split(src: Path, dst: Path, split: str) -> Path:
    """A copy of a dataset with no episodes in `split`, as `generate --episodes 2` makes (no val or test) or as
    an import of PerAct's test/ folder alone makes (no train): a valid dataset that some commands cannot use."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / MANIFEST).read_text())
    for eid in manifest["splits"][split]:
        shutil.rmtree(episode_path(dst, eid))
        del manifest["episodes"][eid]
    manifest["splits"][split] = []
    manifest["episodes_per_split"][split] = 0
    write_manifest(dst, manifest)
    return dst


def patch_array(root: Path, episode_id: str, name: str, index, value) -> None:
    """Write `value` into one stored array in place, then reseal the episode."""
    import zarr

    z = zarr.open_array(episode_path(root, episode_id) / ARRAYS / name, mode="r+")
    z[index] = value
    reseal_episode(root, episode_id)


def reseal_checkpoint(run: Path, record_name: str) -> None:
    """Point a checkpoint's JSON record (and latest.json when it is the latest) at the file's current sha256."""
    folder = Path(run) / "checkpoints"
    record = json.loads((folder / record_name).read_text())
    record["sha256"] = sha256_file(folder / record["file"])
    write_json_atomic(folder / record_name, record)
    latest = json.loads((folder / "latest.json").read_text())
    if latest["file"] == record["file"]:
        write_json_atomic(folder / "latest.json", record)


# ------------------------------------------------------------------------------------------ snapshots

def tree_snapshot(*roots: Path) -> dict[str, str]:
    """Every path under `roots` with its content hash and mtime ("dir" for folders): equal snapshots mean
    nothing was created, removed or rewritten."""
    snap = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for p in [root, *sorted(root.rglob("*"))]:
            if p.is_dir():
                snap[str(p)] = "dir"
            else:
                st = p.stat()
                snap[str(p)] = f"{hashlib.sha256(p.read_bytes()).hexdigest()} {st.st_size} {st.st_mtime_ns}"
    return snap


# ------------------------------------------------------------------------------------ limited commands

def cli(*args) -> list[str]:
    return [sys.executable, "-m", "mirroralign", *map(str, args)]


def file_size_limit(limit: int):
    """A preexec_fn: no file of the command may grow past `limit` bytes (RLIMIT_FSIZE); writes past it fail
    with EFBIG, as on a full disk (Python ignores SIGXFSZ, so the write raises instead of killing)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def read_only_mounts_work() -> bool:
    """Whether an unprivileged user and mount namespace can make a folder read-only for one command."""
    if not shutil.which("unshare"):
        return False
    probe = "mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp"
    r = subprocess.run(["unshare", "-r", "-m", "sh", "-c", probe], check=False, capture_output=True)
    return r.returncode == 0


def with_read_only(folder: Path, argv: list[str]) -> list[str]:
    """`argv` run with `folder` read-only (a read-only bind mount in a private mount namespace: the folder is
    untouched for everyone else and the mount ends with the command)."""
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    return ["unshare", "-r", "-m", "sh", "-c", script, "sh", str(folder), *argv]


def run_limited(argv: list[str], preexec=None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


# ------------------------------------------------------------------------------------------ bad input

def bad_invocations(data: Path, run: Path, tmp: Path) -> dict[str, list]:
    """Distinct bad invocations of every command, given a good dataset, a good (finished mirror) run and a
    scratch folder: each must exit 2 with one line on stderr and create or change nothing. Files the cases
    need are written into `tmp` here, before anyone snapshots it."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "unknown_key.yaml").write_text("train:\n  stepz: 3\n")  # misspelt: an error, not ignored
    (tmp / "wrong_type.yaml").write_text("data:\n  episodes: [1, 2]\n")
    (tmp / "python_tag.yaml").write_text(f"data:\n  suite: !!python/object/apply:os.system ['touch {tmp}/ran']\n")
    (tmp / "not_a_mapping.yaml").write_text("- just\n- a list\n")
    (tmp / "a_file").write_text("not a directory")
    no_test, no_train = without_split(data, tmp / "no_test", "test"), without_split(data, tmp / "no_train", "train")
    out = tmp / "out"
    gen = ["generate", "--preset", "tiny", "--out", out]
    tr = ["train", "--data", data, "--preset", "tiny", "--out", out]
    return {
        "generate: unknown suite": [*gen, "--suite", "nope"],
        "generate: unknown task": [*gen, "--tasks", "reach,fly-to-the-moon"],
        "generate: unknown camera": [*gen, "env.agent_cameras=[corner3,eyeball]"],
        "generate: unknown preset": ["generate", "--preset", "huge", "--out", out],
        "generate: zero episodes": [*gen, "--episodes", "0"],
        "generate: non-integer flag": [*gen, "--workers", "two"],
        "generate: override without =": [*gen, "episodes"],
        "generate: image size too small": [*gen, "env.image_size=4"],
        "generate: seed out of range": [*gen, "--seed", str(2 ** 44)],
        "generate: fractions sum above 1": [*gen, "data.val_fraction=0.6", "data.test_fraction=0.5"],
        "generate: config file with an unknown key": [*gen, "--config", tmp / "unknown_key.yaml"],
        "generate: config file with a wrong type": [*gen, "--config", tmp / "wrong_type.yaml"],
        "generate: config file with a python tag": [*gen, "--config", tmp / "python_tag.yaml"],
        "generate: config file not a mapping": [*gen, "--config", tmp / "not_a_mapping.yaml"],
        "generate: missing config file": [*gen, "--config", tmp / "missing.yaml"],
        "generate: output is a file": ["generate", "--preset", "tiny", "--out", tmp / "a_file"],
        "generate: other dataset in output": ["generate", "--preset", "tiny", "--episodes", "4", "--out", data],
        "verify: missing folder": ["verify", tmp / "missing"],
        "verify: a file": ["verify", tmp / "a_file"],
        "train: unknown mode": [*tr, "--mode", "dream"],
        "train: data is not a dataset": ["train", "--mode", "execute", "--data", tmp, "--preset", "tiny", "--out", out],
        "train: unknown key": [*tr, "--mode", "execute", "train.stepz=3"],
        "train: negative learning rate": [*tr, "--mode", "execute", "train.lr=-1"],
        "train: batch of one": [*tr, "--mode", "execute", "train.batch_size=1"],
        "train: unknown device": [*tr, "--mode", "execute", "train.device=tpu"],
        "train: bad positives": [*tr, "--mode", "mirror", "align.positives=scene"],
        "train: zero attention heads": [*tr, "--mode", "execute", "model.execution.heads=0"],
        "train: zero patch size": [*tr, "--mode", "understand", "model.understanding.patch=0"],
        "train: seed out of range": [*tr, "--mode", "execute", "--seed", str(2 ** 44)],
        "train: run made with another config": ["train", "--mode", "mirror", "--data", data, "--preset", "tiny",
                                                "train.steps=21", "--out", run],
        "train: dataset without train episodes": ["train", "--mode", "mirror", "--data", no_train, "--preset", "tiny",
                                                  "--out", out],
        "evaluate: missing run": ["evaluate", "--run", tmp / "missing", "--data", data, "--out", out],
        "evaluate: unknown camera": ["evaluate", "--run", run, "--data", data, "--out", out, "--view", "eyeball"],
        "evaluate: zero episodes": ["evaluate", "--run", run, "--data", data, "--out", out, "--episodes", "0"],
        "evaluate: zero workers": ["evaluate", "--run", run, "--data", data, "--out", out, "--workers", "0"],
        "evaluate: dataset without test episodes": ["evaluate", "--run", run, "--data", no_test, "--out", out],
        "evaluate: dataset without test episodes, replayed view": ["evaluate", "--run", run, "--data", no_test, "--out",
                                                                   out, "--view", "corner3", "--episodes", "1"],
        "analyze: a dataset as a run": ["analyze", "--runs", data, "--data", data, "--out", out],
        "analyze: the same run twice": ["analyze", "--runs", run, run, "--data", data, "--out", out],
        "analyze: dataset without train episodes": ["analyze", "--runs", run, "--data", no_train, "--out", out],
        "analyze: dataset without test episodes": ["analyze", "--runs", run, "--data", no_test, "--out", out],
        "report: no evaluation or analysis": ["report", "--inputs", tmp, "--out", tmp / "r.html"],
        "demo: unknown preset": ["demo", "--preset", "huge", "--out", out],
        "suites: unknown flag": ["suites", "--yaml"],
        "no command": [],
    }
