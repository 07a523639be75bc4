"""Installing into an existing environment keeps its torch: pip resolves mirroralign's real wheel (built here from
the source tree) against the torch already installed, offline, in a throwaway venv. Every other requirement is
stood in for by an empty wheel of a version it admits (the registry cannot be reached from a test; only the
metadata is under test), and so is torch: a CUDA build of 2.6 weighs gigabytes, and only its version matters."""

import json
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
TORCH_OFFERED = ("2.13.0", "2.14.1")  # what a resolver that ignored the installed torch would pick instead


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """An empty, installable wheel: a dist-info with METADATA, WHEEL and RECORD."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{dist}.dist-info/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def admitted_version(req: Requirement) -> str:
    """The lowest version the requirement names (or 1.0), checked against it."""
    bounds = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
    version = min(bounds, key=lambda v: tuple(int(x) for x in v.split("."))) if bounds else "1.0"
    assert req.specifier.contains(version), (req, version)
    return version


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """mirroralign's wheel from a copy of the source tree, and stand-ins for what it requires."""
    from importlib.metadata import PackageNotFoundError, version

    try:  # offline means no build isolation: the backend pyproject.toml names must be installed here
        backend = version("setuptools")
    except PackageNotFoundError:
        backend = "0"
    if not SpecifierSet(">=77").contains(backend):
        pytest.skip(f"building the wheel offline needs setuptools>=77 here (found {backend})")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [wheel] = out.glob("mirroralign-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
    for line in meta.get_all("Requires-Dist"):
        req = Requirement(line)
        if req.marker is None and req.name != "torch":  # the dev extra is not installed here
            fake_wheel(out, req.name, admitted_version(req))
    for offered in TORCH_OFFERED:
        fake_wheel(out, "torch", offered)
    return out


def interpreters() -> list:
    """This Python, and 3.12 (LeRobot's floor): skipped, visibly, where no python3.12 runs."""
    params = [pytest.param(sys.executable, id=f"python{sys.version_info[0]}.{sys.version_info[1]}")]
    if sys.version_info[:2] != (3, 12):
        pyenv = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
        check = "import sys; assert sys.version_info[:2] == (3, 12)"
        runs = [exe for exe in [shutil.which("python3.12"), *map(str, pyenv)]  # a pyenv shim may not run
                if exe and subprocess.run([exe, "-c", check], capture_output=True, timeout=60).returncode == 0]
        params.append(pytest.param(runs[0] if runs else None, id="python3.12",
                                   marks=() if runs else pytest.mark.skip(reason="no python3.12 here")))
    return params


def dry_run(tmp_path: Path, python: str, wheels: Path, installed_torch: str) -> subprocess.CompletedProcess:
    """`pip install mirroralign` (dry run, offline) into a venv of `python` that already has torch at
    `installed_torch`; pip's own report tells what it would install."""
    env = tmp_path / "env"
    subprocess.run([python, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    pip = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python")]
    subprocess.run([*pip, "install", "-q", "--no-index", "--no-deps",
                    str(fake_wheel(tmp_path, "torch", installed_torch))], check=True, timeout=300)
    return subprocess.run([*pip, "install", "--dry-run", "--no-index", "--find-links", str(wheels), "--report",
                           str(tmp_path / "report.json"), "mirroralign"], capture_output=True, text=True, timeout=300)


def to_install(tmp_path: Path) -> dict[str, str]:
    report = json.loads((tmp_path / "report.json").read_text())
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]}


@pytest.mark.parametrize("python", interpreters())
@pytest.mark.parametrize("torch_version", ["2.6.0", "2.12.1", "2.13.0"])
def test_pip_keeps_the_installed_torch(tmp_path, wheels, python, torch_version):
    r = dry_run(tmp_path, python, wheels, torch_version)
    assert r.returncode == 0, r.stderr
    planned = to_install(tmp_path)
    assert "mirroralign" in planned and "sentence-transformers" in planned
    assert "torch" not in planned  # the researcher's build stays


def test_a_torch_older_than_the_code_needs_is_replaced(tmp_path, wheels):
    """The floor is real: 2.5 lacks what the pinned text encoder stack (transformers 5) needs."""
    r = dry_run(tmp_path, sys.executable, wheels, "2.5.1")
    assert r.returncode == 0, r.stderr
    assert to_install(tmp_path).get("torch") == max(TORCH_OFFERED)
