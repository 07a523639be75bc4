"""Headless OpenGL selection for MuJoCo: EGL where a GPU offers it, OSMesa otherwise.

Must run before `mujoco` is imported anywhere; the choice is put in the environment so that worker
processes inherit it without probing again.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import subprocess
import sys

from mirroralign.errors import UsageError

_EGL_PROBE = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"


def _egl_works() -> bool:
    if not (glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/dri/renderD*")):
        return False
    env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl")
    try:
        return subprocess.run([sys.executable, "-c", _EGL_PROBE], env=env, capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_gl_backend() -> str:
    backend = os.environ.get("MUJOCO_GL")
    if not backend:
        backend = "egl" if _egl_works() else "osmesa"
        os.environ["MUJOCO_GL"] = backend
    if backend == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        if ctypes.util.find_library("OSMesa") is None:
            raise UsageError("headless rendering needs OSMesa: run `apt-get install -y libosmesa6` (as root)")
    return backend
