"""Checkpoints: resumed only for the same configuration and data, never unpickled, and a run that
resumes ends bit-identical to one that was never interrupted."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ssae_core import train as train_mod
from ssae_core.synthetic import SynthConfig, make_synthetic
from ssae_core.train import TrainConfig, train
from tests.helpers import assert_identical, interrupt_after_epochs

PACKAGE = Path(__file__).resolve().parent.parent / "ssae_core"
BASE = {"latent_dim": 3, "seeds": (0, 1), "epochs": 4, "min_steps": 0, "patience": 0}


@pytest.fixture(scope="module")
def delta():
    table = make_synthetic(SynthConfig(num_concepts=3, max_changes=2, dim=12, num_pairs=800))
    return table.subset("train").delta


@pytest.mark.parametrize(
    "method, changed",
    [
        ("ssae", {}),
        ("aff", {}),
        ("ssae", {"lr": 1e-3}),
        ("ssae", {"latent_dim": 4}),
        ("ssae", {"dual_lr": 5e-4}),
    ],
    ids=["ssae-same", "aff-same", "other-lr", "other-latent-dim", "other-dual-lr"],
)
def test_resume_only_the_same_run_and_match_an_uninterrupted_one(
    delta, tmp_path, monkeypatch, capsys, method, changed
):
    first = TrainConfig(method=method, **BASE)
    second = TrainConfig(method=method, **{**BASE, **changed})
    reference = train(delta, second, progress=False)
    ckpt = tmp_path / "run.checkpoint"
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(delta, first, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    capsys.readouterr()
    resumed = train(delta, second, checkpoint=ckpt, progress=False)
    err = capsys.readouterr().err.strip()
    if changed:
        assert err == f"{ckpt}: checkpoint was written with other settings or data; starting fresh"
    else:
        assert err == ""
    assert_identical(resumed, reference)
    assert not ckpt.exists()


def test_other_data_starts_fresh(delta, tmp_path, monkeypatch, capsys):
    cfg = TrainConfig(**BASE)
    ckpt = tmp_path / "run.checkpoint"
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(delta, cfg, checkpoint=ckpt, progress=False)
    other = delta[::-1].copy()
    resumed = train(other, cfg, checkpoint=ckpt, progress=False)
    assert "other settings or data; starting fresh" in capsys.readouterr().err
    assert_identical(resumed, train(other, cfg, progress=False))


class Payload:
    """Unpickling this creates ``sentinel``: proof that a file was unpickled."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def _plain_pickle(path: Path, sentinel: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(sentinel)))


def _torch_save(path: Path, sentinel: Path) -> None:
    torch.save({"net": Payload(sentinel)}, path)  # the format of the old checkpoints


def _foreign_safetensors(path: Path, sentinel: Path) -> None:
    save_file({"x": torch.zeros(2)}, str(path), metadata={"note": pickle.dumps(0).hex()})


@pytest.mark.parametrize("plant", [_plain_pickle, _torch_save, _foreign_safetensors])
def test_a_planted_file_is_never_unpickled_nor_touched(delta, tmp_path, capsys, plant):
    sentinel, ckpt = tmp_path / "sentinel", tmp_path / "run.checkpoint"
    plant(ckpt, sentinel)
    planted = ckpt.read_bytes()
    cfg = TrainConfig(**BASE)
    result = train(delta, cfg, checkpoint=ckpt, progress=False)
    assert not sentinel.exists()
    assert ckpt.read_bytes() == planted  # not ours: neither replaced nor removed
    assert "not an ssae checkpoint; ignored" in capsys.readouterr().err
    assert_identical(result, train(delta, cfg, progress=False))


def test_the_package_never_unpickles():
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    found = [p.name for p, text in sources.items() if re.search(r"torch\.load\(|\bpickle\b", text)]
    assert found == []


def test_a_diverged_run_leaves_no_checkpoint(delta, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.checkpoint"
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(delta, TrainConfig(**BASE), checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    with pytest.raises(train_mod.InputError, match="training diverged in epoch 1"):
        train(delta, TrainConfig(**{**BASE, "lr": 1e10}), checkpoint=ckpt, progress=False)
    assert not ckpt.exists()
