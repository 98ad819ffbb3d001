"""Steering operators, vector arithmetic and negative layers on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from ssae_core.errors import InputError
from ssae_core.lm import layers
from ssae_core.lm.steer import SteeringVector, steer
from tests.test_steer import PROMPTS, WIDTH, block_outputs, direction, hooks_of, states


@pytest.fixture(scope="module")
def model():
    from tests.conftest import build_tiny_llama, build_tiny_tokenizer

    return build_tiny_llama(len(build_tiny_tokenizer()), layers=3, seed=0)


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


# --------------------------------------------------------------------------- project_out


@pytest.mark.parametrize("multiplier", [1.0, -7.5])
def test_project_out_removes_the_component_exactly(model, multiplier):
    layer, v = 1, direction(3, scale=0.01)  # its length and the multiplier do not matter
    u = unit(v)
    before = block_outputs(model, PROMPTS[:1])
    with steer(model, SteeringVector({layer: v}), operator="project_out", multiplier=multiplier):
        after = block_outputs(model, PROMPTS[:1])
    assert (before[layer] @ u).abs().min() > 1e-2  # there was a component to remove
    assert (after[layer] @ u).abs().max() < 1e-5
    expected = before[layer] - (before[layer] @ u)[..., None] * u
    torch.testing.assert_close(after[layer], expected, atol=1e-5, rtol=0)
    assert torch.equal(after[0], before[0])  # earlier blocks untouched


@torch.no_grad()
def prompt_then_one_cached_step(model, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block ``layer``'s output for the prompt, then for one more token read with the cache."""
    first = model(torch.tensor(PROMPTS[:1]), use_cache=True, output_hidden_states=True)
    second = model(
        torch.tensor([[20]]), past_key_values=first.past_key_values, output_hidden_states=True
    )
    return first.hidden_states[layer + 1], second.hidden_states[layer + 1]


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_project_out_acts_only_at_the_steered_positions_with_the_cache(model, positions):
    """Prompt pass, then one cached step: the component is ~0 exactly where steered."""
    layer, u = 1, unit(direction(4))
    plain_prompt, plain_next = prompt_then_one_cached_step(model, layer)
    vector = SteeringVector({layer: u})
    with steer(model, vector, positions=positions, operator="project_out"):
        prompt, next_token = prompt_then_one_cached_step(model, layer)
    if positions == "prompt":
        assert (prompt @ u).abs().max() < 1e-5
        torch.testing.assert_close(next_token, plain_next, atol=1e-5, rtol=0)  # block 1: unaffected
    else:
        assert torch.equal(prompt, plain_prompt)
        assert (plain_next @ u).abs().max() > 1e-2
        assert (next_token @ u).abs().max() < 1e-5


def test_project_out_of_several_vectors_removes_their_span(model):
    a, b = direction(5), direction(6)
    before = block_outputs(model, PROMPTS[:1])[2]
    together = SteeringVector({2: a})
    with steer(model, [together, SteeringVector({2: b})], operator="project_out"):
        after = block_outputs(model, PROMPTS[:1])[2]
    basis, _ = torch.linalg.qr(torch.stack([a, b]).T)
    expected = before - (before @ basis) @ basis.T
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=0)
    for v in (a, b):
        assert (after @ unit(v)).abs().max() < 1e-5


def test_project_out_after_the_final_norm(model):
    u = unit(direction(7))
    ids = torch.tensor(PROMPTS[:1])
    with torch.no_grad(), steer(model, SteeringVector({"final": u}), operator="project_out"):
        last = model.model(ids).last_hidden_state
    assert (last @ u).abs().max() < 1e-5


def test_project_out_of_a_zero_vector_is_refused(model):
    registered = hooks_of(model)
    with (
        pytest.raises(InputError, match="zero"),
        steer(model, SteeringVector({1: torch.zeros(WIDTH)}), operator="project_out"),
    ):
        pass
    with (
        pytest.raises(InputError, match="operator"),
        steer(model, direction_vector(), operator="x"),
    ):
        pass
    assert hooks_of(model) == registered


def direction_vector(layer: int = 1) -> SteeringVector:
    return SteeringVector({layer: direction()})


# --------------------------------------------------------------------------- add_keep_norm


@pytest.mark.parametrize("layer", [0, 2])
def test_add_keep_norm_keeps_each_positions_norm(model, layer):
    v = direction(8, scale=5.0)
    before = block_outputs(model, PROMPTS[2:3])[layer]
    with steer(model, SteeringVector({layer: v}), operator="add_keep_norm", multiplier=2.0):
        after = block_outputs(model, PROMPTS[2:3])[layer]
    torch.testing.assert_close(after.norm(dim=-1), before.norm(dim=-1), atol=1e-4, rtol=1e-5)
    added = before + 2.0 * v  # the direction of h + alpha v, at h's norm
    cosine = torch.nn.functional.cosine_similarity(after, added, dim=-1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine), atol=1e-5, rtol=0)
    assert (after - before).norm(dim=-1).min() > 1.0  # it did steer


def test_add_keep_norm_of_several_vectors_equals_their_sum(model):
    a, b = SteeringVector({1: direction(9)}), SteeringVector({1: direction(10)})
    ids = torch.tensor(PROMPTS[:1])
    with torch.no_grad():
        with steer(model, [a, b], operator="add_keep_norm"):
            separate = model(ids).logits
        with steer(model, a + b, operator="add_keep_norm"):
            summed = model(ids).logits
    torch.testing.assert_close(separate, summed, atol=1e-5, rtol=1e-5)


def test_nested_contexts_act_innermost_first(model):
    """Outer add, inner project_out of the same direction: projected first, then added, so
    the component along u is exactly the added amount."""
    u = unit(direction(11))
    with (
        steer(model, SteeringVector({1: u}), multiplier=3.0),
        steer(model, SteeringVector({1: u}), operator="project_out"),
    ):
        after = block_outputs(model, PROMPTS[:1])[1]
    torch.testing.assert_close(after @ u, torch.full_like(after @ u, 3.0), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- arithmetic


def vec(layers_and_seeds: dict, **metadata) -> SteeringVector:
    return SteeringVector({k: direction(s) for k, s in layers_and_seeds.items()}, metadata)


def test_addition_and_subtraction_unite_the_layers():
    a = vec({1: 0, 2: 1}, concept="lang", model="m", layer="1", alpha="4.0")
    b = vec({2: 2, None: 3}, concept="gender", model="m", layer="2", alpha="4.0")
    total, difference = a + b, a - b
    assert set(total.layer_activations) == {1, 2, None}
    assert torch.equal(total.layer_activations[1], direction(0))  # in a only: kept
    assert torch.equal(total.layer_activations[None], direction(3))  # in b only: kept
    torch.testing.assert_close(total.layer_activations[2], direction(1) + direction(2))
    torch.testing.assert_close(difference.layer_activations[2], direction(1) - direction(2))
    assert torch.equal(difference.layer_activations[None], -direction(3))  # a lacks it: 0 - b
    assert total.metadata == {"model": "m", "expression": "lang + gender"}  # agreed keys only
    assert difference.metadata["expression"] == "lang - gender"
    assert torch.equal(a.layer_activations[2], direction(1))  # operands untouched


def test_scalars_scale_every_layer_and_the_recorded_alpha():
    a = vec({1: 0, None: 1}, concept="lang", alpha="4.0", model="m")
    for scaled in (2 * a, a * 2, a.scaled(2), a / 0.5):
        for layer, values in a.layer_activations.items():
            torch.testing.assert_close(scaled.layer_activations[layer], 2 * values)
        assert scaled.metadata["alpha"] == "8.0" and scaled.metadata["model"] == "m"
    assert (2 * a).metadata["expression"] == "2 * lang"
    assert (a / 4).metadata["expression"] == "lang / 4"
    negated = -a
    assert torch.equal(negated.layer_activations[1], -direction(0))
    assert negated.metadata["alpha"] == "-4.0"
    b = vec({1: 2}, concept="gender")
    assert (2 * (a - b)).metadata["expression"] == "2 * (lang - gender)"
    torch.testing.assert_close(sum([a, b]).layer_activations[1], direction(0) + direction(2))


def test_arithmetic_refuses_what_has_no_meaning():
    a = vec({1: 0})
    for bad in (lambda: a * a, lambda: a + 1, lambda: a * "2", lambda: a * True):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(ZeroDivisionError):
        _ = a / 0
    with pytest.raises(InputError, match="finite"):
        _ = a * float("inf")
    with pytest.raises(InputError, match="widths"):
        _ = a + SteeringVector({1: torch.ones(WIDTH + 1)})


def test_steering_with_a_sum_equals_steering_with_both(model):
    a, b = vec({1: 12, 2: 13}), vec({2: 14})
    ids = torch.tensor(PROMPTS[:1])
    with torch.no_grad():
        with steer(model, [a, b], multiplier=0.5):
            both = model(ids).logits
        with steer(model, 0.5 * (a + b)):
            summed = model(ids).logits
    torch.testing.assert_close(both, summed, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- negative layers


def test_resolve_layer_counts_from_the_end():
    assert layers.parse_layer("-1") == -1 and layers.parse_layer(-2) == -2
    assert [layers.resolve_layer(k, 3) for k in (-1, -2, -3, 0, 2, None, "final")] == [
        2,
        1,
        0,
        0,
        2,
        None,
        None,
    ]
    for bad in (-4, 3):
        with pytest.raises(InputError, match="out of range"):
            layers.resolve_layer(bad, 3, "tiny")
    with pytest.raises(InputError):
        layers.parse_layer("-x")


@pytest.mark.parametrize("operator", ["add", "project_out"])
def test_negative_layers_steer_the_block_counted_from_the_end(model, operator):
    v = direction(15)
    ids = PROMPTS[:1]
    with steer(model, SteeringVector({-1: v}), operator=operator):
        from_end = states(model, ids)[-1]
    with steer(model, SteeringVector({2: v}), operator=operator):
        counted = states(model, ids)[-1]
    assert torch.equal(from_end, counted)
    with pytest.raises(InputError, match="out of range"), steer(model, vec({-4: 0})):
        pass


def test_resolved_names_the_blocks_and_sums_what_lands_on_one(model):
    vector = vec({-1: 0, 2: 1, 0: 2}, layer="-1")
    resolved = vector.resolved(model)
    assert set(resolved.layer_activations) == {2, 0}
    torch.testing.assert_close(resolved.layer_activations[2], direction(0) + direction(1))
    assert resolved.metadata["layer"] == "2,0"
    assert vector.resolved(3).layer_activations.keys() == resolved.layer_activations.keys()
    assert set(vector.layer_activations) == {-1, 2, 0}  # the original keeps its keys
