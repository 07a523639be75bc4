"""Instruction embeddings travel with the data: written by `generate` (and the importers), read by every command
that builds models, the encoder loaded only for texts the dataset does not hold, another encoder's refused."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import manifest, run_cli
from safetensors.numpy import save

from mirroralign.data.store import (MANIFEST, TEXT_EMBEDDINGS, TEXT_RECORD, EpisodeStore, read_text_embeddings,
                                    sha256_file, write_manifest)
from mirroralign.errors import DataError, UsageError
from mirroralign.text import ENCODER, encode_texts, encoder_sha256


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def _rewrite(root, record: dict, emb: np.ndarray) -> None:
    """Replace the embeddings file and reseal its checksum in the manifest (as a writer with another encoder would)."""
    path = root / TEXT_EMBEDDINGS
    path.write_bytes(save({"embeddings": emb}, metadata={TEXT_RECORD: json.dumps(record)}))
    m = manifest(root)
    m["files"][TEXT_EMBEDDINGS] = sha256_file(path)
    write_manifest(root, m)


def test_generate_stores_what_the_encoder_gives(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    record, emb = read_text_embeddings(tiny_dataset / TEXT_EMBEDDINGS)
    assert record == {"encoder": ENCODER, "encoder_sha256": encoder_sha256(), "texts": store.texts}
    assert len(store.texts) > len(store.variations)  # paraphrases too, not only the canonical instructions
    np.testing.assert_allclose(emb, encode_texts(store.texts), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert TEXT_EMBEDDINGS in store.manifest["files"]  # under the manifest's checksums, so verify covers it
    np.testing.assert_array_equal(store.text_embeddings(), emb)  # read back as stored


def test_the_encoder_is_identified_and_the_embeddings_read_without_loading_it(tiny_dataset, mirror_run):
    # a fresh process: builds models from the dataset, and loads a trained run as evaluate and analyze do
    r = _python(f"""
import sys
from mirroralign.data.store import EpisodeStore
from mirroralign.text import encoder_sha256
from mirroralign.train import build_models, load_run
from mirroralign.config import load_config
assert len(encoder_sha256()) == 64
store = EpisodeStore({str(tiny_dataset)!r})
models = build_models(load_config("tiny"), "mirror", store)
run = load_run({str(mirror_run)!r})
loaded = [m for m in ("sentence_transformers", "transformers") if m in sys.modules]
print("loaded:", loaded)
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "loaded: []"


def test_a_dataset_made_before_stored_embeddings_still_works(dataset_copy):
    stored = read_text_embeddings(dataset_copy / TEXT_EMBEDDINGS)[1]
    m = manifest(dataset_copy)
    del m["files"][TEXT_EMBEDDINGS]
    (dataset_copy / TEXT_EMBEDDINGS).unlink()
    write_manifest(dataset_copy, m)
    store = EpisodeStore(dataset_copy)
    np.testing.assert_allclose(store.text_embeddings(), stored, atol=1e-6)  # encoded now, the same
    r = run_cli("verify", dataset_copy)
    assert r.returncode == 0 and "text embeddings" not in r.stdout


def test_only_texts_the_dataset_does_not_hold_are_encoded(tiny_dataset):
    store = EpisodeStore(tiny_dataset)
    stored = read_text_embeddings(tiny_dataset / TEXT_EMBEDDINGS)[1]
    new = "put the mug upside down on the shelf"
    emb = store.text_embeddings([store.texts[3], new, store.texts[0]])
    np.testing.assert_array_equal(emb[0], stored[3])
    np.testing.assert_array_equal(emb[2], stored[0])
    np.testing.assert_allclose(emb[1], encode_texts([new])[0], atol=1e-6)
    assert abs(float(emb[1] @ stored[3])) < 0.99  # not a stored row by mistake


@pytest.mark.parametrize("field", ["encoder", "encoder_sha256"])
def test_embeddings_of_another_encoder_are_refused_in_one_line(dataset_copy, tmp_path, field):
    record, emb = read_text_embeddings(dataset_copy / TEXT_EMBEDDINGS)
    record[field] = "sentence-transformers/all-mpnet-base-v2" if field == "encoder" else "0" * 64
    _rewrite(dataset_copy, record, emb)
    with pytest.raises(UsageError, match="not of the installed"):
        EpisodeStore(dataset_copy).text_embeddings()
    r = run_cli("train", "--mode", "understand", "--data", dataset_copy, "--preset", "tiny", "train.steps=1",
                "--out", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "not of the installed" in r.stderr and TEXT_EMBEDDINGS in r.stderr
    assert not (tmp_path / "run").exists()
    r = run_cli("verify", dataset_copy)  # not damage: verify passes, and says the encoder differs
    assert r.returncode == 0 and "not the installed one" in r.stdout


def test_damaged_embeddings_are_caught_by_verify_and_on_load(dataset_copy):
    path = dataset_copy / TEXT_EMBEDDINGS
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the float data: only the checksum can tell
    path.write_bytes(bytes(data))
    r = run_cli("verify", dataset_copy)
    assert r.returncode == 1 and str(path) in r.stderr and "dataset files" in r.stderr
    with pytest.raises(DataError, match=TEXT_EMBEDDINGS):
        EpisodeStore(dataset_copy)


def test_embeddings_that_match_their_checksum_but_not_the_dataset_are_refused(dataset_copy):
    """Resealed by hand: the checksum matches, so the structure is what is checked."""
    record, emb = read_text_embeddings(dataset_copy / TEXT_EMBEDDINGS)
    _rewrite(dataset_copy, record, emb[:-1])  # one row short of its texts
    r = run_cli("verify", dataset_copy)
    assert r.returncode == 1 and "text embeddings damaged" in r.stderr
    with pytest.raises(DataError, match="text embeddings damaged"):
        EpisodeStore(dataset_copy).text_embeddings()
    _rewrite(dataset_copy, {**record, "texts": record["texts"][::-1]}, emb)  # well-formed, other texts' order
    r = run_cli("verify", dataset_copy)
    assert r.returncode == 1 and "not the texts of this dataset" in r.stderr
    (dataset_copy / TEXT_EMBEDDINGS).write_bytes(b"not safetensors")
    m = manifest(dataset_copy)
    m["files"][TEXT_EMBEDDINGS] = sha256_file(dataset_copy / TEXT_EMBEDDINGS)
    write_manifest(dataset_copy, m)
    with pytest.raises(DataError, match="text embeddings damaged"):
        EpisodeStore(dataset_copy).text_embeddings()


def test_generate_killed_before_its_manifest_resumes_to_the_same_bytes(dataset_copy):
    """A kill after the episodes (while or after the embeddings were written, before the manifest): the rerun
    writes them again, leaves no temporary file, and ends with the same manifest, byte for byte."""
    before = (dataset_copy / MANIFEST).read_bytes()
    (dataset_copy / MANIFEST).unlink()
    (dataset_copy / "manifest.sha256").unlink()
    (dataset_copy / TEXT_EMBEDDINGS).unlink()
    (dataset_copy / f".{TEXT_EMBEDDINGS}.{'a' * 32}.tmp").write_bytes(b"half a write")
    r = run_cli("generate", "--preset", "tiny", "--out", dataset_copy)
    assert r.returncode == 0, r.stderr
    assert (dataset_copy / MANIFEST).read_bytes() == before  # incl. the embeddings' checksum
    assert not [p for p in dataset_copy.iterdir() if p.name.endswith(".tmp")]
