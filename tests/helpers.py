"""Helpers for the tests that run `ssae` as a user does and check what it leaves on disk."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ssae_core.cli import main


def snapshot(folder: Path) -> dict[str, str]:
    """Every file, folder and link under ``folder`` (hidden ones included): relative path ->
    sha256 of its bytes ('<dir>' for a folder, 'link:TARGET' for a symbolic link)."""
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[key] = "<dir>"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def ssae(
    command_line: str, *, cwd: Path, timeout: float = 900, **run_options: Any
) -> subprocess.CompletedProcess:
    """Run ``ssae COMMAND_LINE`` (split as a POSIX shell would) in a new Python process, as a
    user runs it (``run_options``: more arguments of ``subprocess.run``, e.g. ``preexec_fn``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ssae_core.cli", *shlex.split(command_line)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **run_options,
    )


def ssae_in_process(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run `ssae ARGS...` in this process (fast); returns exit status, stdout, stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own errors and --help
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, message: str = "") -> None:
    """Exit status 2 and a single stderr line ``error: ...`` that contains ``message``."""
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], (message, lines[0])


FAST_TRAIN = ["--epochs", "1", "--min-steps", "0", "--patience", "0", "--quiet"]
FAST_TRAIN_LINE = " ".join(FAST_TRAIN)


def build_workspace(folder: Path) -> Path:
    """A user's folder: synthetic data (an `ssae synth` output), a trained run folder, codes, and
    files and folders of the user's own (which no command may touch)."""
    from ssae_core.runs import encode_table, train_run
    from ssae_core.synthetic import SynthConfig, write_synthetic
    from ssae_core.train import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    write_synthetic(SynthConfig(3, 2, dim=8, num_pairs=200, seed=0), folder / "data.parquet")
    write_synthetic(SynthConfig(3, 2, dim=8, num_pairs=20, seed=1), folder / "other.parquet")
    cfg = TrainConfig(latent_dim=3, seeds=(0,), epochs=1, min_steps=0, patience=0)
    train_run(folder / "data.parquet", folder / "run", cfg, require_active=False, progress=False)
    encode_table(folder / "run" / "seed-0", folder / "data.parquet", folder / "codes.parquet")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "mine").mkdir()
    (folder / "mine" / "paper.tex").write_text("\\section{Results}\n")
    return folder


def copy_workspace(template: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of ``template`` at ``dest``, made the current folder."""
    import shutil

    shutil.copytree(template, dest, symlinks=True)
    monkeypatch.chdir(dest)
    return dest


def assert_identical(a, b) -> None:
    """Two training results with bit-identical weights, final values and history length."""
    import torch

    for ma, mb in zip(a.models, b.models, strict=True):
        wb = mb.net.state_dict()
        for name, value in ma.net.state_dict().items():
            assert torch.equal(value, wb[name]), name
    assert [m.record for m in a.models] == [m.record for m in b.models]
    assert len(a.history) == len(b.history)


def interrupt_after_epochs(monkeypatch: pytest.MonkeyPatch, epochs: int) -> None:
    """Checkpoint after every epoch and raise KeyboardInterrupt in epoch ``epochs + 1`` (at its
    held-out evaluation)."""
    from ssae_core import train as train_mod

    real, count = train_mod._held_out_values, {"n": 0}

    def evaluate(*args):
        count["n"] += 1
        if count["n"] > epochs:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_mod, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(train_mod, "_held_out_values", evaluate)
