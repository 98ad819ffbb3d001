#!/usr/bin/env bash
# GPU check for a lent CUDA machine (never run by CI): bf16 extraction of a pair set with a
# hub-sized model (random Llama-3.1-8B-shaped weights unless --model names one) and a stacked
# SSAE training run on CUDA; prints texts/s, tokens/s, the fraction of the GPU's bf16 peak, the
# agreement with float32 and with the CPU. Arguments go to benchmarks/gpu_check.py (--help).
#
#   bash benchmarks/gpu_check.sh                    # defaults: --shape 8b, 2048 texts
#   PYTHON=python3 bash benchmarks/gpu_check.sh     # a python whose torch has CUDA
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else
  "gpu_check: torch " + torch.__version__ + " sees no CUDA device; run it on a GPU machine")'
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
