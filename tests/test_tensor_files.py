"""Safetensors files the tool writes (run folders' model weights, steering vectors, checkpoints)
record the SHA-256 of their tensors; every read verifies it, so bytes flipped in the tensor data
(the header intact, the values still finite) are refused in one line naming the file and the fix,
and nothing is written. Written files follow the umask."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ssae_core.errors import InputError
from ssae_core.lm import vector_files as vf
from ssae_core.lm.steer import SteeringVector
from ssae_core.synthetic import SynthConfig, make_synthetic
from ssae_core.tensor_files import CONTENT_KEY, load_tensors
from ssae_core.train import TrainConfig, train
from tests.helpers import assert_one_line_error, interrupt_after_epochs, snapshot, ssae_in_process


def flip_tensor_bytes(path: Path, count: int = 3) -> None:
    """XOR the lowest mantissa byte of ``count`` float32 values in the tensor data, past the
    header: the values change a little and stay finite."""
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    for k in range(count):
        raw[start + 4 * k] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_a_model_file_with_flipped_tensor_bytes_is_refused(ws, capsys):
    weights = ws / "run" / "seed-0" / "model.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(weights)).items()}
    flip_tensor_bytes(weights)
    damaged = load_file(str(weights))  # still a readable file of finite values ...
    assert all(torch.isfinite(t).all() for t in damaged.values())
    assert any(not torch.equal(tensors[k], damaged[k]) for k in tensors)
    before = snapshot(ws)
    for argv in (
        ["encode", "run/seed-0", "data.parquet", "--out", "new.parquet"],
        ["inspect", "run", "--pairs", "data.parquet", "--no-lm", "--quiet", "--out", "page"],
    ):
        code, _, err = ssae_in_process(capsys, *argv)  # ... but never used
        assert_one_line_error(code, err, f"{Path('run/seed-0/model.safetensors')}: damaged")
        assert "re-run ssae train" in err
        assert snapshot(ws) == before


def test_a_vector_file_with_flipped_tensor_bytes_is_refused(tmp_path, capsys):
    path = vf.save_steering_vector(
        SteeringVector({1: torch.linspace(1, 2, 16)}, {"method": "md"}), tmp_path / "v.safetensors"
    )
    assert CONTENT_KEY not in vf.load_steering_vectors(path).metadata
    flip_tensor_bytes(path)
    for argv in (["vector", "show", str(path)], ["steer", str(path), "--export", "x.safetensors"]):
        code, _, err = ssae_in_process(capsys, *argv)
        assert_one_line_error(code, err, f"{path}: damaged")
        assert "export it again (`ssae vector md` or `ssae steer --export`)" in err
    assert not Path("x.safetensors").exists()


def test_files_without_a_content_hash_are_read_as_they_are(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"1": torch.ones(4)}, str(path), metadata={"method": "md"})  # written elsewhere
    assert float(vf.load_steering_vectors(path).layer_activations[1].sum()) == 4.0
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk")
    with pytest.raises(InputError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_tensors(tmp_path / "junk.safetensors", fix="fix it")


def test_written_safetensors_files_follow_the_umask(ws, tmp_path, capsys):
    previous = os.umask(0o027)
    try:
        code, _, err = ssae_in_process(
            capsys, "train", "data.parquet", "--out", "umask-run", "--epochs", "1", "--quiet"
        )
        assert code == 0, err
        vector = vf.save_steering_vector(SteeringVector({1: torch.ones(4)}), tmp_path / "v.st")
    finally:
        os.umask(previous)
    for path in (ws / "umask-run" / "seed-0" / "model.safetensors", vector):
        assert path.stat().st_mode & 0o777 == 0o640, path


def test_a_damaged_checkpoint_is_not_resumed(tmp_path, monkeypatch, capsys):
    delta = make_synthetic(SynthConfig(3, 2, dim=8, num_pairs=300)).subset("train").delta
    cfg = TrainConfig(latent_dim=3, seeds=(0,), epochs=3, min_steps=0, patience=0)
    checkpoint = tmp_path / "run.checkpoint"
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(delta, cfg, checkpoint=checkpoint, progress=False)
    flip_tensor_bytes(checkpoint)
    capsys.readouterr()
    train(delta, cfg, checkpoint=checkpoint, progress=False)
    assert capsys.readouterr().err.strip() == (
        f"{checkpoint}: checkpoint is damaged (its tensors fail their content hash); starting fresh"
    )
