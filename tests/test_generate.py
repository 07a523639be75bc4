import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import manifest, run_cli
from faults import reseal_episode

from mirroralign.data.generate import SPLIT_OFFSET, split_counts
from mirroralign.data.store import EpisodeStore
from mirroralign.errors import DataError


def test_tiny_dataset_manifest(tiny_dataset):
    m = manifest(tiny_dataset)
    assert len(m["variations"]) == 6
    assert m["episodes_per_split"] == {"train": 1, "val": 1, "test": 1}
    for split, ids in m["splits"].items():
        assert len(ids) == 6
        for eid in ids:
            e = m["episodes"][eid]
            assert e["split"] == split and e["length"] > 0
            assert e["scene_seed"] - SPLIT_OFFSET[split] < 300_000  # splits never share a scene seed
    seeds = {s: {m["episodes"][e]["scene_seed"] for e in ids} for s, ids in m["splits"].items()}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])


def test_split_counts():
    assert split_counts(3, 0.1, 0.2) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(20, 0.1, 0.2) == {"train": 14, "val": 2, "test": 4}
    assert split_counts(1, 0.1, 0.2) == {"train": 1, "val": 0, "test": 0}


def test_verify_passes_on_a_fresh_dataset(tiny_dataset):
    r = run_cli("verify", tiny_dataset)
    assert r.returncode == 0, r.stderr
    assert "18 episodes" in r.stdout


def _chunk_files(root: Path, eid: str) -> list[Path]:
    return sorted(p for p in (root / "episodes" / eid / "data.zarr").rglob("*") if p.is_file() and "/c/" in str(p))


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_verify_and_loading_catch_damage(dataset_copy, damage):
    eid = manifest(dataset_copy)["splits"]["val"][2]
    if damage == "meta":
        target = dataset_copy / "episodes" / eid / "meta.json"
    else:
        target = _chunk_files(dataset_copy, eid)[0]
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    r = run_cli("verify", dataset_copy)
    assert r.returncode == 1
    assert eid in r.stderr and str(target) in r.stderr
    damaged_lines = [line for line in r.stderr.splitlines() if line.startswith("damaged episode")]
    assert len(damaged_lines) == 1  # only the damaged episode is named

    store = EpisodeStore(dataset_copy)
    with pytest.raises(DataError, match=eid):
        store.load(eid)
    store.load(manifest(dataset_copy)["splits"]["val"][0])  # the others still load


def test_crc32c_codec_catches_damage_even_when_checksums_are_rewritten(dataset_copy):
    """The zarr chunk checksum is a second line of defence, independent of the sha256 records: with every
    record resealed over the damaged chunk (meta.json, the manifest, manifest.sha256), only crc32c is left."""
    eid = manifest(dataset_copy)["splits"]["train"][0]
    chunk = _chunk_files(dataset_copy, eid)[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    reseal_episode(dataset_copy, eid)
    assert run_cli("verify", dataset_copy).returncode == 0  # the sha256 records no longer see the damage
    with pytest.raises(DataError, match="damaged") as caught:
        EpisodeStore(dataset_copy).load(eid)
    message = str(caught.value)  # crc32c's own words, not a sha256 record's "does not match its checksum"
    assert "checksum" in message and "does not match" not in message


def test_kill_9_during_generate_then_rerun_gives_the_same_dataset(tiny_dataset, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "mirroralign", "generate", "--preset", "tiny", "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while len(list(out.glob("episodes/*/*/meta.json"))) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "generation finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the driver and its workers
    proc.wait()
    assert not (out / "manifest.json").exists()
    done_before = len(list(out.glob("episodes/*/*/meta.json")))
    assert 5 <= done_before < 18

    r = run_cli("generate", "--preset", "tiny", "--workers", 1, "--out", out)  # resumed, even with one worker
    assert r.returncode == 0, r.stderr
    a, b = manifest(tiny_dataset), manifest(out)
    assert a["splits"] == b["splits"]
    assert a["episodes"] == b["episodes"]  # every stored file has the same sha256
    assert a["files"] == b["files"] and "text_embeddings.safetensors" in b["files"]  # and those outside episodes
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not list(out.glob("episodes/*/.tmp-*"))
    assert run_cli("verify", out).returncode == 0


def test_rerunning_a_finished_dataset_changes_nothing(dataset_copy):
    before = (dataset_copy / "manifest.json").read_bytes()
    r = run_cli("generate", "--preset", "tiny", "--out", dataset_copy)
    assert r.returncode == 0, r.stderr
    assert (dataset_copy / "manifest.json").read_bytes() == before
