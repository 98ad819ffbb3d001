"""Every subcommand that writes (--out, a positional OUT, --export, --export-gguf) owns only what it
wrote: a file of the user's at the output path, or saved into an earlier output folder, is never
deleted or replaced; the command refuses in one line naming it. An earlier output of the same
command is replaced."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from ssae_core.io import STAGING_TAG
from tests.helpers import FAST_TRAIN, assert_one_line_error, build_workspace, snapshot
from tests.helpers import ssae_in_process as run

ENGLISH = ["the cat", "the dog", "the house", "the king", "the queen", "the table", "a man"]
FRENCH = ["le chat", "le chien", "la maison", "le roi", "la reine", "la table", "un homme"]


def commands(lm: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (argv with OUT for the output path, the earlier output of that command in the
    workspace, its kind)."""
    return {
        "pairs": (["pairs", "lang.csv", "--x", "x", "--x-tilde", "x_tilde", "--out", "OUT"],
                  "pairs.parquet", "file"),
        "embed": (["embed", "pairs.parquet", "--model", str(lm), "--layer", "1", "--quiet",
                   "--out", "OUT"], "emb", "folder"),
        "synth": (["synth", "OUT", "--concepts", "2", "--max-changes", "1", "--dim", "4"],
                  "other.parquet", "file"),
        "train": (["train", "data.parquet", *FAST_TRAIN, "--out", "OUT"], "run", "folder"),
        "encode": (["encode", "run/seed-0", "data.parquet", "--out", "OUT"], "codes.parquet",
                   "file"),
        "inspect": (["inspect", "run", "--pairs", "data.parquet", "--no-lm", "--quiet", "--out",
                     "OUT"], "inspect", "folder"),
        "vector md --out": (["vector", "md", "emb", "--split", "all", "--out", "OUT"],
                            "md.safetensors", "file"),
        "vector md --export-gguf": (["vector", "md", "emb", "--split", "all", "--out",
                                     "new.safetensors", "--export-gguf", "OUT"], "md.gguf",
                                    "file"),
        "steer --export": (["steer", "md.safetensors", "--alpha", "2", "--export", "OUT"],
                           "steered.safetensors", "file"),
        "steer --export-gguf": (["steer", "md.safetensors", "--alpha", "2", "--export-gguf",
                                 "OUT"], "steered.gguf", "file"),
    }  # fmt: skip


NAMES = list(commands(Path("lm")))


def argv_for(lm: Path, name: str, out: str) -> list[str]:
    argv, _, _ = commands(lm)[name]
    return [out if a == "OUT" else a for a in argv]


@pytest.fixture(scope="module")
def outputs_template(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    """A user's folder holding an earlier output of every command (and files of the user's)."""
    folder = build_workspace(tmp_path_factory.mktemp("outputs") / "ws")
    with (folder / "lang.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([("x", "x_tilde"), *zip(ENGLISH, FRENCH, strict=True)])
    earlier = {
        "pairs": [],
        "embed": [],
        "inspect": [],
        "vector md --out": ["--export-gguf", "md.gguf", "--model-hint", "llama"],
        "steer --export": ["--export-gguf", "steered.gguf", "--model-hint", "llama"],
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for name, extra in earlier.items():
            _, out, _ = commands(tiny_lm_dir)[name]
            code = _main([*argv_for(tiny_lm_dir, name, out), *extra])
            assert code == 0, name
    return folder


def _main(argv: list[str]) -> int:
    from ssae_core.cli import main

    return main(argv)


@pytest.fixture()
def outputs(outputs_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(outputs_template, tmp_path / "ws", symlinks=True)
    monkeypatch.chdir(tmp_path / "ws")
    return tmp_path / "ws"


@pytest.mark.parametrize("name", NAMES)
def test_a_file_or_folder_of_the_users_at_the_output_path_is_refused(
    name, outputs, tiny_lm_dir, capsys
):
    kind = commands(tiny_lm_dir)[name][2]
    mine = "mine" if kind == "folder" else "notes.txt"
    before = snapshot(outputs)
    code, _, err = run(capsys, *argv_for(tiny_lm_dir, name, mine))
    assert_one_line_error(code, err, mine)
    assert snapshot(outputs) == before


FOLDER_NAMES = [name for name in NAMES if commands(Path("lm"))[name][2] == "folder"]


@pytest.mark.parametrize("where", ["MY_NOTES.txt", ".my_notes", "deeper/MY_NOTES.txt"])
@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_a_file_the_user_saved_in_an_earlier_output_folder_is_never_deleted(
    name, where, outputs, tiny_lm_dir, capsys
):
    _, out, _ = commands(tiny_lm_dir)[name]
    saved = outputs / out / where
    saved.parent.mkdir(exist_ok=True)
    saved.write_text("mine\n")
    before = snapshot(outputs)
    code, _, err = run(capsys, *argv_for(tiny_lm_dir, name, out))
    if code == 0:  # a resumable output (embed) may add to the folder, never take away
        after = snapshot(outputs)
        assert {k: v for k, v in after.items() if k in before} == before
    else:
        assert_one_line_error(code, err, Path(where).parts[0])
        assert snapshot(outputs) == before


@pytest.mark.parametrize("name", NAMES)
def test_an_earlier_output_of_the_same_command_is_replaced(name, outputs, tiny_lm_dir, capsys):
    _, out, _ = commands(tiny_lm_dir)[name]
    others = {k: v for k, v in snapshot(outputs).items() if not k.startswith(out)}
    code, _, err = run(capsys, *argv_for(tiny_lm_dir, name, out))
    assert code == 0, err
    after = snapshot(outputs)
    assert not [k for k in after if STAGING_TAG in k]
    kept = {k: v for k, v in after.items() if k in others}
    assert kept == {k: v for k, v in others.items() if k != "new.safetensors"}


def test_embed_never_removes_a_layer_folder_holding_a_file_of_the_users(
    outputs, tiny_lm_dir, capsys
):
    """A rerun with fewer --layers removes the layer folders it no longer asks for, but not one
    that holds a file the user saved there (hidden or not)."""
    argv = ["embed", "pairs.parquet", "--model", str(tiny_lm_dir), "--quiet", "--out", "layered"]
    code, _, err = run(capsys, *argv, "--layers", "1,2")
    assert code == 0, err
    (outputs / "layered" / "layer-2" / ".my_notes").write_text("mine\n")
    before = snapshot(outputs)
    code, _, err = run(capsys, *argv, "--layers", "1")
    assert_one_line_error(code, err, ".my_notes")
    assert snapshot(outputs) == before
    (outputs / "layered" / "layer-2" / ".my_notes").unlink()
    code, _, err = run(capsys, *argv, "--layers", "1")
    assert code == 0, err
    assert not (outputs / "layered" / "layer-2").exists()


# --------------------------------------------------------------------------- all or nothing

LATE_FAILURES = {
    # name: (argv with OUT, what the one-line error says); each fails only after reading its
    # inputs, and leaves nothing behind
    "pairs": (["pairs", "lang.csv", "--x", "x", "--x-tilde", "nosuch", "--out", "OUT"], "nosuch"),
    "embed": (["embed", "pairs.parquet", "--model", "LM", "--layer", "9", "--quiet", "--out",
               "OUT"], "9"),
    "synth": (["synth", "OUT", "--concepts", "2", "--max-changes", "3"], "--max-changes"),
    "train": (["train", "data.parquet", *FAST_TRAIN, "--split", "nosuch", "--out", "OUT"],
              "nosuch"),
    "encode": (["encode", "run/seed-0", "pairs.parquet", "--out", "OUT"], "pairs.parquet"),
    "inspect": (["inspect", "run", "--pairs", "data.parquet", "--no-lm", "--sparsity", "0.5",
                 "--quiet", "--out", "OUT"], "0.5"),
    "vector md": (["vector", "md", "emb", "--split", "nosuch", "--out", "OUT"], "nosuch"),
    "steer --export": (["steer", "md.safetensors", "--lm", "LM", "--prompt", "the cat",
                        "--template", "chat", "--export", "OUT"], "no chat template"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LATE_FAILURES))
def test_a_command_that_fails_leaves_nothing_behind(name, outputs, tiny_lm_dir, capsys):
    argv, message = LATE_FAILURES[name]
    argv = [{"OUT": "new/out.x", "LM": str(tiny_lm_dir)}.get(a, a) for a in argv]
    before = snapshot(outputs)
    code, _, err = run(capsys, *argv)
    last = err.strip().splitlines()[-1]  # after the LM loader's progress, where one is loaded
    assert code == 2 and last.startswith("error: ") and message in last, err
    assert snapshot(outputs) == before


def test_vector_exports_are_written_all_or_nothing(outputs, capsys, monkeypatch):
    """The disk fills while the llama.cpp file is written: the safetensors file written just
    before it does not replace the earlier one either."""
    import errno

    from ssae_core.lm import vector_files

    def full_disk(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vector_files, "_write_gguf", full_disk)
    before = snapshot(outputs)
    argv = ["vector", "md", "emb", "--split", "train", "--out", "md.safetensors"]
    code, _, err = run(capsys, *argv, "--export-gguf", "md.gguf", "--model-hint", "llama")
    assert_one_line_error(code, err, "md.gguf: cannot write it (No space left on device)")
    assert snapshot(outputs) == before
