"""Reliability figures: crashes, corruption, bad input, pickled payloads and non-finite data, counted.

    python benchmarks/reliability.py [--seed 0] [--work DIR]

Everything runs on the `tiny` preset with the real command line in real subprocesses (kills, signals) or the
real loaders in-process (damaged files), and is checked against uninterrupted references made here first:

kill_resume      generate and train killed with SIGKILL (the whole process group) at random points, chained: each
                 chain is killed three times, restarted with the same command each time, then finished; every
                 kill point of a chain survives when the chain ends byte-identical (dataset: the sha256 of every
                 file) or bit-identical (final weights) to the reference.
corruptions      random byte flips (xor with a random non-zero byte) and truncations of a random file of a random
                 kind (zarr chunk, zarr.json, meta.json, manifest.json, manifest.sha256, config.json, checkpoint,
                 its JSON record, latest.json) of a dataset and of a run; detected = refused with the file named:
                 dataset files by `verify` and by loading (EpisodeStore, then the episode), checkpoint files by
                 loading that checkpoint.
bad_inputs       every case of tests/faults.py:bad_invocations: exit 2, one line on stderr, and the folder trees
                 (scratch, dataset, run) unchanged, hashed and timestamped before and after each case.
pickle_payloads  payloads whose unpickling creates a marker file, planted in datasets (checksums updated where
                 said), rollouts, checkpoints and config files: refused, marker absent.
nan_injection    NaN / inf written into one stored proprioception row (checksums updated: bad values, not damage)
                 that training first draws after the first checkpoint: the run stops naming that step, and the
                 last good checkpoint loads.

The plan (kill points, delays, worker counts, damaged files and bytes) follows from --seed; the exact moment a
kill lands depends on the machine. Sections are cached in --work, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _common import write_results  # noqa: E402
from faults import (bad_invocations, cli, flip_byte, patch_array, pickle_payload, reseal_checkpoint,  # noqa: E402
                    reseal_episode, torch_save_payload, tree_snapshot, truncate, zarr_v2_pickle_array)

from mirroralign.config import load_config  # noqa: E402
from mirroralign.data.store import EpisodeStore, load_episode_folder  # noqa: E402
from mirroralign.errors import DataError, UsageError  # noqa: E402

KILLS_PER_CHAIN = 3


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*argv), check=False, capture_output=True, text=True, timeout=900, **kw)


def must(r: subprocess.CompletedProcess) -> None:
    if r.returncode != 0:
        raise SystemExit(f"reference command failed: {r.args}\n{r.stderr[-2000:]}")


def section(work: Path, name: str, fn):
    """Cached: a finished section is read back instead of run again."""
    path = work / "sections" / f"{name}.json"
    if path.is_file():
        print(f"{name}: cached ({path})")
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = fn()
    result["wall_s"] = round(time.perf_counter() - start, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"{name}: {json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))})}")
    return result


# ------------------------------------------------------------------------------------------- references

def data_args(out: Path, workers: int = 2) -> list:
    return ["generate", "--preset", "tiny", "--workers", workers, "--out", out]


def train_args(mode: str, data: Path, out: Path) -> list:
    # a checkpoint every 5 steps and a metrics row every step, so kills land between, during and after both
    return ["train", "--mode", mode, "--data", data, "--preset", "tiny", "train.checkpoint_every=5",
            "train.log_every=1", "--out", out]


def references(work: Path) -> dict:
    data = work / "reference" / "data"
    if not (data / "manifest.json").is_file():
        must(run(data_args(data)))
    for mode in ("execute", "mirror"):
        must(run(train_args(mode, data, work / "reference" / mode)))
    return {"data": str(data), "runs": {m: str(work / "reference" / m) for m in ("execute", "mirror")}}


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return {k: v for k, v in load_file(str(run_dir / "checkpoints" / latest["file"])).items() if k != "rng.torch"}


# ------------------------------------------------------------------------------------------- kill resume

def kill_when(argv: list, ready, delay: float) -> bool:
    """Start `argv`, wait for `ready()`, then `delay` seconds, then SIGKILL its process group. False when the
    command finished first (the kill point was never reached)."""
    proc = subprocess.Popen(cli(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while proc.poll() is None and not ready() and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        time.sleep(delay)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return not finished


def episodes_done(root: Path) -> int:
    return len(list(root.glob("episodes/*/*/meta.json")))


def last_logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(x)["step"] for x in path.read_text().splitlines() if x.strip().endswith("}")]
    return steps[-1] if steps else 0


def kill_chain_generate(ref: dict, out: Path, rng) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    total = sum(1 for _ in json.loads((Path(ref["data"]) / "manifest.json").read_text())["episodes"])
    targets = sorted(rng.choice(np.arange(1, total), KILLS_PER_CHAIN, replace=False).tolist())
    points = []
    for target in targets:
        workers, delay = int(rng.integers(1, 3)), float(rng.uniform(0, 1.0))
        killed = kill_when(data_args(out, workers), lambda t=target: episodes_done(out) >= t, delay)
        points.append({"after_episodes": target, "delay_s": round(delay, 3), "workers": workers, "killed": killed,
                       "episodes_on_disk": episodes_done(out),
                       "unfinished_leftovers": len(list(out.glob("episodes/*/.tmp-*")))})
    r = run(data_args(out, int(rng.integers(1, 3))))
    a = json.loads((Path(ref["data"]) / "manifest.json").read_text())
    b = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    identical = r.returncode == 0 and a["episodes"] == b.get("episodes") and a["splits"] == b.get("splits")
    verified = run(["verify", out]).returncode == 0
    return {"command": "generate", "points": points, "identical": identical and verified}


def kill_chain_train(ref: dict, mode: str, out: Path, rng) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    steps = load_config("tiny").train.steps
    targets = sorted(rng.choice(np.arange(1, steps), KILLS_PER_CHAIN, replace=False).tolist())
    args = train_args(mode, Path(ref["data"]), out)
    points = []
    for target in targets:
        delay = float(rng.uniform(0, 0.5))
        killed = kill_when(args, lambda t=target: last_logged_step(out) >= t, delay)
        latest = out / "checkpoints" / "latest.json"
        points.append({"after_step": target, "delay_s": round(delay, 3), "killed": killed,
                       "checkpoint_step": json.loads(latest.read_text())["step"] if latest.is_file() else 0})
    r = run(args)
    identical = False
    if r.returncode == 0:
        a, b = final_weights(Path(ref["runs"][mode])), final_weights(out)
        import torch

        identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {"command": f"train --mode {mode}", "points": points, "identical": identical}


def kill_resume(ref: dict, work: Path, seed: int) -> dict:
    chains = []
    for i, kind in enumerate(["generate", "generate", "execute", "mirror"]):
        rng = np.random.default_rng([seed, 1, i])
        out = work / "kill" / f"{i}-{kind}"
        done = out.with_suffix(".json")
        if done.is_file():  # finished chains are kept: the section resumes chain by chain
            chains.append(json.loads(done.read_text()))
            continue
        chain = kill_chain_generate(ref, out, rng) if kind == "generate" else kill_chain_train(ref, kind, out, rng)
        done.write_text(json.dumps(chain))
        chains.append(chain)
        print(f"  kill chain {i} ({chain['command']}): identical={chain['identical']}")
    tried = sum(p["killed"] for c in chains for p in c["points"])
    survived = sum(p["killed"] for c in chains if c["identical"] for p in c["points"])
    return {"tried": tried, "survived": survived, "chains": chains,
            "generate_points": sum(p["killed"] for c in chains if c["command"] == "generate" for p in c["points"]),
            "train_points": sum(p["killed"] for c in chains if c["command"] != "generate" for p in c["points"])}


# ------------------------------------------------------------------------------------------- corruptions

def verify_names(root: Path, rel: str) -> bool:
    from mirroralign.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["verify", str(root)])
    return code != 0 and rel in err.getvalue()


def loading_names(root: Path, rel: str, episode: str | None) -> bool:
    try:
        store = EpisodeStore(root)
        for eid in [episode] if episode else store.episode_ids():
            store.load(eid)
    except DataError as err:
        return rel in str(err)
    return False


def checkpoint_loading_names(run_dir: Path, rel: str) -> bool:
    from mirroralign.train import load_run

    name = Path(rel).name
    record = None if name == "latest.json" else name.replace(".safetensors", ".json")
    try:
        load_run(run_dir, record)
    except DataError as err:
        return rel in str(err) or str(run_dir / rel) in str(err)
    return False


def corruptions(ref: dict, work: Path, seed: int, n: int) -> dict:
    rng = np.random.default_rng([seed, 2])
    data, run_dir = work / "corrupt" / "data", work / "corrupt" / "run"
    for src, dst in [(ref["data"], data), (ref["runs"]["mirror"], run_dir)]:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    # the copied run names the reference data: identical bytes, so loading it checks the same thing
    data_files = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
    ckpt_files = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "checkpoints").iterdir())
    # a kind of file first, then one file of that kind: chunks far outnumber the rest, and every kind has its
    # own way of being caught
    kinds = {
        "chunk": (data, [f for f in data_files if "/c/" in f]),
        "zarr.json": (data, [f for f in data_files if f.endswith("zarr.json")]),
        "meta.json": (data, [f for f in data_files if f.endswith("meta.json")]),
        "manifest.json": (data, ["manifest.json"]), "manifest.sha256": (data, ["manifest.sha256"]),
        "config.json": (data, ["config.json"]),
        "checkpoint": (run_dir, [f for f in ckpt_files if f.endswith(".safetensors")]),
        "checkpoint record": (run_dir, [f for f in ckpt_files if f.endswith(".json") and "latest" not in f]),
        "latest.json": (run_dir, ["checkpoints/latest.json"]),
    }
    trials = []
    for i in range(n):
        kind = sorted(kinds)[int(rng.integers(len(kinds)))]
        root, files = kinds[kind]
        on_data = root == data
        rel = files[int(rng.integers(len(files)))]
        path = root / rel
        original = path.read_bytes()
        how = flip_byte(path, rng) if rng.random() < 0.5 else truncate(path, rng)
        try:
            if on_data:
                parts = Path(rel).parts
                episode = "/".join(parts[1:3]) if parts[0] == "episodes" else None
                by = {"verify": verify_names(data, str(path)), "loading": loading_names(data, str(path), episode)}
            else:
                by = {"checkpoint_loading": checkpoint_loading_names(run_dir, rel)}
        finally:
            path.write_bytes(original)
        trials.append({"kind": kind, "file": f"{'data' if on_data else 'run'}/{rel}", "damage": how,
                       "detected_by": by, "detected": all(by.values())})
    def count(key):
        return {"tried": sum(key in t["detected_by"] for t in trials),
                "detected": sum(t["detected_by"].get(key, False) for t in trials)}

    return {"tried": n, "detected": sum(t["detected"] for t in trials), "by_verify": count("verify"),
            "by_loading": count("loading"), "by_checkpoint_loading": count("checkpoint_loading"),
            "flips": sum(t["damage"].startswith("flip") for t in trials),
            "truncations": sum(t["damage"].startswith("truncate") for t in trials),
            "by_kind": {k: sum(t["kind"] == k for t in trials) for k in sorted(kinds)}, "trials": trials}


# -------------------------------------------------------------------------------------------- bad inputs

def bad_inputs(ref: dict, work: Path) -> dict:
    scratch = work / "bad" / "scratch"
    shutil.rmtree(scratch.parent, ignore_errors=True)
    run_dir = Path(ref["runs"]["mirror"])
    # the reference mirror run was made with other overrides; the "another config" case needs a different one
    cases = bad_invocations(Path(ref["data"]), run_dir, scratch)
    results = []
    for name, argv in cases.items():
        before = tree_snapshot(scratch, Path(ref["data"]), run_dir)
        r = run(argv)
        lines = r.stderr.strip().splitlines()
        unchanged = tree_snapshot(scratch, Path(ref["data"]), run_dir) == before
        ok = r.returncode == 2 and len(lines) == 1 and lines[0].startswith("mirroralign: error:") and unchanged
        results.append({"case": name, "exit": r.returncode, "stderr": lines[-3:], "unchanged": unchanged, "ok": ok})
        if not ok:
            print(f"  bad input not handled: {name}: {r.returncode} {lines[-3:]}")
    return {"tried": len(results), "survived": sum(r["ok"] for r in results),
            "commands": sorted({r["case"].split(":")[0] for r in results}), "cases": results,
            "code_run": (scratch / "ran").exists()}


# ---------------------------------------------------------------------------------------- pickle payloads

def _fresh(src: str, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def pickle_payloads(ref: dict, work: Path) -> dict:
    from mirroralign.train import load_run

    base = work / "pickle"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    marker = base / "RAN"
    control = base / "control"
    import pickle

    pickle.loads(pickle_payload(control))  # the payload is armed: unpickling creates its marker
    eid = json.loads((Path(ref["data"]) / "manifest.json").read_text())["splits"]["train"][0]

    def dataset(kind: str, reseal: bool):
        root = _fresh(ref["data"], base / f"data-{kind.replace('/', '_')}-{reseal}")
        folder = root / "episodes" / eid
        if kind == "chunk":
            chunk = min(p for p in (folder / "data.zarr").rglob("*") if p.is_file() and "/c/" in str(p))
            chunk.write_bytes(pickle_payload(marker))
        elif kind == "zarr_v2_pickle_codec":
            array = folder / "data.zarr" / "proprio"
            shutil.rmtree(array)
            array.mkdir()
            for name, data in zarr_v2_pickle_array(marker).items():
                (array / name).write_bytes(data)
        else:
            (root / kind).write_bytes(pickle_payload(marker))
        if reseal:
            reseal_episode(root, eid)
        EpisodeStore(root).load(eid)

    def rollout():
        root = _fresh(ref["data"], base / "rollout")
        array = root / "episodes" / eid / "data.zarr" / "proprio"
        shutil.rmtree(array)
        array.mkdir()
        for name, data in zarr_v2_pickle_array(marker).items():
            (array / name).write_bytes(data)
        reseal_episode(root, eid)
        load_episode_folder(root / "episodes" / eid)

    def checkpoint(kind: str, reseal: bool):
        run_dir = _fresh(ref["runs"]["mirror"], base / f"run-{kind}-{reseal}")
        latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
        if kind == "torch_save":
            (run_dir / "checkpoints" / latest["file"]).write_bytes(torch_save_payload(marker))
            if reseal:
                reseal_checkpoint(run_dir, latest["file"].replace(".safetensors", ".json"))
        else:
            (run_dir / "checkpoints" / kind).write_bytes(pickle_payload(marker))
        load_run(run_dir)

    def cli_resume_torch_save():
        run_dir = _fresh(ref["runs"]["mirror"], base / "run-cli")
        latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
        (run_dir / "checkpoints" / latest["file"]).write_bytes(torch_save_payload(marker))
        reseal_checkpoint(run_dir, latest["file"].replace(".safetensors", ".json"))
        args = train_args("mirror", Path(ref["data"]), run_dir)
        r = run(args)
        if r.returncode == 1 and latest["file"] in r.stderr and len(r.stderr.strip().splitlines()) == 1:
            raise DataError(r.stderr.strip())
        raise AssertionError(f"not refused in one line: {r.returncode} {r.stderr[-500:]}")

    def config_python_tag():
        cfg = base / "evil.yaml"
        cfg.write_text(f"data:\n  suite: !!python/object/apply:os.system ['touch {marker}']\n")
        r = run(["generate", "--config", cfg, "--preset", "tiny", "--out", base / "never"])
        if r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (base / "never").exists():
            raise UsageError(r.stderr.strip())
        raise AssertionError(f"not refused in one line: {r.returncode} {r.stderr[-500:]}")

    scenarios = {
        "dataset chunk replaced by a pickle (checksums kept)": lambda: dataset("chunk", False),
        "dataset chunk replaced by a pickle (checksums updated)": lambda: dataset("chunk", True),
        "zarr v2 array with the pickle codec (checksums updated)": lambda: dataset("zarr_v2_pickle_codec", True),
        "meta.json replaced by a pickle": lambda: dataset(f"episodes/{eid}/meta.json", False),
        "manifest.json replaced by a pickle": lambda: dataset("manifest.json", False),
        "config.json replaced by a pickle": lambda: dataset("config.json", False),
        "rollout folder with the pickle codec (meta updated)": rollout,
        "checkpoint replaced by torch.save output (record kept)": lambda: checkpoint("torch_save", False),
        "checkpoint replaced by torch.save output (record updated)": lambda: checkpoint("torch_save", True),
        "latest.json replaced by a pickle": lambda: checkpoint("latest.json", False),
        "train resumed on a torch.save checkpoint (CLI)": cli_resume_torch_save,
        "config file with a python tag (CLI)": config_python_tag,
    }
    results = []
    for name, fn in scenarios.items():
        try:
            fn()
            outcome, message = "accepted", ""
        except (DataError, UsageError) as err:
            outcome, message = "refused", str(err)[:300]
        except Exception as err:  # noqa: BLE001 - anything else is a failure of this case, recorded
            outcome, message = "crashed", f"{type(err).__name__}: {str(err)[:300]}"
        results.append({"case": name, "outcome": outcome, "message": message, "ran_code": marker.exists()})
        marker.unlink(missing_ok=True)
    return {"tried": len(results), "refused": sum(r["outcome"] == "refused" for r in results),
            "code_ran": sum(r["ran_code"] for r in results), "payload_armed": control.exists(), "cases": results}


# ------------------------------------------------------------------------------------------- nan injection

def nan_injection(ref: dict, work: Path) -> dict:
    import torch

    from mirroralign.train import load_run, make_dataset, sample_batch

    results = []
    for mode, value in [("execute", float("nan")), ("execute", float("inf")), ("mirror", float("nan"))]:
        root = _fresh(ref["data"], work / "nan" / f"data-{mode}-{value}")
        config = load_config("tiny", overrides=["train.checkpoint_every=10"])
        ds = make_dataset(EpisodeStore(root), config, mode)
        first = {}
        for step in range(config.train.steps):
            batch = sample_batch(ds, config, step, torch.device("cpu"))
            for e, t in zip(batch["episode"].tolist(), batch["t"].tolist()):
                first.setdefault((e, t), step)
        (e, t), step = min(((k, s) for k, s in first.items() if s > 10), key=lambda kv: kv[1])
        patch_array(root, ds.episode_ids[e], "proprio", (t, 1), value)
        still_verifies = EpisodeStore(root).verify() == {}
        run_dir = work / "nan" / f"run-{mode}-{value}"
        shutil.rmtree(run_dir, ignore_errors=True)
        r = run(["train", "--mode", mode, "--data", root, "--preset", "tiny", "train.checkpoint_every=10",
                 "--out", run_dir])
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        good = f"step_{step // 10 * 10:07d}.safetensors"
        try:
            intact = load_run(run_dir).step == step // 10 * 10
        except DataError:
            intact = False
        stopped = r.returncode == 1 and f"at step {step};" in last and good in last and "Traceback" not in r.stderr
        results.append({"mode": mode, "value": str(value), "poisoned_step": step, "verify_passes": still_verifies,
                        "exit": r.returncode, "message": last, "stopped_naming_step": stopped,
                        "checkpoint_intact": intact})
    return {"tried": len(results), "stopped": sum(r["stopped_naming_step"] for r in results),
            "checkpoint_intact": sum(r["checkpoint_intact"] for r in results), "cases": results}


# ---------------------------------------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="scratch and cache folder (default: /tmp/mirroralign-reliability-SEED)")
    p.add_argument("--corruptions", type=int, default=60)
    args = p.parse_args()
    work = Path(args.work or f"/tmp/mirroralign-reliability-{args.seed}")
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ref = section(work, "references", lambda: references(work))
    results = {
        "seed": args.seed, "preset": "tiny",
        "kill_resume": section(work, "kill_resume", lambda: kill_resume(ref, work, args.seed)),
        "corruptions": section(work, "corruptions", lambda: corruptions(ref, work, args.seed, args.corruptions)),
        "bad_inputs": section(work, "bad_inputs", lambda: bad_inputs(ref, work)),
        "pickle_payloads": section(work, "pickle_payloads", lambda: pickle_payloads(ref, work)),
        "nan_injection": section(work, "nan_injection", lambda: nan_injection(ref, work)),
    }
    results["wall_s_this_invocation"] = round(time.perf_counter() - start, 1)
    results["wall_s_sections"] = {k: results[k]["wall_s"] for k in ("kill_resume", "corruptions", "bad_inputs",
                                                                     "pickle_payloads", "nan_injection")}
    k, c, b, pk, n = (results[x] for x in ("kill_resume", "corruptions", "bad_inputs", "pickle_payloads",
                                           "nan_injection"))
    write_results("reliability", results, [
        ("kill_resume", f"{k['survived']} / {k['tried']}",
         f"SIGKILL at random points ({k['generate_points']} in generate, {k['train_points']} in train), resumed "
         f"to a byte-identical dataset / bit-identical weights"),
        ("corruptions", f"{c['detected']} / {c['tried']}",
         f"{c['flips']} byte flips, {c['truncations']} truncations; verify {c['by_verify']['detected']}/"
         f"{c['by_verify']['tried']}, dataset loading {c['by_loading']['detected']}/{c['by_loading']['tried']}, "
         f"checkpoint loading {c['by_checkpoint_loading']['detected']}/{c['by_checkpoint_loading']['tried']}, "
         f"each naming the file"),
        ("bad_inputs", f"{b['survived']} / {b['tried']}",
         f"exit 2, one line, nothing written; commands: {', '.join(b['commands'])}"),
        ("pickle_payloads", f"{pk['refused']} / {pk['tried']} refused",
         f"payload code ran {pk['code_ran']} times (armed: {pk['payload_armed']})"),
        ("nan_injection", f"{n['stopped']} / {n['tried']} stopped",
         f"naming the step; last good checkpoint intact {n['checkpoint_intact']} / {n['tried']}"),
    ])


if __name__ == "__main__":
    main()
