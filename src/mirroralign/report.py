"""`mirroralign report`: one self-contained HTML file (figures and GIFs embedded) from evaluation and
analysis directories: recognition and success with confidence intervals, a confusion matrix, the probe and
metrics, the shared space in 2-D, success-vs-failure histograms, alignment over training, training curves and
rollout GIFs."""

from __future__ import annotations

import base64
import html
import io
import json
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import SafetensorError  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from mirroralign.stats import proportion_ci  # noqa: E402
from mirroralign.data.store import (  # noqa: E402
    EPISODES,
    load_episode_folder,
    read_json,
    require_writable,
    write_bytes_atomic,
)
from mirroralign.errors import DataError, UsageError  # noqa: E402

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.gifs img{width:160px;margin:4px;image-rendering:pixelated}.note{color:#666;font-size:90%}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _gif(frames: np.ndarray, fps: int = 15) -> str:
    buf = io.BytesIO()
    images = [Image.fromarray(f) for f in frames[:: max(1, len(frames) // 60)]]
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    return f'<img alt="rollout" src="data:image/gif;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(x):
        return f"{x:.3f}" if isinstance(x, float) else html.escape(str(x))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct_ci(outcomes) -> str:
    ci = proportion_ci(outcomes)
    return f"{100 * ci['mean']:.1f} % [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"


@contextmanager
def _reading(path: Path, what: str):
    """Valid JSON of the wrong shape (a field missing or of another type) is damaged input: name the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise DataError(f"{what} damaged: {path} (unexpected content: {type(err).__name__}: {err})") from None


def _representations(path: Path) -> dict:
    try:
        reps = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise DataError(f"representations damaged or missing: {path} ({err})") from None
    missing = {"shared_understanding", "shared_execution", "instruction_id"} - set(reps)
    if missing:
        raise DataError(f"representations damaged: {path} (no {', '.join(sorted(missing))})")
    return reps


def load_inputs(paths) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]]:
    evals, analyses = [], []
    for p in map(Path, paths):
        if (p / "metrics.json").is_file():
            evals.append((p, read_json(p / "metrics.json", "evaluation")))
        elif (p / "analysis.json").is_file():
            analyses.append((p, read_json(p / "analysis.json", "analysis")))
        else:
            raise UsageError(f"not an evaluation or analysis directory: {p}")
    if not evals and not analyses:
        raise UsageError("report needs at least one evaluation or analysis directory")
    return evals, analyses


def recognition_section(evals) -> str:
    rows, figs = [], []
    for path, m in evals:
        with _reading(path / "metrics.json", "evaluation"):
            for key in ("recognition", "recognition_early"):
                if key in m:
                    r = m[key]
                    correct = [p == label for p, label in zip(r["predictions"], r["labels"])]
                    per_task = "-" if r.get("per_task_top1") is None else \
                        f"{100 * r['per_task_top1']:.1f} % (chance {100 * r['chance_per_task']:.1f} %)"
                    rows.append([m["mode"], key.replace("recognition", "full clip").replace("full clip_early", "early"),
                                 r["view"], _pct_ci(correct), f"{100 * r['top5']:.1f} %", per_task, r["n"],
                                 str(path)])
            if "recognition" in m:
                r = m["recognition"]
                ids = r["variation_ids"]
                n = len(ids)
                confusion = np.zeros((n, n))
                for p, label in zip(r["predictions"], r["labels"]):
                    confusion[label, p] += 1
                fig, ax = plt.subplots(figsize=(5.5, 5))
                ax.imshow(confusion / np.maximum(confusion.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
                ax.set(xlabel="recognised", ylabel="true", title=f"confusion ({m['mode']}, view {r['view']})")
                if n <= 30:
                    ax.set_xticks(range(n), ids, rotation=90, fontsize=6)
                    ax.set_yticks(range(n), ids, fontsize=6)
                figs.append(_png(fig))
    if not rows:
        return ""
    return ("<h2>Action understanding: recognition</h2>"
            + "<p class='note'>Top-1 and top-5 among all the dataset's variations; per task: each clip classified "
              "among its own task's variations only, averaged over the tasks that have two or more.</p>"
            + _table(["mode", "clip", "view", "top-1 [95 % CI]", "top-5", "per-task top-1", "n", "evaluation"], rows)
            + "".join(figs))


def success_section(evals) -> str:
    rows, task_rows, gifs, told = [], [], [], []
    for path, m in evals:
        ro = m.get("rollouts")
        if not ro:
            continue
        with _reading(path / "metrics.json", "evaluation"):
            condition = m.get("condition", {}).get("kind", "text")  # evaluations made before conditioning: text
            shown = ro.get("shown_variation")
            rows.append([m["mode"], condition, _rate(ro), ro["n"],
                         "-" if not shown else f"{_rate(shown)} of {shown['n_scored']}", ro.get("worker_restarts", 0),
                         str(path)])
            task_rows += [[m["mode"], t, f"{100 * v['success_rate']:.0f} %", v["n"]]
                          for t, v in sorted(ro["per_task"].items())]
        for folder in sorted((path / "rollouts" / EPISODES).glob("*/rollout-*"))[:: 4][:6]:
            with _reading(folder, "rollout"):
                meta, arrays = load_episode_folder(folder)
                obs = next((k for k in arrays if k.startswith("observer.")), None)
                if obs is None:
                    raise KeyError("no observer.* array")
                label = f"{meta['variation_id']} ({'success' if meta['success'] else 'failure'})"
                gifs.append(f"<figure>{_gif(arrays[obs])}<figcaption>{html.escape(label)}</figcaption></figure>")
        told += shown_clips(path)
    if not rows:
        return ""
    return ("<h2>Embodied execution: success in simulation</h2>"
            + "<p class='note'>Condition: how the policy was told its task (text: the instruction; video: a "
              "demonstration clip of the variation from another scene; sibling: a clip of another variation of the "
              "same task; null: nothing). Shown variation done: how often a sibling-conditioned rollout completed "
              "the variation it was shown, among the rollouts the simulator can score.</p>"
            + _table(["mode", "condition", "success [95 % CI]", "episodes", "shown variation done",
                      "worker restarts", "evaluation"], rows)
            + "<details><summary>per task</summary>" + _table(["mode", "task", "success", "n"], task_rows)
            + "</details><h3>Rollouts (observer view)</h3><div class='gifs' style='display:flex;flex-wrap:wrap'>"
            + "".join(gifs) + "</div>"
            + ("" if not told else "<h3>Shown, then done: the conditioning clip beside the rollout</h3>"
               "<div class='gifs' style='display:flex;flex-wrap:wrap'>" + "".join(told) + "</div>"))


def _rate(entry: dict) -> str:
    if entry["success_rate"] is None:
        return "-"
    return f"{100 * entry['success_rate']:.1f} % [{100 * entry['ci95'][0]:.1f}, {100 * entry['ci95'][1]:.1f}]"


def shown_clips(path: Path, n: int = 3) -> list[str]:
    """Up to n rollouts of a video- or sibling-conditioned evaluation, each beside the clip it was shown."""
    out = []
    for folder in sorted((path / "rollouts" / EPISODES).glob("*/rollout-*")):
        if len(out) == n:
            break
        with _reading(folder, "rollout"):
            meta, arrays = load_episode_folder(folder)
            if "demo" not in meta:
                return out  # not told by a clip
            obs = next(k for k in arrays if k.startswith("observer."))
            demo = meta["demo"]
            shown = f"shown: {demo['variation_id']} ({demo['episode']}, {demo['view']})"
            done = f"did: {meta['variation_id']} ({'success' if meta['success'] else 'failure'})"
            out.append(f"<figure>{_gif(arrays['condition.clip'], fps=4)}<figcaption>{html.escape(shown)}"
                       f"</figcaption></figure><figure>{_gif(arrays[obs])}<figcaption>{html.escape(done)}"
                       f"</figcaption></figure>")
    return out


def analysis_section(analyses) -> str:
    if not analyses:
        return ""
    rows, control_rows, figs = [], [], []
    for path, a in analyses:
        with _reading(path / "analysis.json", "analysis"):
            p = a["probe"]
            init = a.get("at_init", {})  # analyses written before the controls existed lack them
            for key, name in (("probe", "by instruction"), ("probe_blind", "instruction-blind"),
                              ("probe_time", "time-aligned (episode and window)")):
                if key in a:
                    q, q0 = a[key], init.get(key, {})
                    control_rows.append([" + ".join(a["runs"]), name, q["r1_u2e"], q["r1_e2u"],
                                         q0.get("r1_u2e", "-"), q0.get("r1_e2u", "-"), q["chance"], q["n_test"]])
            rows.append([" + ".join(a["runs"]), p["r1_u2e"], p["r1_e2u"], p["chance"],
                         p.get("r1_episode_u2e", "-"), p.get("r1_episode_e2u", "-"), p.get("chance_episode", "-"),
                         a["mutual_knn"], a["cka"], a["unbiased_cka"], a["cknna"], a["k"], p["n_test"]])
            reps = _representations(path / "representations.safetensors")
            both = np.concatenate([reps["shared_understanding"], reps["shared_execution"]])
            centred = both - both.mean(0)
            xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
            n, labels = len(reps["shared_understanding"]), reps["instruction_id"]
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            ax.scatter(xy[:n, 0], xy[:n, 1], c=labels, cmap="tab20", marker="o", label="understanding (clip)")
            ax.scatter(xy[n:, 0], xy[n:, 1], c=labels, cmap="tab20", marker="x", label="execution (steps)")
            ax.set(title=f"probe's shared space, PCA ({' + '.join(a['runs'])})", xlabel="PC 1", ylabel="PC 2")
            ax.legend(fontsize=7)
            figs.append(_png(fig))
            if a.get("over_training"):
                ot = a["over_training"]
                fig, ax = plt.subplots(figsize=(5.5, 3.5))
                for key in ("r1_u2e", "r1_e2u", "mutual_knn"):
                    ax.plot([r["step"] for r in ot], [r[key] for r in ot], marker="o", label=key)
                ax.axhline(p["chance"], color="grey", ls="--", label="R@1 chance")
                ax.set(xlabel="training step", title="alignment over training", ylim=(0, 1.05))
                ax.legend(fontsize=7)
                figs.append(_png(fig))
            sv = a.get("success_vs_failure")
            if sv and (sv["success_scores"] or sv["failure_scores"]):
                fig, ax = plt.subplots(figsize=(5.5, 3.5))
                ax.hist([sv["success_scores"], sv["failure_scores"]], bins=15, label=["success", "failure"])
                p_value = "n/a" if sv["p_value"] is None else f"{sv['p_value']:.3g}"
                title = f"success vs failure: Mann-Whitney p = {p_value}"
                if (w := sv.get("within_variation")) and w["groups"]:  # older analyses lack it
                    w_p = "n/a" if w["p_value"] is None else f"{w['p_value']:.3g}"
                    title += (f"\nwithin a variation: {w['mean_difference']:+.3f}, higher on successes in "
                              f"{w['positive']} of {w['groups']} (Wilcoxon p = {w_p})")
                ax.set(xlabel="alignment score (cosine in the probe's space)", title=title)
                ax.title.set_fontsize(8)
                ax.legend()
                figs.append(_png(fig))
    return ("<h2>Alignment of the two representations</h2><p class='note'>Probe: both models frozen, two linear "
            "maps trained with InfoNCE on train episodes; Recall@1 on test episodes counts a retrieval correct when "
            "it has the same instruction, or, by episode, when it is the very episode.</p>"
            + _table(["runs", "R@1 u→e", "R@1 e→u", "chance", "by episode u→e", "by episode e→u", "chance",
                      "mutual k-NN", "CKA", "unbiased CKA", "CKNNA", "k", "n"], rows)
            + "<h3>Probes against their controls and against initialisation</h3><p class='note'>Instruction-blind: the "
              "policy is fed one fixed null instruction, so what it shares comes from vision and proprioception alone. "
              "Time-aligned: each agent step against the observer clip window around it, right only for the very "
              "episode and window. Step 0: the same probe on the untrained models.</p>"
            + _table(["runs", "probe", "R@1 u→e", "R@1 e→u", "step 0 u→e", "step 0 e→u", "chance", "n"],
                     control_rows) + "".join(figs))


def training_section(evals, analyses) -> str:
    runs = set()
    for path, m in evals:
        with _reading(path / "metrics.json", "evaluation"):
            runs.add(Path(m["run"]).resolve())  # one run named two ways is plotted once
    for path, a in analyses:
        with _reading(path / "analysis.json", "analysis"):
            runs |= {Path(r).resolve() for r in a["runs"].values()}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    plotted = False
    for run in sorted(runs):
        path = run / "metrics.jsonl"
        if path.is_file():
            with _reading(path, "training log"):
                lines = [x for x in path.read_text().splitlines() if x.strip()]
                rows = [json.loads(x) for x in lines[:-1]]
                try:
                    rows.append(json.loads(lines[-1]))
                except (IndexError, json.JSONDecodeError):
                    pass  # no line yet, or the last one cut by a kill or still being written: as `train` reads it
                for key in ("loss_au", "loss_ee", "loss_align"):
                    pts = [(r["step"], r[key]) for r in rows if key in r]
                    if pts:
                        ax.plot(*zip(*pts), label=f"{run.name}: {key}")
                        plotted = True
    if not plotted:
        plt.close(fig)
        return ""
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training curves")
    ax.legend(fontsize=7)
    return "<h2>Training</h2>" + _png(fig)


def report(inputs, out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UsageError(f"--out is a directory: {out}")
    if not out.parent.is_dir():
        raise UsageError(f"--out's folder does not exist: {out.parent}")
    require_writable(out)
    evals, analyses = load_inputs(inputs)
    body = (recognition_section(evals) + success_section(evals) + analysis_section(analyses)
            + training_section(evals, analyses))
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mirroralign report</title>"
            f"<style>{CSS}</style></head><body><h1>mirroralign report</h1><p class='note'>"
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · inputs: "
            f"{html.escape(', '.join(map(str, inputs)))}</p>{body}</body></html>")
    write_bytes_atomic(out, page.encode())
    return out
