#!/bin/sh
# Prints how to run uv, installing it first when there is none (used by the Makefile):
#   1. `uv` on PATH;  2. the private copy in .venv-tools;  3. `python3 -m uv` (installed by pip earlier);
#   4. otherwise install it into .venv-tools, never system-wide, so it works on an externally managed
#      Python (PEP 668: Debian 12, Ubuntu 24.04 refuse `pip install`): a virtualenv of its own, or, where
#      `python3 -m venv` is missing (no python3-venv), `pip install --target` (PEP 668 does not cover it).
set -eu
PYTHON=${PYTHON:-python3}
TOOLS=${UV_TOOLS_DIR:-.venv-tools}

if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
if [ -x "$TOOLS/bin/uv" ]; then echo "$TOOLS/bin/uv"; exit 0; fi
if "$PYTHON" -m uv --version >/dev/null 2>&1; then echo "$PYTHON -m uv"; exit 0; fi

echo "kredit: uv not found; installing it into $TOOLS (private to this checkout, nothing system-wide) ..." >&2
if "$PYTHON" -m venv "$TOOLS" >/dev/null 2>&1 \
    && "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.5" >&2; then
    echo "$TOOLS/bin/uv"; exit 0
fi
rm -rf "$TOOLS"
if "$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$TOOLS/lib" "uv>=0.5" >&2; then
    mkdir -p "$TOOLS/bin"
    ln -sf ../lib/bin/uv "$TOOLS/bin/uv"
    echo "$TOOLS/bin/uv"; exit 0
fi
echo "kredit: could not install uv: install it yourself (e.g. apt-get install python3-venv, or pipx install uv) and run make again" >&2
exit 1
