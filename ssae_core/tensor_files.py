"""Safetensors files the tool writes (model weights of run folders, steering vectors): each carries
the SHA-256 of its tensors in its header metadata (CONTENT_KEY), and every read verifies it, so a
damaged file is refused instead of used. Files written before the hash existed, and files from
elsewhere, are read as they are. Written files follow the umask (safetensors itself writes 0600).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ssae_core.errors import InputError

CONTENT_KEY = "ssae.sha256"
"""Header metadata entry: :func:`tensor_digest` of the file's tensors when it was written."""


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def follow_umask(path: Path) -> None:
    """Give a file the mode the umask gives new files."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def save_tensors(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` and string ``metadata`` to ``path`` (a path the caller made atomic), with
    their content hash, in the mode the umask gives."""
    from safetensors.torch import save_file

    contiguous = {name: value.contiguous() for name, value in tensors.items()}
    record = {**(metadata or {}), CONTENT_KEY: tensor_digest(contiguous)}
    save_file(contiguous, str(path), metadata=record)
    follow_umask(path)


def load_tensors(path: Path, *, fix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata (without CONTENT_KEY) of a safetensors file, its content hash
    verified where it records one; an unreadable or damaged file is an :class:`InputError` naming
    it and ending in ``fix`` (what to do about it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable safetensors file ({reason}); {fix}") from None
    recorded = metadata.pop(CONTENT_KEY, None)
    if recorded is not None and recorded != tensor_digest(tensors):
        raise InputError(
            f"{path}: damaged (its tensors no longer match the content hash recorded when it was "
            f"written); {fix}"
        )
    return tensors, metadata
