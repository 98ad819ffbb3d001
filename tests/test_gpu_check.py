"""benchmarks/gpu_check.py runs end to end (on the CPU here: the numbers are the GPU's only on a
GPU machine), with a random shape and with a model folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import gpu_check

SMALL = [
    "--device", "cpu", "--texts", "12", "--layers", "1,final", "--batch-size", "4",
    "--agreement-texts", "6", "--matmul-size", "64", "--train-pairs", "256",
    "--latent-dim", "3", "--seeds", "2", "--train-batch", "32", "--train-steps", "12",
    "--agreement-steps", "4", "--pairs", "missing.parquet",
]  # fmt: skip


@pytest.mark.parametrize("which", ["shape", "model"])
def test_gpu_check_smoke_run(which: str, tiny_lm_dir: Path, tmp_path: Path) -> None:
    model = ["--shape", "tiny", "--tokenizer", str(tiny_lm_dir)]
    if which == "model":
        model = ["--model", str(tiny_lm_dir)]
    out = tmp_path / "check.json"
    result = gpu_check.main([*SMALL, *model, "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["texts"] == 12 and result["tokens"] > 12
    assert result["layers"] == ["1", "final"]
    assert result["texts_per_s"] > 0 and result["tokens_per_s"] > result["texts_per_s"]
    assert result["fraction_of_measured_peak"] > 0
    assert result["fraction_of_nominal_bf16_peak"] is None  # no data sheet for a CPU
    for layer in ("1", "final"):  # bf16 vs float32 of the same weights: close, not equal
        assert 0.9 < result["bf16_vs_fp32_min_cosine"][layer] < 1.0 + 1e-6
    assert result["train_steps"] >= 12 and result["train_pairs_per_s"] > 0
    # device and CPU are both the CPU here: the same shuffles and weights give the same model
    assert result["cpu_vs_device_max_abs_decoder"] == 0.0


def test_planted_shifts_are_sparse_in_the_planted_basis() -> None:
    delta = gpu_check.planted_shifts(50, 8, 4)
    assert delta.shape == (50, 8) and delta.dtype.name == "float32"
    assert (abs(delta).sum(1) > 0).all()
