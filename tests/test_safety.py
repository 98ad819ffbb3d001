"""--out never deletes or replaces what the tool did not write; outputs are replaced only once
complete; no staging folder outlives a crash for longer than the next run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssae_core import train as train_mod
from ssae_core.errors import InputError
from ssae_core.io import (
    OUTPUT_MARKER,
    STAGING_MARKER,
    STAGING_TAG,
    remove_stale_staging,
    resumable_output,
    safe_output,
    written_by,
)
from tests.helpers import (
    FAST_TRAIN,
    FAST_TRAIN_LINE,
    assert_one_line_error,
    snapshot,
    ssae,
    ssae_in_process,
)


def _foreign_command_folder(ws: Path) -> None:
    (ws / "emb").mkdir()
    (ws / "emb" / OUTPUT_MARKER).write_text(json.dumps({"command": "embed"}))
    (ws / "emb" / "shard-00000.parquet").write_bytes(b"pretend")


def _input_in_folder(ws: Path) -> None:
    (ws / "sub").mkdir()
    (ws / "sub" / "data.parquet").write_bytes((ws / "data.parquet").read_bytes())


def _home_here(ws: Path) -> None:
    (ws / "home").mkdir()
    (ws / "home" / ".bashrc").write_text("export X=1\n")
    os.environ["HOME"] = str(ws / "home")  # restored by monkeypatch in the test


def _symlink(ws: Path) -> None:
    (ws / "link").symlink_to(ws / "run")


REFUSED = [
    # (name, argv, message, setup)
    ("current folder", ["train", "data.parquet", "--out", "."], "current folder", None),
    ("parent folder", ["train", "data.parquet", "--out", ".."], "or one above", None),
    ("empty path", ["train", "data.parquet", "--out", ""], "--out ''", None),
    ("the input", ["train", "data.parquet", "--out", "data.parquet"], "is the input", None),
    ("holds the input", ["train", "sub/data.parquet", "--out", "sub"], "holds the input",
     _input_in_folder),
    ("home folder", ["train", "data.parquet", "--out", "home"], "home folder", _home_here),
    ("user's folder", ["train", "data.parquet", "--out", "mine"], "not written by `ssae train`",
     None),
    ("other command's folder", ["train", "data.parquet", "--out", "emb"],
     "output of `ssae embed`", _foreign_command_folder),
    ("file for a folder", ["train", "data.parquet", "--out", "notes.txt"], "is a file", None),
    ("below a file", ["train", "data.parquet", "--out", "notes.txt/run"], "is a file", None),
    ("unwritable", ["train", "data.parquet", "--out", "/sys/ssae-test-run"], "cannot", None),
    ("symbolic link", ["train", "data.parquet", "--out", "link"], "symbolic link", _symlink),
    ("encode: folder for a file", ["encode", "run/seed-0", "data.parquet", "--out", "mine"],
     "is a folder", None),
    ("encode: user's file", ["encode", "run/seed-0", "data.parquet", "--out", "notes.txt"],
     "not written by `ssae encode`", None),
    ("encode: the input", ["encode", "run/seed-0", "data.parquet", "--out", "data.parquet"],
     "is the input", None),
    ("encode: other command's file", ["encode", "run/seed-0", "data.parquet", "--out",
     "other.parquet"], "output of `ssae synth`", None),
    ("encode: into the model", ["encode", "run/seed-0", "data.parquet", "--out", "run"],
     "holds the input", None),
    ("synth: user's file", ["synth", "notes.txt", "--concepts", "2", "--max-changes", "1"],
     "not written by `ssae synth`", None),
    ("synth: a folder", ["synth", "mine", "--concepts", "2", "--max-changes", "1"],
     "is a folder", None),
    ("synth: a codes file", ["synth", "codes.parquet", "--concepts", "2", "--max-changes", "1"],
     "output of `ssae encode`", None),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, message, setup", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_refused_outputs_leave_everything_as_it_was(ws, capsys, monkeypatch, argv, message, setup):
    monkeypatch.setenv("HOME", os.environ.get("HOME", "/root"))
    if setup is not None:
        setup(ws)
    parent = snapshot(ws.parent)
    code, _, err = ssae_in_process(capsys, *argv, *(FAST_TRAIN if argv[0] == "train" else []))
    assert_one_line_error(code, err, message)
    assert snapshot(ws.parent) == parent


def test_train_out_dot_in_a_full_folder_keeps_every_file(ws, capsys):
    before = snapshot(ws)
    assert len(before) > 8
    code, _, err = ssae_in_process(capsys, "train", "data.parquet", "--out", ".", *FAST_TRAIN)
    assert_one_line_error(code, err, "--out .")
    assert snapshot(ws) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "data.parquet", "--out", "run", "--latent-dim", "2", "--seeds", "5"],
        ["encode", "run/seed-0", "other.parquet", "--out", "codes.parquet"],
        ["synth", "other.parquet", "--concepts", "2", "--max-changes", "1", "--dim", "4"],
    ],
    ids=["train", "encode", "synth"],
)
def test_an_earlier_output_of_the_same_command_is_replaced(ws, capsys, argv):
    out = ws / argv[argv.index("--out") + 1] if "--out" in argv else ws / argv[1]
    others = {k: v for k, v in snapshot(ws).items() if not k.startswith(out.name)}
    old = snapshot(out) if out.is_dir() else out.read_bytes()
    code, _, err = ssae_in_process(capsys, *argv, *(FAST_TRAIN if argv[0] == "train" else []))
    assert code == 0, err
    assert written_by(out) == argv[0]
    assert (snapshot(out) if out.is_dir() else out.read_bytes()) != old
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if not k.startswith(out.name)} == others
    assert not [name for name in after if STAGING_TAG in name]


def test_a_file_the_user_saved_in_an_earlier_run_folder_is_never_deleted(ws, capsys):
    """Replacing a run folder removes only what `ssae train` wrote there (its marker lists it):
    a file of the user's in it means refusal, naming the file."""
    (ws / "run" / "MY_NOTES.txt").write_text("seed 0 looks best\n")
    (ws / "run" / "seed-0" / "plot.png").write_bytes(b"png")
    before = snapshot(ws)
    argv = ["train", "data.parquet", "--out", "run", "--latent-dim", "2", "--seeds", "5"]
    code, _, err = ssae_in_process(capsys, *argv, *FAST_TRAIN)
    assert_one_line_error(code, err, "MY_NOTES.txt (and 1 more), which `ssae train` did not write")
    assert snapshot(ws) == before
    (ws / "run" / "MY_NOTES.txt").unlink()
    (ws / "run" / "seed-0" / "plot.png").unlink()
    code, _, err = ssae_in_process(capsys, *argv, *FAST_TRAIN)
    assert code == 0, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_a_folder_without_write_permission_is_refused(ws, capsys):
    (ws / "locked").mkdir()
    (ws / "locked").chmod(0o500)
    try:
        before = snapshot(ws)
        code, _, err = ssae_in_process(
            capsys, "train", "data.parquet", "--out", "locked/run", *FAST_TRAIN
        )
        assert_one_line_error(code, err, "cannot write in locked")
        assert snapshot(ws) == before
    finally:
        (ws / "locked").chmod(0o700)


def test_an_empty_folder_may_be_used(ws, capsys):
    (ws / "fresh").mkdir()
    code, _, err = ssae_in_process(capsys, "train", "data.parquet", "--out", "fresh", *FAST_TRAIN)
    assert code == 0, err
    assert written_by(ws / "fresh") == "train" and (ws / "fresh" / "seed-0").is_dir()


def test_an_interrupted_run_keeps_the_old_output(ws, capsys, monkeypatch):
    before = snapshot(ws)

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_evaluate", interrupt)
    code, _, err = ssae_in_process(capsys, "train", "data.parquet", "--out", "run", *FAST_TRAIN)
    assert code == 130 and "interrupted" in err
    assert snapshot(ws) == before


def test_a_failed_run_removes_the_folders_it_created(ws, capsys):
    before = snapshot(ws)
    code, _, err = ssae_in_process(
        capsys, "train", "data.parquet", "--out", "a/b/run", "--lr", "1e10", *FAST_TRAIN
    )
    assert_one_line_error(code, err, "diverged")
    assert snapshot(ws) == before


# --------------------------------------------------------------------------- crashes


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action, even where the test runner was started
    with SIGINT ignored (a background job of a non-interactive shell is), which Python would
    otherwise keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_long_training(ws: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ssae_core.cli", "train", "data.parquet", "--out", "run",
         "--epochs", "100000", "--min-steps", "0", "--patience", "0", "--settle-tol", "0",
         "--quiet"],
        cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _staging_folders(ws: Path) -> list[Path]:
    return [p for p in ws.iterdir() if p.name.startswith(f".run{STAGING_TAG}")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_staging_folder_outlives_a_crash_beyond_the_next_run(ws, sig):
    old_run = snapshot(ws / "run")
    process = _start_long_training(ws)
    deadline = time.monotonic() + 60
    while not _staging_folders(ws) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _staging_folders(ws), process.communicate()
    time.sleep(0.5)  # into the training loop
    process.send_signal(sig)
    _, err = process.communicate(timeout=300)
    assert process.returncode in (130, 128 + sig, -sig), err
    assert snapshot(ws / "run") == old_run  # the old output was never touched
    if sig == signal.SIGKILL:
        assert len(_staging_folders(ws)) == 1  # nothing could clean up ...
        result = ssae(f"train data.parquet --out run {FAST_TRAIN_LINE}", cwd=ws)
        assert result.returncode == 0, result.stderr  # ... until the next run of the same output
    assert _staging_folders(ws) == []


def _fake_staging(ws: Path, target: str, pid: int, marker: dict | None) -> Path:
    folder = ws / f".{target}{STAGING_TAG}{pid}-{os.urandom(4).hex()}"
    folder.mkdir()
    if marker is not None:
        (folder / STAGING_MARKER).write_text(json.dumps(marker))
    return folder


def test_only_stale_staging_folders_of_dead_runs_are_removed(ws):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = socket.gethostname()
    try:
        stale = _fake_staging(ws, "run", dead.pid, {"target": "run", "pid": dead.pid, "host": host})
        kept = [
            _fake_staging(ws, "run", live.pid, {"target": "run", "pid": live.pid, "host": host}),
            _fake_staging(ws, "run", dead.pid, None),  # no marker: not recognisably ours
            _fake_staging(ws, "run", 999_999_999, {"target": "other", "pid": 999_999_999,
                                                   "host": host}),
            _fake_staging(ws, "run", 999_999_998, {"target": "run", "pid": 999_999_998,
                                                   "host": "elsewhere"}),
        ]  # fmt: skip
        (ws / f".run{STAGING_TAG}999999997-0123abcd").write_text("a file, not a folder")
        (ws / f".runs{STAGING_TAG}{dead.pid}-0123abcd").mkdir()  # another target's name
        assert remove_stale_staging(ws / "run") == [stale]
        assert not stale.exists() and all(folder.exists() for folder in kept)
        assert (ws / f".run{STAGING_TAG}999999997-0123abcd").exists()
    finally:
        live.kill()
        live.wait()


def test_safe_output_requires_the_stamp_of_single_files(ws):
    with (
        pytest.raises(RuntimeError, match="stamp"),
        safe_output(ws / "x.bin", "encode", kind="file") as tmp,
    ):
        tmp.write_bytes(b"no stamp")
    assert not (ws / "x.bin").exists()


# --------------------------------------------------------------------------- resumable outputs


def test_a_resumable_output_keeps_its_pieces_and_cleans_up_a_failed_start(ws):
    with resumable_output(ws / "emb", "embed") as folder:
        (folder / "shard-00000.parquet").write_bytes(b"one")
    assert written_by(ws / "emb") == "embed"
    with resumable_output("emb", "embed") as folder:  # resumed: nothing replaced
        assert (folder / "shard-00000.parquet").read_bytes() == b"one"
    before = snapshot(ws)
    with pytest.raises(RuntimeError), resumable_output(ws / "new" / "emb", "embed"):
        raise RuntimeError("failed before the first piece")
    assert snapshot(ws) == before
    with pytest.raises(InputError, match="output of `ssae embed`"), resumable_output("emb", "x"):
        pass


def only_shards(folder: Path) -> bool:
    """What an extractor might accept as its own output from before the marker existed."""
    return all(p.name.startswith("shard-") or p.name == OUTPUT_MARKER for p in folder.iterdir())


def test_a_resumable_output_adopts_only_what_accept_recognises(ws):
    (ws / "old").mkdir()
    (ws / "old" / "shard-00000.parquet").write_bytes(b"from an older version")
    with pytest.raises(InputError, match="not written by"), resumable_output("old", "embed"):
        pass
    with resumable_output("old", "embed", accept=only_shards) as folder:
        assert (folder / "shard-00000.parquet").read_bytes() == b"from an older version"
    assert written_by(ws / "old") == "embed"
    with (
        pytest.raises(InputError, match="not written by"),
        resumable_output("mine", "embed", accept=only_shards),
    ):
        pass


def test_vector_exports_never_replace_a_file_the_tool_did_not_write(tmp_path):
    import torch

    from ssae_core.lm.steer import SteeringVector
    from ssae_core.lm.vector_files import load_steering_vectors, save_steering_vector

    vector = SteeringVector({1: torch.ones(4)}, {"method": "md"})
    table = tmp_path / "table.parquet"
    table.write_bytes(b"PAR1 not ours")
    with pytest.raises(InputError, match="not written by"):
        save_steering_vector(vector, table)
    assert table.read_bytes() == b"PAR1 not ours"
    ours = save_steering_vector(vector, tmp_path / "v.safetensors")
    save_steering_vector(vector * 2, ours)  # an earlier vector file of ours is replaced
    back = load_steering_vectors(ours)
    assert float(back.layer_activations[1][0]) == 2.0 and "ssae.output" not in back.metadata


def test_train_says_when_a_member_ends_off_its_budget(ws, capsys):
    """One epoch at a budget far below the data's L1: the run is written, and stderr says, one
    line per member, that it did not reach its budget."""
    argv = ["train", "data.parquet", "--out", "tight", "--latent-dim", "2", "--seeds", "0,1"]
    code, _, err = ssae_in_process(
        capsys, *argv, "--sparsity", "0.01", "--epochs", "1", "--min-steps", "0", "--patience", "0"
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2
    assert all("budget 0.01" in w and " is not converged " in w for w in warnings), warnings
