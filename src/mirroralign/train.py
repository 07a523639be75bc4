"""One trainer for the three modes of the paper.

    understand  the action-understanding model alone (L_AU), on observer clips
    execute     the execution policy alone (L_EE), on agent steps
    mirror      both and the aligner on paired samples: L = L_AU + lambda_EE * L_EE + lambda_align * L_align

Every step draws its batch and its augmentation from an RNG seeded by (seed, step), so a run resumed from a
checkpoint continues exactly as if it had never stopped. Under torchrun each process is one rank of
DistributedDataParallel and takes its slice of that same global batch (see `mirroralign.distributed`).
Checkpoints are safetensors plus JSON: nothing read back is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.data import default_collate
from tqdm import tqdm

from mirroralign import distributed
from mirroralign.config import Config
from mirroralign.data.datasets import AgentSteps, ObserverClips, PairedSamples
from mirroralign.data.store import (
    EpisodeStore,
    is_atomic_write_leftover,
    json_bytes,
    read_json,
    require_writable,
    write_bytes_atomic,
    write_json_atomic,
)
from mirroralign.errors import DataError, UsageError
from mirroralign.models.align import Aligner
from mirroralign.models.execution import ExecutionPolicy
from mirroralign.models.understanding import UnderstandingModel

MODES = ("understand", "execute", "mirror")
PARTS = {"understand": ("understanding",), "execute": ("execution",),
         "mirror": ("understanding", "execution", "aligner")}


class NumericalError(RuntimeError):
    """A non-finite loss or input: the run stops, naming the step; the last good checkpoint stays."""


# ------------------------------------------------------------------------------------------------- build

def make_dataset(store: EpisodeStore, config: Config, mode: str, split: str = "train", train: bool | None = None):
    u, x, t = config.model.understanding, config.model.execution, config.train
    if mode == "understand":
        return ObserverClips(store, split, frames=u.frames, window=t.clip_window, train=train)
    if mode == "execute":
        return AgentSteps(store, split, horizon=x.horizon, train=train, keyframes=t.keyframes)
    return PairedSamples(store, split, frames=u.frames, horizon=x.horizon, window=t.clip_window, train=train,
                         keyframes=t.keyframes)


def build_models(config: Config, mode: str, store: EpisodeStore) -> nn.ModuleDict:
    size = store.manifest["image_size"]
    first = store.load(store.episode_ids()[0])  # the proprioception and action sizes of this simulator
    proprio_dim, action_dim = first["proprio"].shape[1], first["actions"].shape[1]
    text_embeddings = torch.tensor(store.text_embeddings())  # stored with the dataset; encoded only if not
    parts = {}
    if "understanding" in PARTS[mode]:
        parts["understanding"] = UnderstandingModel(config.model.understanding, size, text_embeddings,
                                                    torch.tensor(store.text_variation))
    if "execution" in PARTS[mode]:
        parts["execution"] = ExecutionPolicy(config.model.execution, len(store.manifest["cameras"]["agent"]),
                                             proprio_dim, action_dim, text_embeddings=text_embeddings)
    if mode == "mirror":
        a = config.align
        parts["aligner"] = Aligner(parts["understanding"].representation_dim, parts["execution"].representation_dim,
                                   a.dim, a.temperature, a.positives)
    return nn.ModuleDict(parts)


def make_optimizer(models: nn.ModuleDict, config: Config) -> torch.optim.AdamW:
    """AdamW; weight decay only on weights of >= 2 dimensions; the aligner has its own learning rate."""
    groups = []
    for name, module in models.items():
        lr = config.align.lr if name == "aligner" else config.train.lr
        params = [p for p in module.parameters() if p.requires_grad]
        groups += [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.train.weight_decay,
                    "lr": lr, "base_lr": lr},
                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr, "base_lr": lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]])


def lr_factor(step: int, config: Config) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    t = config.train
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# -------------------------------------------------------------------------------------------------- loss

def compute_loss(mode: str, models: nn.ModuleDict, batch: dict, config: Config) -> tuple[torch.Tensor, dict]:
    if mode == "understand":
        return models["understanding"](batch)
    if mode == "execute":
        return models["execution"](batch)
    l_au, info_au, rep_u = models["understanding"].forward_with_representation(batch)
    l_ee, info_ee, rep_e = models["execution"].forward_with_representation(batch)
    l_align, info_align = models["aligner"](rep_u, rep_e, batch)
    a = config.align
    return l_au + a.lambda_ee * l_ee + a.lambda_align * l_align, {**info_au, **info_ee, **info_align}


class Objective(nn.Module):
    """The loss of `mode` as a module: DistributedDataParallel synchronises gradients only through a forward."""

    def __init__(self, mode: str, models: nn.ModuleDict, config: Config):
        super().__init__()
        self.mode, self.models, self.config = mode, models, config

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return compute_loss(self.mode, self.models, batch, self.config)


def step_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def sample_batch(dataset, config: Config, step: int, device: torch.device, rank: int = 0,
                 world_size: int = 1) -> dict:
    """The global batch of `step` (train.batch_size samples drawn from an RNG seeded by (seed, step)), or this
    rank's contiguous slice of it. Each sample has its own seed, which fixes its clip jitter, paraphrase and
    augmentation, so a sample is the same whichever rank draws it."""
    g = torch.Generator().manual_seed(step_seed(config.train.seed, step))
    n = config.train.batch_size
    idx = torch.randint(len(dataset), (n,), generator=g).tolist()
    seeds = torch.randint(2 ** 62, (n,), generator=g).tolist()
    items = []
    for j in range(rank * n // world_size, (rank + 1) * n // world_size):
        torch.default_generator.manual_seed(seeds[j])  # the datasets draw from torch's (CPU) RNG
        items.append({**dataset[idx[j]], "sample_seed": seeds[j]})
    batch = default_collate(items)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def nonfinite_input(batch: dict) -> str | None:
    """The first input holding NaN or inf, if any."""
    return next((key for key in ("proprio", "actions") if key in batch and not torch.isfinite(batch[key]).all()),
                None)


# ------------------------------------------------------------------------------------------ checkpoints

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


def save_checkpoint(run: Path, step: int, models: nn.ModuleDict, optimizer: torch.optim.Optimizer) -> Path:
    """Weights, optimiser state and RNG state in safetensors; step, optimiser hyper-parameters and the file's
    sha256 in JSON; `latest.json` moved last, so a kill at any moment leaves the previous checkpoint intact, and
    so does a failed write (disk full, read-only: OSError). The record is also sealed in the safetensors header,
    so a damaged record (a changed step or learning rate) is caught, not just a damaged file."""
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
    record = {"step": step, "file": path.name, "param_groups": groups}
    data = save_safetensors(tensors, metadata={SEALED_RECORD: json.dumps(record, sort_keys=True)})
    write_bytes_atomic(path, data)
    meta = {**record, "sha256": hashlib.sha256(data).hexdigest()}
    write_json_atomic(folder / f"step_{step:07d}.json", meta)
    write_json_atomic(folder / "latest.json", meta)
    return path


def _safetensors_metadata(data: bytes) -> dict:
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
        sealed = _safetensors_metadata(data).get(SEALED_RECORD)
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


# ------------------------------------------------------------------------------------------------ driver

def prepare_run(run: Path, config: Config, mode: str, data: Path) -> dict:
    """RUN keeps its resolved config; an existing RUN must hold the same config, mode and data."""
    identity = {"mode": mode, "data": str(Path(data).resolve()), "config": asdict(config)}
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


def pick_device(config: Config) -> torch.device:
    name = config.train.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("train.device=cuda, but this machine (or this torch build) has no CUDA device")
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())  # under torchrun: this rank's, once selected
    return torch.device(name)


def train(config: Config, mode: str, data: str | Path, out: str | Path, progress: bool = True) -> Path:
    """Train `mode` on DATA into OUT (resuming OUT's latest checkpoint). Started by torchrun, this process is
    one rank of DistributedDataParallel training (gloo on CPUs, nccl on GPUs) for the duration of the call."""
    if not distributed.launched_by_torchrun() or distributed.active():
        return _train(config, mode, data, out, progress)
    distributed.init_from_torchrun(pick_device(config))
    try:
        return _train(config, mode, data, out, progress)
    except Exception as err:  # torchrun's failure summary shows this with the error
        err.add_note(f"rank {distributed.rank()} of {distributed.world_size()}; a collective that times out means "
                     f"another rank died or hangs ({distributed.TIMEOUT_ENV}: "
                     f"{distributed.timeout().total_seconds():g} s)")
        raise
    finally:
        torch.distributed.destroy_process_group()


def _train(config: Config, mode: str, data: str | Path, out: str | Path, progress: bool) -> Path:
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    data, run = Path(data), Path(out)
    try:
        store = EpisodeStore(data)
    except DataError as err:
        raise UsageError(f"--data is not a verified dataset: {err}") from None
    record = prepare_run(run, config, mode, data)
    try:
        dataset = make_dataset(store, config, mode, "train")
    except DataError as err:
        raise UsageError(f"--data is not a verified dataset: {err}") from None
    except ValueError as err:
        raise UsageError(str(err)) from None

    device = pick_device(config)
    rank, world_size = distributed.rank(), distributed.world_size()
    if config.train.batch_size % world_size:
        raise UsageError(f"train.batch_size ({config.train.batch_size}) must be a multiple of the number of "
                         f"processes ({world_size}): each takes an equal slice of the global batch")
    torch.manual_seed(config.train.seed)
    try:
        models = build_models(config, mode, store).to(device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    optimizer = make_optimizer(models, config)

    # validated: from here on the run directory is written, by rank 0 only, once every rank has validated it
    distributed.barrier()
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    if rank == 0 and not (run / "run.json").is_file():
        for leftover in run.iterdir():  # of a start killed before run.json (prepare_run allowed only these)
            if is_atomic_write_leftover(leftover.name):
                leftover.unlink()
        write_json_atomic(run / "run.json", {**record, "parameters": {
            k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}})
    if rank == 0 and not (run / "config.yaml").is_file():  # after run.json: a kill between is mended here
        write_bytes_atomic(run / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(config)).encode())
    start = restore(run, models, optimizer)["step"] if (run / CHECKPOINTS / "latest.json").is_file() else 0
    distributed.check_same_on_all_ranks(start, "checkpoint steps", "--out must be one directory that every rank "
                                        "sees (on several machines, a shared file system)", device)
    if rank == 0:
        _truncate_metrics(run / "metrics.jsonl", start)
    if start >= config.train.steps:
        return run
    objective = Objective(mode, models, config)
    if world_size > 1:
        objective = distributed.data_parallel(objective, device)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tensorboard"), purge_step=start) if rank == 0 else None
    metrics = open(run / "metrics.jsonl", "a") if rank == 0 else None
    bar = tqdm(range(start, config.train.steps), initial=start, total=config.train.steps, desc=f"train {mode}",
               disable=not progress or rank != 0)
    models.train()
    interrupted = []  # Ctrl-C finishes the step in progress, checkpoints it, then stops
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        for step in bar:
            t0 = time.perf_counter()
            batch = sample_batch(dataset, config, step, device, rank, world_size)  # reseeds torch's RNG per sample
            torch.manual_seed(step_seed(config.train.seed, step) + 1)  # whatever else draws from torch's RNG
            bad_input = nonfinite_input(batch)  # reported after the collective below, so no rank is left waiting
            t_data = time.perf_counter() - t0
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, config)
            loss, info = objective(batch)
            # every rank sees the same numbers, the global batch's (means over ranks), and so stops together
            loss_value, *info_values, stop, any_bad_input = distributed.mean_over_ranks(
                [loss.item(), *info.values(), float(bool(interrupted)), float(bad_input is not None)], device)
            info = dict(zip(info, info_values))
            if any_bad_input:
                where = repr(bad_input) if bad_input else f"of another rank than {rank}"
                raise NumericalError(f"non-finite values in input {where} at step {step}; "
                                     f"last good checkpoint: {last_checkpoint(run)}")
            if not math.isfinite(loss_value):
                last = last_checkpoint(run)
                raise NumericalError(f"non-finite loss ({loss_value}) at step {step}; "
                                     f"last good checkpoint: {last}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(models.parameters(), config.train.grad_clip)
            optimizer.step()
            done = step + 1
            if rank == 0 and (done % config.train.log_every == 0 or done == config.train.steps):
                row = {"step": done, "loss": loss_value, **info, "grad_norm": float(grad_norm),
                       "lr": optimizer.param_groups[0]["lr"], "data_s": t_data,
                       "step_s": time.perf_counter() - t0}
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"{mode}/{k}", v, done)
                bar.set_postfix(loss=f"{loss_value:.4f}")
            if rank == 0 and (done % config.train.checkpoint_every == 0 or done == config.train.steps or stop):
                save_checkpoint(run, done, models, optimizer)
            if stop:
                distributed.barrier()  # no rank exits (and makes torchrun stop the others) before rank 0 has saved
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        bar.close()
        if rank == 0:
            metrics.close()
            writer.close()
    distributed.barrier()  # when train returns, on any rank, the last checkpoint is on disk
    return run


@dataclass
class LoadedRun:
    path: Path
    mode: str
    config: Config
    store: EpisodeStore  # the dataset the run was trained on
    models: nn.ModuleDict
    step: int
    checkpoint_sha256: str | None  # identifies the weights (None: untrained); evaluations record it

    def require_same_tasks(self, store: EpisodeStore) -> None:
        """Its models index variations and instructions by position: another dataset must list the same ones."""
        if [v.id for v in store.variations] != [v.id for v in self.store.variations] or store.texts != self.store.texts:
            raise UsageError(f"--data has other variations or instructions than the run {self.path} was trained on")


def load_run(run: str | Path, checkpoint: str | None = None) -> LoadedRun:
    """A trained run, ready for evaluation: its config, its data and its models (eval mode) at the latest
    checkpoint, or at `checkpoint` (a `step_*.json` name)."""
    run = Path(run)
    if not (run / "run.json").is_file():
        raise UsageError(f"not a mirroralign run (no run.json): {run}")
    if not (run / CHECKPOINTS / "latest.json").is_file():
        raise UsageError(f"run has no checkpoint yet: {run}")
    try:
        identity = read_json(run / "run.json", "run record")["identity"]
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), identity["config"]))
        mode, data = identity["mode"], identity["data"]
    except (KeyError, TypeError, OmegaConfBaseException) as err:
        raise DataError(f"run record damaged: {run / 'run.json'} ({type(err).__name__}: {err})") from None
    store = EpisodeStore(data)
    models = build_models(config, mode, store)
    record = restore(run, models, record=checkpoint or "latest.json")
    return LoadedRun(run, mode, config, store, models.eval(), record["step"], record["sha256"])


def _truncate_metrics(path: Path, step: int) -> None:
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
