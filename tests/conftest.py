import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirroralign.envs.gl import ensure_gl_backend

ensure_gl_backend()  # before any test module imports mujoco (through metaworld) directly


def run_cli(*args, timeout=600, **kw) -> subprocess.CompletedProcess:
    """The real command line in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "mirroralign", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def manifest(root) -> dict:
    return json.loads((Path(root) / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The `tiny` preset (6 variations x 3 episodes, 32x32), generated once with 2 worker processes."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    r = run_cli("generate", "--preset", "tiny", "--workers", 2, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def dataset_copy(tiny_dataset, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_dataset, dst)
    return dst


@pytest.fixture(scope="session")
def mirror_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mirror"
    r = run_cli("train", "--mode", "mirror", "--data", tiny_dataset, "--preset", "tiny", "train.steps=20",
                "eval.max_steps=40", "--out", out)
    assert r.returncode == 0, r.stderr
    return out
