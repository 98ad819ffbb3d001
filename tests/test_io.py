import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, atomic_dir, load_embeddings, save_embeddings


def _table(n: int = 6, d: int = 3) -> EmbeddingTable:
    rng = np.random.default_rng(0)
    return EmbeddingTable(
        pair_id=np.arange(n, dtype=np.int64),
        split=np.array(["train"] * (n - 2) + ["test"] * 2, dtype=object),
        z=rng.standard_normal((n, d)).astype(np.float32),
        z_tilde=rng.standard_normal((n, d)).astype(np.float32),
        shift=rng.standard_normal((n, 2)).astype(np.float32),
        concepts=["a", "b"],
        metadata={"model": "tiny", "layer": "3"},
    )


def test_roundtrip_file(tmp_path):
    t = _table()
    save_embeddings(t, tmp_path / "e.parquet")
    back = load_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(back.z, t.z)
    np.testing.assert_array_equal(back.shift, t.shift)
    assert back.concepts == ["a", "b"] and back.metadata == {"model": "tiny", "layer": "3"}
    schema = pq.read_schema(tmp_path / "e.parquet")
    assert pa.types.is_fixed_size_list(schema.field("z").type)
    assert back.subset("test").pair_id.tolist() == [4, 5]


def test_folder_of_shards_reads_as_one(tmp_path):
    t = _table(10)
    (tmp_path / "emb").mkdir()
    save_embeddings(t.select(np.arange(10) < 4), tmp_path / "emb" / "shard-00000.parquet")
    save_embeddings(t.select(np.arange(10) >= 4), tmp_path / "emb" / "shard-00001.parquet")
    back = load_embeddings(tmp_path / "emb")
    np.testing.assert_array_equal(back.z_tilde, t.z_tilde)
    np.testing.assert_array_equal(back.shift, t.shift)
    unlabelled = t.select(np.arange(10) >= 4)
    unlabelled.shift = None
    save_embeddings(unlabelled, tmp_path / "emb" / "shard-00001.parquet")
    with pytest.raises(InputError, match="shards differ: column shift"):
        load_embeddings(tmp_path / "emb")


def test_a_folder_of_layer_folders_names_them(tmp_path):
    """`ssae train emb` on the folder of a multi-layer extraction: the message names its layer
    folders and one to give."""
    for layer in ("layer-1", "layer-final"):
        (tmp_path / "emb" / layer).mkdir(parents=True)
        save_embeddings(_table(), tmp_path / "emb" / layer / "shard-00000.parquet")
    with pytest.raises(InputError) as caught:
        load_embeddings(tmp_path / "emb")
    assert str(caught.value) == (
        f"{tmp_path / 'emb'} holds one table per layer (layer-1, layer-final); give one of "
        f"them, e.g. {tmp_path / 'emb' / 'layer-1'}"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no Parquet shards .*; check the path"):
        load_embeddings(tmp_path / "empty")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.drop_columns(["z_tilde"]), "missing column"),
        (lambda t: t.slice(0, 0), "no rows"),
    ],
)
def test_bad_tables(tmp_path, mutate, message):
    pq.write_table(mutate(_table().to_arrow()), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=message):
        load_embeddings(tmp_path / "bad.parquet")


def test_mismatched_widths_and_nan(tmp_path):
    t = _table()
    arrow = t.to_arrow()
    wide = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6 * 4, np.float32)), 4)
    pq.write_table(arrow.set_column(3, "z_tilde", wide), tmp_path / "w.parquet")
    with pytest.raises(InputError, match="width 3 but z_tilde has width 4"):
        load_embeddings(tmp_path / "w.parquet")
    t.z[2, 1] = np.nan
    save_embeddings(t, tmp_path / "n.parquet")
    with pytest.raises(InputError, match="NaN or inf"):
        load_embeddings(tmp_path / "n.parquet")


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet"):
        load_embeddings(tmp_path / "junk.parquet")
    with pytest.raises(InputError, match="no such file"):
        load_embeddings(tmp_path / "absent.parquet")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "partial").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_normal_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        save_embeddings(_table(), tmp_path / "e.parquet")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "e.parquet").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_labels_travel_with_embedding_tables_and_swap_with_reversed_pairs(tmp_path):
    from ssae_core.io import PairLabels

    n = 6
    z = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    labels = PairLabels(
        group=np.array([f"w{i // 2}" for i in range(n)], dtype=object),
        x_states=np.array([["en", "masc"]] * n, dtype=object),
        x_tilde_states=np.array([["fr", "masc"]] * n, dtype=object),
        state_names=["language", "gender"],
        concept_states={"language": ["language", "en", "fr"]},
    )
    table = EmbeddingTable(
        pair_id=np.arange(n, dtype=np.int64),
        split=np.array(["train", "test"] * 3, dtype=object),
        z=z,
        z_tilde=z + 1,
        shift=np.ones((n, 1), np.float32),
        concepts=["language"],
        labels=labels,
    )
    save_embeddings(table, tmp_path / "t.parquet")
    back = load_embeddings(tmp_path / "t.parquet")
    assert back.labels.state_names == ["language", "gender"]
    assert back.labels.concept_states == labels.concept_states
    np.testing.assert_array_equal(back.labels.x_tilde_states, labels.x_tilde_states)
    assert "state_names" not in back.metadata
    assert back.subset("test").labels.group.tolist() == ["w0", "w1", "w2"]
    flipped = back.reoriented(0.5, seed=1)
    rev = flipped.shift[:, 0] < 0
    assert rev.any() and (~rev).any()
    assert (flipped.labels.x_states[rev, 0] == "fr").all()
    assert (flipped.labels.x_states[~rev, 0] == "en").all()
    np.testing.assert_array_equal(flipped.reversed_rows(), rev)  # recorded in the metadata
    np.testing.assert_array_equal(flipped.subset("test").reversed_rows(), rev[back.split == "test"])
    assert not back.reversed_rows().any()


def test_repeated_pair_ids_are_refused_by_every_reader(tmp_path):
    from ssae_core.io import load_pairs, pair_table, write_parquet
    from ssae_core.streaming import ShardSource

    t = _table(8)
    t.pair_id[5] = 2  # 8 rows, 7 distinct ids
    save_embeddings(t, tmp_path / "e.parquet")
    with pytest.raises(
        InputError, match=r"e.parquet: 1 pair_id\(s\) occur more than once \(e.g. 2\)"
    ):
        load_embeddings(tmp_path / "e.parquet")
    with pytest.raises(InputError, match="occur more than once"):
        ShardSource.open(tmp_path / "e.parquet").prepare("global", 0.1, 64, 2)
    pairs = pair_table(["a b", "c d", "e f"], ["b a", "d c", "f e"], ["train"] * 3, None, None)
    pairs = pairs.set_column(0, "pair_id", pa.array([0, 1, 1], pa.int64()))
    write_parquet(pairs, tmp_path / "pairs.parquet")
    with pytest.raises(InputError, match="renumber the pairs"):
        load_pairs(tmp_path / "pairs.parquet")


def test_a_damaged_shard_is_refused_by_every_reader(tmp_path, capsys):
    """200 bytes flipped inside a shard's data pages: every reader refuses it in one line that
    names the shard and the fix (before page checksums, values changed by up to 17 and trained)."""
    from ssae_core.cli import main
    from ssae_core.streaming import ShardSource

    t = _table(400, 16)
    (tmp_path / "emb").mkdir()
    save_embeddings(t.select(np.arange(400) < 200), tmp_path / "emb" / "shard-00000.parquet")
    shard = tmp_path / "emb" / "shard-00001.parquet"
    save_embeddings(t.select(np.arange(400) >= 200), shard)
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0x5A for b in data[middle : middle + 200])
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"shard-00001.parquet: damaged .* delete it and re-run"):
        load_embeddings(tmp_path / "emb")
    with pytest.raises(InputError, match=r"shard-00001.parquet: damaged"):
        ShardSource.open(tmp_path / "emb").prepare("global", 0.1, 64, 2)
    argv = ["train", str(tmp_path / "emb"), "--out", str(tmp_path / "run"), "--latent-dim", "2"]
    for loading in ("memory", "stream"):
        assert main([*argv, "--loading", loading]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("error: "), errors
        assert "shard-00001.parquet: damaged" in errors[0]
    assert not (tmp_path / "run").exists()
