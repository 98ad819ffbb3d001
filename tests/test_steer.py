"""Steering hooks, vector files and `ssae steer` on a tiny random Llama (no downloads)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from ssae_core.cli import build_parser
from ssae_core.errors import InputError
from ssae_core.lm import layers
from ssae_core.lm import vector_files as vf
from ssae_core.lm.steer import OPERATORS, POSITIONS, SteeringVector, steer
from ssae_core.lm.tokens import left_pad
from ssae_core.model import Normalizer, ShiftAutoencoder, StackedSSAE
from tests.conftest import build_tiny_llama, build_tiny_tokenizer

WIDTH = 48
PROMPTS = [[1, 5, 6, 7, 8], [1, 9, 10], [1, 11, 12, 13, 14, 15, 16], [1, 17]]


@pytest.fixture(scope="module")
def model():
    return build_tiny_llama(len(build_tiny_tokenizer()), layers=3, seed=0)


def direction(seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(WIDTH, generator=gen)
    return scale * v / v.norm()


def hooks_of(model: torch.nn.Module) -> dict[str, tuple]:
    """Every hook registered on every module (what a steering context must leave as it found)."""
    return {
        name: tuple(
            tuple(getattr(module, attr).keys())
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs")
        )
        for name, module in model.named_modules()
    }


@torch.no_grad()
def states(model, ids, **kwargs):
    return model(torch.tensor(ids), output_hidden_states=True, **kwargs).hidden_states


# --------------------------------------------------------------------------- where and how much


@torch.no_grad()
def block_outputs(model, ids) -> list[torch.Tensor]:
    """Each block's output, recorded by hooks that run after any steering hook (for the last
    block, output_hidden_states reports the normed state instead)."""
    found: list[torch.Tensor] = []
    blocks = model.model.layers
    handles = [b.register_forward_hook(lambda m, a, out: found.append(out)) for b in blocks]
    try:
        model(torch.tensor(ids))
    finally:
        for handle in handles:
            handle.remove()
    return found


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_block_steering_adds_alpha_v_at_its_layer_only(model, layer):
    v = direction()
    before, before_blocks = states(model, PROMPTS[:1]), block_outputs(model, PROMPTS[:1])
    with steer(model, SteeringVector({layer: v}), multiplier=2.0):
        after, after_blocks = states(model, PROMPTS[:1]), block_outputs(model, PROMPTS[:1])
    for index in range(layer + 1):  # inputs and earlier blocks: untouched
        assert torch.equal(after[index], before[index])
    diffs = [after_blocks[layer] - before_blocks[layer]]
    if layer + 1 < len(before) - 1:  # output_hidden_states' last entry is the normed state
        diffs.append(after[layer + 1] - before[layer + 1])
    for diff in diffs:
        torch.testing.assert_close(diff, (2.0 * v).expand_as(diff), atol=1e-5, rtol=0)


def test_final_steering_adds_alpha_v_to_last_hidden_state(model):
    v = direction(1)
    ids = torch.tensor(PROMPTS[:1])
    with torch.no_grad():
        before = model.model(ids).last_hidden_state
        with steer(model, SteeringVector({"final": v}), multiplier=-1.5):
            after = model.model(ids).last_hidden_state
            logits = model(ids).logits
    torch.testing.assert_close(after - before, (-1.5 * v).expand_as(before), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, model.lm_head(before - 1.5 * v), atol=1e-5, rtol=1e-5)


def operated(operator: str, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """What each operator makes of hidden states h [..., D], computed directly."""
    if operator == "add":
        return h + v
    if operator == "project_out":
        u = v / v.norm()
        return h - (h @ u)[..., None] * u
    steered = h + v
    return steered * (h.norm(dim=-1, keepdim=True) / steered.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_positions_split_prompt_from_generated_tokens(model, positions, use_cache, operator):
    """Call 1 reads the prompt (P tokens), call 2 one more token, as generate does. Block 1's
    own output never depends on what was steered at block 1, so it is the unsteered state,
    operated on at the steered positions."""
    layer, v = 1, direction(2)
    full = [PROMPTS[0] + [20]]
    prompt_len = len(PROMPTS[0])
    reference = states(model, full)[layer + 1]
    steered_reference = operated(operator, reference, v)
    mask = torch.arange(prompt_len + 1) < prompt_len
    if positions == "generated":
        mask = ~mask
    expected = torch.where(mask[None, :, None], steered_reference, reference)
    vector = SteeringVector({layer: v})
    with torch.no_grad(), steer(model, vector, positions=positions, operator=operator):
        first = model(torch.tensor(PROMPTS[:1]), output_hidden_states=True, use_cache=use_cache)
        if use_cache:
            second = model(
                torch.tensor([[20]]),
                past_key_values=first.past_key_values,
                output_hidden_states=True,
                use_cache=True,
            ).hidden_states[layer + 1]
            expected_second = expected[:, prompt_len:]
        else:  # the full sequence again: prompt positions and the new one
            second = states(model, full, use_cache=False)[layer + 1]
            expected_second = expected
    first_expected = expected[:, :prompt_len]
    torch.testing.assert_close(first.hidden_states[layer + 1], first_expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(second, expected_second, atol=1e-5, rtol=0)


def test_unrelated_calls_start_new_prompts(model):
    """Only a call that extends the previous one by one token (or reads a filled cache)
    continues a sequence; the same prompt twice, or another prompt, starts afresh."""
    calls = (PROMPTS[:1], PROMPTS[:1], [PROMPTS[0] + [20, 21]], PROMPTS[1:2])
    references = [states(model, ids)[2] for ids in calls]
    with steer(model, SteeringVector({1: direction(3)}), positions="generated"):
        for ids, reference in zip(calls, references, strict=True):
            assert torch.equal(states(model, ids)[2], reference)


# --------------------------------------------------------------------------- hooks are undone


def test_nothing_stays_hooked_after_the_context_even_on_error(model):
    ids = torch.tensor(PROMPTS[:1])
    with torch.no_grad():
        model(ids, output_hidden_states=True)  # transformers installs its own hooks once
        clean = model(ids).logits
    registered = hooks_of(model)
    for positions in POSITIONS:
        vector = SteeringVector({0: direction(), None: direction(1)})
        with steer(model, vector, positions=positions):
            assert hooks_of(model) != registered
        assert hooks_of(model) == registered
        with (
            pytest.raises(RuntimeError, match="boom"),
            steer(model, vector, positions=positions),
        ):
            raise RuntimeError("boom")
        assert hooks_of(model) == registered
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean)


def test_bad_input_is_refused_before_hooking(model):
    registered = hooks_of(model)
    cases = [
        ({0: direction()}, {"positions": "middle"}, "positions"),
        ({0: torch.ones(WIDTH + 1)}, {}, "width"),
        ({7: direction()}, {}, "out of range"),
        ({0: direction()}, {"multiplier": float("nan")}, "multiplier"),
    ]
    for vectors, kwargs, message in cases:
        with (
            pytest.raises(InputError, match=message),
            steer(model, SteeringVector(vectors), **kwargs),
        ):
            pass
        assert hooks_of(model) == registered
    for bad in ({0: torch.full((WIDTH,), float("nan"))}, {0: torch.ones(2, WIDTH)}, {}, {-1: 1}):
        with pytest.raises(InputError):
            SteeringVector(bad)


def test_several_vectors_equal_nested_contexts(model):
    a = SteeringVector({0: direction(4)})
    b = SteeringVector({2: direction(5), None: direction(6)})
    c = SteeringVector({2: direction(7)})
    ids = torch.tensor(PROMPTS[:1])
    with torch.no_grad():
        with steer(model, [a, b, c], multiplier=0.5):
            together = model(ids).logits
        with (
            steer(model, a.scaled(0.5)),
            b.apply(model, multiplier=0.5),
            steer(model, c, multiplier=0.5),
        ):
            nested = model(ids).logits
    torch.testing.assert_close(together, nested, atol=1e-5, rtol=1e-5)


def test_final_norm_of_other_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    )
    gpt2.eval()
    assert layers.final_norm(gpt2) is gpt2.transformer.ln_f
    ids = torch.tensor([[1, 2, 3, 4]])
    v = torch.ones(32)
    with torch.no_grad():
        before = gpt2.transformer(ids).last_hidden_state
        with steer(gpt2, SteeringVector({None: v}), multiplier=2.0):
            after = gpt2.transformer(ids).last_hidden_state
    torch.testing.assert_close(after - before, torch.full_like(before, 2.0), atol=1e-5, rtol=0)

    llama = build_tiny_llama(20, layers=2)
    llama.model._modules["unusual_name"] = llama.model._modules.pop("norm")
    with pytest.raises(InputError, match="final norm"):
        layers.final_norm(llama)


# --------------------------------------------------------------------------- batches and cache


def generate(model, rows, *, use_cache=True, new=6):
    ids_BT, mask_BT = left_pad(rows, pad_id=0)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids_BT,
            attention_mask=mask_BT,
            max_new_tokens=new,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
            eos_token_id=None,
            output_scores=True,
            return_dict_in_generate=True,
        )
    return out.sequences[:, ids_BT.shape[1] :], torch.stack(out.scores, 1)


PLACES = [*((p, 1) for p in POSITIONS), ("all", None)]


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize(("positions", "layer"), PLACES)
def test_batched_left_padded_equals_one_at_a_time(model, positions, layer, operator):
    vector = SteeringVector({layer: direction(8, scale=4.0 if layer is None else 6.0)})
    with steer(model, vector, positions=positions, operator=operator):
        tokens_B, scores_B = generate(model, PROMPTS)
        for row, prompt in enumerate(PROMPTS):
            tokens, scores = generate(model, [prompt])
            assert tokens[0].tolist() == tokens_B[row].tolist()
            torch.testing.assert_close(scores[0], scores_B[row], atol=1e-4, rtol=1e-4)
    _, plain_scores = generate(model, PROMPTS)
    assert (plain_scores - scores_B).abs().max() > 1e-2  # the steering did something


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize(("positions", "layer"), PLACES)
def test_generation_with_cache_equals_without(model, positions, layer, operator):
    vector = SteeringVector({layer: direction(9, scale=4.0 if layer is None else 6.0)})
    with steer(model, vector, positions=positions, operator=operator):
        cached, cached_scores = generate(model, PROMPTS, use_cache=True)
        fresh, fresh_scores = generate(model, PROMPTS, use_cache=False)
    assert cached.tolist() == fresh.tolist()
    torch.testing.assert_close(cached_scores, fresh_scores, atol=1e-4, rtol=1e-4)


def test_beam_search_with_cache_equals_without(model):
    def beams(use_cache):
        ids_BT, mask_BT = left_pad(PROMPTS[:2], pad_id=0)
        with torch.no_grad():
            return model.generate(
                input_ids=ids_BT,
                attention_mask=mask_BT,
                max_new_tokens=5,
                num_beams=3,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=0,
                eos_token_id=None,
            )

    with steer(model, SteeringVector({1: direction(11, 6.0)}), positions="generated"):
        assert beams(True).tolist() == beams(False).tolist()


def test_generated_positions_leave_the_first_new_token_unsteered(model):
    plain, plain_scores = generate(model, PROMPTS)
    with steer(model, SteeringVector({1: direction(10, 20.0)}), positions="generated"):
        steered, steered_scores = generate(model, PROMPTS)
    torch.testing.assert_close(steered_scores[:, 0], plain_scores[:, 0])
    assert not torch.equal(steered[:, 1:], plain[:, 1:])


# --------------------------------------------------------------------------- files


def test_safetensors_roundtrip(tmp_path):
    vector = SteeringVector({None: direction(0), 2: direction(1)}, {"concept": "lang"})
    path = vf.save_steering_vector(vector, tmp_path / "v.safetensors")
    loaded = vf.load_steering_vectors(path)
    assert set(loaded.layer_activations) == {None, 2}
    for layer, values in vector.layer_activations.items():
        assert torch.equal(loaded.layer_activations[layer], values)
    assert loaded.metadata == {"concept": "lang"}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"final", "2"}


def test_gguf_export_follows_llama_cpp_conventions(tmp_path):
    import gguf

    vector = SteeringVector({1: direction(0), 2: direction(1)}, {"alpha": "8.0"})
    path = vf.export_gguf(vector, tmp_path / "v.gguf", model_hint="llama")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 2
    assert reader.fields["ssae.alpha"].contents() == "8.0"
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {"direction.1", "direction.2"}
    for layer in (1, 2):
        tensor = tensors[f"direction.{layer}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == [WIDTH]
        np.testing.assert_array_equal(tensor.data, vector.layer_activations[layer].numpy())
    loaded = vf.load_steering_vectors(path)
    assert set(loaded.layer_activations) == {1, 2}
    assert torch.equal(loaded.layer_activations[2], vector.layer_activations[2])
    assert loaded.metadata["alpha"] == "8.0" and loaded.metadata["model_type"] == "llama"


@pytest.mark.parametrize("layer", [None, 0])
def test_gguf_refuses_positions_llama_cpp_cannot_steer(tmp_path, layer):
    with pytest.raises(InputError, match=r"llama\.cpp"):
        vf.export_gguf(SteeringVector({layer: direction()}), tmp_path / "v.gguf")
    assert list(tmp_path.iterdir()) == []


def test_loading_bad_files_is_an_input_error(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    for path in (tmp_path / "missing.safetensors", tmp_path / "junk.safetensors"):
        with pytest.raises(InputError):
            vf.load_steering_vectors(path)
    from safetensors.torch import save_file

    save_file({"15": torch.arange(8, dtype=torch.int64)}, str(tmp_path / "int.safetensors"))
    with pytest.raises(InputError, match="tensor 15 holds int64; a steering vector holds floats"):
        vf.load_steering_vectors(tmp_path / "int.safetensors")


# --------------------------------------------------------------------------- from a trained model


def write_model(folder: Path, *, latents: int, concepts, provenance, **extra) -> Path:
    gen = torch.Generator().manual_seed(latents)
    net = StackedSSAE(WIDTH, latents, [0], 1.0)
    with torch.no_grad():
        net.W_dec_SMD.copy_(torch.randn(1, latents, WIDTH, generator=gen))
        net.normalize_decoder_()
    config = {
        "method": "ssae",
        "dim": WIDTH,
        "latent_dim": latents,
        "seed": 0,
        "x_rms": 1.0,
        "normalization": {"mode": "global", "scale": 2.5},
        "concepts": concepts,
        "provenance": provenance,
        **extra,
    }
    model = ShiftAutoencoder(net, Normalizer("global", np.zeros(WIDTH, np.float32), 2.5), config)
    folder.mkdir(parents=True)
    model.save(folder)
    return folder


def test_vector_from_model_takes_layer_and_latent(tmp_path):
    folder = write_model(
        tmp_path / "m", latents=3, concepts=["a", "b"], provenance={"model": "x", "layer": "1"}
    )
    unit = ShiftAutoencoder.load(folder).steering_vectors
    vector = vf.vector_from_model(folder, latent=2, alpha=-4.0)
    assert list(vector.layer_activations) == [1]
    np.testing.assert_allclose(vector.layer_activations[1].numpy(), -4.0 * unit[2], atol=1e-6)
    assert vector.metadata["layer"] == "1" and vector.metadata["latent"] == "2"
    assert vector.metadata["model"] == "x" and vector.metadata["alpha"] == "-4.0"
    by_name = vf.vector_from_model(folder, concept="b", matching={"b": 0})
    np.testing.assert_allclose(by_name.layer_activations[1].numpy(), unit[0], atol=1e-6)
    for kwargs, message in [
        ({"concept": "b"}, "matching"),
        ({"concept": "zzz", "matching": {"zzz": 0}}, "not in"),
        ({"latent": 3}, "latents 0..2"),
        ({}, "exactly one"),
    ]:
        with pytest.raises(InputError, match=message):
            vf.vector_from_model(folder, **kwargs)


def test_vector_from_model_final_layer_and_synthetic(tmp_path):
    final = write_model(tmp_path / "f", latents=1, concepts=["lang"], provenance={"layer": "final"})
    vector = vf.vector_from_model(final, concept="lang", alpha=2.0)  # one latent, one concept
    assert list(vector.layer_activations) == [None] and vector.metadata["concept"] == "lang"
    synthetic = write_model(tmp_path / "s", latents=2, concepts=None, provenance={"source": "x"})
    with pytest.raises(InputError, match="no LM layer"):
        vf.vector_from_model(synthetic, latent=0)
    assert list(vf.vector_from_model(synthetic, latent=0, layer=2).layer_activations) == [2]


# --------------------------------------------------------------------------- command line


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["steer", *argv])


def test_cli_prints_both_continuations_and_exports(tiny_lm_dir, tmp_path, capsys):
    folder = write_model(
        tmp_path / "m",
        latents=2,
        concepts=["a", "b"],
        provenance={"model": str(tiny_lm_dir), "layer": "1"},
    )
    args = parse(
        [
            str(folder),
            "--latent",
            "1",
            "--alpha",
            "30",
            "--prompt",
            "the cat sat on the",
            "--prompt",
            "a dog",
            "--max-new-tokens",
            "5",
            "--positions",
            "generated",
            "--export",
            str(tmp_path / "v.safetensors"),
            "--export-gguf",
            str(tmp_path / "v.gguf"),
        ]
    )
    args.func(args)
    out = capsys.readouterr().out
    assert out.count("unsteered:") == 2 and out.count("steered:") == 4
    assert "latent 1, alpha 30, operator add, layer 1, positions generated" in out
    saved = vf.load_steering_vectors(tmp_path / "v.safetensors")
    exported = vf.load_steering_vectors(tmp_path / "v.gguf")
    assert torch.equal(saved.layer_activations[1], exported.layer_activations[1])
    assert saved.metadata["model_type"] == "llama"
    assert saved.metadata["alpha"] == "30.0"


def test_cli_gguf_of_final_layer_fails_before_writing(tiny_lm_dir, tmp_path):
    folder = write_model(
        tmp_path / "m", latents=1, concepts=["lang"], provenance={"model": "x", "layer": "final"}
    )
    out = tmp_path / "out"
    args = parse(
        [
            str(folder),
            "--latent",
            "0",
            "--alpha",
            "8",
            "--export",
            str(out / "v.safetensors"),
            "--export-gguf",
            str(out / "v.gguf"),
        ]
    )
    with pytest.raises(InputError, match=r"llama\.cpp"):
        args.func(args)
    assert not out.exists()
    with pytest.raises(InputError, match="--prompt"):
        args = parse([str(folder), "--latent", "0", "--alpha", "8"])
        args.func(args)


def test_cli_strength_is_in_units_of_the_typical_residual_norm(tiny_lm_dir, tmp_path, capsys):
    """Without --alpha the vector is rescaled to strength x the median hidden-state norm at its
    layer (the default strength when none is given), whatever the model's own vector length."""
    from ssae_core.cli import DEFAULT_STRENGTH
    from ssae_core.evaluation.behaviour.language import NEUTRAL_PROMPTS
    from ssae_core.lm import loading as lm
    from ssae_core.lm.steer import typical_norm

    folder = write_model(
        tmp_path / "m",
        latents=2,
        concepts=["a", "b"],
        provenance={"model": str(tiny_lm_dir), "layer": "1", "bos": "auto"},
    )
    source = lm.resolve_model(str(tiny_lm_dir), verbose=False)
    norm = typical_norm(lm.load_model(source), lm.load_tokenizer(source), 1, NEUTRAL_PROMPTS)
    for options, strength in (([], DEFAULT_STRENGTH), (["--strength", "-0.5"], -0.5)):
        out = tmp_path / f"v{strength}.safetensors"
        args = parse([str(folder), "--latent", "1", *options, "--export", str(out)])
        args.func(args)
        saved = vf.load_steering_vectors(out)
        unit = vf.vector_from_model(folder, latent=1, alpha=1.0).layer_activations[1]
        expected = strength * norm * unit / unit.norm()
        torch.testing.assert_close(saved.layer_activations[1], expected, rtol=1e-5, atol=1e-6)
        assert float(saved.metadata["strength"]) == strength and "alpha" not in saved.metadata
    args = parse([str(folder), "--latent", "1", "--prompt", "a dog", "--max-new-tokens", "2"])
    args.func(args)
    assert f"latent 1, strength {DEFAULT_STRENGTH:g} x norm" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse([str(folder), "--latent", "1", "--strength", "1", "--alpha", "3"])
    with pytest.raises(SystemExit):
        parse([str(folder), "--latent", "1", "--strength", "nan"])


def test_cli_help_has_a_complete_example(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    from ssae_core.study.layout import StudyLayout

    run = StudyLayout(Path()).aff_run("lang", 15) / "seed-0"  # where the pipeline writes it
    assert f"ssae steer {run.as_posix()} --lm models/lm --latent 0" in text
    assert "--strength 1.4" in text
    for option in ("--positions", "--max-new-tokens", "--export", "--export-gguf", "--concept"):
        assert option in text


def test_cli_chat_reads_prompts_in_the_chat_template(no_bos_lm_dir, tmp_path, capsys):
    from ssae_core.lm import loading
    from ssae_core.lm.tokens import complete

    provenance = {"model": str(no_bos_lm_dir), "layer": "1", "bos": "auto"}
    folder = write_model(tmp_path / "m", latents=1, concepts=["a"], provenance=provenance)
    args = parse([str(folder), "--latent", "0", "--alpha", "30", "--prompt", "a cat", "--chat",
                  "--max-new-tokens", "4"])  # fmt: skip
    args.func(args)
    unsteered = capsys.readouterr().out.split("unsteered: ")[1].split("\n")[0]
    source = loading.resolve_model(no_bos_lm_dir)
    net, tokenizer = loading.load_model(source), loading.load_tokenizer(source)
    expected = complete(net, tokenizer, ["a cat"], max_new_tokens=4, template="chat", bos="auto")
    assert unsteered == expected[0]
    plain = complete(net, tokenizer, ["a cat"], max_new_tokens=4)
    assert plain != expected  # the chat template changed what the model read
    with pytest.raises(SystemExit):
        parse([str(folder), "--latent", "0", "--alpha", "1", "--chat", "--template", "{text}"])


@pytest.mark.parametrize(
    ("recorded", "options", "expected"),
    [
        ({"bos": "auto"}, [], ("", "auto")),
        ({}, [], ("", "false")),  # embeddings from before the setting read no prefix
        ({"bos": "false", "template": "Q: {text}"}, ["--bos", "true"], ("Q: {text}", "true")),
        ({"bos": "auto"}, ["--chat"], ("chat", "auto")),
    ],
)
def test_cli_reads_prompts_as_the_embeddings_were_read(
    recorded, options, expected, no_bos_lm_dir, tmp_path, monkeypatch
):
    from ssae_core.lm import tokens

    seen: list[tuple] = []

    def fake_complete(net, tokenizer, prompts, *, template=None, bos="auto", **kw):
        seen.append((template or "", bos))
        return ["x"] * len(prompts)

    monkeypatch.setattr(tokens, "complete", fake_complete)
    provenance = {"model": str(no_bos_lm_dir), "layer": "1", **recorded}
    folder = write_model(tmp_path / "m", latents=1, concepts=["a"], provenance=provenance)
    args = parse([str(folder), "--latent", "0", "--alpha", "1", "--prompt", "a cat", *options])
    args.func(args)
    assert seen == [expected, expected]  # unsteered and steered alike
