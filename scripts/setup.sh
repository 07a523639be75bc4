#!/usr/bin/env bash
# Creates .venv and installs mirroralign with everything it needs, on a machine that has nothing installed.
# torch is installed first and pinned, so that no other package can pull a different (CUDA) build. The package
# itself admits torch >=2.6 and Python 3.11-3.13 (README: Into an existing environment); this .venv is 3.11 + 2.13.0 CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

# Headless rendering without a GPU needs OSMesa (EGL is used instead where a GPU offers it).
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing libosmesa6 (headless OpenGL for MuJoCo)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 >/dev/null
    else
        echo "setup: libOSMesa is missing; install it first with: sudo apt-get install -y libosmesa6" >&2
        exit 2
    fi
fi

"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "setup: Python 3.11 is required (found $("$PY" --version 2>&1))" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
touch "$VENV/.installed"
echo "setup: ready ($VENV)"
