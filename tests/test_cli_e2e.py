"""Every `ssae` subcommand end to end, as a user runs it: a new process per command, with the
options the README and --help show, checking the files each writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ssae_core.errors import InputError
from ssae_core.io import OUTPUT_KEY, OUTPUT_MARKER, load_embeddings, pair_table, write_parquet
from ssae_core.lm.vector_files import load_steering_vectors
from ssae_core.runs import load_model, load_run
from tests.helpers import ssae, ssae_in_process

FAST = "--epochs 2 --min-steps 0 --quiet"
MASCULINE = ["king", "man", "boy", "father", "son", "actor", "waiter", "king", "man", "boy"]
FEMININE = ["queen", "woman", "girl", "mother", "daughter", "actress", "waitress", "queen"]


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def synth_file(work: Path) -> Path:
    out = ok(
        ssae(
            "synth data.parquet --concepts 3 --max-changes 2 --dim 12 --pairs 400 --seed 1",
            cwd=work,
        )
    )
    assert "wrote 400 pairs (d=12, n=3) to data.parquet" in out
    return work / "data.parquet"


def test_synth_writes_a_stamped_embedding_table(synth_file: Path):
    table = load_embeddings(synth_file)
    assert len(table) == 400 and table.dim == 12 and table.concepts == ["c0", "c1", "c2"]
    assert set(table.split) == {"train", "test"} and table.shift.shape == (400, 3)
    assert pq.read_schema(synth_file).metadata[OUTPUT_KEY.encode()] == b"synth"


def test_train_then_encode(synth_file: Path, work: Path):
    out = ok(
        ssae(f"train data.parquet --out runs/demo --latent-dim 3 --seeds 0,1 {FAST}", cwd=work)
    )
    assert "wrote 2 model(s) to runs/demo" in out
    run = work / "runs" / "demo"
    names = [OUTPUT_MARKER, "history.csv", "run.json", "seed-0", "seed-1"]
    assert sorted(p.name for p in run.iterdir()) == names
    assert json.loads((run / OUTPUT_MARKER).read_text())["command"] == "train"
    members = load_run(run)
    assert [m.config["seed"] for m in members] == [0, 1]
    assert all(m.config["latent_dim"] == 3 and m.config["dim"] == 12 for m in members)
    assert not [p.name for p in (work / "runs").iterdir() if p.name.startswith(".")]

    out = ok(ssae("encode runs/demo/seed-0 data.parquet --out codes.parquet", cwd=work))
    assert "wrote codes of 400 pairs to codes.parquet" in out
    codes = pq.read_table(work / "codes.parquet")
    assert codes.column_names == ["pair_id", "split", "h", "outlier"]
    h = np.stack(codes.column("h").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(h, members[0].encode(load_embeddings(synth_file).delta), atol=1e-6)


@pytest.fixture(scope="module")
def pairs_file(work: Path) -> Path:
    n = len(FEMININE)
    table = pair_table(
        [f"the {w}" for w in MASCULINE[:n]],
        [f"the {w}" for w in FEMININE],
        ["train"] * 6 + ["test"] * 2,
        np.ones((n, 1)),
        ["gender"],
        metadata={"dataset": "toy"},
    )
    write_parquet(table, work / "pairs.parquet")
    return work / "pairs.parquet"


def test_embed_train_and_steer_a_tiny_llama(pairs_file: Path, tiny_lm_dir: Path, work: Path):
    out = ok(
        ssae(
            f"embed pairs.parquet --out emb/gender --model {tiny_lm_dir} --layer 1 "
            "--batch-size 4 --shard-rows 4 --device cpu --quiet",
            cwd=work,
        )
    )
    assert "wrote embeddings to emb/gender" in out
    shards = sorted(p.name for p in (work / "emb" / "gender").glob("shard-*.parquet"))
    assert shards == ["shard-00000.parquet", "shard-00001.parquet"]
    table = load_embeddings(work / "emb" / "gender")
    assert len(table) == 8 and table.dim == 48 and table.concepts == ["gender"]
    assert table.metadata["layer"] == "1" and table.metadata["model"] == str(tiny_lm_dir)
    partial = shutil.copytree(work / "emb" / "gender", work / "partial")
    (partial / "shard-00001.parquet").unlink()  # as if the extraction had been interrupted
    with pytest.raises(InputError, match="holds 1 of the 2 shards its extraction writes"):
        load_embeddings(partial)

    ok(ssae(f"train emb/gender --out runs/gender --seeds 0 --allow-inactive {FAST}", cwd=work))
    model = load_model(work / "runs" / "gender" / "seed-0")
    assert model.config["latent_dim"] == 1  # m = the number of concepts recorded in the table

    out = ok(
        ssae(
            f"steer runs/gender/seed-0 --lm {tiny_lm_dir} --latent 0 --alpha 30 "
            "--prompt 'the cat' --max-new-tokens 3 --device cpu --export gender.safetensors",
            cwd=work,
        )
    )
    assert "steering: latent 0, alpha 30, operator add, layer 1, positions all" in out
    assert out.count("unsteered:") == 1 and out.count("steered:") == 2
    vector = load_steering_vectors(work / "gender.safetensors")
    np.testing.assert_allclose(
        vector.layer_activations[1].numpy(), 30 * model.steering_vectors[0], atol=1e-5
    )


OPTIONS = {
    "synth": ["--concepts", "--max-changes", "--dim", "--pairs", "--noise", "--seed"],
    "train": ["--out", "--method", "--latent-dim", "--seeds", "--sparsity", "--epochs",
              "--batch-size", "--lr", "--dual-lr"],
    "encode": ["--out", "--rescale"],
    "embed": ["--out", "--model", "--revision", "--layer", "--batch-size"],
    "steer": ["--lm", "--latent", "--alpha", "--prompt", "--export", "--export-gguf"],
    "inspect": ["--pairs", "--out", "--texts", "--lm", "--no-lm", "--sparsity", "--strengths"],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_subcommand_documents_its_options(command, capsys):
    code, out, _ = ssae_in_process(capsys, command, "--help")
    assert code == 0
    assert [option for option in OPTIONS[command] if option not in out] == []
    code, out, _ = ssae_in_process(capsys, "--help")
    assert code == 0 and command in out
