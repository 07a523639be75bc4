"""Writes LeRobotDatasets (v3.0 and v2.1) without the exporter, straight from LeRobot's layout, to test the importer
on data that our writer did not make: two cameras, three tasks, several episodes per mp4 in v3.0 (several mp4 files
too), data as plain variable-length list columns (as pandas writes them) rather than the exporter's fixed-size ones.
Videos are lossless (libx264rgb, crf 0), so what the importer decodes can be compared exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

CAMERAS = ("top", "wrist")
TASKS = ("pick up the red block", "open the top drawer", "push the green button")
LENGTHS = (5, 7, 6, 8, 4, 6, 5, 6, 7)  # episode e does task e % 3: three episodes per task
FPS, SIZE, STATE_DIM, ACTION_DIM = 10, 32, 3, 2
EPISODES_PER_VIDEO = 4  # v3.0: episodes 0-3, 4-7 and 8 share a file


def frames(e: int, cam: str) -> np.ndarray:
    rng = np.random.default_rng(1000 * e + CAMERAS.index(cam))
    return rng.integers(0, 256, (LENGTHS[e], SIZE, SIZE, 3), dtype=np.uint8)


def columns(e: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(e)
    n = LENGTHS[e]
    return {"observation.state": rng.normal(size=(n, STATE_DIM)).astype(np.float32),
            "action": rng.normal(size=(n, ACTION_DIM)).astype(np.float32),
            "next.reward": rng.random(n).astype(np.float32)}


def _encode(path: Path, clips: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264rgb", rate=FPS)
        s.width = s.height = SIZE
        s.pix_fmt = "rgb24"
        s.options = {"crf": "0", "g": "2", "bf": "0"}
        for i, f in enumerate(np.concatenate(clips)):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode())


def _rows(e: int, first_index: int) -> pd.DataFrame:
    n, cols = LENGTHS[e], columns(e)
    return pd.DataFrame({
        "observation.state": list(cols["observation.state"]), "action": list(cols["action"]),
        "next.reward": cols["next.reward"], "next.done": np.arange(n) == n - 1,
        "timestamp": (np.arange(n) / FPS).astype(np.float32), "frame_index": np.arange(n),
        "episode_index": np.full(n, e), "index": np.arange(first_index, first_index + n),
        "task_index": np.full(n, e % 3)})


def _features() -> dict:
    f = {f"observation.images.{c}": {"dtype": "video", "shape": [SIZE, SIZE, 3],
                                     "names": ["height", "width", "channels"],
                                     "info": {"video.fps": FPS, "video.codec": "h264", "video.pix_fmt": "rgb24"}}
         for c in CAMERAS}
    f["observation.state"] = {"dtype": "float32", "shape": [STATE_DIM], "names": ["x", "y", "z"]}
    f["action"] = {"dtype": "float32", "shape": [ACTION_DIM], "names": ["dx", "dy"]}
    for key, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("timestamp", "float32"),
                       ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
                       ("task_index", "int64")):
        f[key] = {"dtype": dtype, "shape": [1], "names": None}
    return f


def write_lerobot(root: Path, version: str = "v3.0", splits: dict | None = None) -> Path:
    """A LeRobotDataset of LENGTHS episodes at `root`; `splits` for info.json (default: all train)."""
    root = Path(root)
    (root / "meta").mkdir(parents=True)
    starts = np.concatenate([[0], np.cumsum(LENGTHS)])
    info = {"codebase_version": version, "robot_type": "fixture", "total_episodes": len(LENGTHS),
            "total_frames": int(starts[-1]), "total_tasks": len(TASKS), "chunks_size": 1000, "fps": FPS,
            "splits": splits or {"train": f"0:{len(LENGTHS)}"}, "features": _features()}
    if version == "v3.0":
        info |= {"data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                 "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                 "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
        data = pd.concat([_rows(e, starts[e]) for e in range(len(LENGTHS))], ignore_index=True)
        (root / "data" / "chunk-000").mkdir(parents=True)
        data.to_parquet(root / "data" / "chunk-000" / "file-000.parquet")
        episodes = []
        for e, n in enumerate(LENGTHS):
            file, first = e // EPISODES_PER_VIDEO, e - e % EPISODES_PER_VIDEO
            from_ts = float(sum(LENGTHS[first:e])) / FPS
            row = {"episode_index": e, "tasks": [TASKS[e % 3]], "length": n, "data/chunk_index": 0,
                   "data/file_index": 0, "dataset_from_index": int(starts[e]), "dataset_to_index": int(starts[e + 1])}
            for c in CAMERAS:
                key = f"videos/observation.images.{c}"
                row |= {f"{key}/chunk_index": 0, f"{key}/file_index": file, f"{key}/from_timestamp": from_ts,
                        f"{key}/to_timestamp": from_ts + n / FPS}
            episodes.append(row)
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(episodes), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
        pd.DataFrame({"task_index": range(len(TASKS))}, index=pd.Index(TASKS, name="task")).to_parquet(
            root / "meta" / "tasks.parquet")
        for c in CAMERAS:
            for file in range((len(LENGTHS) - 1) // EPISODES_PER_VIDEO + 1):
                group = range(file * EPISODES_PER_VIDEO, min(len(LENGTHS), (file + 1) * EPISODES_PER_VIDEO))
                _encode(root / "videos" / f"observation.images.{c}" / "chunk-000" / f"file-{file:03d}.mp4",
                        [frames(e, c) for e in group])
    else:
        info |= {"total_chunks": 1, "total_videos": len(LENGTHS) * len(CAMERAS),
                 "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                 "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
        (root / "data" / "chunk-000").mkdir(parents=True)
        for e in range(len(LENGTHS)):
            _rows(e, starts[e]).to_parquet(root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
            for c in CAMERAS:
                _encode(root / "videos" / "chunk-000" / f"observation.images.{c}" / f"episode_{e:06d}.mp4",
                        [frames(e, c)])
        (root / "meta" / "episodes.jsonl").write_text("".join(
            json.dumps({"episode_index": e, "tasks": [TASKS[e % 3]], "length": n}) + "\n"
            for e, n in enumerate(LENGTHS)))
        (root / "meta" / "tasks.jsonl").write_text("".join(
            json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS)))
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root
