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

import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn
from torch.utils.data import default_collate
from tqdm import tqdm

from mirroralign import distributed
from mirroralign.checkpoint import (  # noqa: F401  (re-exported: where evaluate, analysis and tests find them)
    CHECKPOINTS,
    last_checkpoint,
    load_checkpoint_tensors,
    prepare_run_dir,
    read_checkpoint_record,
    restore,
    save_checkpoint,
    start_run_dir,
    truncate_metrics,
)
from mirroralign.config import Config
from mirroralign.data.datasets import AgentSteps, ObserverClips, PairedSamples
from mirroralign.data.store import EpisodeStore, read_json, write_json_atomic
from mirroralign.errors import DataError, UsageError
from mirroralign.models.align import Aligner
from mirroralign.models.execution import ExecutionPolicy
from mirroralign.models.understanding import UnderstandingModel
from mirroralign.text import TEXT_DIM

MODES = ("understand", "execute", "mirror")
PARTS = {"understand": ("understanding",), "execute": ("execution",),
         "mirror": ("understanding", "execution", "aligner")}
# An execute run told its task by video (train.condition) also holds the frozen understanding model that embeds the
# clips, copied from train.condition_run at the start: the run is then whole even if that run moves on or goes.
CONDITION_PART = "condition"


class NumericalError(RuntimeError):
    """A non-finite loss or input: the run stops, naming the step; the last good checkpoint stays."""


# ------------------------------------------------------------------------------------------------- build

def make_dataset(store: EpisodeStore, config: Config, mode: str, split: str = "train", train: bool | None = None):
    u, x, t = config.model.understanding, config.model.execution, config.train
    if mode == "understand":
        return ObserverClips(store, split, frames=u.frames, window=t.clip_window, train=train)
    told = {} if t.condition == "text" else {"demo_frames": u.frames, "demo_p": 1.0 if t.condition == "video" else 0.5}
    if mode == "execute":
        return AgentSteps(store, split, horizon=x.horizon, train=train, keyframes=t.keyframes, **told)
    return PairedSamples(store, split, frames=u.frames, horizon=x.horizon, window=t.clip_window, train=train,
                         keyframes=t.keyframes, **told)


def build_models(config: Config, mode: str, store: EpisodeStore) -> nn.ModuleDict:
    size = store.manifest["image_size"]
    first = store.load(store.episode_ids()[0])  # the proprioception and action sizes of this simulator
    proprio_dim, action_dim = first["proprio"].shape[1], first["actions"].shape[1]
    text_embeddings = torch.tensor(store.text_embeddings())  # stored with the dataset; encoded only if not
    parts = {}
    if "understanding" in PARTS[mode]:
        parts["understanding"] = UnderstandingModel(config.model.understanding, size, text_embeddings,
                                                    torch.tensor(store.text_variation))
    told_by_video = config.train.condition != "text" and mode != "understand"
    if told_by_video and mode == "execute":
        parts[CONDITION_PART] = UnderstandingModel(config.model.understanding, size, text_embeddings,
                                                   torch.tensor(store.text_variation)).requires_grad_(False)
    if "execution" in PARTS[mode]:
        task_dim = config.model.understanding.embed_dim if told_by_video else TEXT_DIM
        parts["execution"] = ExecutionPolicy(config.model.execution, len(store.manifest["cameras"]["agent"]),
                                             proprio_dim, action_dim, text_embeddings=text_embeddings,
                                             task_dim=task_dim)
        if told_by_video:
            parts["execution"].read_text_through(conditioning_model(parts))
    if mode == "mirror":
        a = config.align
        parts["aligner"] = Aligner(parts["understanding"].representation_dim, parts["execution"].representation_dim,
                                   a.dim, a.temperature, a.positives)
    return nn.ModuleDict(parts)


def conditioning_model(models) -> UnderstandingModel:
    """The understanding model whose joint space a policy told by video reads: the frozen copy of an execute run, or
    the jointly trained one of a mirror run."""
    return models[CONDITION_PART] if CONDITION_PART in models else models["understanding"]


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
    return warmup_cosine(step, config.train.warmup_steps, config.train.steps)


def warmup_cosine(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at step `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# -------------------------------------------------------------------------------------------------- loss

def compute_loss(mode: str, models: nn.ModuleDict, batch: dict, config: Config) -> tuple[torch.Tensor, dict]:
    if mode == "understand":
        return models["understanding"](batch)
    if "demo_video" in batch:  # told by video: the task in the joint space, from the clip or the instruction
        batch = {**batch, "instruction_embedding": conditioning_model(models).task_embedding(batch)}
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

def launch_record(config: Config, device: torch.device) -> dict:
    """How this process group trains: what run.json and every checkpoint record say of the run's processes."""
    world = distributed.world_size()
    return {"world_size": world, "backend": distributed.backend(), "device": device.type,
            "global_batch_size": config.train.batch_size, "batch_size_per_rank": config.train.batch_size // world}


# ------------------------------------------------------------------------------------------------ driver

def prepare_run(run: Path, config: Config, mode: str, data: Path) -> dict:
    """RUN keeps its resolved config; an existing RUN must hold the same config, mode and data."""
    return prepare_run_dir(run, {"mode": mode, "data": str(Path(data).resolve()), "config": config.to_dict()})


def check_condition(config: Config, mode: str) -> None:
    t = config.train
    if t.condition != "text" and mode == "understand":
        raise UsageError(f"train.condition={t.condition} tells a policy its task: it is for execute and mirror "
                         f"modes (an understand run has no policy)")
    if t.condition_run is not None and mode != "execute":
        raise UsageError("train.condition_run is for execute mode: a mirror run's policy reads its own "
                         "understanding model")
    if t.condition != "text" and mode == "execute" and t.condition_run is None:
        raise UsageError(f"train.condition={t.condition} in execute mode needs train.condition_run=PATH: a trained "
                         f"understand run whose model embeds the clips")


def condition_source(config: Config, store: EpisodeStore) -> LoadedRun | None:
    """The understand run named by train.condition_run, checked against this run: the same variations and
    instructions, image size and understanding model."""
    if config.train.condition_run is None:
        return None
    name = config.train.condition_run
    try:
        source = load_run(name)
    except UsageError as err:
        raise UsageError(f"train.condition_run: {err}") from None
    if source.mode != "understand":
        raise UsageError(f"train.condition_run must be an understand run, got a {source.mode} run: {name}")
    if [v.id for v in store.variations] != [v.id for v in source.store.variations] or \
            store.texts != source.store.texts:
        raise UsageError(f"train.condition_run {name} was trained on other variations or instructions than --data")
    if source.store.manifest["image_size"] != store.manifest["image_size"]:
        raise UsageError(f"train.condition_run {name} was trained on {source.store.manifest['image_size']}px images, "
                         f"--data has {store.manifest['image_size']}px")
    if source.config.model.understanding != config.model.understanding:
        raise UsageError(f"train.condition_run {name} has another model.understanding than this run: give both the "
                         f"same preset and model overrides")
    return source


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
    check_condition(config, mode)
    record = prepare_run(run, config, mode, data)
    fresh = not (run / CHECKPOINTS / "latest.json").is_file()
    # read only at the start: from the first checkpoint on, the run holds its own copy of the model
    source = condition_source(config, store) if fresh and mode == "execute" else None
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
    if source is not None:
        models[CONDITION_PART].load_state_dict(source.models["understanding"].state_dict())
        record["condition"] = {"run": str(source.path.resolve()), "step": source.step,
                               "checkpoint_sha256": source.checkpoint_sha256}

    # validated: from here on the run directory is written, by rank 0 only, once every rank has validated it
    distributed.barrier()
    if rank == 0:
        start_run_dir(run, {**record, "parameters": {k: sum(p.numel() for p in m.parameters())
                                                     for k, m in models.items()}},
                      OmegaConf.to_yaml(OmegaConf.structured(config)).encode())
    resumed = {"step": 0} if fresh else restore(run, models, optimizer)
    start = resumed["step"]
    distributed.check_same_on_all_ranks(start, "checkpoint steps", "--out must be one directory that every rank "
                                        "sees (on several machines, a shared file system)", device)
    if rank == 0:
        truncate_metrics(run / "metrics.jsonl", start)
    if start >= config.train.steps:
        return run
    launch = launch_record(config, device)
    if rank == 0:  # every start and resume, in order: a reader of run.json sees how each part was trained
        stored = read_json(run / "run.json", "run record")
        write_json_atomic(run / "run.json", {**stored, "launches": [*stored.get("launches", []),
                                                                    {"start_step": start, **launch}]})
        before = resumed.get("distributed")
        if before and before["world_size"] != launch["world_size"] and progress:
            # the config (so the global batch) is the run's own; only each rank's share of it changes
            processes = lambda n: f"{n} process{'es' if n > 1 else ''}"  # noqa: E731
            print(f"mirroralign: resuming step {start} on {processes(launch['world_size'])}, checkpointed on "
                  f"{processes(before['world_size'])}: the same global batch of {launch['global_batch_size']} "
                  f"({before['batch_size_per_rank']} -> {launch['batch_size_per_rank']} per rank), so the same "
                  f"training up to the order of floating-point sums", file=sys.stderr)
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
                save_checkpoint(run, done, models, optimizer, launch)
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
