"""LeRobot conversion throughput against bare video encoding and decoding of the same frames, in one run.

    python benchmarks/lerobot_conversion.py [--data DIR]     (default: generates the `tiny` preset first)

raw_encode_fps / raw_decode_fps: frames/s of PyAV encoding every camera's frames of the dataset with the export's
default codec settings (libx264 yuv444p crf 6, g=2) and of decoding them back. export_fps / import_fps: frames/s of
`export_lerobot` and `import_lerobot` end to end (store reads and checksums, parquet, stats, video, atomic writes).
The ratios say how close conversion comes to the video work it cannot avoid.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from mirroralign.config import load_config  # noqa: E402
from mirroralign.data.generate import generate  # noqa: E402
from mirroralign.data.lerobot import CODECS, VideoWriter, export_lerobot, import_lerobot  # noqa: E402
from mirroralign.data.store import EpisodeStore  # noqa: E402


def raw_video(store: EpisodeStore, work: Path, fps: int) -> tuple[int, float, float]:
    """(frames, encode seconds, decode seconds) of every camera's frames, one mp4 per camera and episode."""
    clips = []
    for eid in store.episode_ids():
        arrays = store.load(eid)
        clips += [arr for key, arr in arrays.items() if key.startswith(("observer.", "agent."))]
    start = time.perf_counter()
    for i, clip in enumerate(clips):
        w = VideoWriter(work / f"{i}.mp4", fps, "libx264", CODECS["libx264"][1], *clip.shape[1:3])
        w.write(clip)
        w.close()
    encode = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(len(clips)):
        with av.open(str(work / f"{i}.mp4")) as c:
            for f in c.decode(video=0):
                f.to_ndarray(format="rgb24")
    return sum(len(c) for c in clips), encode, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", help="an existing dataset (default: generate the tiny preset)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(args.data) if args.data else generate(load_config("tiny", None, ["data.workers=2"]),
                                                          tmp / "tiny", progress=False)
        store = EpisodeStore(data)
        cams = store.manifest["cameras"]
        (tmp / "raw").mkdir()
        frames, encode_s, decode_s = raw_video(store, tmp / "raw", 80)
        results = {"data": str(data), "episodes": len(store.episodes), "frames": frames,
                   "image_size": store.manifest["image_size"], "raw_encode_fps": frames / encode_s,
                   "raw_decode_fps": frames / decode_s}
        for version in ("v3.0", "v2.1"):
            start = time.perf_counter()
            export_lerobot(data, tmp / f"lr-{version}", version=version, progress=False)
            results[f"export_fps_{version}"] = frames / (time.perf_counter() - start)
            start = time.perf_counter()
            import_lerobot(tmp / f"lr-{version}", tmp / f"back-{version}", observer=cams["observer"][0],
                           cameras=cams["agent"], progress=False)
            results[f"import_fps_{version}"] = frames / (time.perf_counter() - start)
            results[f"export_ratio_{version}"] = results[f"export_fps_{version}"] / results["raw_encode_fps"]
            results[f"import_ratio_{version}"] = results[f"import_fps_{version}"] / results["raw_decode_fps"]
    table = [("raw encode", f"{results['raw_encode_fps']:.0f} frames/s", "PyAV, libx264 yuv444p crf 6, g=2"),
             ("raw decode", f"{results['raw_decode_fps']:.0f} frames/s", "PyAV, to RGB")]
    for version in ("v3.0", "v2.1"):
        table += [(f"export-lerobot {version}", f"{results[f'export_fps_{version}']:.0f} frames/s",
                   f"{results[f'export_ratio_{version}']:.2f} x raw encode"),
                  (f"import-lerobot {version}", f"{results[f'import_fps_{version}']:.0f} frames/s",
                   f"{results[f'import_ratio_{version}']:.2f} x raw decode")]
    table.append(("data", f"{results['frames']} frames", f"{results['episodes']} episodes, "
                                                          f"{results['image_size']}x{results['image_size']}, "
                                                          "every camera counted"))
    write_results("lerobot_conversion", results, table)


if __name__ == "__main__":
    main()
