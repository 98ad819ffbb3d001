"""Where tensors live: the one reading of a ``device`` setting (``auto``, ``cpu``, ``cuda``,
``cuda:N``), shared by training, extraction and steering."""

from __future__ import annotations

import torch

from ssae_core.errors import InputError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is an InputError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r}: unknown; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: torch sees no CUDA device; use auto or cpu")
    return resolved
