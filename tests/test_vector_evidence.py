"""The evidence every vector file carries (data hash, budget and status, cross-seed stability,
concept match, fitted alpha) and `ssae vector show` on our files and on llama.cpp control vectors
written elsewhere (repeng-style with a model hint, llama.cpp-style with direction tensors only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ssae_core.evaluation.vector_evidence import FOREIGN_NOTE
from ssae_core.io import load_embeddings
from ssae_core.lm import vector_files as vf
from ssae_core.record import STATUSES
from tests.helpers import assert_one_line_error, ssae_in_process
from tests.test_vector_md import pairs  # noqa: F401  (a fixture: the lang pair table)

EVIDENCE = ("seeds", "latent_stability_mean", "latent_stability_min", "decoder_udr", "alpha_fit")


@pytest.fixture(scope="module")
def run(pairs, tiny_lm_dir, tmp_path_factory) -> Path:  # noqa: F811
    """Embeddings of the lang pairs at block 1 of the tiny Llama, and a two-seed SSAE run."""
    from ssae_core.cli import main

    folder = tmp_path_factory.mktemp("evidence")
    shards = folder / "emb"
    assert main(["embed", str(pairs), "--out", str(shards), "--model", str(tiny_lm_dir),
                 "--layer", "1", "--quiet"]) == 0  # fmt: skip
    assert main(["train", str(shards), "--out", str(folder / "run"), "--seeds", "0,1",
                 "--latent-dim", "1", "--epochs", "2", "--min-steps", "0", "--patience", "0",
                 "--allow-inactive", "--quiet"]) == 0  # fmt: skip
    return folder


def show(capsys, path: Path) -> dict[str, str]:
    code, out, err = ssae_in_process(capsys, "vector", "show", path)
    assert code == 0, err
    lines = out.splitlines()
    fields = dict(line.split(": ", 1) for line in lines)
    assert len(fields) == len(lines), "one field per line, each named once"
    return fields


def test_exported_vectors_carry_their_evidence_both_formats(run, capsys, monkeypatch):
    monkeypatch.chdir(run)
    argv = ["steer", "run/seed-1", "--latent", "0", "--alpha", "2"]
    argv += ["--export", "v.safetensors", "--export-gguf", "v.gguf"]
    code, _, err = ssae_in_process(capsys, *argv)
    assert code == 0, err
    pairs_sha256 = load_embeddings(run / "emb").metadata["pairs_sha256"]
    for path in (run / "v.safetensors", run / "v.gguf"):
        meta = vf.load_steering_vectors(path).metadata
        assert meta["method"] == "ssae" and meta["layer"] == "1" and meta["seed"] == "1"
        assert meta["pairs_sha256"] == pairs_sha256 and meta["status"] in STATUSES
        assert float(meta["budget"]) > 0 and meta["latent"] == "0"
        assert meta["seeds"] == "0,1" and all(k in meta for k in EVIDENCE), meta
        assert 0 <= float(meta["latent_stability_min"]) <= float(meta["latent_stability_mean"])
        assert 0 <= float(meta["decoder_udr"]) <= 1
        assert meta["matched_concept"] == "lang" and meta["matched_by"] == "mean_shift_cosine"
        assert 0 <= float(meta["match_score"]) <= 1 and float(meta["alpha_fit"]) != 0
        fields = show(capsys, path)
        assert fields["written_by"] == "ssae" and fields["status"] == meta["status"]
        assert fields["pairs_sha256"] == pairs_sha256 and fields["layers"] == "1"
        assert fields["budget_ratio"] == "none" and fields["width"] == "48"
    assert show(capsys, run / "v.gguf")["model_hint"] == "llama"


def test_md_vectors_follow_the_umask_and_show_what_applies(run, capsys):
    previous = os.umask(0o022)
    try:
        argv = ["vector", "md", run / "emb", "--out", run / "md.safetensors"]
        code, _, err = ssae_in_process(capsys, *argv, "--export-gguf", run / "md.gguf")
    finally:
        os.umask(previous)
    assert code == 0, err
    for path in (run / "md.safetensors", run / "md.gguf"):
        assert path.stat().st_mode & 0o777 == 0o644, path
        fields = show(capsys, path)
        assert fields["method"] == "md" and fields["concept"] == "lang"
        assert len(fields["pairs_sha256"]) == 64 and float(fields["alpha_fit"]) > 0
        norm = float(fields["norm.1"])
        assert float(fields["alpha_fit"]) == pytest.approx(norm, rel=1e-5)
        assert fields["status"] == fields["budget"] == fields["decoder_udr"] == "none"


def write_control_vector(path: Path, hint: str | None, directions: dict[int, np.ndarray]) -> None:
    """A control vector as repeng writes it (with ``hint``), or with direction tensors only."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "controlvector")
    if hint is None:
        writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE)
    else:
        writer.add_string("controlvector.model_hint", hint)
        writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, values in directions.items():
        writer.add_tensor(f"direction.{layer}", values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("hint", ["mistral", None], ids=["repeng", "llama.cpp"])
def test_show_a_control_vector_written_elsewhere(tmp_path, capsys, hint):
    path = tmp_path / "happy.gguf"
    write_control_vector(path, hint, {1: np.full(4, 0.5), 3: np.array([3.0, 4.0, 0.0, 0.0])})
    fields = show(capsys, path)
    assert fields["written_by"] == "not ssae" and fields["model_hint"] == (hint or "absent")
    assert fields["layers"] == "1,3" and fields["width"] == "4"
    assert fields["norm.1"] == "1" and fields["norm.3"] == "5"
    assert fields["evidence"] == FOREIGN_NOTE.removeprefix("evidence: ")
    assert not {"status", "method", "alpha_fit", "metadata.model_type"} & set(fields)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("v.safetensors", b"not a tensor file", "not a readable safetensors file"),
        ("v.gguf", b"GGUF\x03junk", "not a readable GGUF file"),
        ("missing.gguf", None, "no such file"),
    ],
)
def test_show_a_bad_file_is_one_line_naming_it_and_the_fix(tmp_path, capsys, name, content,
                                                          message):  # fmt: skip
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, _, err = ssae_in_process(capsys, "vector", "show", path)
    assert_one_line_error(code, err, f"{path}: {message}")
    assert "; " in err and ("export it again" in err or "give a" in err), err


def test_concept_vector_is_the_matched_latent_oriented_along_the_concept(run, monkeypatch):
    from ssae_core.errors import InputError
    from ssae_core.evaluation.vector_evidence import concept_vector, with_evidence

    monkeypatch.chdir(run)
    concept = load_embeddings(run / "emb").concepts[0]
    vector = concept_vector("run/seed-1", concept)
    assert vector.metadata["matched_concept"] == concept and vector.metadata["latent"] == "0"
    assert float(vector.metadata["alpha_fit"]) > 0  # it points along +concept
    flipped = with_evidence(vf.vector_from_model("run/seed-1", latent=0, alpha=-1.0), "run/seed-1")
    assert float(flipped.metadata["alpha_fit"]) == -float(vector.metadata["alpha_fit"])
    with pytest.raises(InputError, match="not a concept"):
        concept_vector("run/seed-1", "no-such-concept")
