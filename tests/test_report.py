import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from conftest import run_cli

from mirroralign.data.store import write_episode

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(page) -> tuple[int, list[str], bool]:
    """Open `page` in headless Chromium; returns (exit code, console messages, screenshot written)."""
    with tempfile.TemporaryDirectory() as profile:
        shot = f"{profile}/shot.png"
        r = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                            "--window-size=1100,3000", f"--screenshot={shot}", f"file://{page}"],
                           capture_output=True, text=True, timeout=120)
        console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
        return r.returncode, console, os.path.getsize(shot) > 10_000 if os.path.exists(shot) else False


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "tiny"
    r = run_cli("demo", "--preset", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    assert str(out / "report.html") in r.stdout
    return out


def test_demo_report_has_every_section(demo):
    page = (demo / "report.html").read_text()
    for heading in ("recognition", "success in simulation", "Alignment of the two representations", "Training"):
        assert heading in page
    assert len(re.findall(r"data:image/png;base64,", page)) >= 6  # confusion x2, embedding x2, curves...
    assert "data:image/gif;base64," in page
    assert "understand + execute" in page or "execute + understand" in page  # the independent pair


def test_demo_reuses_what_it_made(demo):
    checkpoint = demo / "runs" / "mirror" / "checkpoints" / "latest.json"
    metrics = demo / "eval" / "mirror" / "metrics.json"
    before = (checkpoint.read_text(), metrics.read_text())
    r = run_cli("demo", "--preset", "tiny", "--out", demo)
    assert r.returncode == 0, r.stderr
    assert (checkpoint.read_text(), metrics.read_text()) == before


def test_demo_evaluates_again_an_evaluation_of_another_checkpoint(demo):
    # e.g. one left from before its run trained further: the rollouts, and the analysis that scored them, are redone
    metrics = demo / "eval" / "execute" / "metrics.json"
    analysis = demo / "analysis" / "independent" / "analysis.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "checkpoint_sha256": "0" * 64}))
    analysis.write_text("{}")  # kept, the report would refuse it
    r = run_cli("demo", "--preset", "tiny", "--out", demo)
    assert r.returncode == 0, r.stderr
    latest = json.loads((demo / "runs" / "execute" / "checkpoints" / "latest.json").read_text())
    assert json.loads(metrics.read_text())["checkpoint_sha256"] == latest["sha256"]
    assert "success_vs_failure" in json.loads(analysis.read_text())


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (`apt-get install chromium`; .ci/run installs it)")
def test_report_renders_in_chromium_without_console_errors(demo, tmp_path):
    broken = tmp_path / "broken.html"  # the check itself must see errors when there are some
    broken.write_text("<html><body><script>console.error('x'); missing();</script></body></html>")
    assert render(broken)[1]
    code, console, shot = render(demo / "report.html")
    assert code == 0 and console == [] and shot


def test_report_rejects_bad_inputs(tmp_path):
    r = run_cli("report", "--inputs", tmp_path, "--out", tmp_path / "r.html")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


RECOGNITION = {"predictions": [0, 1], "labels": [0, 1], "view": "corner", "top5": 1.0, "n": 2,
               "variation_ids": ["a", "b"]}


@pytest.mark.parametrize("kind,content,damaged", [
    ("metrics.json", {"run": 1}, "metrics.json"),  # valid JSON, wrong type
    ("metrics.json", {"run": "r", "recognition": RECOGNITION}, "metrics.json"),  # no mode
    ("metrics.json", {"run": "r", "mode": "understand",  # a label outside the variations
                      "recognition": {**RECOGNITION, "labels": [0, 7]}}, "metrics.json"),
    ("metrics.json", {"run": "r", "mode": "execute", "rollouts": {"success_rate": 0.5}}, "metrics.json"),
    ("analysis.json", {"runs": {"mirror": "r"}, "probe": {"r1_u2e": 1.0}}, "analysis.json"),
    ("metrics.json", {"run": "RUN", "mode": "execute"}, "metrics.jsonl"),  # a line inside the training log is cut
])
def test_report_names_an_input_of_the_wrong_shape(kind, content, damaged, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss_ee": 0.5}\n{"step": 2, "loss_\n{"step": 3, "loss_ee": 0.4}\n')
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / kind).write_text(json.dumps(content).replace('"RUN"', json.dumps(str(run))))
    r = run_cli("report", "--inputs", inputs, "--out", tmp_path / "r.html")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("mirroralign: data error:") and damaged in r.stderr, r.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_reads_a_training_log_whose_last_line_is_cut(tmp_path):
    # a run killed mid-write, or still writing: the last line is partial, as `train` itself expects
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss_ee": 0.5}\n{"step": 2, "loss_ee": 0.4}\n{"step": 3, "lo')
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "metrics.json").write_text(json.dumps({"run": str(run), "mode": "execute"}))
    r = run_cli("report", "--inputs", inputs, "--out", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    assert "<h2>Training</h2>" in (tmp_path / "r.html").read_text()


def test_report_names_the_rollout_whose_meta_is_incomplete(tmp_path):
    inputs = tmp_path / "inputs"
    rollouts = {"success_rate": 1.0, "ci95": [0.2, 1.0], "n": 1, "per_task": {"reach": {"success_rate": 1.0, "n": 1}}}
    write_episode(inputs / "rollouts", "reach/rollout-0000", {"observer.corner": np.zeros((3, 8, 8, 3), np.uint8)},
                  {"success": True})  # a real, checksummed folder whose meta lacks the variation
    (inputs / "metrics.json").write_text(json.dumps({"run": "r", "mode": "execute", "rollouts": rollouts}))
    r = run_cli("report", "--inputs", inputs, "--out", tmp_path / "r.html")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "rollout damaged:" in r.stderr and "rollout-0000" in r.stderr and "variation_id" in r.stderr
