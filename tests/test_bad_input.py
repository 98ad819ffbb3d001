"""Each failure class: exit status 2, one stderr line `error: ...`, and nothing created, deleted
or changed on disk (a snapshot of the whole folder before and after)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from ssae_core.errors import InputError
from ssae_core.io import (
    decode_metadata,
    encode_metadata,
    load_embeddings,
    read_table,
    write_parquet,
)
from ssae_core.synthetic import SynthConfig
from ssae_core.train import TrainConfig
from tests.helpers import (
    FAST_TRAIN,
    assert_one_line_error,
    snapshot,
    ssae_in_process,
)

# --------------------------------------------------------------------------- bad tables


def _data(ws: Path):
    return load_embeddings(ws / "data.parquet")


def int_split(ws: Path) -> None:
    table = pq.read_table(ws / "data.parquet")
    column = pa.array(np.zeros(table.num_rows, np.int64))
    pq.write_table(table.set_column(table.column_names.index("split"), "split", column),
                   ws / "bad.parquet")  # fmt: skip


def mixed_widths(ws: Path) -> None:
    table = _data(ws)
    (ws / "bad").mkdir()
    write_parquet(table.select(np.arange(len(table)) < 100).to_arrow(),
                  ws / "bad" / "shard-00000.parquet")  # fmt: skip
    narrow = table.select(np.arange(len(table)) >= 100)
    narrow.z, narrow.z_tilde = narrow.z[:, :5].copy(), narrow.z_tilde[:, :5].copy()
    write_parquet(narrow.to_arrow(), ws / "bad" / "shard-00001.parquet")


def _extractor_shards(ws: Path, layers: list[str], keep: list[int]) -> None:
    """Shards as an extractor writes them (100 pairs each, num_pairs and shard_rows recorded)."""
    table = _data(ws)
    (ws / "bad").mkdir()
    for k, layer in enumerate(layers):
        if k not in keep:
            continue
        part = table.select((np.arange(len(table)) // 100) == k)
        meta = {"model": "tiny", "layer": layer, "num_pairs": len(table), "shard_rows": 100}
        arrow = part.to_arrow().replace_schema_metadata(encode_metadata(table.concepts, meta))
        write_parquet(arrow, ws / "bad" / f"shard-{k:05d}.parquet")


def missing_shard(ws: Path) -> None:
    _extractor_shards(ws, ["1", "1"], keep=[0])


def mixed_settings(ws: Path) -> None:
    _extractor_shards(ws, ["1", "2"], keep=[0, 1])


def _write_modified(ws: Path, modify) -> None:
    table = _data(ws)
    modify(table)
    write_parquet(table.to_arrow(), ws / "bad.parquet")


def zero_shifts(ws: Path) -> None:
    _write_modified(ws, lambda t: setattr(t, "z_tilde", t.z.copy()))


def overflowing_shifts(ws: Path) -> None:
    def modify(t):
        t.z[[3, 9], 0], t.z_tilde[[3, 9], 0] = 3e38, -3e38

    _write_modified(ws, modify)


def flat_shifts(ws: Path) -> None:
    def modify(t):
        t.z_tilde[[0, 4]] = t.z[[0, 4]] + 1.0  # equal entries: no spread to divide by

    _write_modified(ws, modify)


# --------------------------------------------------------------------------- bad model folders


def _model_copy(ws: Path) -> Path:
    shutil.copytree(ws / "run" / "seed-0", ws / "bad")
    return ws / "bad"


def _edit_config(ws: Path, edit) -> None:
    path = _model_copy(ws) / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def empty_config(ws: Path) -> None:
    (_model_copy(ws) / "config.json").write_text("")


def corrupt_config(ws: Path) -> None:
    (_model_copy(ws) / "config.json").write_text('{"dim": 8, "latent')


def config_without_keys(ws: Path) -> None:
    (_model_copy(ws) / "config.json").write_text("{}")


def config_of_wrong_type(ws: Path) -> None:
    _edit_config(ws, lambda c: c.update(latent_dim="3"))


def shapes_disagree(ws: Path) -> None:
    _edit_config(ws, lambda c: c.update(latent_dim=7))


def garbage_weights(ws: Path) -> None:
    (_model_copy(ws) / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk")


def nan_weights(ws: Path) -> None:
    path = _model_copy(ws) / "model.safetensors"
    tensors = load_file(str(path))
    tensors["W_dec_SMD"][0, 0] = torch.nan
    save_file(tensors, str(path))


def corrupt_run_file(ws: Path) -> None:
    shutil.copytree(ws / "run", ws / "bad")
    (ws / "bad" / "run.json").write_text("nope")


def run_file_without_members(ws: Path) -> None:
    shutil.copytree(ws / "run", ws / "bad")
    (ws / "bad" / "run.json").write_text('{"members": "seed-0"}')


TRAIN = ["train", "data.parquet", "--out", "out", *FAST_TRAIN]
TRAIN_BAD = ["train", "bad.parquet", "--out", "out", *FAST_TRAIN]
TRAIN_BAD_FOLDER = ["train", "bad", "--out", "out", *FAST_TRAIN]
ENCODE_BAD = ["encode", "bad", "data.parquet", "--out", "codes-new.parquet"]
SYNTH = ["synth", "new.parquet", "--concepts", "3", "--max-changes", "2"]

CASES = [
    # hyperparameters, rejected before training
    ("sparsity nan", [*TRAIN, "--sparsity", "nan"], "--sparsity nan", None),
    ("sparsity list with inf", [*TRAIN, "--sparsity", "0.5,inf"], "--sparsity inf", None),
    ("no sparsity", [*TRAIN, "--sparsity", ","], "--sparsity", None),
    ("repeated sparsity", [*TRAIN, "--sparsity", "1,1"], "distinct budgets", None),
    ("lr inf", [*TRAIN, "--lr", "inf"], "--lr inf", None),
    ("dual lr nan", [*TRAIN, "--dual-lr", "nan"], "--dual-lr nan", None),
    ("negative patience", [*TRAIN, "--patience", "-1"], "--patience -1", None),
    ("val fraction nan", [*TRAIN, "--val-fraction", "nan"], "--val-fraction nan", None),
    ("batch of one", [*TRAIN, "--batch-size", "1"], "--batch-size 1", None),
    ("too many threads", [*TRAIN, "--threads", "100000"], "--threads 100000", None),
    ("seed beyond int64", [*TRAIN, "--seeds", "99999999999999999999"], "seeds:", None),
    ("negative seed", [*TRAIN, "--seeds", "-1"], "seeds:", None),
    ("latent dim beyond memory", [*TRAIN, "--latent-dim", "10000000000"], "GiB of memory", None),
    # data
    ("integer split", TRAIN_BAD, "column split must hold strings", int_split),
    ("shards of mixed widths", TRAIN_BAD_FOLDER, "shards differ: column z", mixed_widths),
    ("missing shard", TRAIN_BAD_FOLDER, "holds 1 of the 2 shards", missing_shard),
    ("shards of mixed settings", TRAIN_BAD_FOLDER, "different layer", mixed_settings),
    ("all shifts zero", TRAIN_BAD, "training shifts are zero", zero_shifts),
    ("shift overflows float32", TRAIN_BAD, "overflows float32 in 2 row(s) (pair_id 3, 9)",
     overflowing_shifts),
    ("flat shifts under layer norm", [*TRAIN_BAD, "--normalize", "layer"],
     "(pair_id 0, 4, e.g. z_tilde == z)", flat_shifts),
    ("diverged training", [*TRAIN, "--lr", "1e10"], "training diverged in epoch 1", None),
    # model and run folders
    ("empty config.json", ENCODE_BAD, "config.json: not valid JSON", empty_config),
    ("corrupt config.json", ENCODE_BAD, "config.json: not valid JSON", corrupt_config),
    ("config.json without keys", ENCODE_BAD, "key 'dim' is missing", config_without_keys),
    ("config.json of wrong type", ENCODE_BAD, "key 'latent_dim'", config_of_wrong_type),
    ("weights disagree with config", ENCODE_BAD, "do not belong together", shapes_disagree),
    ("garbage model.safetensors", ENCODE_BAD, "not a readable safetensors", garbage_weights),
    ("NaN weights", ENCODE_BAD, "NaN or inf weights", nan_weights),
    ("corrupt run.json", ENCODE_BAD, "run.json: not valid JSON", corrupt_run_file),
    ("run.json without members", ENCODE_BAD, "no list of member folders",
     run_file_without_members),
    ("no model folder", ["encode", "nowhere", "data.parquet", "--out", "c.parquet"],
     "not a model folder", None),
    # synth
    ("synth negative seed", [*SYNTH, "--seed", "-1"], "seed=-1", None),
    ("synth noise nan", [*SYNTH, "--noise", "nan"], "noise=nan", None),
    ("synth negative noise", [*SYNTH, "--noise", "-0.5"], "noise=-0.5", None),
    ("synth beyond memory", [*SYNTH, "--dim", "1000000000"], "GiB of memory", None),
    ("synth mixing beyond memory", ["synth", "new.parquet", "--concepts", "1000000",
     "--max-changes", "1", "--dim", "10000000", "--pairs", "10"], "GiB of memory", None),
]  # fmt: skip


@pytest.mark.parametrize("argv, message, setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_failure_is_one_line_and_changes_nothing(ws, capsys, argv, message, setup):
    if setup is not None:
        setup(ws)
    before = snapshot(ws.parent)
    code, _, err = ssae_in_process(capsys, *argv)
    assert_one_line_error(code, err, message)
    assert snapshot(ws.parent) == before


# --------------------------------------------------------------------------- library level


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_delta": float("nan")}, "min_delta=nan"),
        ({"min_delta": -0.1}, "min_delta=-0.1"),
        ({"patience": -2}, "patience=-2"),
        ({"seeds": (True,)}, "seeds: True"),
        ({"seeds": (2**32,)}, "seeds: 4294967296"),
        ({"sparsity": (1.0, float("nan"))}, "sparsity=nan"),
        ({"lr": float("-inf")}, "lr=-inf"),
    ],
)
def test_train_config_rejects(kwargs, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise": float("inf")}, "noise=inf"),
        ({"noise": -1.0}, "noise=-1.0"),
        ({"seed": -1}, "seed=-1"),
        ({"test_fraction": float("nan")}, "test_fraction"),
    ],
)
def test_synth_config_rejects(kwargs, message):
    with pytest.raises(InputError, match=message):
        SynthConfig(num_concepts=3, max_changes=2, **kwargs)


@pytest.mark.parametrize(
    "stored, names",
    [
        ('["gender", "lang"]', ["gender", "lang"]),
        ("gender", ["gender"]),  # one name, never its characters
        ("gender, lang", ["gender", "lang"]),
        ('"truthfulness"', ["truthfulness"]),
        ("[1, 2]", ["1", "2"]),
    ],
)
def test_concepts_metadata_is_names(stored, names):
    schema = pa.schema([("x", pa.int64())], metadata={"concepts": stored, "model": "m"})
    assert decode_metadata(schema) == (names, {"model": "m"})


def test_a_complete_extraction_folder_reads(ws):
    _extractor_shards(ws, ["1", "1"], keep=[0, 1])
    assert read_table(ws / "bad").num_rows == 200


@pytest.mark.parametrize(
    "argv, message",
    [
        (["synth", "x.parquet", "--concepts", "2", "--max-changes", "1", "--pairs", "0"],
         "need --pairs >= 10 and 0 < --test-fraction < 1"),
        (["synth", "x.parquet", "--concepts", "1", "--max-changes", "2"],
         "--max-changes=2 must be in 1..--concepts (1)"),
        (["synth", "", "--concepts", "2", "--max-changes", "1"], "OUT '': give a path"),
        (["train", "data.parquet", "--out", "r", "--lr", "-1"], "--lr -1.0, --dual-lr=0.001"),
    ],
    ids=["pairs", "max-changes", "out", "lr"],
)  # fmt: skip
def test_messages_use_the_command_line_names(ws, capsys, argv, message):
    code, _, err = ssae_in_process(capsys, *argv)
    assert_one_line_error(code, err, message)
    assert "num_pairs" not in err and "num_concepts" not in err


def test_a_layer_out_of_range_names_the_model_or_says_the_model():
    from ssae_core.lm.layers import resolve_layer
    from ssae_core.lm.steer import SteeringVector

    with pytest.raises(InputError, match=r"layer 7: out of range for the model with 3 blocks"):
        SteeringVector({7: torch.ones(4)}).resolved(3)
    with pytest.raises(InputError, match=r"out of range for model tiny-llama with 3 blocks"):
        resolve_layer(-4, 3, "tiny-llama")
