"""Training on a device: an unavailable one fails in one line before any work; on CUDA (when
there is one) a run matches the CPU run of the same seeds within float tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssae_core.errors import InputError
from ssae_core.train import TrainConfig, train


def _shifts(num: int = 400, dim: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.uniform(-1, 1, (num, 3)) * (rng.random((num, 3)) < 0.5)
    return (codes @ rng.standard_normal((3, dim))).astype(np.float32)


def _config(device: str, method: str = "ssae") -> TrainConfig:
    return TrainConfig(
        method=method, latent_dim=3, seeds=(0, 1), sparsity=0.5, epochs=3, min_steps=0,
        batch_size=64, device=device,
    )  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_without_cuda_is_one_line(device: str) -> None:
    with pytest.raises(InputError, match="sees no CUDA device; use auto or cpu"):
        train(_shifts(), _config(device), progress=False)


def test_an_unknown_device_is_one_line() -> None:
    with pytest.raises(InputError, match="device 'gpu0': unknown"):
        train(_shifts(), _config("gpu0"), progress=False)


def test_auto_on_a_cpu_machine_is_the_cpu_run() -> None:
    if torch.cuda.is_available():
        pytest.skip("auto means CUDA here")
    a = train(_shifts(), _config("auto"), progress=False).models
    b = train(_shifts(), _config("cpu"), progress=False).models
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.net.W_dec_SMD, y.net.W_dec_SMD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["ssae", "aff"])
def test_cuda_matches_the_cpu_run(method: str) -> None:
    cpu = train(_shifts(), _config("cpu", method), progress=False)
    gpu = train(_shifts(), _config("cuda", method), progress=False)
    for x, y in zip(cpu.models, gpu.models, strict=True):
        assert x.net.W_dec_SMD.device.type == "cpu" == y.net.W_dec_SMD.device.type
        assert torch.allclose(x.net.W_dec_SMD, y.net.W_dec_SMD, atol=1e-3)
    assert [r["epoch"] for r in cpu.history] == [r["epoch"] for r in gpu.history]
