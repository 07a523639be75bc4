"""Checkpoints and run directories, shared by `train` and `finetune`.

A checkpoint is a safetensors file (weights, optimiser state, RNG state) plus a JSON record (step, optimiser
hyper-parameters, how it was trained, the file's sha256), the record also sealed in the file's header;
`latest.json` is moved into place last, so a kill at any moment leaves the previous checkpoint intact. A run
directory keeps run.json (its identity: what a resume must match), config.yaml and metrics.jsonl. Nothing
read back is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from mirroralign.data.store import (
    is_atomic_write_leftover,
    json_bytes,
    read_json,
    require_writable,
    write_bytes_atomic,
    write_json_atomic,
)
from mirroralign.errors import DataError, UsageError

CHECKPOINTS = "checkpoints"
SEALED_RECORD = "mirroralign.record"  # the JSON record, less its sha256, inside the safetensors header


def last_checkpoint(run: Path) -> str:
    latest = run / CHECKPOINTS / "latest.json"
    return read_checkpoint_record(latest)["file"] if latest.is_file() else "none"


def read_checkpoint_record(path: Path) -> dict:
    """A checkpoint's JSON record, refused unless byte for byte as `save_checkpoint` wrote it (so even a change
    that leaves the JSON meaning the same is caught)."""
    record = read_json(path, "checkpoint record")
    if path.read_bytes() != json_bytes(record):
        raise DataError(f"checkpoint record damaged: {path} is not as written")
    return record


def save_checkpoint(run: Path, step: int, models: nn.ModuleDict, optimizer: torch.optim.Optimizer,
                    launch: dict) -> Path:
    """Weights, optimiser state and RNG state in safetensors; step, optimiser hyper-parameters, the processes
    that trained it (`launch`: train's `launch_record`) and the file's sha256 in JSON; `latest.json` moved last,
    so a kill at any moment leaves the previous checkpoint intact, and so does a failed write (disk full, read-only: OSError). The
    record is also sealed in the safetensors header, so a damaged record (a changed step or learning rate) is
    caught, not just a damaged file."""
    folder = run / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in models.state_dict().items()}
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value).contiguous().cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    path = folder / f"step_{step:07d}.safetensors"
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    record = {"step": step, "file": path.name, "param_groups": groups, "distributed": launch}
    data = save_safetensors(tensors, metadata={SEALED_RECORD: json.dumps(record, sort_keys=True)})
    write_bytes_atomic(path, data)
    meta = {**record, "sha256": hashlib.sha256(data).hexdigest()}
    write_json_atomic(folder / f"step_{step:07d}.json", meta)
    write_json_atomic(folder / "latest.json", meta)
    return path


def safetensors_metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def load_checkpoint_tensors(path: Path, meta: dict, record_path: Path | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, once the file matches the record's sha256 and the record the copy sealed in the
    file (checkpoints written before the seal existed have none). safetensors only: nothing is unpickled."""
    if not path.is_file():
        raise DataError(f"checkpoint missing: {path} (named by {record_path or 'its record'})")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise DataError(f"checkpoint damaged: {path} does not match the sha256 in {record_path or 'its record'}")
    try:
        tensors = load_safetensors(data)
        sealed = safetensors_metadata(data).get(SEALED_RECORD)
    except Exception as err:
        raise DataError(f"checkpoint damaged: {path} ({str(err).strip().splitlines()[0]})") from None
    if sealed is not None and json.loads(sealed) != {k: v for k, v in meta.items() if k != "sha256"}:
        record_path = record_path or path.with_suffix(".json")
        raise DataError(f"checkpoint record damaged: {record_path} differs from the record sealed in {path}")
    return tensors


def restore(run: Path, models: nn.ModuleDict, optimizer: torch.optim.Optimizer | None = None,
            record: str = "latest.json") -> dict:
    """Load the checkpoint that `record` (a JSON record in the run's checkpoints, the latest by default) names
    into `models` (and `optimizer`); returns the record (step, file, sha256 of the file)."""
    folder = run / CHECKPOINTS
    record_path = folder / record
    meta = read_checkpoint_record(record_path)
    if not re.fullmatch(r"step_\d{7}\.safetensors", str(meta.get("file"))):
        raise DataError(f"checkpoint record damaged: {record_path} names no checkpoint file ({meta.get('file')!r})")
    tensors = load_checkpoint_tensors(folder / meta["file"], meta, record_path)
    models.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None:
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, key = k.split(".", 2)
                state.setdefault(int(i), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
    return {**meta, "step": int(meta["step"])}


# -------------------------------------------------------------------------------------------- run folders

def prepare_run_dir(run: Path, identity: dict) -> dict:
    """The record of RUN: the stored one when RUN holds a run of the same `identity` (a resume), a new one when
    RUN is new or empty; any other RUN is refused (UsageError)."""
    if run.exists() and not run.is_dir():
        raise UsageError(f"run path is a file, not a directory: {run}")
    require_writable(run)
    if (run / "run.json").is_file():
        stored = read_json(run / "run.json", "run record")
        if stored.get("identity") != identity:
            raise UsageError(f"{run} holds a run with a different mode, data or config; use another --out")
        return stored
    # a start killed before run.json leaves at most the temporary files of atomic writes: ours to redo
    if run.is_dir() and any(not is_atomic_write_leftover(p.name) for p in run.iterdir()):
        raise UsageError(f"run directory is not empty and holds no mirroralign run: {run}")
    return {"identity": identity}


def start_run_dir(run: Path, record: dict, config_yaml: bytes) -> None:
    """Create RUN with run.json (`record`) and config.yaml, once validated; a start killed between or inside
    these writes is mended here (prepare_run_dir allowed only atomic-write leftovers)."""
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "run.json").is_file():
        for leftover in run.iterdir():
            if is_atomic_write_leftover(leftover.name):
                leftover.unlink()
        write_json_atomic(run / "run.json", record)
    if not (run / "config.yaml").is_file():  # after run.json: a kill between is mended here
        write_bytes_atomic(run / "config.yaml", config_yaml)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if row.get("step", 0) <= step:
            rows.append(line)
    write_bytes_atomic(path, "".join(r + "\n" for r in rows).encode())  # a kill here must not lose rows
