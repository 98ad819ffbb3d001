"""Resource failures (a full disk, the file size limit, damaged model weights) end in one line that
names the path and the fix, exit status 2, no traceback and nothing partial on disk."""

from __future__ import annotations

import errno
import os
import resource
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ssae_core.errors import InputError
from ssae_core.io import atomic_file, resource_errno, write_parquet
from tests.helpers import snapshot, ssae, ssae_in_process

LIMIT = 64 * 1024  # bytes a process may write to one file (ulimit -f)


def ssae_limited(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``ssae ARGS`` in a new process that may write at most LIMIT bytes to any file."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    return ssae(shlex.join(args), cwd=cwd, preexec_fn=limit)


def assert_refused(done: subprocess.CompletedProcess, path: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert path in lines[-1] and "ulimit -f" in lines[-1], lines[-1]


def test_the_file_size_limit_is_one_line_naming_the_output(ws, capsys):
    # pyarrow writes the table
    before = snapshot(ws)
    done = ssae_limited(
        "synth", "big.parquet", "--concepts", "4", "--max-changes", "2", "--dim", "64", cwd=ws
    )
    assert_refused(done, "big.parquet")
    assert snapshot(ws) == before
    # safetensors writes the model: 128 x 200 weights of 4 bytes, twice, pass the limit
    code, _, err = ssae_in_process(
        capsys, "synth", "wide.parquet", "--concepts", "4", "--max-changes", "2", "--dim", "128"
    )
    assert code == 0, err
    before = snapshot(ws)
    done = ssae_limited(
        "train", "wide.parquet", "--out", "run-wide", "--latent-dim", "200", "--seeds", "0",
        "--epochs", "1", "--min-steps", "0", "--patience", "0", "--allow-inactive", cwd=ws,
    )  # fmt: skip
    assert_refused(done, "run-wide")
    assert snapshot(ws) == before


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        pa.ArrowIOError("Error writing bytes to file. Detail: [errno 28] No space left on device"),
        Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull, .. })"),
    ],
    ids=["python", "pyarrow", "safetensors"],
)
def test_a_full_disk_is_named_whoever_raised_it(tmp_path, error):
    assert resource_errno(error) == errno.ENOSPC
    with (
        pytest.raises(InputError, match=r"out.parquet: cannot write it .* the disk is full"),
        atomic_file(tmp_path / "out.parquet"),
    ):
        raise error
    assert list(tmp_path.iterdir()) == []
    assert resource_errno(ValueError("bad value 28")) is None


def test_truncated_model_weights_are_one_line(tiny_lm_dir, tmp_path):
    from ssae_core.lm import loading

    broken = tmp_path / "lm"
    broken.mkdir()
    for path in tiny_lm_dir.iterdir():
        data = path.read_bytes()
        (broken / path.name).write_bytes(
            data[: len(data) // 2] if path.suffix == ".safetensors" else data
        )
    source = loading.resolve_model(str(broken), verbose=False)
    with pytest.raises(InputError, match=r"damaged or truncated.*download or convert the model"):
        loading.load_model(source)


def test_writes_go_through_without_a_limit(tmp_path):
    write_parquet(pa.table({"a": [1, 2]}), tmp_path / "t.parquet")
    assert os.path.getsize(tmp_path / "t.parquet") > 0


def test_ssae_pairs_at_the_file_size_limit_is_one_line(tmp_path):
    rng = np.random.default_rng(0)  # random letters: the table does not compress below the limit
    words = ["".join(rng.choice(list("abcdefghij"), 80)) for _ in range(4000)]
    rows = ["post,reply"] + [f"{words[2 * i]},{words[2 * i + 1]}" for i in range(2000)]
    (tmp_path / "posts.csv").write_text("\n".join(rows) + "\n")
    done = ssae_limited(
        "pairs", "posts.csv", "--x", "post", "--x-tilde", "reply", "--out", "pairs.parquet",
        cwd=tmp_path,
    )  # fmt: skip
    assert_refused(done, "pairs.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.csv"]
