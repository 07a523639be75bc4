"""Training on several processes: real gloo process groups of 2 CPU processes (torch.multiprocessing or torchrun),
no mocks. nccl needs GPUs, which this machine lacks: only its choice is tested."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import run_cli
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from mirroralign import distributed
from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore
from mirroralign.train import Objective, build_models, make_dataset, sample_batch

GLOBAL_BATCH = 8
STEP = 3  # any step: its batch is drawn from (seed, step)


def test_backend_is_nccl_on_gpus_and_gloo_on_cpus():
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"


def _mirror_loss_and_grads(data, rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """One training step's loss terms and gradients for `rank`'s slice of the global batch (augmentation on)."""
    config = load_config("tiny", overrides=[f"train.batch_size={GLOBAL_BATCH}"])
    store = EpisodeStore(data)
    torch.manual_seed(config.train.seed)
    models = build_models(config, "mirror", store).train()
    objective = Objective("mirror", models, config)
    if world_size > 1:
        objective = DistributedDataParallel(objective, forward_sync_buffers=False)
    batch = sample_batch(make_dataset(store, config, "mirror"), config, STEP, torch.device("cpu"), rank, world_size)
    loss, info = objective(batch)
    values = distributed.mean_over_ranks([loss.item(), *info.values()], torch.device("cpu"))
    loss.backward()  # DDP leaves the mean of the ranks' gradients on every rank
    return {"values": torch.tensor(values, dtype=torch.float64), "episodes": batch["episode"],
            **{f"grad.{k}": p.grad for k, p in models.named_parameters()}}


def _rank_worker(rank: int, world_size: int, data: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=world_size)
    try:
        save_file(_mirror_loss_and_grads(data, rank, world_size), f"{out}/rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_the_loss_and_gradients_of_one_process_holding_both_halves(tiny_dataset, tmp_path):
    torch.multiprocessing.spawn(_rank_worker, args=(2, str(tiny_dataset), str(tmp_path)), nprocs=2)
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    single = _mirror_loss_and_grads(tiny_dataset, 0, 1)

    # the ranks held the two halves of the one process's batch
    assert torch.equal(torch.cat([r["episodes"] for r in ranks]), single["episodes"])
    # L, L_AU, L_EE, L_align and the other logged values; then every gradient, on both ranks
    torch.testing.assert_close(ranks[0]["values"], single["values"], atol=1e-5, rtol=0)
    for rank in ranks:
        assert rank.keys() == single.keys()
        for k in single:
            if k.startswith("grad."):
                torch.testing.assert_close(rank[k], single[k], atol=1e-5, rtol=0, msg=k)
