"""Every architecture of ``ssae_core.lm.layers.ARCHITECTURES`` on a tiny random model (no
downloads): extraction at a block and at ``final`` against ``output_hidden_states``, left-padded
batches against one text at a time, steering at every position mode (with and without the KV
cache) against a hook written here, and llama.cpp export names.

The modules the reference code reads and hooks are named here by hand (``blocks``, ``norm``), not
found by the library, so the tests also check the library's table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ssae_core.lm import embed, layers, loading, tokens
from ssae_core.lm import vector_files as vf
from ssae_core.lm.steer import POSITIONS, SteeringVector, steer
from tests.conftest import build_tiny_tokenizer

WIDTH, BLOCKS, HEADS = 48, 3, 4
TEXTS = [
    "the king",
    "the queen is a woman .",
    "cat",
    "le chat est un chien . the dog is big and small",
    "yes",
    "the man was at the house with the dog and the cat",
]
PROMPTS = ["the king was", "a cat", "le chien est un chien . the dog", "she"]
NEW_TOKENS = 5


@dataclass(frozen=True)
class Arch:
    """A tiny model of one architecture and where its blocks and final norm sit, by hand."""

    name: str
    build: Callable[[int], torch.nn.Module]
    blocks: str  # attribute path of the decoder blocks from the top-level model
    norm: str  # attribute path of the final norm
    tokenizer: Callable[[], object]  # a tokenizer that treats BOS the way the family's does


def _decoder(config_cls, model_cls, **extra):
    """A builder for the families whose configs take the usual field names (GPT-NeoX ignores
    the key-value head count)."""

    def build(vocab: int) -> torch.nn.Module:
        config = config_cls(**_fields(vocab), **extra)
        config.initializer_range = 0.2
        return model_cls(config)

    return build


def _fields(vocab: int) -> dict[str, object]:
    """The shape of every tiny model here, in the field names most configs share."""
    return {
        "vocab_size": vocab,
        "hidden_size": WIDTH,
        "intermediate_size": 2 * WIDTH,
        "num_hidden_layers": BLOCKS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }


def _gpt2(vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab,
        n_embd=WIDTH,
        n_layer=BLOCKS,
        n_head=HEADS,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(config)


def _gemma3_with_vision(vocab: int) -> torch.nn.Module:
    """Gemma 3 with a vision tower whose encoder has as many blocks as the language model."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config={
            **_fields(vocab),
            "head_dim": 12,
            "sliding_window": 4,
            "initializer_range": 0.2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": BLOCKS,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        mm_tokens_per_image=4,
        image_token_index=vocab - 1,
        initializer_range=0.2,
    )
    return Gemma3ForConditionalGeneration(config)


def _byte_level_qwen2_tokenizer():
    """Qwen2's tokenizer class (transformers loads it for every qwen2 folder, whatever the folder
    says) over a byte-level vocabulary without merges: one token per byte, and no BOS token."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(dict.fromkeys(bytes_to_unicode().values()))
    return Qwen2Tokenizer(vocab={"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(chars)}},
                          merges=[])  # fmt: skip


def _archs() -> list[Arch]:
    import functools

    import transformers as tf

    adds_bos = build_tiny_tokenizer  # Llama, Mistral, Gemma, Phi-3 tokenizers add BOS themselves
    defines_bos = functools.partial(build_tiny_tokenizer, adds_bos=False)  # GPT-2, GPT-NeoX
    no_bos = _byte_level_qwen2_tokenizer  # Qwen2: no BOS token at all
    window = {"sliding_window": 4}  # shorter than most texts: the window really masks
    return [
        Arch("llama", _decoder(tf.LlamaConfig, tf.LlamaForCausalLM), "model.layers",
             "model.norm", adds_bos),
        Arch("mistral", _decoder(tf.MistralConfig, tf.MistralForCausalLM, **window),
             "model.layers", "model.norm", adds_bos),
        Arch("qwen2", _decoder(tf.Qwen2Config, tf.Qwen2ForCausalLM, use_sliding_window=True,
                               max_window_layers=1, **window), "model.layers", "model.norm",
             no_bos),
        Arch("gemma2", _decoder(tf.Gemma2Config, tf.Gemma2ForCausalLM, head_dim=12, **window),
             "model.layers", "model.norm", adds_bos),
        Arch("gemma3_text", _decoder(tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, head_dim=12,
                                     **window), "model.layers", "model.norm", adds_bos),
        Arch("gemma3", _gemma3_with_vision, "model.language_model.layers",
             "model.language_model.norm", adds_bos),
        Arch("phi3", _decoder(tf.Phi3Config, tf.Phi3ForCausalLM), "model.layers", "model.norm",
             adds_bos),
        Arch("gpt_neox", _decoder(tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM), "gpt_neox.layers",
             "gpt_neox.final_layer_norm", defines_bos),
        Arch("gpt2", _gpt2, "transformer.h", "transformer.ln_f", defines_bos),
    ]  # fmt: skip


ARCHS = {arch.name: arch for arch in _archs()}


def test_every_table_entry_is_tested_here():
    assert set(layers.ARCHITECTURES) == set(ARCHS)


@dataclass
class Tiny:
    arch: Arch
    folder: Path
    model: torch.nn.Module
    tokenizer: object

    def module(self, path: str) -> torch.nn.Module:
        return self.model.get_submodule(path)

    def hooked(self, layer: int | None) -> torch.nn.Module:
        """The module whose output is layer ``layer``, named by hand."""
        return self.module(self.arch.norm if layer is None else f"{self.arch.blocks}.{layer}")


@pytest.fixture(scope="module", params=list(ARCHS))
def tiny(request, tmp_path_factory) -> Tiny:
    """The architecture saved to a folder and loaded back the way extraction loads it."""
    arch = ARCHS[request.param]
    tokenizer = arch.tokenizer()
    torch.manual_seed(0)
    built = arch.build(len(tokenizer) + 1).eval()
    assert built.config.model_type == arch.name
    folder = tmp_path_factory.mktemp(arch.name)
    built.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    source = loading.resolve_model(folder)
    return Tiny(arch, folder, loading.load_model(source), loading.load_tokenizer(source))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --------------------------------------------------------------------------- where the layers are


def test_the_table_names_the_blocks_and_the_final_norm(tiny):
    assert layers.decoder_blocks(tiny.model) is tiny.module(tiny.arch.blocks)
    assert layers.final_norm(tiny.model) is tiny.module(tiny.arch.norm)


def test_discovery_alone_finds_the_vision_blocks_of_gemma3(monkeypatch):
    """Why gemma3 has an entry: without it, the first ModuleList of the right length is the
    vision tower's."""
    model = _gemma3_with_vision(len(build_tiny_tokenizer()) + 1)
    assert layers.decoder_blocks(model) is model.get_submodule("model.language_model.layers")
    monkeypatch.delitem(layers.ARCHITECTURES, "gemma3")
    assert layers.decoder_blocks(model) is model.get_submodule("model.vision_tower.encoder.layers")


# --------------------------------------------------------------------------- extraction


def direct_states(tiny: Tiny, ids: list[int]) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        out = tiny.model(torch.tensor([ids]), output_hidden_states=True)
        body = tiny.model.base_model(torch.tensor([ids]))
    return (*out.hidden_states, body.last_hidden_state)


def test_extraction_matches_output_hidden_states(tiny, tmp_path):
    from ssae_core.io import load_embeddings, pair_table, write_parquet

    x, x_tilde = TEXTS[:3], TEXTS[3:]
    pairs = tmp_path / "pairs.parquet"
    write_parquet(pair_table(x, x_tilde, ["train"] * 3, np.zeros((3, 1)), ["c"]), pairs)
    out = embed.extract_embeddings(
        pairs, tmp_path / "emb", model=str(tiny.folder), layers=[1, "final"], batch_size=4,
        shard_rows=2, progress=False,
    )  # fmt: skip
    tables = {layer: load_embeddings(path) for layer, path in embed.layer_tables(out).items()}
    ids = tokens.tokenize(tiny.tokenizer, TEXTS)
    bos = tiny.tokenizer.bos_token_id
    plain = tokens.tokenize(tiny.tokenizer, TEXTS, bos="false")
    if bos is None:
        assert ids == plain
    else:  # one BOS first, whether the tokenizer adds it or the library does
        assert all(row[0] == bos and bos not in row[1:] for row in ids)
    states = [direct_states(tiny, row) for row in ids]
    worst = []
    for layer, index in ((1, 2), (None, -2), (None, -1)):  # block 1; hidden_states[-1]; body
        expected = np.stack([s[index][0, -1].numpy() for s in states])
        got = np.concatenate([tables[layer].z, tables[layer].z_tilde])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
        worst.append((np.abs(got - expected).max(), cosines(got, expected).min()))
    # the last block's output is the residual before the final norm, which hidden_states lacks
    last = embed.embed_token_ids(tiny.model, ids, layer=BLOCKS - 1)
    with torch.inference_mode():
        normed = layers.final_norm(tiny.model)(torch.from_numpy(last)).numpy()
    np.testing.assert_allclose(normed, tables[None].z.tolist() + tables[None].z_tilde.tolist(),
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    diff = max(w[0] for w in worst)
    print(f"\n{tiny.arch.name}: extraction vs output_hidden_states: max abs diff {diff:.2e}, "
          f"min cosine {min(w[1] for w in worst):.7f}")  # fmt: skip


def test_batched_left_padded_equals_one_text_at_a_time(tiny):
    ids = tokens.tokenize(tiny.tokenizer, TEXTS)
    assert len({len(row) for row in ids}) > 3  # the batch really pads
    wanted = [0, BLOCKS - 1, None]
    pad = tokens.pad_token_id(tiny.tokenizer)
    batched = embed.embed_token_ids_at(tiny.model, ids, wanted, batch_size=len(ids), pad_id=pad)
    single = np.stack(
        [embed.embed_token_ids_at(tiny.model, [row], wanted)[:, 0] for row in ids], axis=1
    )
    np.testing.assert_allclose(batched, single, atol=1e-4, rtol=1e-4)
    assert cosines(batched, single).min() > 0.99999
    print(f"\n{tiny.arch.name}: batched vs single: max abs diff "
          f"{np.abs(batched - single).max():.2e}")  # fmt: skip


# --------------------------------------------------------------------------- steering


def reference_generate(tiny: Tiny, prompt: list[int], layer, vector, positions: str):
    """Greedy tokens and scores of one unpadded prompt, re-reading the whole sequence at every
    step (no cache), with a hook written here that adds ``vector`` at the positions asked for:
    the prompt's (index < P), the generated ones (index >= P) or all."""
    length = len(prompt)

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        index_T = torch.arange(hidden.shape[-2])
        keep_T = {"all": index_T >= 0, "prompt": index_T < length, "generated": index_T >= length}
        steered = hidden + keep_T[positions][:, None].to(hidden.dtype) * vector
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    ids, scores = list(prompt), []
    handle = tiny.hooked(layer).register_forward_hook(add)
    try:
        with torch.inference_mode():
            for _ in range(NEW_TOKENS):
                logits = tiny.model(torch.tensor([ids]), use_cache=False).logits[0, -1]
                scores.append(logits)
                ids.append(int(logits.argmax()))
    finally:
        handle.remove()
    return ids[length:], torch.stack(scores)


def library_generate(tiny: Tiny, prompts: list[list[int]], use_cache: bool):
    """Greedy tokens and scores of a left-padded batch through ``generate``."""
    pad = tokens.pad_token_id(tiny.tokenizer)
    ids_BT, mask_BT = tokens.left_pad(prompts, pad)
    with torch.inference_mode():
        out = tiny.model.generate(
            input_ids=ids_BT, attention_mask=mask_BT, max_new_tokens=NEW_TOKENS, do_sample=False,
            use_cache=use_cache, pad_token_id=pad, eos_token_id=None, output_scores=True,
            return_dict_in_generate=True,
        )  # fmt: skip
    return out.sequences[:, ids_BT.shape[1] :], torch.stack(out.scores, 1)


def steering_vector(tiny: Tiny, layer, ids: list[list[int]]) -> torch.Tensor:
    """A random direction about twice as long as the states at ``layer``: big enough to change
    the greedy tokens, not so big that every row says the same."""
    states = embed.embed_token_ids(tiny.model, ids, layer=layer)
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(states.shape[1], generator=gen)
    return 2.0 * float(np.linalg.norm(states, axis=1).mean()) * direction / direction.norm()


@pytest.mark.parametrize("layer", [1, None])
def test_steering_equals_a_reference_hook(tiny, layer):
    prompts = tokens.tokenize(tiny.tokenizer, PROMPTS)
    vector = steering_vector(tiny, layer, prompts)
    plain, _ = library_generate(tiny, prompts, use_cache=True)
    changed, worst = False, 0.0
    for positions in POSITIONS:
        references = [reference_generate(tiny, row, layer, vector, positions) for row in prompts]
        for use_cache in (True, False):
            with steer(tiny.model, SteeringVector({layer: vector}), positions=positions):
                got, scores = library_generate(tiny, prompts, use_cache)
            for row, (expected, expected_scores) in enumerate(references):
                assert got[row].tolist() == expected, (positions, use_cache, row)
                torch.testing.assert_close(scores[row], expected_scores, atol=1e-3, rtol=1e-4)
                worst = max(worst, float((scores[row] - expected_scores).abs().max()))
            changed |= not torch.equal(got, plain)
    assert changed  # the vector steered something
    name = f"{tiny.arch.name} layer {layers.layer_name(layer)}"
    print(f"\n{name}: steering = reference hook (3 position modes x cache on/off), max score "
          f"diff {worst:.1e}")  # fmt: skip


def test_llama_cpp_export_names_the_blocks(tiny, tmp_path):
    """``direction.L`` is block L, the module the library hooks for layer L."""
    prompts = tokens.tokenize(tiny.tokenizer, PROMPTS)
    vectors = {L: steering_vector(tiny, L, prompts) for L in range(1, BLOCKS)}
    path = vf.export_gguf(SteeringVector(vectors), tmp_path / "v.gguf", model_hint=tiny.arch.name)
    import gguf

    names = sorted(t.name for t in gguf.GGUFReader(str(path)).tensors)
    assert names == [f"direction.{L}" for L in range(1, BLOCKS)]
    loaded = vf.load_steering_vectors(path)
    for L in range(1, BLOCKS):
        assert layers.decoder_blocks(tiny.model)[L] is tiny.module(f"{tiny.arch.blocks}.{L}")
        assert torch.equal(loaded.layer_activations[L], vectors[L])
    with steer(tiny.model, loaded):
        from_file, _ = library_generate(tiny, prompts, use_cache=True)
    with steer(tiny.model, SteeringVector(vectors)):
        original, _ = library_generate(tiny, prompts, use_cache=True)
    assert torch.equal(from_file, original)
