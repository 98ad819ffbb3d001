import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssae_core.cli import main
from ssae_core.io import load_embeddings, save_embeddings
from ssae_core.metrics import mcc
from ssae_core.runs import load_run

FAST = ["--epochs", "2", "--min-steps", "0", "--patience", "0", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "synth.parquet"
    assert (
        main(
            [
                "synth",
                str(path),
                "--concepts",
                "3",
                "--max-changes",
                "2",
                "--dim",
                "12",
                "--pairs",
                "600",
            ]
        )
        == 0
    )
    return path


def test_train_writes_one_folder_per_seed_and_encode(data, tmp_path):
    out = tmp_path / "run"
    assert (
        main(["train", str(data), "--out", str(out), "--latent-dim", "3", "--seeds", "0,2", *FAST])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        ".ssae-output.json",  # marks the folder as a train output (a later run may replace it)
        "history.csv",
        "run.json",
        "seed-0",
        "seed-2",
    ]
    config = json.loads((out / "seed-2" / "config.json").read_text())
    assert config["seed"] == 2 and config["method"] == "ssae" and config["latent_dim"] == 3
    assert (out / "seed-0" / "model.safetensors").exists()
    codes = tmp_path / "codes.parquet"
    assert main(["encode", str(out / "seed-0"), str(data), "--out", str(codes)]) == 0
    table = pq.read_table(codes)
    assert table.column_names == ["pair_id", "split", "h", "outlier"]
    assert table.schema.field("h").type == pa.list_(pa.float32(), 3)
    assert not any(table.column("outlier").to_pylist())
    h = np.stack(table.column("h").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(h, load_run(out)[0].encode(load_embeddings(data).delta), atol=1e-6)


def test_encode_flags_the_outliers_training_dropped(data, tmp_path, capsys):
    """Pairs spiked to 150x the median shift norm: training drops them by default, and encode
    marks them (and only them) in its outlier column, by the threshold training recorded."""
    table = load_embeddings(data)
    median = np.median(np.linalg.norm(table.delta, axis=1))
    spiked = np.flatnonzero(table.split == "train")[:2]
    table.z_tilde[spiked, 0] = table.z[spiked, 0] + 150 * median
    path = tmp_path / "spiked.parquet"
    save_embeddings(table, path)
    out, codes = tmp_path / "run", tmp_path / "codes.parquet"
    assert (
        main(["train", str(path), "--out", str(out), "--latent-dim", "3", "--seeds", "0", *FAST])
        == 0
    )
    assert load_run(out)[0].record.outlier_threshold < 150 * median
    capsys.readouterr()
    assert main(["encode", str(out / "seed-0"), str(path), "--out", str(codes)]) == 0
    flagged = pq.read_table(codes).column("outlier").to_numpy(zero_copy_only=False)
    assert np.flatnonzero(flagged).tolist() == spiked.tolist()
    assert "2 pair(s) have a shift norm above the outlier threshold" in capsys.readouterr().out


def test_encode_reads_any_row_groups(data, tmp_path):
    """Codes do not depend on how the table is grouped: an empty first row group and groups of 7
    rows (read and written slice by slice) give the codes of the whole table."""
    out = tmp_path / "run"
    assert (
        main(["train", str(data), "--out", str(out), "--latent-dim", "3", "--seeds", "0", *FAST])
        == 0
    )
    table = pq.read_table(data)
    grouped = tmp_path / "grouped.parquet"
    with pq.ParquetWriter(grouped, table.schema) as writer:
        writer.write_table(table.slice(0, 0))
        writer.write_table(table, row_group_size=7)
    codes = tmp_path / "codes.parquet"
    assert main(["encode", str(out / "seed-0"), str(grouped), "--out", str(codes)]) == 0
    h = np.stack(pq.read_table(codes).column("h").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(h, load_run(out)[0].encode(load_embeddings(data).delta), atol=1e-6)
    np.testing.assert_array_equal(load_embeddings(grouped).z, load_embeddings(data).z)


def test_cli_defaults_recover_shifts(data, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            ["train", str(data), "--out", str(out), "--latent-dim", "3", "--seeds", "0", "--quiet"]
        )
        == 0
    )
    test = load_embeddings(data).subset("test")
    assert mcc(load_run(out)[0].encode(test.delta), test.shift) > 0.97


def _bad_tables(data, tmp_path):
    good = pq.read_table(data)
    n = good.num_rows
    yield "no_z_tilde", good.drop_columns(["z_tilde"]), "missing column(s) z_tilde"
    wide = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * 5, np.float32)), 5)
    idx = good.column_names.index("z_tilde")
    yield "widths", good.set_column(idx, "z_tilde", wide), "width 12 but z_tilde has width 5"
    yield "empty", good.slice(0, 0), "no rows"
    t = load_embeddings(data)
    t.z_tilde[3, 0] = np.inf
    yield "inf", t.to_arrow(), "NaN or inf"


def test_bad_input_is_one_line_and_leaves_nothing(data, tmp_path, capsys):
    cases = list(_bad_tables(data, tmp_path))
    for name, table, message in cases:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        out = tmp_path / f"out_{name}"
        assert main(["train", str(path), "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not out.exists()
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nonsense")
    assert main(["train", str(tmp_path / "junk.parquet"), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert list(tmp_path.glob(".*")) == []  # no temporary folders or checkpoints left


@pytest.mark.parametrize(
    "args, message",
    [
        (["--latent-dim", "-2"], "--latent-dim -2"),
        (["--method", "pca"], "invalid choice: 'pca'"),
        (["--seeds", "a,b"], "--seeds"),
    ],
)
def test_bad_options_are_one_line(data, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        code = main(["train", str(data), "--out", str(out), *args, *FAST])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not out.exists()


def test_inactive_multiplier_is_an_error(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            ["train", str(data), "--out", str(out), "--latent-dim", "3", "--sparsity", "50", *FAST]
        )
        == 2
    )
    assert "multiplier 0" in capsys.readouterr().err
    assert not out.exists()


def test_latent_dim_defaults_to_number_of_concepts(data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(data), "--out", str(out), "--seeds", "0", *FAST]) == 0
    assert load_run(out)[0].config["latent_dim"] == 3


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--method",
        "--latent-dim",
        "--seeds",
        "--sparsity",
        "--epochs",
        "--batch-size",
        "--lr",
        "--dual-lr",
        "--normalize",
        "--split",
    ):
        assert option in text


def test_save_load_roundtrip(data, tmp_path):
    out = tmp_path / "run"
    main(["train", str(data), "--out", str(out), "--latent-dim", "3", "--seeds", "1", *FAST])
    model = load_run(out)[0]
    t = load_embeddings(data)
    save_embeddings(t, tmp_path / "copy.parquet")
    assert model.encode(t.delta).shape == (len(t), 3)
    assert model.steering_vectors.shape == (3, 12)
    np.testing.assert_allclose(np.linalg.norm(model.steering_vectors, axis=1), 1.0, rtol=1e-5)


def test_train_warns_off_budget_members_even_quiet_and_strict_fails(data, tmp_path, capsys):
    """A member off its budget gets one warning line also with --quiet, the summary line shows
    its status, and --strict makes the run exit non-zero after writing it."""
    tight = ["--latent-dim", "3", "--seeds", "0", "--sparsity", "0.001", *FAST]
    assert main(["train", str(data), "--out", str(tmp_path / "a"), *tight]) == 0
    out, err = capsys.readouterr()
    assert "seed 0:" in out and out.splitlines()[0].endswith("not converged")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "seed 0 is not converged" in warnings[0]
    strict = tmp_path / "b"
    assert main(["train", str(data), "--out", str(strict), *tight, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "error: --strict: 1 member(s)" in err and "seed 0 not converged" in err
    assert (strict / "seed-0" / "model.safetensors").exists()  # written all the same


@pytest.mark.parametrize(
    "command",
    [
        ["train", "EMB", "--out", "OUT"],
        ["train", "EMB", "--out", "OUT", "--loading", "stream"],
        ["vector", "md", "EMB", "--out", "OUT.safetensors"],
    ],
)
def test_a_multi_layer_folder_names_its_layers(data, tmp_path, capsys, command):
    """Every command that reads embeddings, given the folder of `ssae embed --layers`, says in
    one line which layer folders it holds and to pick one."""
    emb = tmp_path / "emb"
    for layer in ("layer-15", "layer-final"):
        (emb / layer).mkdir(parents=True)
        (emb / layer / "shard-00000.parquet").write_bytes(data.read_bytes())
    args = [str(emb) if a == "EMB" else a.replace("OUT", str(tmp_path / "run")) for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {emb} holds one table per layer (layer-15, layer-final); give one of them, "
        f"e.g. {emb / 'layer-15'}"
    )


def test_train_reads_a_fraction_of_one_way_pairs_backwards(tmp_path):
    """Every pair moves along one direction v (as English -> French): normalisation removes the
    mean shift, so the learnt direction misses v; --reverse-fraction 0.5 makes v the main axis
    of variation and recovers it, and the run records the reversal."""
    from ssae_core.io import EmbeddingTable

    rng = np.random.default_rng(0)
    num, dim = 600, 12
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    z = rng.standard_normal((num, dim)).astype(np.float32)
    z_tilde = (z + 3.0 * v + 0.3 * rng.standard_normal((num, dim))).astype(np.float32)
    table = EmbeddingTable(np.arange(num), np.array(["train"] * num, dtype=object), z, z_tilde)
    path = tmp_path / "one_way.parquet"
    save_embeddings(table, path)
    cosines = {}
    for fraction in ("0", "0.5"):
        out = tmp_path / f"run-{fraction}"
        common = ["--method", "aff", "--latent-dim", "1", "--seeds", "0"]
        argv = ["train", str(path), "--out", str(out), *common, "--reverse-fraction", fraction]
        assert main([*argv, "--min-steps", "400", "--patience", "0", "--quiet"]) == 0
        member = load_run(out)[0]
        cosines[fraction] = abs(float(member.steering_vectors[0] @ v))
        recorded = member.config["provenance"].get("reversed_fraction")
        assert recorded == (None if fraction == "0" else "0.5")
    assert cosines["0.5"] > 0.95 > cosines["0"], cosines
