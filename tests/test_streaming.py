"""Out-of-core training: shifts streamed from the shards of an embedding table train models as
good as the in-memory path's (the batch order differs, so closeness of the learnt decoders and
MCC, not equality, is the test), with held-out pairs chosen by pair id, statistics equal to the
in-memory fit, checkpoints that resume bit-identically, and the same one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ssae_core import train as train_mod
from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, block_rows, write_parquet
from ssae_core.metrics import mcc
from ssae_core.model import Normalizer
from ssae_core.runs import choose_loading, train_run, training_data
from ssae_core.streaming import (
    Reversal,
    ShardSource,
    buffer_rows,
    buffer_sizes,
    held_out,
    pair_uniforms,
)
from ssae_core.synthetic import SynthConfig, make_synthetic
from ssae_core.train import TrainConfig, batch_count, train
from tests.helpers import (
    FAST_TRAIN,
    assert_identical,
    assert_one_line_error,
    interrupt_after_epochs,
    snapshot,
    ssae_in_process,
)


@pytest.fixture(scope="module")
def synth() -> EmbeddingTable:
    return make_synthetic(SynthConfig(num_concepts=3, max_changes=2, dim=16, num_pairs=6000))


def write_shards(table: EmbeddingTable, folder: Path, rows: int, order=None) -> Path:
    """``table`` (its rows in ``order``) as shards of ``rows`` rows."""
    folder.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(table)) if order is None else order
    for k, start in enumerate(range(0, len(table), rows)):
        mask = np.zeros(len(table), dtype=bool)
        mask[order[start : start + rows]] = True
        part = table.select(mask)
        write_parquet(part.to_arrow(), folder / f"shard-{k:05d}.parquet")
    return folder


@pytest.fixture(scope="module")
def shards(synth, tmp_path_factory) -> Path:
    return write_shards(synth, tmp_path_factory.mktemp("emb") / "synth", 700)


def prepared(folder: Path, normalize: str = "global", *, buffer_mb: float = 0.05, **options):
    rows = buffer_rows(buffer_mb, 16, 64)
    return ShardSource.open(folder, **options).prepare(normalize, 0.1, rows, 64)


def test_pair_hash_is_uniform_and_fixed():
    u = pair_uniforms(np.arange(200_000), seed=7)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs((u < 0.1).mean() - 0.1) < 0.005
    np.testing.assert_array_equal(u[[5, 17]], pair_uniforms(np.array([5, 17]), seed=7))
    assert not np.array_equal(u[:100], pair_uniforms(np.arange(100), seed=8))


def test_holdout_depends_on_pair_ids_not_on_shard_order(synth, shards, tmp_path):
    order = np.random.default_rng(1).permutation(len(synth))
    other = write_shards(synth, tmp_path / "shuffled", 450, order)
    a, b = prepared(shards), prepared(other)
    assert a.num_train == b.num_train
    rows = lambda x: x[np.lexsort(x.numpy().T)]  # noqa: E731
    torch.testing.assert_close(rows(a.x_val), rows(b.x_val), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.normalizer.mean, b.normalizer.mean, rtol=1e-5, atol=1e-7)
    assert a.normalizer.scale == pytest.approx(b.normalizer.scale, rel=1e-12)


@pytest.mark.parametrize("normalize", ["global", "layer", "none"])
def test_streamed_statistics_equal_the_in_memory_fit(synth, shards, normalize):
    stream = prepared(shards, normalize)
    train_rows = synth.subset("train")
    held = held_out(train_rows.pair_id, stream.holdout_fraction)
    delta = train_rows.delta[~held]
    fitted = Normalizer.fit(delta, normalize)
    np.testing.assert_allclose(stream.normalizer.mean, fitted.mean, rtol=1e-6, atol=1e-7)
    assert stream.normalizer.scale == pytest.approx(fitted.scale, rel=1e-9)
    x, _ = fitted(torch.from_numpy(delta))
    assert stream.x_rms == pytest.approx(float(x.pow(2).sum(-1).mean().sqrt()), rel=1e-5)
    assert stream.num_train == len(delta)
    assert len(stream.x_val) == int(held.sum())


@pytest.mark.parametrize("num", [4, 63, 64, 65, 95, 96, 97, 200, 1000, 1023])
@pytest.mark.parametrize("batch", [2, 7, 64])
def test_batch_count_is_what_the_batcher_gives(num, batch):
    given = sum(1 for _ in train_mod._epoch_batches([torch.Generator()], num, batch))
    assert batch_count(num, batch) == given


@pytest.mark.parametrize("num", [10, 191, 192, 250, 300, 2000, 2047])
def test_buffer_sizes_cover_the_rows_in_whole_batches(num):
    sizes = buffer_sizes(num, 192, 64)
    assert sum(sizes) == num
    assert all(size % 64 == 0 for size in sizes[:-1])
    assert all(size <= 192 + 64 for size in sizes)
    assert len(sizes) == 1 or sizes[-1] >= 64


def test_an_epoch_reads_every_training_row_once_in_a_seeded_order(synth, shards):
    stream = prepared(shards, "none", buffer_mb=0.03)  # buffers of 448 rows: many, and blocks
    sizes = stream.buffer_sizes()  # straddle them
    assert len(sizes) > 5
    first = [b.clone() for b in stream.buffers(0)]
    assert [len(b) for b in first] == sizes
    rows = synth.subset("train")
    expected = rows.delta[~held_out(rows.pair_id, stream.holdout_fraction)]
    got = torch.cat(first).numpy()
    key = lambda x: x[np.lexsort(x.T)]  # noqa: E731
    np.testing.assert_array_equal(key(got), key(expected))
    again = torch.cat(list(stream.buffers(0))).numpy()
    np.testing.assert_array_equal(again, got)
    assert not np.array_equal(torch.cat(list(stream.buffers(1))).numpy(), got)


def _matched_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    cos = np.abs(a @ b.T)
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols]


TRAIN = {"latent_dim": 3, "seeds": (0, 1), "min_steps": 1500, "patience": 0, "batch_size": 128}


def test_streaming_learns_what_the_in_memory_path_learns(synth, shards):
    test = synth.subset("test")
    memory = train(synth.subset("train").delta, TrainConfig(**TRAIN), progress=False)
    source = ShardSource.open(shards)
    streamed = train(source, TrainConfig(**TRAIN, buffer_mb=0.2), progress=False)  # 2 buffers
    for a, b in zip(memory.models, streamed.models, strict=True):
        assert mcc(a.encode(test.delta), test.shift) > 0.99
        assert mcc(b.encode(test.delta), test.shift) > 0.99
        assert _matched_cosines(a.steering_vectors, b.steering_vectors).min() > 0.995
        assert b.record.multiplier > 0
        assert abs(b.record.num_train_shifts - a.record.num_train_shifts) < 100


def test_streamed_stacked_members_equal_separate_runs(shards):
    cfg = TrainConfig(latent_dim=3, seeds=(0, 1), epochs=2, min_steps=0, patience=0,
                      batch_size=64, buffer_mb=0.1)  # fmt: skip
    stacked = train(ShardSource.open(shards), cfg, progress=False)
    alone = train(ShardSource.open(shards), TrainConfig(**{**cfg.__dict__, "seeds": (1,)}),
                  progress=False)  # fmt: skip
    for name, value in alone.models[0].net.state_dict().items():
        torch.testing.assert_close(
            stacked.models[1].net.state_dict()[name], value, atol=2e-5, rtol=1e-4
        )


def test_an_interrupted_stream_resumes_bit_identically(shards, tmp_path, monkeypatch, capsys):
    cfg = TrainConfig(latent_dim=3, seeds=(0, 1), epochs=4, min_steps=0, patience=0,
                      batch_size=64, buffer_mb=0.1)  # fmt: skip
    reference = train(ShardSource.open(shards), cfg, progress=False)
    ckpt = tmp_path / "run.checkpoint"
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            train(ShardSource.open(shards), cfg, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    capsys.readouterr()
    resumed = train(ShardSource.open(shards), cfg, checkpoint=ckpt, progress=False)
    assert capsys.readouterr().err == ""
    assert_identical(resumed, reference)
    assert not ckpt.exists()
    # the same run on other data (one pair read backwards) does not resume
    with monkeypatch.context() as patch:
        interrupt_after_epochs(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train(ShardSource.open(shards), cfg, checkpoint=ckpt, progress=False)
    other = ShardSource.open(shards, reverse=Reversal(0.001, 0))
    train(other, cfg, checkpoint=ckpt, progress=False)
    assert "other settings or data; starting fresh" in capsys.readouterr().err


def test_reversed_pairs_are_those_reoriented_reverses(synth, shards):
    reverse = Reversal(0.5, 3)
    source = ShardSource.open(shards, reverse=reverse)
    flipped = synth.reoriented(reverse.fraction, reverse.seed).subset("train")
    by_id = dict(zip(flipped.pair_id.tolist(), flipped.delta, strict=True))
    for block in source.blocks[:3]:
        pair_id, delta = source.selected(next(block_rows(block)))
        np.testing.assert_array_equal(delta, np.stack([by_id[int(i)] for i in pair_id]))
    assert source.metadata["reversed_fraction"] == "0.5"


def test_train_run_streams_when_asked_or_when_over_the_budget(synth, shards, tmp_path):
    cfg = TrainConfig(latent_dim=3, seeds=(0,), epochs=1, min_steps=0, patience=0)
    assert choose_loading(shards, cfg) == "memory"
    assert choose_loading(shards, TrainConfig(memory_budget=0.0)) == "stream"
    assert choose_loading(tmp_path / "missing", TrainConfig(memory_budget=0.0)) == "memory"
    train_run(shards, tmp_path / "auto", TrainConfig(**{**cfg.__dict__, "memory_budget": 0.0}),
              require_active=False, progress=False)  # fmt: skip
    config = json.loads((tmp_path / "auto" / "seed-0" / "config.json").read_text())
    assert config["provenance"]["loading"] == "stream"
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["config"]["loading"] == "auto"
    train_run(shards, tmp_path / "mem", cfg, require_active=False, progress=False)
    config = json.loads((tmp_path / "mem" / "seed-0" / "config.json").read_text())
    assert "loading" not in config["provenance"]
    with pytest.raises(InputError, match="loading=stream reads an embedding table from disk"):
        training_data(synth, TrainConfig(loading="stream"))


def test_ssae_train_streams_from_the_command_line(shards, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = ssae_in_process(
        capsys, "train", shards, "--out", out, "--loading", "stream", "--latent-dim", "3",
        "--seeds", "0,1", "--buffer-mb", "0.1", "--allow-inactive", *FAST_TRAIN,
    )  # fmt: skip
    assert code == 0, err
    assert "wrote 2 model(s)" in stdout
    assert json.loads((out / "seed-1" / "config.json").read_text())["provenance"]["loading"] == (
        "stream"
    )


# --------------------------------------------------------------------------- bad input


def _nan_in_a_shard(folder: Path) -> None:
    table = pq.read_table(folder / "shard-00002.parquet").to_pydict()
    table["z_tilde"][5] = [float("nan")] * 16
    pq.write_table(pq.read_table(folder / "shard-00002.parquet").from_pydict(table),
                   folder / "shard-00002.parquet")  # fmt: skip


def _narrow_shard(folder: Path) -> None:
    table = pq.read_table(folder / "shard-00001.parquet").to_pydict()
    table["z"] = [row[:8] for row in table["z"]]
    table["z_tilde"] = [row[:8] for row in table["z_tilde"]]
    pq.write_table(pq.read_table(folder / "shard-00001.parquet").from_pydict(table),
                   folder / "shard-00001.parquet")  # fmt: skip


def _flat_shift(folder: Path) -> None:
    table = pq.read_table(folder / "shard-00003.parquet").to_pydict()
    table["z_tilde"][0] = table["z"][0]
    pq.write_table(pq.read_table(folder / "shard-00003.parquet").from_pydict(table),
                   folder / "shard-00003.parquet")  # fmt: skip


BAD_STREAMS = {
    "nan": (_nan_in_a_shard, [], "shard-00002.parquet: column z_tilde has NaN or inf in 1 row"),
    "width": (_narrow_shard, [], "shards differ: column z has width 8 in shard-00001.parquet"),
    "split": (None, ["--split", "validation"], "no rows with split 'validation' (splits present"),
    "layer-flat": (_flat_shift, ["--normalize", "layer"], "which --normalize layer cannot scale"),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_streamed_input_is_one_line_and_writes_nothing(synth, tmp_path, capsys, case):
    spoil, options, message = BAD_STREAMS[case]
    folder = write_shards(synth, tmp_path / "emb", 700)
    if spoil:
        spoil(folder)
    before = snapshot(tmp_path)
    code, _, err = ssae_in_process(
        capsys, "train", folder, "--out", tmp_path / "run", "--loading", "stream",
        "--latent-dim", "3", *options, *FAST_TRAIN,
    )  # fmt: skip
    assert_one_line_error(code, err, message)
    assert snapshot(tmp_path) == before


VMHWM = """
with open("/proc/self/status") as status:  # VmHWM: this program's own peak (ru_maxrss would
    print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")))
"""  # also count what pytest held when it forked this process)
TRAIN_SCRIPT = """
import sys
from ssae_core.runs import train_run
from ssae_core.streaming import ShardSource
from ssae_core.train import TrainConfig
path, out, train = sys.argv[1], sys.argv[2], sys.argv[3] == "train"
if train:
    cfg = TrainConfig(latent_dim=3, seeds=(0,), epochs=1, min_steps=0, patience=0,
                      batch_size=256, loading="stream", buffer_mb=4.0)
    train_run(path, out, cfg, require_active=False, progress=False)
else:
    ShardSource.open(path)
"""
READ_SCRIPT = """
import sys
from ssae_core.cli import main
from ssae_core.io import load_embeddings
reader, path, model, out = sys.argv[1:]
if reader == "encode":
    assert main(["encode", model, path, "--out", out]) == 0
else:
    load_embeddings(path)
"""


def peak_rss(script: str, *args: object) -> int:
    """Peak resident bytes of a fresh process that runs ``script`` with ``args``."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script + VMHWM, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def one_group_table(path: Path, rows: int, dim: int = 512) -> int:
    """A table as pandas or pyarrow write it: every row in one row group; its z and z_tilde
    bytes."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((rows, dim), dtype=np.float32)
    table = EmbeddingTable(
        pair_id=np.arange(rows),
        z=z,
        z_tilde=z + rng.standard_normal((rows, dim), dtype=np.float32),
        split=np.array(["train"] * rows),
    )
    pq.write_table(table.to_arrow(), path, row_group_size=rows)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    return 2 * rows * dim * 4


@pytest.mark.slow
def test_one_large_row_group_streams_in_bounded_memory(tmp_path):
    """Streaming memory does not grow with the row group: a table of one 48,000-row group (197 MB
    of z and z_tilde) trains in about the same peak memory as one of 12,000 rows. When row groups
    were read whole, the peak grew by about 5x the extra data."""
    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    extra = one_group_table(large, 48_000) - one_group_table(small, 12_000)
    peaks = {}
    for path in (small, large):
        peaks[path.stem] = peak_rss(TRAIN_SCRIPT, path, tmp_path / f"run-{path.stem}", "train")
    growth = (peaks["large"] - peaks["small"]) / extra
    print(f"peak growth: {growth:.3f} of the extra data")
    assert growth < 0.25, peaks


@pytest.mark.slow
@pytest.mark.parametrize("reader, bound", [("encode", 0.5), ("load", 1.5)])
def test_readers_of_one_large_row_group_take_bounded_memory(tmp_path, reader, bound):
    """``ssae encode`` reads slices and writes each slice's codes, so its peak memory does not
    grow with a row group; ``load_embeddings`` (what probes, steering evaluation, inspection and
    ``ssae vector md`` read) grows by the table's own size, not a multiple of it. When row groups
    were read whole, both peaks grew by about 4x the extra data (48,000 vs 12,000 rows)."""
    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    extra = one_group_table(large, 48_000) - one_group_table(small, 12_000)
    model = tmp_path / "run"
    if reader == "encode":
        cfg = TrainConfig(latent_dim=3, seeds=(0,), epochs=1, min_steps=0, patience=0)
        train_run(small, model, cfg, require_active=False, progress=False)
    peaks = {
        path.stem: peak_rss(READ_SCRIPT, reader, path, model, tmp_path / f"{path.stem}-codes.pq")
        for path in (small, large)
    }
    growth = (peaks["large"] - peaks["small"]) / extra
    print(f"{reader}: peak growth {growth:.3f} of the extra data")
    assert growth < bound, peaks


def test_the_default_drops_spiked_pairs_in_memory_and_streamed_alike(synth, tmp_path):
    """Three pairs with one coordinate at 150x the median shift norm: the default configuration
    (drop_outliers 10) drops them when training in memory and when streaming from shards, by the
    same rule (the median of the training shifts), and records the same count and threshold."""
    spiked = synth.subset("train")
    median = np.median(np.linalg.norm(spiked.delta, axis=1))
    rows = np.random.default_rng(0).choice(len(spiked), 3, replace=False)
    spiked.z_tilde[rows, 0] = spiked.z[rows, 0] + 150 * median
    cfg = TrainConfig(latent_dim=3, seeds=(0,), min_steps=50, max_steps=50, patience=0)
    memory = train(spiked.delta, cfg, progress=False).models[0].record
    folder = write_shards(spiked, tmp_path / "spiked", 700)
    streamed = train(ShardSource.open(folder), cfg, progress=False).models[0].record
    assert memory.num_outliers == streamed.num_outliers == 3
    assert streamed.outlier_threshold == pytest.approx(memory.outlier_threshold, rel=0.05)
