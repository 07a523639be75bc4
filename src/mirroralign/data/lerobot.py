"""LeRobotDataset v3.0 and v2.1, out of and into the episode store (`export-lerobot`, `import-lerobot`).

The `lerobot` package cannot be installed beside our torch, so the format is written and read here with pyarrow,
pandas and PyAV, from LeRobot's own layout (v0.6.1):

    v3.0  meta/info.json  meta/stats.json  meta/tasks.parquet (index: the task string, column task_index)
          meta/episodes/chunk-XXX/file-XXX.parquet   one row per episode: where its rows and frames are
          data/chunk-XXX/file-XXX.parquet            one row per frame, several episodes per file
          videos/<key>/chunk-XXX/file-XXX.mp4        several episodes per file, an episode's frame t at
                                                     from_timestamp + timestamp[t]
    v2.1  meta/info.json  meta/episodes.jsonl  meta/episodes_stats.jsonl  meta/tasks.jsonl
          data/chunk-XXX/episode_XXXXXX.parquet      videos/chunk-XXX/<key>/episode_XXXXXX.mp4 (time from 0)

A store episode has T + 1 observations and T actions; a LeRobot episode has one action per frame. Exported, the
final observation repeats the last action with reward 0 and `next.done`; imported, the last frame's action is
dropped, so a round trip gives the arrays back exactly (video aside). What LeRobot has no place for (paraphrases,
variation ids, episode ids, keyframes) goes to `meta/mirroralign.json`, which LeRobot ignores and the importer
reads back when it still matches the dataset.

Both directions stream one episode at a time (memory bounded by an episode, not the dataset) and write under a
temporary name that is renamed into place, so OUT is either complete or absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mirroralign.data.generate import split_counts
from mirroralign.data.store import (CONFIG, FORMAT, MANIFEST, META, SPLITS, VERSION, EpisodeStore, episode_path,
                                    json_bytes, require_writable, sha256_file, write_episode, write_json_atomic,
                                    write_manifest, write_text_embeddings)
from mirroralign.envs.base import Variation
from mirroralign.errors import DataError, UsageError

WRITE_VERSIONS = ("v3.0", "v2.1")
READ_VERSIONS = ("v3.0", "v2.1", "v2.0")  # v2.0 differs from v2.1 only in where per-episode stats live
# codec -> (pixel format, default crf). libx264 yuv444p is the default because LeRobot's own setting (libsvtav1,
# yuv420p) halves the colour resolution and tops out near 31-33 dB PSNR on our small renders; libx264rgb crf 0 is
# lossless (bit-exact RGB).
CODECS = {"libx264": ("yuv444p", 6), "libsvtav1": ("yuv420p", 30), "libx264rgb": ("rgb24", 0)}
CODEC_NAMES = {"libx264": "h264", "libx264rgb": "h264", "libsvtav1": "av1"}  # as ffprobe names the stream
CRF_RANGE = {"libx264": 51, "libx264rgb": 51, "libsvtav1": 63}
GOP = 2  # LeRobot's g=2: a keyframe every other frame, so any frame decodes quickly
DEFAULT_FPS = {"metaworld": 80, "rlbench": 20}  # Meta-World steps 12.5 ms
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB, VIDEO_FILE_MB = 100, 500  # LeRobot's defaults: a new file once one grows past this
EXTRA = "meta/mirroralign.json"
EXTRA_FORMAT = "mirroralign-lerobot-extra"
IMAGE_PREFIX = "observation.images."
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_BINS = 5000
TIME_TOLERANCE_S = 1e-4  # LeRobot's tolerance_s when it looks a frame up by timestamp

V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


# -------------------------------------------------------------------------------------------- statistics

def _sample_indices(n: int) -> np.ndarray:
    """LeRobot's frame sample for image stats: all of a short episode, ~n**0.75 of a long one (100..10000)."""
    count = max(min(100, n), min(int(n ** 0.75), 10_000))
    return np.round(np.linspace(0, n - 1, count)).astype(int)


def _histogram_quantiles(values: np.ndarray) -> np.ndarray:
    """[len(QUANTILES), D] quantiles of each column of [N, D] from a 5000-bin histogram, interpolated within the
    bin, as LeRobot's RunningQuantileStats estimates them."""
    out = np.empty((len(QUANTILES), values.shape[1]))
    for d in range(values.shape[1]):
        col = values[:, d]
        edges = np.linspace(col.min() - 1e-10, col.max() + 1e-10, QUANTILE_BINS + 1)
        cumsum = np.cumsum(np.histogram(col, bins=edges)[0])
        for i, q in enumerate(QUANTILES):
            target = q * len(col)
            j = int(np.searchsorted(cumsum, target))
            if j == 0:
                out[i, d] = edges[0]
            elif j >= len(cumsum):
                out[i, d] = edges[-1]
            else:
                before, inside = cumsum[j - 1], cumsum[j] - cumsum[j - 1]
                out[i, d] = edges[j] if inside == 0 else edges[j] + (target - before) / inside * (edges[j + 1] - edges[j])
    return out


def feature_stats(data: np.ndarray, image: bool = False) -> dict[str, np.ndarray]:
    """One episode's stats of one feature, shaped as LeRobot stores them: images [T, H, W, 3] uint8 per channel as
    (3, 1, 1) in [0, 1] from sampled frames (strided down when larger than 300 px), scalars [T] as (1,), vectors
    [T, D] as (D,). Computed in float64 (LeRobot squares uint8 pixels in place)."""
    if image:
        frames = data[_sample_indices(len(data))]
        step = max(frames.shape[1:3]) // 150 if max(frames.shape[1:3]) >= 300 else 1
        values, count, shape = frames[:, ::step, ::step].reshape(-1, 3).astype(np.float64) / 255.0, len(frames), (3, 1, 1)
    else:
        values = np.asarray(data, np.float64).reshape(len(data), -1)
        count, shape = len(data), (1,) if np.ndim(data) == 1 else values.shape[1:]
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
    quantiles = _histogram_quantiles(values) if len(values) >= 2 else np.stack([stats["mean"]] * len(QUANTILES))
    stats |= {f"q{round(q * 100):02d}": quantiles[i] for i, q in enumerate(QUANTILES)}
    stats = {k: v.reshape(shape) for k, v in stats.items()}
    return {**stats, "count": np.array([count])}


def aggregate_stats(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset stats of one feature from its per-episode stats, as LeRobot aggregates them: min of mins, max of
    maxes, count-weighted mean, pooled variance, count-weighted quantiles."""
    counts = np.array([float(s["count"][0]) for s in episodes])
    total = counts.sum()
    w = counts.reshape(-1, *[1] * episodes[0]["mean"].ndim)
    means = np.stack([s["mean"] for s in episodes])
    mean = (means * w).sum(0) / total
    var = ((np.stack([s["std"] for s in episodes]) ** 2 + (means - mean) ** 2) * w).sum(0) / total
    out = {"min": np.min([s["min"] for s in episodes], 0), "max": np.max([s["max"] for s in episodes], 0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}
    for key in (k for k in episodes[0] if re.fullmatch(r"q\d\d", k)):
        out[key] = (np.stack([s[key] for s in episodes]) * w).sum(0) / total
    return out


def _jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {f: {k: v.tolist() for k, v in s.items()} for f, s in stats.items()}


# ------------------------------------------------------------------------------------------------- video

def _quiet_svt() -> None:
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner on stderr otherwise (errors only)


class VideoWriter:
    """One mp4 whose frames follow each other at 1/fps, across every episode written into it."""

    def __init__(self, path: Path, fps: int, codec: str, crf: int, height: int, width: int):
        import av

        _quiet_svt()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.height, self.stream.width = height, width
        self.stream.pix_fmt = CODECS[codec][0]
        self.stream.options = {"crf": str(crf), "g": str(GOP), **({"bf": "0"} if codec.startswith("libx264") else {})}

    def write(self, frames: np.ndarray) -> None:
        import av

        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = self.frames
            self.container.mux(self.stream.encode(frame))
            self.frames += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()


def decode_frames(path: Path, times: np.ndarray, tolerance: float = TIME_TOLERANCE_S) -> np.ndarray:
    """The frames shown at `times` (seconds, ascending) as uint8 [len(times), H, W, 3]; each must be within
    `tolerance` of a decoded frame's timestamp (LeRobot's rule), else the video is too short or out of step."""
    import av

    if not path.is_file():
        raise DataError(f"video missing: {path}")
    decoded_t, decoded = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if times[0] > 0:
                container.seek(int(times[0] / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None or frame.time < times[0] - tolerance:
                    continue
                if frame.time > times[-1] + tolerance:
                    break
                decoded_t.append(frame.time)
                decoded.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, IndexError) as err:
        raise DataError(f"video damaged: {path} ({err})") from None
    if not decoded:
        raise DataError(f"video {path} has no frame at {times[0]:.4f} s: shorter than its episodes' timestamps")
    decoded_t = np.asarray(decoded_t)
    nearest = np.abs(decoded_t[None, :] - np.asarray(times)[:, None]).argmin(1)
    off = np.abs(decoded_t[nearest] - times)
    if (off > tolerance).any():
        t = float(times[int(np.argmax(off > tolerance))])
        raise DataError(f"video {path} has no frame at {t:.4f} s (within {tolerance} s): shorter than its "
                        f"episodes' timestamps")
    return np.stack([decoded[i] for i in nearest])


# ------------------------------------------------------------------------------------------------ common

def _temporary(out: Path) -> tuple[Path, list[Path]]:
    """A fresh folder beside OUT to build in, and the parent folders made for it (removed on failure)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path is a file, not a directory: {out}")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"output directory is not empty: {out}; use another --out")
    require_writable(out.parent)
    missing = [d for d in (out.parent, *out.parent.parents) if not d.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp, missing


def _finish(tmp: Path, out: Path, missing: list[Path], done: bool) -> None:
    if done:
        os.replace(tmp, out)  # an empty OUT directory is replaced; a non-empty one was refused
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    if not done and missing:
        shutil.rmtree(missing[-1], ignore_errors=True)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4))


# ------------------------------------------------------------------------------------------------ export

def _frame_table(arrays: dict, eid_index: int, first_index: int, task_index: int, fps: int):
    """The LeRobot rows of one store episode (T + 1 frames), as a pyarrow table."""
    import pyarrow as pa

    proprio, actions, rewards = arrays["proprio"], arrays["actions"], arrays["rewards"]
    n = len(proprio)
    action = np.concatenate([actions, actions[-1:]]).astype(np.float32)  # the final observation repeats it
    reward = np.concatenate([rewards, [0.0]]).astype(np.float32)
    last = np.arange(n) == n - 1
    fixed = lambda x: pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), x.shape[1])  # noqa: E731
    return pa.table({
        "observation.state": fixed(proprio), "action": fixed(action),
        "next.reward": pa.array(reward), "next.done": pa.array(last), "next.success": pa.array(last),
        "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "episode_index": pa.array(np.full(n, eid_index, np.int64)),
        "index": pa.array(np.arange(first_index, first_index + n, dtype=np.int64)),
        "task_index": pa.array(np.full(n, task_index, np.int64)),
    })


def _features(store: EpisodeStore, cameras: list[str], size: int, first: dict, fps: int, codec: str) -> dict:
    def names(key: str, n: int) -> list[str]:
        given = store.manifest.get(key)
        return given if isinstance(given, list) and len(given) == n else [f"{key.split('_')[0]}_{i}" for i in range(n)]

    features = {}
    for cam in cameras:
        features[IMAGE_PREFIX + cam] = {
            "dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": size, "video.width": size, "video.codec": CODEC_NAMES[codec],
                     "video.pix_fmt": CODECS[codec][0], "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False}}
    p, a = first["proprio"].shape[1], first["actions"].shape[1]
    features["observation.state"] = {"dtype": "float32", "shape": [p], "names": names("proprio_fields", p)}
    features["action"] = {"dtype": "float32", "shape": [a], "names": names("action_fields", a)}
    for key, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("next.success", "bool"),
                       ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


class _Rolling:
    """The current (chunk, file) of a kind of file, moving on once it has grown past `limit_mb`."""

    def __init__(self, limit_mb: float):
        self.limit, self.chunk, self.file, self.size = limit_mb * 1024 * 1024, 0, 0, 0

    def grew(self, nbytes: int) -> bool:
        """Account for bytes written; True when the next episode should go to a new file."""
        self.size += nbytes
        if self.size < self.limit:
            return False
        self.size, self.file = 0, self.file + 1
        if self.file == CHUNKS_SIZE:
            self.chunk, self.file = self.chunk + 1, 0
        return True


def export_lerobot(src: str | Path, out: str | Path, version: str = "v3.0", fps: int | None = None,
                   vcodec: str = "libx264", crf: int | None = None, progress: bool = True,
                   data_file_mb: float = DATA_FILE_MB, video_file_mb: float = VIDEO_FILE_MB) -> Path:
    """Write the dataset at `src` as a LeRobotDataset at `out`: every camera a video feature, proprioception
    `observation.state`, the expert action `action`, the canonical instruction the task, splits in info.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, out = Path(src), Path(out)
    if not (src / MANIFEST).is_file():
        raise UsageError(f"not a mirroralign dataset (no {MANIFEST}): {src}")
    if version not in WRITE_VERSIONS:
        raise UsageError(f"unknown --format {version!r} (known: {', '.join(WRITE_VERSIONS)})")
    if vcodec not in CODECS:
        raise UsageError(f"unknown --vcodec {vcodec!r} (known: {', '.join(CODECS)})")
    crf = CODECS[vcodec][1] if crf is None else crf
    if not 0 <= crf <= CRF_RANGE[vcodec]:
        raise UsageError(f"--crf for {vcodec} must be in 0..{CRF_RANGE[vcodec]}, got {crf}")
    store = EpisodeStore(src)
    m = store.manifest
    fps = fps if fps is not None else m.get("fps") or DEFAULT_FPS.get(m["simulator"], 30)
    if fps <= 0:
        raise UsageError(f"--fps must be positive, got {fps}")
    size = m["image_size"]
    if CODECS[vcodec][0] == "yuv420p" and size % 2:
        raise UsageError(f"{vcodec} (yuv420p) needs an even image size, the dataset's is {size}: use --vcodec libx264")
    cams = m["cameras"]
    cameras = list(dict.fromkeys([*cams["observer"], *cams["agent"]]))
    order = [eid for s in SPLITS for eid in store.episode_ids(s)]  # splits are contiguous episode ranges
    tasks = list(dict.fromkeys(v.instruction for v in store.variations))
    task_of = {v.id: tasks.index(v.instruction) for v in store.variations}
    v3 = version == "v3.0"

    tmp, missing = _temporary(out)
    done = False
    writers: dict = {}
    try:
        first = store.load(order[0])
        features = _features(store, cameras, size, first, fps, vcodec)
        numeric = [k for k, f in features.items() if f["dtype"] != "video"]
        data_roll, video_roll = _Rolling(data_file_mb), {c: _Rolling(video_file_mb) for c in cameras}
        episodes, stats_per_episode, extra_episodes, total = [], [], [], 0
        for e, eid in enumerate(tqdm(order, desc="export-lerobot", unit="ep", disable=None if progress else True)):
            arrays, first = (first, None) if e == 0 else (store.load(eid), None)  # one episode in memory
            meta = store.episodes[eid]
            table = _frame_table(arrays, e, total, task_of[meta["variation"]], fps)
            n = table.num_rows
            frames = {c: arrays[f"observer.{c}"] if f"observer.{c}" in arrays else arrays[f"agent.{c}"]
                      for c in cameras}
            row = {"episode_index": e, "tasks": [tasks[task_of[meta["variation"]]]], "length": n}
            if v3:
                if "data" not in writers:
                    path = tmp / V3_DATA_PATH.format(chunk_index=data_roll.chunk, file_index=data_roll.file)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writers["data"] = pq.ParquetWriter(path, table.schema)
                writers["data"].write_table(table)  # one row group per episode
                row |= {"data/chunk_index": data_roll.chunk, "data/file_index": data_roll.file,
                        "dataset_from_index": total, "dataset_to_index": total + n}
                if data_roll.grew(table.nbytes):
                    writers.pop("data").close()
                for c in cameras:
                    key, roll = IMAGE_PREFIX + c, video_roll[c]
                    if key not in writers:
                        path = tmp / V3_VIDEO_PATH.format(video_key=key, chunk_index=roll.chunk, file_index=roll.file)
                        writers[key] = VideoWriter(path, fps, vcodec, crf, size, size)
                    w = writers[key]
                    start = w.frames
                    w.write(frames[c])
                    row |= {f"videos/{key}/chunk_index": roll.chunk, f"videos/{key}/file_index": roll.file,
                            f"videos/{key}/from_timestamp": start / fps, f"videos/{key}/to_timestamp": w.frames / fps}
                    if roll.grew(w.path.stat().st_size - roll.size):  # bytes muxed so far into this file
                        writers.pop(key).close()
            else:
                chunk = e // CHUNKS_SIZE
                path = tmp / V2_DATA_PATH.format(episode_chunk=chunk, episode_index=e)
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, path)
                for c in cameras:
                    key = IMAGE_PREFIX + c
                    w = VideoWriter(tmp / V2_VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=e),
                                    fps, vcodec, crf, size, size)
                    w.write(frames[c])
                    w.close()
            ep_stats = {k: feature_stats(_column(table, k, src)) for k in numeric}
            ep_stats |= {IMAGE_PREFIX + c: feature_stats(frames[c], image=True) for c in cameras}
            stats_per_episode.append(ep_stats)
            episodes.append(row)
            extra_episodes.append({"episode_index": e, "id": eid, "variation": meta["variation"],
                                   "split": meta["split"], "scene_seed": meta["scene_seed"],
                                   "keyframes": arrays["keyframes"].tolist() if "keyframes" in arrays else None})
            total += n
        for w in list(writers.values()):
            w.close()
        writers.clear()

        stats = {k: aggregate_stats([s[k] for s in stats_per_episode]) for k in stats_per_episode[0]}
        splits, start = {}, 0
        for s in SPLITS:
            if count := len(store.episode_ids(s)):
                splits[s] = f"{start}:{start + count}"
                start += count
        info = {"codebase_version": version, "robot_type": m["simulator"], "total_episodes": len(order),
                "total_frames": total, "total_tasks": len(tasks)}
        if v3:
            info |= {"chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": data_file_mb,
                     "video_files_size_in_mb": video_file_mb, "fps": fps, "splits": splits,
                     "data_path": V3_DATA_PATH, "video_path": V3_VIDEO_PATH, "features": features}
            for row, ep_stats in zip(episodes, stats_per_episode):
                row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
                row |= {f"stats/{k}/{s}": v.tolist() for k, st in ep_stats.items() for s, v in st.items()}
            path = tmp / V3_EPISODES_PATH.format(chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(episodes), path)
            import pandas as pd

            pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task")).to_parquet(
                tmp / "meta" / "tasks.parquet")
        else:
            info |= {"total_chunks": (len(order) - 1) // CHUNKS_SIZE + 1, "total_videos": len(order) * len(cameras),
                     "chunks_size": CHUNKS_SIZE, "fps": fps, "splits": splits, "data_path": V2_DATA_PATH,
                     "video_path": V2_VIDEO_PATH, "features": features}
            _write_jsonl(tmp / "meta" / "episodes.jsonl", episodes)
            _write_jsonl(tmp / "meta" / "episodes_stats.jsonl",
                         [{"episode_index": e, "stats": _jsonable(s)} for e, s in enumerate(stats_per_episode)])
            _write_jsonl(tmp / "meta" / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)])
        _write_json(tmp / "meta" / "info.json", info)
        _write_json(tmp / "meta" / "stats.json", _jsonable(stats))
        (tmp / EXTRA).write_bytes(json_bytes({
            "format": EXTRA_FORMAT, "version": 1, "source": str(src.resolve()), "simulator": m["simulator"],
            "cameras": cams, "variations": [v.to_dict() for v in store.variations], "episodes": extra_episodes}))
        done = True
    finally:
        for w in writers.values():  # a failure mid-episode: close what is open before the folder goes
            try:
                w.close()
            except Exception:  # noqa: BLE001 (the first error is the one to report)
                pass
        _finish(tmp, out, missing, done)
    return out


# ------------------------------------------------------------------------------------------------ import

def _read_parquet(path: Path, columns=None, filters=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"parquet file missing: {path}")
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise DataError(f"not a readable parquet file: {path} ({str(err).splitlines()[0]})") from None
    except KeyError as err:
        raise DataError(f"parquet file {path} lacks column {err}") from None


def _column(table, key: str, path: Path) -> np.ndarray:
    """A column as [N] or [N, D] (list columns, fixed-size or not)."""
    import pyarrow as pa

    if key not in table.column_names:
        raise DataError(f"{path} has no column {key!r}")
    col = table.column(key).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
        if len(col) and len(values) % len(col):
            raise DataError(f"{path}: column {key!r} holds rows of different lengths")
        return values.reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"LeRobot metadata missing: {path}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"LeRobot metadata damaged: {path} line {i} ({err})") from None
    return rows


def read_info(src: Path) -> dict:
    path = src / "meta" / "info.json"
    if not path.is_file():
        raise UsageError(f"not a LeRobot dataset (no meta/info.json): {src}")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"LeRobot info.json damaged: {path} ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DataError(f"LeRobot info.json damaged: {path} (no features)")
    version = info.get("codebase_version")
    if version not in READ_VERSIONS:
        raise UsageError(f"unknown LeRobot codebase_version {version!r} in {path} (reads {', '.join(READ_VERSIONS)})")
    for key in ("fps", "total_episodes", "total_frames", "data_path"):
        if key not in info:
            raise DataError(f"LeRobot info.json damaged: {path} (no {key!r})")
    return info


def _read_tasks(src: Path, version: str) -> dict[int, str]:
    if version == "v3.0":
        import pandas as pd

        path = src / "meta" / "tasks.parquet"
        _read_parquet(path)  # a clear error for a file that is not parquet
        df = pd.read_parquet(path)
        texts = df["task"] if "task" in df.columns else df.index
        if "task_index" not in df.columns:
            raise DataError(f"{path} has no column 'task_index'")
        return {int(i): str(t) for t, i in zip(texts, df["task_index"])}
    rows = _read_jsonl(src / "meta" / "tasks.jsonl")
    try:
        return {int(r["task_index"]): str(r["task"]) for r in rows}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"LeRobot metadata damaged: {src / 'meta' / 'tasks.jsonl'} ({err})") from None


def _read_episodes(src: Path, info: dict, video_keys: list[str]) -> list[dict]:
    """One dict per episode (sorted by index): index, length, task strings and, for v3.0, where it lies."""
    if info["codebase_version"] != "v3.0":
        rows = _read_jsonl(src / "meta" / "episodes.jsonl")
    else:
        paths = sorted((src / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not paths:
            raise DataError(f"LeRobot episode metadata missing: {src / 'meta' / 'episodes'}")
        wanted = ["episode_index", "length", "tasks", "data/chunk_index", "data/file_index", "dataset_from_index",
                  "dataset_to_index"]
        wanted += [f"videos/{k}/{c}" for k in video_keys for c in ("chunk_index", "file_index", "from_timestamp",
                                                                    "to_timestamp")]
        rows = []
        for path in paths:
            table = _read_parquet(path)
            lacking = [c for c in wanted if c not in table.column_names]
            if lacking:
                raise DataError(f"LeRobot episode metadata {path} lacks {lacking[0]!r}")
            rows += table.select(wanted).to_pylist()
    try:
        rows = sorted(rows, key=lambda r: int(r["episode_index"]))
        for r in rows:
            r["episode_index"], r["length"] = int(r["episode_index"]), int(r["length"])
            if not isinstance(r["tasks"], list) or not r["tasks"]:
                raise TypeError("an episode without tasks")
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"LeRobot episode metadata damaged in {src / 'meta'} ({err})") from None
    if len(rows) != info["total_episodes"]:
        raise DataError(f"episode counts disagree: info.json says {info['total_episodes']}, the episode metadata "
                        f"lists {len(rows)}")
    if sum(r["length"] for r in rows) != info["total_frames"]:
        raise DataError(f"frame counts disagree: info.json says {info['total_frames']}, the episode metadata "
                        f"adds up to {sum(r['length'] for r in rows)}")
    return rows


def camera_name(key: str) -> str:
    """Our name of a camera feature: `observation.images.top` -> `top`, `observation.image` -> `image`."""
    return re.sub(r"^observation\.(images\.)?", "", key)


def _camera_key(name: str, cameras: list[str], features: dict) -> str:
    if name in cameras:
        return name
    if matches := [k for k in cameras if camera_name(k) == name]:
        return matches[0]
    raise UsageError(f"no camera feature {name!r} in the LeRobot dataset (cameras: {', '.join(cameras) or 'none'}; "
                     f"features: {', '.join(features)})")


def _vector_key(name: str, features: dict, what: str) -> str:
    ft = features.get(name)
    if not isinstance(ft, dict) or ft.get("dtype") in ("video", "image", "string") or len(ft.get("shape", [])) != 1:
        raise UsageError(f"no {what} feature {name!r} in the LeRobot dataset (a 1-D numeric feature; features: "
                         f"{', '.join(features)})")
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "task"


def _extra(src: Path, episodes: list[dict]) -> dict | None:
    """Our own metadata from an export, when it still describes this dataset (else the dataset is foreign)."""
    path = src / EXTRA
    if not path.is_file():
        return None
    try:
        extra = json.loads(path.read_text())
        variations = {v["id"]: Variation.from_dict(v) for v in extra["variations"]}
        rows = extra["episodes"]
        if extra.get("format") != EXTRA_FORMAT or len(rows) != len(episodes):
            return None
        for row, ep in zip(rows, episodes):
            if row["episode_index"] != ep["episode_index"] or variations[row["variation"]].instruction != ep["tasks"][0]:
                return None
            # the id becomes a folder name: only `<variation>/<split>-<k>` of plain names is taken
            m = re.fullmatch(r"([A-Za-z0-9_][A-Za-z0-9_.-]*)/(train|val|test)-(\d{4,})", str(row["id"]))
            if not m or m.group(1) != row["variation"] or m.group(2) != row["split"]:
                return None
            row["k"] = int(m.group(3))
        return {"variations": variations, "episodes": {r["episode_index"]: r for r in rows}}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        return None


def _splits_from_info(info: dict, episodes: list[dict]) -> dict[int, str] | None:
    """Episode index -> split from info.json's `splits` when it names val or test ("a:b" ranges), else None."""
    splits = info.get("splits") or {}
    if not isinstance(splits, dict) or not ({"val", "test"} & set(splits)):
        return None
    of = {}
    for s in SPLITS:
        if s in splits:
            m = re.fullmatch(r"(\d+):(\d+)", str(splits[s]))
            if not m:
                raise DataError(f"LeRobot info.json: split {s!r} is {splits[s]!r}, not a range 'a:b'")
            of |= dict.fromkeys(range(int(m.group(1)), int(m.group(2))), s)
    unplaced = [ep["episode_index"] for ep in episodes if ep["episode_index"] not in of]
    if unplaced:
        raise DataError(f"LeRobot info.json: episode {unplaced[0]} lies in none of the splits {splits}")
    return of


def _episode_frames(src: Path, info: dict, ep: dict, key: str, times: np.ndarray, table, data_path: Path,
                    size: int | None) -> np.ndarray:
    from PIL import Image

    if info["features"][key]["dtype"] == "image":  # PNG bytes in the parquet row
        import io

        cells = table.column(key).to_pylist()
        try:
            frames = [np.asarray(Image.open(io.BytesIO(c["bytes"])).convert("RGB")) for c in cells]
        except (TypeError, KeyError, OSError) as err:
            raise DataError(f"image damaged in {data_path} column {key!r} ({err})") from None
        frames = np.stack(frames)
    else:
        e = ep["episode_index"]
        if info["codebase_version"] == "v3.0":
            chunk, file = ep[f"videos/{key}/chunk_index"], ep[f"videos/{key}/file_index"]
            offset = float(ep[f"videos/{key}/from_timestamp"])
            path = src / info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
        else:
            offset = 0.0
            path = src / info["video_path"].format(episode_chunk=e // info.get("chunks_size", CHUNKS_SIZE),
                                                   video_key=key, episode_index=e)
        frames = decode_frames(path, offset + times)
    if size is not None and frames.shape[1:3] != (size, size):
        frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR))
                           for f in frames])
    return frames


def import_lerobot(src: str | Path, out: str | Path, observer: str, cameras: list[str] | None = None,
                   state: str = "observation.state", action: str = "action", tasks: list[str] | None = None,
                   image_size: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                   progress: bool = True) -> Path:
    """Convert the LeRobotDataset at `src` (v3.0 or v2.1) into a finished mirroralign dataset at `out`."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UsageError(f"LeRobot dataset folder not found: {src}")
    info = read_info(src)
    features = info["features"]
    camera_keys = [k for k, f in features.items() if isinstance(f, dict) and f.get("dtype") in ("video", "image")]
    observer_key = _camera_key(observer, camera_keys, features)
    agent_keys = [_camera_key(c, camera_keys, features) for c in cameras] if cameras else \
        [k for k in camera_keys if k != observer_key] or [observer_key]
    agent_keys = list(dict.fromkeys(agent_keys))
    state, action = _vector_key(state, features, "state"), _vector_key(action, features, "action")
    if image_size is not None and image_size < 8:
        raise UsageError(f"--image-size must be >= 8, got {image_size}")
    version, fps = info["codebase_version"], info["fps"]
    used = list(dict.fromkeys([observer_key, *agent_keys]))
    task_texts = _read_tasks(src, version)
    episodes = _read_episodes(src, info, [k for k in used if features[k]["dtype"] == "video"])
    known = set(task_texts.values())
    for ep in episodes:
        if ep["tasks"][0] not in known:
            raise DataError(f"episode {ep['episode_index']}'s task {ep['tasks'][0]!r} is not in the task table")
    # our own metadata from an export of ours (its split of each episode must be the one info.json names)
    extra = _extra(src, episodes)
    info_splits = _splits_from_info(info, episodes)
    if extra and info_splits and any(info_splits[e] != row["split"] for e, row in extra["episodes"].items()):
        extra = None
    if tasks:  # by task string or task index
        wanted = []
        for t in tasks:
            text = task_texts.get(int(t)) if t.isdigit() else t if t in known else None
            if text is None:
                raise UsageError(f"no task {t!r} in the LeRobot dataset (tasks: {'; '.join(sorted(known))})")
            wanted.append(text)
        episodes = [ep for ep in episodes if ep["tasks"][0] in wanted]
    name = camera_name
    observer_cam, agent_cams = name(observer_key), [name(k) for k in agent_keys]

    # variations: ours (with paraphrases) from an export of ours, else one per task string (its own task)
    if extra:
        variation_of = {e: extra["episodes"][e]["variation"] for e in (ep["episode_index"] for ep in episodes)}
        used_ids = set(variation_of.values())
        variations = [v for v in extra["variations"].values() if v.id in used_ids]
    else:
        index_of = {t: i for i, t in sorted(task_texts.items())}
        texts = sorted({ep["tasks"][0] for ep in episodes}, key=lambda t: index_of[t])
        ids = {t: f"{index_of[t]:03d}-{_slug(t)}" for t in texts}
        variations = [Variation(ids[t], ids[t], "default", t, ()) for t in texts]
        variation_of = {ep["episode_index"]: ids[ep["tasks"][0]] for ep in episodes}
    split_of = info_splits if info_splits is not None else (extra and {e: r["split"] for e, r in
                                                                          extra["episodes"].items()})
    if not split_of:  # per variation, in episode order, with our fractions
        split_of = {}
        for v in variations:
            group = [ep["episode_index"] for ep in episodes if variation_of[ep["episode_index"]] == v.id]
            need = split_counts(len(group), val_fraction, test_fraction)
            split_of |= dict(zip(group, [s for s in SPLITS for _ in range(need[s])]))
    ks: dict = {}
    episode_ids, episode_k = {}, {}
    for ep in episodes:
        e = ep["episode_index"]
        k = ks.setdefault((variation_of[e], split_of[e]), 0)
        ks[(variation_of[e], split_of[e])] += 1
        episode_k[e] = extra["episodes"][e]["k"] if extra else k
        episode_ids[e] = extra["episodes"][e]["id"] if extra else f"{variation_of[e]}/{split_of[e]}-{k:04d}"
    if not episodes:
        raise UsageError(f"no episodes to import from {src}")
    identity = {"source": "lerobot", "src": str(src.resolve()), "codebase_version": version, "fps": fps,
                "observer": observer_key, "cameras": agent_keys, "state": state, "action": action,
                "tasks": tasks, "image_size": image_size, "val_fraction": val_fraction,
                "test_fraction": test_fraction}

    tmp, missing = _temporary(out)
    done = False
    try:
        write_json_atomic(tmp / CONFIG, {"format": FORMAT, "version": VERSION, "identity": identity})
        size, entries, splits = image_size, {}, {s: [] for s in SPLITS}
        wanted_cols = ["episode_index", "frame_index", "timestamp", "task_index", state, action]
        wanted_cols += [k for k in ("next.reward", "next.success") if k in features]
        wanted_cols += [k for k in used if features[k]["dtype"] == "image"]
        for ep in tqdm(episodes, desc="import-lerobot", unit="ep", disable=None if progress else True):
            e, n = ep["episode_index"], ep["length"]
            if version == "v3.0":
                path = src / info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                      file_index=ep["data/file_index"])
            else:
                path = src / info["data_path"].format(episode_chunk=e // info.get("chunks_size", CHUNKS_SIZE),
                                                      episode_index=e)
            table = _read_parquet(path, columns=wanted_cols, filters=[("episode_index", "=", e)])
            if table.num_rows != n:
                raise DataError(f"episode counts disagree: episode {e} has {n} frames in the episode metadata, "
                                f"{table.num_rows} rows in {path}")
            if n < 2:
                raise DataError(f"episode {e} has {n} frame(s): an episode needs at least one action")
            table = table.sort_by("frame_index")
            unknown = set(_column(table, "task_index", path).tolist()) - set(task_texts)
            if unknown:
                raise DataError(f"{path}: task index {min(unknown)} of episode {e} has no task in the task table")
            times = _column(table, "timestamp", path).astype(np.float64)
            proprio = _column(table, state, path).astype(np.float32)
            actions = _column(table, action, path).astype(np.float32)[:-1]  # the last frame's action is not taken
            if "next.reward" in features:
                rewards = _column(table, "next.reward", path).astype(np.float32).reshape(n)[:-1]
            else:  # demonstrations: a sparse reward at the end
                rewards = np.zeros(n - 1, np.float32)
                rewards[-1] = 1.0
            success = bool(_column(table, "next.success", path).any()) if "next.success" in features else True
            frames = {k: _episode_frames(src, info, ep, k, times, table, path, image_size) for k in used}
            shape = frames[observer_key].shape[1:3]
            if size is None:
                if shape[0] != shape[1]:
                    raise UsageError(f"the LeRobot images are {shape[1]}x{shape[0]}, not square: pass --image-size")
                size = shape[0]
            if any(f.shape[1:3] != (size, size) for f in frames.values()):
                raise UsageError("the LeRobot cameras have images of different sizes: pass --image-size to resize all")
            arrays = {f"observer.{observer_cam}": frames[observer_key]}
            arrays |= {f"agent.{name(k)}": frames[k] for k in agent_keys}
            arrays |= {"proprio": proprio, "actions": actions, "rewards": rewards}
            keyframes = extra["episodes"][e].get("keyframes") if extra else None
            if keyframes is not None:
                arrays["keyframes"] = np.asarray(keyframes, np.int64)
            eid, split = episode_ids[e], split_of[e]
            meta = {"variation": variation_of[e], "split": split, "k": episode_k[e], "scene_seed": None,
                    "length": n - 1, "success": success, "source": f"episode {e}"}
            meta = write_episode(tmp, eid, arrays, meta)
            entries[eid] = {key: meta[key] for key in ("variation", "split", "k", "scene_seed", "length", "files",
                                                       "source")}
            entries[eid]["meta_sha256"] = sha256_file(episode_path(tmp, eid) / META)
            splits[split].append(eid)
        cams = {"observer": [observer_cam], "agent": agent_cams}
        write_manifest(tmp, {
            "format": FORMAT, "version": VERSION, "config": identity, "simulator": "lerobot", "image_size": size,
            "fps": fps, "cameras": cams, "variations": [v.to_dict() for v in variations],
            "episodes_per_split": {s: len(ids) for s, ids in splits.items()}, "splits": splits,
            "episodes": entries, "attempts": {}, "expert_failures": 0,
            "proprio_fields": features[state].get("names"), "action_fields": features[action].get("names"),
            "files": {CONFIG: sha256_file(tmp / CONFIG), **write_text_embeddings(tmp, variations)},
        })
        done = True
    finally:
        _finish(tmp, out, missing, done)
    return out
