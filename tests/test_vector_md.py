"""Mean-difference vectors, llama.cpp exports with their architecture, and the `ssae vector` /
`ssae steer` commands run as subprocesses (tiny random Llama, no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssae_core.cli import main
from ssae_core.errors import InputError
from ssae_core.evaluation.mean_difference import mean_difference_vector, table_kind
from ssae_core.evaluation.steering_accuracy import mean_difference_directions, mean_shift
from ssae_core.io import EmbeddingTable, pair_table, save_embeddings, write_parquet
from ssae_core.lm import vector_files as vf
from ssae_core.lm.steer import SteeringVector
from tests.test_steer import write_model

ENGLISH = ["the cat", "the dog", "the house", "the king", "the queen", "the table", "a man"]
FRENCH = ["le chat", "le chien", "la maison", "le roi", "la reine", "la table", "un homme"]
SPLITS = ["train", "train", "train", "train", "train", "test", "test"]
D = 6


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "lang.parquet"
    shift = np.ones((len(ENGLISH), 1), np.float32)
    write_parquet(pair_table(ENGLISH, FRENCH, SPLITS, shift, ["lang"]), path)
    return path


def labelled_table(seed: int = 0, n: int = 40) -> EmbeddingTable:
    """Two concepts; pairs change one (either sign) or both; a layer and a model recorded."""
    rng = np.random.default_rng(seed)
    shift = rng.choice([-1.0, 0.0, 1.0], size=(n, 2)).astype(np.float32)
    shift[:4] = [[1, 0], [-1, 0], [0, 1], [1, 1]]
    z = rng.normal(size=(n, D)).astype(np.float32)
    z_tilde = (z + shift @ rng.normal(size=(2, D)) + 0.1 * rng.normal(size=(n, D))).astype(
        np.float32
    )
    return EmbeddingTable(
        pair_id=np.arange(n),
        split=np.array(["train"] * (n - 10) + ["test"] * 10, dtype=object),
        z=z,
        z_tilde=z_tilde,
        shift=shift,
        concepts=["gender", "lang"],
        metadata={"model": "m", "layer": "1", "template": "", "revision": "r"},
    )


def ssae(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "ssae_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# --------------------------------------------------------------------------- the vector


def test_md_of_a_concept_is_the_signed_mean_shift_of_its_single_concept_pairs():
    table = labelled_table()
    vector = mean_difference_vector(table, concept="gender")
    train = table.subset("train")
    rows = (train.shift[:, 1] == 0) & (train.shift[:, 0] != 0)
    delta = train.z_tilde.astype(np.float64) - train.z
    expected = (train.shift[rows, :1] * delta[rows]).mean(axis=0)
    assert list(vector.layer_activations) == [1]
    np.testing.assert_allclose(vector.layer_activations[1].numpy(), expected, rtol=1e-6)
    md = mean_difference_directions(train)  # the study's MD: the same vector, normalised
    np.testing.assert_allclose(md.alpha_K[0] * md.vectors_KD[0], expected, rtol=1e-6)
    # its recorded alpha_fit is the study's least-squares alpha of the normalised vector
    assert float(vector.metadata.pop("alpha_fit")) == pytest.approx(md.alpha_K[0], rel=1e-6)
    assert vector.metadata | {"scale": ""} == {
        "model": "m",
        "revision": "r",
        "template": "",
        "token_position": "",
        "dtype": "",
        "layer": "1",
        "method": "md",
        "concept": "gender",
        "n_pairs": str(int(rows.sum())),
        "split": "train",
        "scale": "",
        "source": "",
    }


def test_md_without_labels_is_the_plain_mean_shift():
    table = labelled_table()
    unlabelled = EmbeddingTable(
        table.pair_id, table.split, table.z, table.z_tilde, metadata={"layer": "final"}
    )
    vector = mean_difference_vector(unlabelled, concept="my concept", split="all")
    expected = (table.z_tilde.astype(np.float64) - table.z).mean(axis=0)
    np.testing.assert_allclose(vector.layer_activations[None].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(mean_shift(unlabelled)[0], expected, rtol=0)
    assert vector.metadata["concept"] == "my concept" and vector.metadata["n_pairs"] == "40"


def test_md_refuses_ambiguous_or_impossible_requests():
    table = labelled_table()
    cases = [
        ({}, "--concept"),  # two concepts: which one?
        ({"concept": "colour"}, "not in"),
        ({"concept": "gender", "split": "validation"}, "no pairs in split"),
        ({"concept": "gender", "layer": "2"}, "omit --layer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            mean_difference_vector(table, **kwargs)
    synthetic = EmbeddingTable(table.pair_id, table.split, table.z, table.z_tilde)
    with pytest.raises(InputError, match="--layer"):
        mean_difference_vector(synthetic)
    assert list(mean_difference_vector(synthetic, layer=-1).layer_activations) == [-1]


def test_table_kind_tells_pairs_from_embeddings(pairs, tmp_path):
    save_embeddings(labelled_table(), tmp_path / "emb.parquet")
    assert table_kind(pairs) == "pairs" and table_kind(tmp_path / "emb.parquet") == "embeddings"
    write_parquet(__import__("pyarrow").table({"a": [1]}), tmp_path / "other.parquet")
    with pytest.raises(InputError, match="neither"):
        table_kind(tmp_path / "other.parquet")


# --------------------------------------------------------------------------- llama.cpp files


def read_gguf(path: Path) -> tuple[dict, dict]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {key: field.contents() for key, field in reader.fields.items()}
    return fields, {t.name: np.array(t.data) for t in reader.tensors}


def test_export_needs_an_architecture_and_resolved_layers(tmp_path):
    vector = SteeringVector({2: torch.ones(D)}, {"model": "somewhere/unknown"})
    with pytest.raises(InputError, match="--model-hint"):
        vf.export_gguf(vector, tmp_path / "v.gguf")
    with pytest.raises(InputError, match="counts from the end"):
        vf.export_gguf(SteeringVector({-1: torch.ones(D)}), tmp_path / "v.gguf", model_hint="x")
    assert list(tmp_path.iterdir()) == []
    vector.metadata["model_type"] = "llama"
    fields, tensors = read_gguf(vf.export_gguf(vector, tmp_path / "v.gguf"))
    assert fields["controlvector.model_hint"] == "llama"
    assert list(tensors) == ["direction.2"]


# --------------------------------------------------------------------------- commands


def test_vector_md_of_a_pair_table_as_a_subprocess(pairs, tiny_lm_dir, tmp_path):
    from ssae_core.lm import loading
    from ssae_core.lm.embed import embed_texts

    out, gguf_out = tmp_path / "lang.safetensors", tmp_path / "lang.gguf"
    done = ssae(
        "vector", "md", str(pairs), "--lm", str(tiny_lm_dir), "--layer", "-1",
        "--out", str(out), "--export-gguf", str(gguf_out), "--batch-size", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and "md vector of 5 pairs" in done.stdout
    assert "\r" not in done.stderr  # progress into a pipe: plain lines
    vector = vf.load_steering_vectors(out)
    assert list(vector.layer_activations) == [2]  # -1 resolved: the tiny model has 3 blocks
    meta = vector.metadata
    assert (meta["method"], meta["concept"], meta["n_pairs"]) == ("md", "lang", "5")
    assert (meta["layer"], meta["model_type"], meta["split"]) == ("2", "llama", "train")
    assert meta["model"] == str(tiny_lm_dir)

    source = loading.resolve_model(str(tiny_lm_dir), verbose=False)
    model, tokenizer = loading.load_model(source), loading.load_tokenizer(source)
    z = embed_texts(model, tokenizer, ENGLISH[:5], layer=2)
    z_tilde = embed_texts(model, tokenizer, FRENCH[:5], layer=2)
    expected = (z_tilde.astype(np.float64) - z).mean(axis=0)
    np.testing.assert_allclose(vector.layer_activations[2].numpy(), expected, atol=1e-5)

    fields, tensors = read_gguf(gguf_out)
    assert fields["general.architecture"] == "controlvector"
    assert fields["controlvector.model_hint"] == "llama"
    assert fields["controlvector.layer_count"] == 1
    assert fields["ssae.method"] == "md" and fields["ssae.layer"] == "2"
    assert list(tensors) == ["direction.2"]
    np.testing.assert_array_equal(tensors["direction.2"], vector.layer_activations[2].numpy())


def test_vector_md_of_embedding_shards(pairs, tiny_lm_dir, tmp_path, capsys):
    shards = tmp_path / "emb"
    assert main(["embed", str(pairs), "--out", str(shards), "--model", str(tiny_lm_dir),
                 "--layer", "1", "--quiet"]) == 0  # fmt: skip
    out = tmp_path / "md.safetensors"
    assert main(["vector", "md", str(shards), "--out", str(out), "--split", "all"]) == 0
    vector = vf.load_steering_vectors(out)
    assert list(vector.layer_activations) == [1] and vector.metadata["n_pairs"] == "7"
    assert main(["vector", "md", str(shards), "--out", str(out), "--layer", "2"]) == 2
    assert "omit --layer" in capsys.readouterr().err

    # every output is checked before the first is written: a refused --export-gguf leaves no
    # safetensors file behind, and the message names the commands that exist
    notes, fresh = tmp_path / "notes.txt", tmp_path / "fresh.safetensors"
    notes.write_text("my notes\n")
    argv = ["vector", "md", str(shards), "--out", str(fresh), "--export-gguf", str(notes)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--export-gguf" in err and "`ssae vector md` or `ssae steer --export`" in err, err
    assert "steering-vector" not in err and len(err.strip().splitlines()) == 1
    assert not fresh.exists() and notes.read_text() == "my notes\n"


@pytest.mark.parametrize("operator", ["project_out", "add_keep_norm"])
def test_steer_with_an_operator_as_a_subprocess(pairs, tiny_lm_dir, tmp_path, operator):
    md = tmp_path / "md.safetensors"
    made = ssae("vector", "md", str(pairs), "--lm", str(tiny_lm_dir), "--layer", "1",
                "--out", str(md), "--quiet", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    out, gguf_out = tmp_path / "again.safetensors", tmp_path / "again.gguf"
    done = ssae(
        "steer", str(md), "--operator", operator, "--alpha", "3", "--prompt", "the cat",
        "--max-new-tokens", "4", "--export", str(out), "--export-gguf", str(gguf_out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"operator {operator}, layer 1, positions all" in done.stdout
    assert done.stdout.count("unsteered:") == 1
    saved = vf.load_steering_vectors(out)
    original = vf.load_steering_vectors(md)
    torch.testing.assert_close(saved.layer_activations[1], 3 * original.layer_activations[1])
    fields, tensors = read_gguf(gguf_out)
    assert fields["controlvector.model_hint"] == "llama" and list(tensors) == ["direction.1"]
    assert "llama.cpp adds control vectors" in done.stderr


def test_steer_a_model_folder_at_a_negative_layer_without_loading_the_lm(tiny_lm_dir, tmp_path):
    folder = write_model(
        tmp_path / "m",
        latents=2,
        concepts=["a", "b"],
        provenance={"model": str(tiny_lm_dir), "layer": "final"},
    )
    gguf_out = tmp_path / "v.gguf"
    assert main(["steer", str(folder), "--latent", "0", "--operator", "project_out",
                 "--layer", "-2", "--export-gguf", str(gguf_out)]) == 0  # fmt: skip
    fields, tensors = read_gguf(gguf_out)  # layer and architecture from the recorded model
    assert list(tensors) == ["direction.1"] and fields["controlvector.model_hint"] == "llama"
    assert fields["ssae.layer"] == "1"
    by_strength = tmp_path / "x.safetensors"  # no --alpha: the default strength, from the LM
    assert main(["steer", str(folder), "--latent", "0", "--export", str(by_strength)]) == 0
    assert by_strength.is_file()
    assert main(["steer", str(gguf_out), "--latent", "0", "--export", "x.safetensors"]) == 2


def test_vector_show_prints_layers_norms_and_metadata_of_either_format(tmp_path, capsys):
    import os

    vector = SteeringVector({2: 3 * torch.ones(4)}, {"method": "md", "concept": "lang"})
    vector.metadata["model_type"] = "llama"
    mask = os.umask(0o022)
    try:
        safetensors = vf.save_steering_vector(vector, tmp_path / "v.safetensors")
        gguf_file = vf.export_gguf(vector, tmp_path / "v.gguf")
    finally:
        os.umask(mask)
    assert safetensors.stat().st_mode & 0o777 == 0o644  # the umask's mode, as every output
    for path, kind in (
        (safetensors, "safetensors"),
        (gguf_file, "gguf (llama.cpp control vector)"),
    ):
        assert main(["vector", "show", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[:2] == [f"file: {path}", f"format: {kind}"] and "width: 4" in out
        assert "norm.2: 6" in out and "concept: lang" in out and "method: md" in out
    assert main(["vector", "show", str(tmp_path / "missing.safetensors")]) == 2
