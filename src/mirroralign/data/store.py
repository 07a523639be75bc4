"""The on-disk episode store.

    DIR/config.json                      the dataset's identity, written first (a resumed run must match)
    DIR/episodes/<variation>/<split>-<k>/   one episode, written under a temporary name and renamed into
                                         place, so it is either whole or absent
        data.zarr/                       its arrays: a zarr v3 group
        meta.json                        variation, scene seed, length, and the sha256 of every file
    DIR/attempts/<variation>/<split>-<k>.json    an expert failure (counted in the manifest)
    DIR/text_embeddings.safetensors      the frozen encoder's embedding of every instruction, with the encoder's
                                         name and checksum (datasets made before it have none: encoded on load)
    DIR/manifest.sha256                  the sha256 of manifest.json (written just before it)
    DIR/manifest.json                    written last: config, variations, splits, episodes, checksums (of
                                         config.json and the attempt records too)

Chunks carry zarr's crc32c codec, so a damaged chunk never decodes silently; the per-file sha256 in the
manifest additionally covers metadata and lets `verify` check a dataset without decoding it. Arrays are read
only after their zarr metadata is checked against what `write_episode` writes (zarr v3, plain numeric dtypes,
known codecs): zarr v2 metadata can name numcodecs' pickle codec, and nothing read back may be unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from mirroralign.envs.base import Variation
from mirroralign.errors import DataError, UsageError
from mirroralign.text import ENCODER, TEXT_DIM, encode_texts, encoder_sha256

FORMAT = "mirroralign-dataset"
VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.sha256"
CONFIG = "config.json"
META = "meta.json"
EPISODES = "episodes"
ATTEMPTS = "attempts"
TEXT_EMBEDDINGS = "text_embeddings.safetensors"
# its record is one metadata entry of sorted JSON: safetensors writes several entries in a random order, and a
# resumed `generate` must write the same bytes as an uninterrupted one
TEXT_RECORD = "mirroralign.text_embeddings"
SPLITS = ("train", "val", "test")
DATASET_FILES = "(dataset)"  # verify's key for damaged files that belong to no episode
CHUNK_FRAMES = 32


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_atomic_write_leftover(name: str) -> bool:
    """The temporary name write_bytes_atomic uses: a file by that name is a write that a kill cut short."""
    return re.fullmatch(r"\..+\.[0-9a-f]{32}\.tmp", name) is not None


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name, flush it to disk, then rename: readers see old or new, never half. A failed
    write (disk full, read-only) raises OSError and leaves the old file and no temporary one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a failed write() names no file; say which one
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        # never let the clean-up mask the real error (on a read-only mount even unlink fails with EROFS)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def require_writable(path: Path) -> None:
    """An output path must be creatable or writable, checked before any work: a read-only or foreign place is a
    usage error at once, not an I/O error after minutes of work."""
    probe = Path(path)
    if probe.is_file():  # replaced by an atomic rename: its folder must take a new file
        probe = probe.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"output path is not writable: {path}")


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


def write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, json_bytes(obj))


def write_manifest(root: Path, manifest: dict) -> None:
    """The manifest's own checksum first, then the manifest (its presence marks the dataset complete)."""
    data = json_bytes(manifest)
    write_bytes_atomic(Path(root) / MANIFEST_SHA, hashlib.sha256(data).hexdigest().encode() + b"\n")
    write_bytes_atomic(Path(root) / MANIFEST, data)


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} damaged: {path} ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{what} damaged: {path} (not a JSON object)")
    return obj


def _codec(dtype) -> list:
    shuffle = "bitshuffle" if np.dtype(dtype).itemsize == 1 else "shuffle"
    return [BloscCodec(cname="zstd", clevel=3, shuffle=shuffle), Crc32cCodec()]


ARRAYS = "data.zarr"


def episode_path(root: Path, episode_id: str) -> Path:
    return Path(root) / EPISODES / episode_id


def write_episode(root: Path, episode_id: str, arrays: dict[str, np.ndarray], meta: dict) -> dict:
    """Write one episode atomically; returns its meta (with the checksum of every file)."""
    final = episode_path(root, episode_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        # encoded in memory, then written here in order: a failed write (disk full, read-only) raises at once,
        # with no zarr task left writing into the folder that is about to be removed
        encoded: dict = {}
        group = zarr.open_group(zarr.storage.MemoryStore(encoded), mode="w")
        for name, arr in arrays.items():
            chunks = (min(CHUNK_FRAMES, max(1, arr.shape[0])), *arr.shape[1:])
            z = group.create_array(name, shape=arr.shape, chunks=chunks, dtype=arr.dtype, compressors=_codec(arr.dtype))
            z[...] = arr
        for key in sorted(encoded):
            path = tmp / ARRAYS / key
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.write_bytes(encoded[key].to_bytes())
            except OSError as err:  # a failed write() names no file
                raise OSError(err.errno, err.strerror, str(path)) from None
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        meta = {**meta, "id": episode_id, "files": files}
        write_json_atomic(tmp / META, meta)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / META).is_file():  # not a finished twin from an earlier, killed run
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def check_episode_files(root: Path, episode_id: str, files: dict[str, str]) -> list[str]:
    """Names of the episode's files that are missing or whose sha256 differs from the record."""
    base = episode_path(root, episode_id)
    bad = []
    for rel, digest in files.items():
        p = base / rel
        if not p.is_file() or sha256_file(p) != digest:
            bad.append(str(p))
    return bad


SAFE_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
               "float16", "float32", "float64"}
SAFE_CODECS = {"bytes", "blosc", "crc32c", "zstd", "gzip", "transpose"}


def check_zarr_metadata(group: Path) -> None:
    """Refuse anything but what `write_episode` writes before zarr parses it: a zarr v3 group of arrays with
    numeric dtypes and known codecs. No object dtype, no v2 metadata (whose codecs may unpickle), no
    consolidated metadata, no storage transformers."""
    group = Path(group)
    for p in group.rglob("*"):
        if p.name in (".zgroup", ".zarray", ".zattrs", ".zmetadata"):
            raise DataError(f"refusing zarr v2 metadata (only zarr v3 is read): {p}")
    meta = read_json(group / "zarr.json", "zarr group metadata")
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group" or meta.get("consolidated_metadata"):
        raise DataError(f"unexpected zarr group metadata: {group / 'zarr.json'}")
    for p in group.rglob("zarr.json"):
        if p.parent == group:
            continue
        meta = read_json(p, "zarr array metadata")
        codecs = meta.get("codecs")
        dtype = meta.get("data_type")
        if (p.parent.parent != group or meta.get("zarr_format") != 3 or meta.get("node_type") != "array"
                or not isinstance(dtype, str) or dtype not in SAFE_DTYPES or meta.get("storage_transformers")
                or not isinstance(codecs, list)
                or not all(isinstance(c, dict) and c.get("name") in SAFE_CODECS for c in codecs)):
            raise DataError(f"refusing zarr array metadata (only numeric arrays with known codecs are read): {p}")


def read_arrays(folder: Path) -> dict[str, np.ndarray]:
    group = Path(folder) / ARRAYS
    check_zarr_metadata(group)
    z = zarr.open_group(group, mode="r", zarr_format=3, use_consolidated=False)
    arrays = {}
    for name, arr in z.arrays():
        try:
            arrays[name] = arr[...]
        except Exception as err:  # the crc32c codec or the decoder refused a chunk: name the array's folder
            raise DataError(f"array damaged: {group / name} ({str(err).strip().splitlines()[0]})") from None
    return arrays


def load_episode_folder(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of an episode folder outside a dataset (e.g. a rollout), checked against its meta."""
    folder = Path(folder)
    meta = read_json(folder / META, "episode meta")
    bad = [str(folder / rel) for rel, digest in meta.get("files", {}).items()
           if not (folder / rel).is_file() or sha256_file(folder / rel) != digest]
    if bad or not meta.get("files"):
        raise DataError(f"episode {folder} is damaged: {bad[0] if bad else 'no file list'}")
    try:
        return meta, read_arrays(folder)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"episode {folder} is damaged: {err}") from None


def dataset_texts(variations: list[Variation]) -> list[str]:
    """Every instruction in one flat list, canonical first per variation: models look a sample's text
    embedding up by its row here (`text_index`)."""
    return [t for v in variations for t in v.instructions]


def write_text_embeddings(root: Path, variations: list[Variation]) -> dict[str, str]:
    """Encode every instruction of `variations` into ROOT/text_embeddings.safetensors, with the encoder's name
    and checksum; returns its entry for the manifest's `files`. Every importer calls this before the manifest."""
    from safetensors.numpy import save

    texts = dataset_texts(variations)
    record = {"encoder": ENCODER, "encoder_sha256": encoder_sha256(), "texts": texts}
    data = save({"embeddings": _encoded(tuple(texts))}, metadata={TEXT_RECORD: json.dumps(record, sort_keys=True)})
    write_bytes_atomic(Path(root) / TEXT_EMBEDDINGS, data)
    return {TEXT_EMBEDDINGS: sha256_file(Path(root) / TEXT_EMBEDDINGS)}


def read_text_embeddings(path: Path) -> tuple[dict, np.ndarray]:
    """(record, [N, 384] float32 embeddings) of a text embeddings file, refused unless it is what
    `write_text_embeddings` writes."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            record = json.loads((f.metadata() or {})[TEXT_RECORD])
            emb = f.get_tensor("embeddings") if list(f.keys()) == ["embeddings"] else None
    except Exception as err:  # not safetensors, no record, or a record that is not JSON
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"text embeddings damaged: {path} ({reason})") from None
    texts = record.get("texts") if isinstance(record, dict) else None
    if (not isinstance(texts, list) or not all(isinstance(t, str) for t in texts)
            or not all(isinstance(record.get(k), str) for k in ("encoder", "encoder_sha256"))
            or emb is None or emb.dtype != np.float32 or emb.shape != (len(texts), TEXT_DIM)):
        raise DataError(f"text embeddings damaged: {path} (not one [texts, {TEXT_DIM}] float32 array with its "
                        f"encoder and texts)")
    return record, emb


@lru_cache(maxsize=8)
def _encoded(texts: tuple[str, ...]) -> np.ndarray:
    return encode_texts(list(texts))


class EpisodeStore:
    """A finished dataset: its manifest, and verified reads of its episodes."""

    def __init__(self, root: str | Path, check_files: bool = True):
        """`check_files`: refuse a dataset whose config.json or attempt records do not match the manifest
        (`verify` lists them instead)."""
        self.root = Path(root)
        if not (self.root / MANIFEST).is_file():
            raise DataError(f"not a mirroralign dataset (no {MANIFEST}): {self.root}")
        if (self.root / MANIFEST_SHA).is_file():  # datasets written before it existed have none
            recorded = (self.root / MANIFEST_SHA).read_bytes().strip()
            if sha256_file(self.root / MANIFEST).encode() != recorded:
                raise DataError(f"manifest damaged: {self.root / MANIFEST} does not match "
                                f"{self.root / MANIFEST_SHA}")
        m = read_json(self.root / MANIFEST, "manifest")
        if m.get("format") != FORMAT or m.get("version") != VERSION:
            raise DataError(f"not a {FORMAT} v{VERSION} manifest: {self.root / MANIFEST}")
        try:
            self.manifest = m
            self.config = m["config"]
            self.fidelity = self.config.get("env", {}).get("fidelity", "fast")  # evaluation renders the same way
            self.variations = [Variation.from_dict(v) for v in m["variations"]]
            self.episodes: dict[str, dict] = m["episodes"]
            self.splits: dict[str, list[str]] = m["splits"]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"manifest damaged: {self.root / MANIFEST} (bad field {err})") from None
        if check_files and (bad := self.damaged_dataset_files()):
            raise DataError(f"dataset file damaged: {bad[0]} does not match its checksum")
        self.variation_index = {v.id: i for i, v in enumerate(self.variations)}
        self.texts = dataset_texts(self.variations)
        self.text_variation = [i for i, v in enumerate(self.variations) for _ in v.instructions]  # of each text
        self.canonical_text = [self.text_variation.index(i) for i in range(len(self.variations))]

    def text_embeddings(self, texts: list[str] | None = None) -> np.ndarray:
        """[len(texts), 384] float32 embeddings of `texts` (default: `self.texts`): the dataset's stored ones,
        and the frozen encoder loaded only for texts it does not hold (all of them for a dataset made before
        text embeddings were stored). Stored embeddings of another encoder than the installed one are refused."""
        texts = self.texts if texts is None else list(texts)
        held: dict[str, np.ndarray] = {}
        if TEXT_EMBEDDINGS in self.manifest.get("files", {}):  # covered by a checksum, so trusted
            path = self.root / TEXT_EMBEDDINGS
            record, emb = read_text_embeddings(path)
            if (record["encoder"], record["encoder_sha256"]) != (ENCODER, encoder_sha256()):
                raise UsageError(f"{path} holds embeddings of encoder {record['encoder']} (files sha256 "
                                 f"{record['encoder_sha256'][:12]}), not of the installed {ENCODER} "
                                 f"({encoder_sha256()[:12]}): install that encoder or make the dataset again")
            if record["texts"] == texts:
                return emb
            held = dict(zip(record["texts"], emb))
        missing = tuple(dict.fromkeys(t for t in texts if t not in held))
        if missing:
            held |= dict(zip(missing, _encoded(missing)))
        return np.stack([held[t] for t in texts]) if texts else np.zeros((0, TEXT_DIM), np.float32)

    def episode_ids(self, split: str | None = None) -> list[str]:
        if split is None:
            return sorted(self.episodes)
        if split not in self.splits:
            raise DataError(f"dataset {self.root} has no split {split!r}")
        return list(self.splits[split])

    def damaged_files(self, episode_id: str) -> list[str]:
        entry = self.episodes[episode_id]
        return check_episode_files(self.root, episode_id, {**entry["files"], META: entry["meta_sha256"]})

    def damaged_dataset_files(self) -> list[str]:
        """config.json and the attempt records, against the manifest (datasets made before: nothing to check)."""
        return [str(self.root / rel) for rel, digest in self.manifest.get("files", {}).items()
                if not (self.root / rel).is_file() or sha256_file(self.root / rel) != digest]

    def verify(self) -> dict[str, list[str]]:
        """Episode id -> damaged files, for every episode that does not match its checksums; damaged files
        outside episodes under DATASET_FILES."""
        damaged = {}
        for eid in sorted(self.episodes):
            bad = self.damaged_files(eid)
            if not bad:  # matching checksums, but is it what write_episode writes? (JSON only: cheap)
                try:
                    check_zarr_metadata(episode_path(self.root, eid) / ARRAYS)
                except DataError as err:
                    bad = [str(err)]
            if bad:
                damaged[eid] = bad
        bad = self.damaged_dataset_files()
        if TEXT_EMBEDDINGS in self.manifest.get("files", {}) and str(self.root / TEXT_EMBEDDINGS) not in bad:
            try:  # matching its checksum, but is it what write_text_embeddings writes, for these texts?
                if read_text_embeddings(self.root / TEXT_EMBEDDINGS)[0]["texts"] != self.texts:
                    bad.append(f"{self.root / TEXT_EMBEDDINGS} (not the texts of this dataset's variations)")
            except DataError as err:
                bad.append(str(err))
        if bad:
            damaged[DATASET_FILES] = bad
        return damaged

    def load(self, episode_id: str) -> dict[str, np.ndarray]:
        """All arrays of one episode, after checking every file against the manifest."""
        if episode_id not in self.episodes:
            raise DataError(f"no episode {episode_id!r} in {self.root}")
        bad = self.damaged_files(episode_id)
        if bad:
            raise DataError(f"episode {episode_id} is damaged: {bad[0]} does not match its checksum")
        try:
            return read_arrays(episode_path(self.root, episode_id))
        except DataError:
            raise
        except Exception as err:  # the crc32c codec or the decoder refused a chunk
            raise DataError(f"episode {episode_id} is damaged: {err}") from None
