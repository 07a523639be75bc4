"""Training on several processes and machines with PyTorch's own engine: torchrun starts the processes and
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; DistributedDataParallel averages the gradients.

Every helper here is the identity in a single process, so the models call them unconditionally: under
torch.distributed the contrastive losses see the samples of all ranks as negatives, and a rank's loss is its
share of the global batch's loss (the mean over ranks, which is what DDP takes of the gradients, is the loss of
one process holding the whole batch).
"""

from __future__ import annotations

import inspect
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as functional_collectives
from torch.nn.parallel import DistributedDataParallel

from mirroralign.errors import UsageError

# A rank that dies is noticed by torchrun, which stops the others; a rank that hangs is noticed by the others
# when a collective waits longer than this. Checkpoints and start-up happen between collectives, so be generous.
TIMEOUT_ENV = "MIRRORALIGN_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 7 * 24 * 3600  # a week: longer is a typo, and timedelta overflows on inf


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def backend() -> str | None:
    """The process group's backend (gloo, nccl); None in a single process."""
    return dist.get_backend() if active() else None


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device_type: str) -> str:
    """nccl for GPUs, gloo for CPUs."""
    return "nccl" if device_type == "cuda" else "gloo"


def timeout() -> timedelta:
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_TIMEOUT_S:  # also refuses nan and inf, which timedelta cannot hold
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds in (0, {MAX_TIMEOUT_S}], got {value!r}")
    return timedelta(seconds=seconds)


def init_from_torchrun(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment; returns this rank's device (cuda:LOCAL_RANK
    on GPUs). Call `dist.destroy_process_group()` when done."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device.type), timeout=timeout(),
                            device_id=device if device.type == "cuda" else None)
    return device


def data_parallel(module: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """`module` under DDP. No running statistics in these models, so no buffers to broadcast: the flag is named
    forward_sync_buffers since torch 2.13 (which deprecates broadcast_buffers, the only name before)."""
    flag = "forward_sync_buffers"
    flag = flag if flag in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None, **{flag: False})


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] on each rank -> [world * B, ...], rank order; gradients flow back to the rank that owns each row
    (summed over the ranks that used it)."""
    if not active():
        return x
    if hasattr(functional_collectives, "all_gather_single"):  # torch >= 2.13
        # the successor of torch.distributed.nn.functional.all_gather, which its deprecation notice names
        return functional_collectives.all_gather_single(x, 0, dist.group.WORLD)
    # before 2.13: the autograd all-gather of torch.distributed.nn (all_gather_tensor_autograd fails on gloo in 2.4)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x, dist.group.WORLD), 0)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Like `gather_with_grad`, for tensors that need no gradient (labels, group ids)."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def share_of_global_mean(local_sum: torch.Tensor, local_count: torch.Tensor) -> torch.Tensor:
    """This rank's share of sum / count over all ranks' samples, scaled by the world size so that the mean of
    the shares over ranks (what DDP averages) is that global mean even when ranks count differently."""
    if not active():
        return local_sum / local_count
    count = local_count.detach().clone()
    dist.all_reduce(count)
    return world_size() * local_sum / count


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """The mean of each value over ranks (one collective for all of them)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)  # gloo has no AVG
    return (t / world_size()).tolist()


def barrier() -> None:
    if active():
        dist.barrier()


def check_same_on_all_ranks(value: int, what: str, hint: str, device: torch.device) -> None:
    """Raise the same UsageError on every rank when the ranks see different values of `what`."""
    if not active():
        return
    values = gather(torch.tensor([value], device=device)).tolist()
    if len(set(values)) > 1:
        raise UsageError(f"the ranks see different {what} ({values}, in rank order): {hint}")
