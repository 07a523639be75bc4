"""Training on several processes: real gloo process groups of 2 CPU processes (torch.multiprocessing or torchrun),
no mocks. nccl needs GPUs, which this machine lacks: only its choice is tested."""

import contextlib
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

from mirroralign import distributed
from mirroralign.config import load_config
from mirroralign.data.store import EpisodeStore
from mirroralign.errors import UsageError
from mirroralign.train import Objective, build_models, make_dataset, sample_batch

GLOBAL_BATCH = 8
STEP = 3  # any step: its batch is drawn from (seed, step)


def test_backend_is_nccl_on_gpus_and_gloo_on_cpus():
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf", "1e30"])
def test_a_bad_collective_timeout_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, value)
    with pytest.raises(UsageError, match=distributed.TIMEOUT_ENV):
        distributed.timeout()


def _agreement_worker(rank: int, world_size: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=world_size)
    try:
        distributed.check_same_on_all_ranks(40, "checkpoint steps", "share --out", torch.device("cpu"))
        try:
            distributed.check_same_on_all_ranks(10 * rank, "checkpoint steps", "share --out", torch.device("cpu"))
            message = None
        except UsageError as err:
            message = str(err)
        Path(f"{out}/rank{rank}.json").write_text(json.dumps(message))
    finally:
        dist.destroy_process_group()


def test_ranks_that_resume_from_different_steps_all_stop_with_the_same_message(tmp_path):
    """E.g. --out on a disk that only some machines see: every rank refuses, none trains out of step."""
    torch.multiprocessing.spawn(_agreement_worker, args=(2, str(tmp_path)), nprocs=2)
    messages = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert messages[0] == messages[1] == "the ranks see different checkpoint steps ([0, 10], in rank order): share --out"


def _mirror_loss_and_grads(data, rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """One training step's loss terms and gradients for `rank`'s slice of the global batch (augmentation on)."""
    config = load_config("tiny", overrides=[f"train.batch_size={GLOBAL_BATCH}"])
    store = EpisodeStore(data)
    torch.manual_seed(config.train.seed)
    models = build_models(config, "mirror", store).train()
    objective = Objective("mirror", models, config)
    if world_size > 1:
        objective = distributed.data_parallel(objective, torch.device("cpu"))
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


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mirroralign"]
MIRROR_40 = ["train", "--mode", "mirror", "--preset", "tiny", "train.steps=40", "train.checkpoint_every=10"]


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [d for c in map(int, children) for d in (c, *_descendants(c))]


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"  # a zombie, or gone
    except FileNotFoundError:
        return True


def _start_and_kill_after_first_checkpoint(command: list, out: Path) -> int:
    proc = subprocess.Popen([*map(str, command), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 540  # generous: a loaded 2-core machine is many times slower than an idle one
    # latest.json, not step_0000010.json: the step's record is written before latest.json, and a kill between the
    # two would leave no checkpoint to resume from yet
    while not (out / "checkpoints" / "latest.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    # torchrun starts each worker in a session of its own, so killing its process group would leave the workers
    # training on (and finishing the run before the resume under test): kill them by id, then torchrun
    workers = _descendants(proc.pid)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while not all(map(_dead, workers)):  # SIGKILL is delivered asynchronously: no rank may write after this
        time.sleep(0.02)
    return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]


def _final(run: Path) -> tuple[int, dict, list]:
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    weights = {k: v for k, v in load_file(str(run / "checkpoints" / latest["file"])).items() if k.startswith("model.")}
    return latest["step"], weights, [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


ONE = {"world_size": 1, "backend": None, "device": "cpu", "global_batch_size": 8, "batch_size_per_rank": 8}
TWO = {"world_size": 2, "backend": "gloo", "device": "cpu", "global_batch_size": 8, "batch_size_per_rank": 4}


def _recorded(run: Path, launches: list[tuple[int, dict]]) -> None:
    """run.json lists every launch, (start step, processes), in order; each checkpoint record names the processes
    of the launch that wrote it."""
    assert json.loads((run / "run.json").read_text())["launches"] == [{"start_step": s, **p} for s, p in launches]
    for path in sorted((run / "checkpoints").glob("step_*.json")):
        record = json.loads(path.read_text())
        wrote = [p for s, p in launches if s < record["step"]][-1]  # the last launch that started before it
        assert record["distributed"] == wrote, (path, record["distributed"])


def test_a_checkpoint_written_under_ddp_resumes_in_one_process_and_back(tiny_dataset, tmp_path):
    r = run_cli(*MIRROR_40, "--data", tiny_dataset, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr

    # 2 ranks, killed, resumed by one process
    step = ddp_step = _start_and_kill_after_first_checkpoint([*TORCHRUN, *MIRROR_40, "--data", tiny_dataset],
                                                             tmp_path / "ddp")
    assert 10 <= step < 40
    r = run_cli(*MIRROR_40, "--data", tiny_dataset, "--out", tmp_path / "ddp")
    assert r.returncode == 0, r.stderr
    assert f"resuming step {step} on 1 process, checkpointed on 2 processes: the same global batch of 8 (4 -> 8 " \
           f"per rank)" in r.stderr

    # one process, killed, resumed by 2 ranks
    step = _start_and_kill_after_first_checkpoint([sys.executable, "-m", "mirroralign", *MIRROR_40, "--data",
                                                   tiny_dataset], tmp_path / "single")
    assert 10 <= step < 40
    r = subprocess.run([*TORCHRUN, *map(str, MIRROR_40), "--data", str(tiny_dataset), "--out",
                        str(tmp_path / "single")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("run: ") == 1  # rank 0 speaks for the job
    assert f"resuming step {step} on 2 processes, checkpointed on 1 process: the same global batch of 8 (8 -> 4 " \
           f"per rank)" in r.stderr

    # how each part was trained, in run.json and in every checkpoint record
    _recorded(tmp_path / "straight", [(0, ONE)])
    _recorded(tmp_path / "ddp", [(0, TWO), (ddp_step, ONE)])
    _recorded(tmp_path / "single", [(0, ONE), (step, TWO)])

    s0, w0, rows0 = _final(tmp_path / "straight")
    for run in ("ddp", "single"):
        s, w, rows = _final(tmp_path / run)
        assert s == s0 == 40
        # the same training as without interruption: ranks only change the order of floating-point sums
        assert [r["step"] for r in rows] == [r["step"] for r in rows0] == list(range(5, 41, 5))
        for a, b in zip(rows, rows0):
            for k in ("loss", "loss_au", "loss_ee", "loss_align"):
                assert abs(a[k] - b[k]) < 1e-4, (run, a["step"], k, a[k], b[k])
        for k in w0:
            torch.testing.assert_close(w[k], w0[k], atol=1e-3, rtol=0, msg=f"{run}: {k}")


def test_a_batch_that_does_not_split_evenly_is_refused_before_anything_is_written(tiny_dataset, tmp_path):
    r = subprocess.run([*TORCHRUN, "train", "--mode", "execute", "--preset", "tiny", "train.batch_size=9", "--data",
                        str(tiny_dataset), "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "train.batch_size (9) must be a multiple of the number of processes (2)" in r.stderr
    assert not (tmp_path / "run").exists()


def _rank_pid(torchrun_pid: int, rank: int) -> int:
    for pid in Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split():
        if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            return int(pid)
    raise AssertionError(f"no worker of rank {rank}")


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_brings_the_job_down(tiny_dataset, tmp_path, fault):
    """Rank 1 is killed (torchrun notices and stops rank 0) or stopped (rank 0's next collective times out, then
    torchrun stops rank 1): either way the job ends, non-zero, and says which rank failed and why."""
    out = tmp_path / "run"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen([*TORCHRUN, "train", "--mode", "execute", "--preset", "tiny", "train.steps=1000000",
                                 "--data", str(tiny_dataset), "--out", str(out)], stdout=subprocess.DEVNULL,
                                stderr=stderr, env={**os.environ, distributed.TIMEOUT_ENV: "20"}, start_new_session=True)
        try:
            deadline = time.time() + 300
            while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size) \
                    and time.time() < deadline:
                time.sleep(0.1)
            os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL if fault == "dies" else signal.SIGSTOP)
            proc.wait(timeout=120)  # torchrun waits 30 s for a stopped worker to end before it kills it
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    report = (tmp_path / "stderr.txt").read_text()
    root_cause = report[report.index("Root Cause"):]
    assert proc.returncode != 0
    if fault == "dies":  # torchrun names the first failure it observed: rank 1's death, or rank 0's collective
        # failing on the closed connection first (a race), which then blames another rank
        assert ("rank      : 1" in root_cause and "Signal 9 (SIGKILL)" in root_cause) or \
            ("rank      : 0" in root_cause and "another rank died or hangs" in root_cause), root_cause
    else:
        assert "rank      : 0" in root_cause and "Timed out" in root_cause
        assert "another rank died or hangs" in root_cause


def test_ctrl_c_stops_every_rank_after_the_same_step_and_rank_0_checkpoints_it(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    with open(tmp_path / "output.txt", "w") as output:
        proc = subprocess.Popen([*TORCHRUN, "train", "--mode", "execute", "--preset", "tiny", "train.steps=1000000",
                                 "train.checkpoint_every=1000000", "--data", str(tiny_dataset), "--out", str(out)],
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 300
            while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size) \
                    and time.time() < deadline:
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: torchrun and both ranks get it
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert (tmp_path / "output.txt").read_text().count("mirroralign: interrupted") == 2
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert 5 <= latest["step"] < 1000000


def _nan_input_worker(rank: int, world_size: int, data: str, out: str, port: int) -> None:
    import mirroralign.data.datasets as datasets
    from mirroralign.train import NumericalError, train

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), **{distributed.TIMEOUT_ENV: "60"})
    if rank == 1:  # fault injection: only rank 1's samples carry NaN
        real = datasets._Episodes._load

        def load_with_nan(self, eid):
            ep = dict(real(self, eid))
            ep["proprio"] = ep["proprio"] * float("nan")
            return ep

        datasets._Episodes._load = load_with_nan
    try:
        train(load_config("tiny", overrides=["train.steps=4"]), "execute", data, f"{out}/run", progress=False)
        message = None
    except NumericalError as err:
        message = str(err)
    Path(f"{out}/rank{rank}.json").write_text(json.dumps(message))


def test_nan_input_on_one_rank_stops_every_rank_at_the_same_step(tiny_dataset, tmp_path):
    """The rank that sees the NaN must not stop alone while the others wait in a collective."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_nan_input_worker, args=(2, tiny_dataset, str(tmp_path), port), nprocs=2)
    messages = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert "'proprio' at step 0" in messages[1]
    assert "of another rank than 0 at step 0" in messages[0]
