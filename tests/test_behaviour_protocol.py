"""The behaviour protocol on a tiny random Llama: fluency, operating points chosen on training
data only, the prompting baseline's prompts, block-layer steering against a reference hook, and
the strength unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssae_core.datasets.truthfulqa import MC1Question
from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour import fluency, language, logprobs, mc1, protocol
from ssae_core.evaluation.behaviour import vectors as bvec
from ssae_core.lm import loading as lm
from ssae_core.lm.steer import typical_norm
from ssae_core.lm.tokens import pad_token_id, tokenize
from tests.conftest import TINY_CHAT_TEMPLATE, build_tiny_tokenizer

WIDTH = 48
TEMPLATE = "Q: {question}\nA: {answer}"
QUESTIONS = [
    MC1Question(0, "who is the king", ["the man", "a woman is the queen", "the cat"], 0),
    MC1Question(1, "what is red", ["the ball", "the box is blue", "a door", "no"], 0),
    MC1Question(2, "where is the dog", ["in the house", "on the table ."], 0),
    MC1Question(3, "why is the sky blue", ["yes", "it is blue and red and green", "no"], 0),
]


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path):
    source = lm.resolve_model(str(tiny_lm_dir), verbose=False)
    return lm.load_model(source), lm.load_tokenizer(source)


def concept_vector(layer: int | None, seed: int = 0) -> bvec.ConceptVector:
    v = np.random.default_rng(seed).standard_normal(WIDTH)
    return bvec.ConceptVector("md", None, layer, v / np.linalg.norm(v), 2.0, None, None)


# --------------------------------------------------------------------------- fluency


def test_a_planted_repetitive_continuation_is_not_fluent(tiny):
    _, tokenizer = tiny
    texts = ["the man was on the table and a cat sat", "de de de de de de de de de de"]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    distinct = np.array([fluency.distinct_share(t) for t in ids])
    rule = fluency.fluency_rule(np.array([3.0, 5.0]), min_distinct=0.4, perplexity_factor=2.0)
    assert rule.max_perplexity == 10.0
    # a repetition the unsteered model finds very likely is still not fluent
    assert rule.fluent(distinct, np.array([4.0, 1.1])).tolist() == [True, False]
    # nor is varied text far above the unsteered perplexities
    assert rule.fluent(distinct, np.array([10.5, 1.1])).tolist() == [False, False]
    assert fluency.distinct_share([]) == 0.0
    # a French continuation counts for the concept only when fluent
    concept = np.array([True, True]) & rule.fluent(distinct, np.array([4.0, 1.1]))
    assert concept.tolist() == [True, False]


def test_text_perplexities_and_bootstrap():
    ppl = fluency.text_perplexities(np.array([-2.0, 0.0]), np.array([2, 0]))
    assert ppl[0] == pytest.approx(np.e) and ppl[1] == np.inf
    with pytest.raises(InputError, match="no continuation"):
        fluency.fluency_rule(np.array([np.inf]), min_distinct=0.4, perplexity_factor=2.0)
    low, high = protocol._interval(np.array([0, 1] * 20), resamples=500, seed=0, level=0.95)
    assert 0.3 < low < 0.5 < high < 0.7
    assert protocol._interval(np.ones(5), resamples=10, seed=0, level=0.95) == [1.0, 1.0]


# --------------------------------------------------------------------------- operating points


def test_operating_point_is_the_best_score_and_ties_go_to_the_weakest():
    assert fluency.operating_point({0.0: 0.1, 0.5: 0.4, 1.0: 0.4, 2.0: 0.2}) == 0.5
    assert fluency.operating_point({0.0: 0.3, 1.0: 0.3}) == 0.0
    with pytest.raises(InputError):
        fluency.operating_point({})


def test_operating_points_are_chosen_on_training_questions_only(tiny):
    """The chosen strengths and the sweep depend on the training questions alone: changing the
    held-out questions changes neither, and the held-out scores use the chosen strengths."""
    model, tokenizer = tiny
    vectors = {"md": [concept_vector(1, 0)], "other": [concept_vector(1, 1)]}
    options = {
        "norm": 3.0,
        "template": TEMPLATE,
        "instruction": "Answer truthfully.",
        "resamples": 20,
        "progress": False,
    }
    strengths = [1.0, 4.0, 16.0]
    train = QUESTIONS[:2]
    a = mc1.evaluate_truthfulqa(
        model, tokenizer, vectors, strengths, train_questions=train,
        test_questions=QUESTIONS[2:], **options,
    )  # fmt: skip
    b = mc1.evaluate_truthfulqa(
        model, tokenizer, vectors, strengths, train_questions=train,
        test_questions=QUESTIONS[:1], **options,
    )  # fmt: skip
    assert a["operating_points"] == b["operating_points"]
    assert a["train_sweep"] == b["train_sweep"]
    for method, point in a["operating_points"].items():
        rows = {r["strength"]: r["accuracy"] for r in a["train_sweep"] if r["method"] == method}
        assert rows[point] == max(rows.values())
        assert a["test"][method]["strength"] == point


def test_held_out_conditions_pair_prompting_with_every_vector():
    vectors = {"md": [concept_vector(1)], "aff": [concept_vector(1, 1), concept_vector(1, 2)]}
    conditions = protocol.held_out(vectors, {"md": 0.5, "aff": 0.0}, norm=10.0)
    names = [c.name for c in conditions]
    plain = ["unsteered", "prompting", "md", "aff", "aff"]
    assert names == [*plain, "prompting + md", "prompting + aff", "prompting + aff"]
    assert [c.instructed for c in conditions] == [False, True, *[False] * 3, *[True] * 3]
    assert not any(c.chat for c in conditions)
    md = conditions[2].vector.layer_activations[1].numpy()
    np.testing.assert_allclose(md, 5.0 * vectors["md"][0].unit_D, rtol=1e-6)
    assert conditions[3].vector is None  # strength 0 is the unsteered model


def test_chat_format_asks_every_prompting_condition_through_the_chat_template():
    vectors = {"md": [concept_vector(1)]}
    conditions = protocol.held_out(vectors, {"md": 0.5}, norm=10.0, chat=True)
    rows = [(c.name, c.instructed, c.chat, c.vector is None) for c in conditions]
    assert rows == [
        ("unsteered", False, False, True),
        ("chat", False, True, True),  # the format's effect without the instruction
        ("prompting", True, True, True),
        ("md", False, False, False),  # steered alone: the format operating points came from
        ("prompting + md", True, True, False),
    ]
    groups = protocol.prompt_groups(conditions)
    assert groups == {(False, False): [0, 3], (False, True): [1], (True, True): [2, 4]}


def test_prompt_format_auto_follows_the_tokenizer():
    plain, chat = build_tiny_tokenizer(), build_tiny_tokenizer(chat_template=TINY_CHAT_TEMPLATE)
    assert protocol.prompt_format("auto", plain) == "plain"
    assert protocol.prompt_format("auto", chat) == "chat"
    assert protocol.prompt_format("plain", chat) == "plain"
    with pytest.raises(InputError, match=r"prompt_format chat: .* no chat template; use plain"):
        protocol.prompt_format("chat", plain)
    with pytest.raises(InputError, match="prompt_format 'html'"):
        protocol.prompt_format("html", chat)


# --------------------------------------------------------------------------- prompting


def test_prompting_baseline_puts_the_instruction_on_the_line_before(tiny):
    _, tokenizer = tiny
    assert protocol.with_instruction(["The weather today is"], " Answer in French. ") == [
        "Answer in French.\nThe weather today is"
    ]
    with pytest.raises(InputError, match="instruction"):
        protocol.with_instruction(["a"], "  ")
    plain = mc1.choice_texts(tokenizer, QUESTIONS[:1], TEMPLATE)
    told = mc1.choice_texts(tokenizer, QUESTIONS[:1], TEMPLATE, "Answer truthfully.")
    assert (
        told[0].context_ids
        == tokenize(tokenizer, ["Answer truthfully.\nQ: who is the king\nA:"])[0]
    )
    assert [t.target_ids for t in told] == [t.target_ids for t in plain]


def test_chat_prompting_puts_the_instruction_in_the_users_turn():
    tokenizer = build_tiny_tokenizer(adds_bos=False, chat_template=TINY_CHAT_TEMPLATE)
    assert protocol.with_instruction(["the cat"], "Answer in French.", chat=True) == [
        "Answer in French. the cat"
    ]
    told = mc1.choice_texts(tokenizer, QUESTIONS[:1], TEMPLATE, "answer the question", chat=True)
    plain = mc1.choice_texts(tokenizer, QUESTIONS[:1], TEMPLATE, chat=True)
    # TINY_CHAT_TEMPLATE writes "question {user's turn} answer"; BOS before it (SmolLM2's rule)
    words = "question answer the question who is the king answer"
    assert told[0].context_ids == [tokenizer.bos_token_id, *tokenizer(words)["input_ids"]]
    assert plain[0].context_ids == tokenize(tokenizer, ["who is the king"], template="chat")[0]
    # each choice as written is the answer, no space or "A:" before it
    expected = tokenizer(list(QUESTIONS[0].choices), add_special_tokens=False)["input_ids"]
    assert [t.target_ids for t in told] == expected == [t.target_ids for t in plain]


def test_chat_conditions_continue_in_the_chat_and_are_scored_without_the_instruction(
    no_bos_lm_dir: Path,
):
    """A chat condition's continuation is the model's answer to the instructed user turn; its
    perplexity is read given the same turn WITHOUT the instruction (as a plain condition's is
    given the plain prompt), so prompting is not scored by its own instruction."""
    source = lm.resolve_model(str(no_bos_lm_dir), verbose=False)
    model, tokenizer = lm.load_model(source), lm.load_tokenizer(source)
    prompts, told = ["the king was", "a cat"], "answer in french"
    conditions = [
        protocol.Condition("prompting", None, 0, 0.0, True, None, chat=True),
        protocol.Condition("unsteered", None, 0, 0.0, False, None),
    ]
    options = {"max_new_tokens": 3, "batch_size": 2, "positions": "all", "progress": False}
    scores = language.score_language(
        model,
        tokenizer,
        prompts,
        conditions,
        instruction=told,
        identifier=language.language_identifier(),
        **options,
    )
    asked = protocol.with_instruction(prompts, told, chat=True)
    settings = {"max_new_tokens": 3, "batch_size": 2}
    chat = language.continue_prompts(model, tokenizer, asked, template="chat", **settings)
    assert scores.texts == [chat, language.continue_prompts(model, tokenizer, prompts, **settings)]
    logprob, count = language._continuation_logprobs(
        model, tokenizer, prompts, [chat], 2, False, ["chat"]
    )
    expected = fluency.text_perplexities(logprob[0], count[0])
    np.testing.assert_allclose(scores.perplexity_CN[0], expected, rtol=1e-5)
    contexts = language.continuation_texts(tokenizer, prompts, chat, "chat")
    assert contexts[0].context_ids == tokenize(tokenizer, ["the king was"], template="chat")[0]


# --------------------------------------------------------------------------- block layers


@torch.no_grad()
def test_block_layer_steering_matches_a_reference_hook(tiny):
    """Scores under a vector at block 1 (not the final norm) equal a forward pass with a
    hand-written hook that adds the vector to block 1's output, one text at a time."""
    model, tokenizer = tiny
    vector = concept_vector(1)
    steering = protocol.at_strength(vector, 2.0, norm=4.0)
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    scores = logprobs.target_logprobs(
        model, texts, [steering], pad_id=pad_token_id(tokenizer), batch_size=3
    )[0]
    delta = torch.tensor(8.0 * vector.unit_D, dtype=torch.float32)

    def add(module, args, output):
        return (output[0] + delta, *output[1:]) if isinstance(output, tuple) else output + delta

    handle = model.model.layers[1].register_forward_hook(add)
    try:
        expected = []
        for text in texts:
            ids = torch.tensor([text.context_ids + text.target_ids])
            logp = model(ids).logits[0].double().log_softmax(-1)
            start = len(text.context_ids)
            expected.append(
                sum(float(logp[start + j - 1, t]) for j, t in enumerate(text.target_ids))
            )
    finally:
        handle.remove()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    unsteered = logprobs.target_logprobs(model, texts, pad_id=pad_token_id(tokenizer))[0]
    assert not np.allclose(scores, unsteered, atol=1e-3)


@torch.no_grad()
def test_typical_norm_is_the_median_hidden_norm_without_bos(tiny):
    model, tokenizer = tiny
    prompts = ["the king was", "a cat sat on the"]
    norms = []
    for ids in tokenize(tokenizer, prompts):
        states = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        keep = [i for i, t in enumerate(ids) if t != tokenizer.bos_token_id]
        norms.append(states[2][0, keep].norm(dim=-1))
    assert typical_norm(model, tokenizer, 1, prompts) == pytest.approx(
        float(torch.cat(norms).median()), rel=1e-5
    )
    final = typical_norm(model, tokenizer, None, prompts)
    assert final > 0 and final != typical_norm(model, tokenizer, 1, prompts)


@pytest.mark.parametrize("layer", [1, -1])
def test_shared_lower_blocks_equal_a_full_steered_pass_per_condition(tiny, layer):
    """Conditions at one block replay the unsteered blocks below it: the same scores as running
    the whole model under steer() for each condition."""
    model, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    vectors = [None] + [
        protocol.at_strength(concept_vector(layer, seed), s, norm=3.0)
        for seed in (0, 1)
        for s in (-1.0, 2.0)
    ]
    options = {"pad_id": pad_token_id(tokenizer), "batch_size": 4}
    shared = logprobs.target_logprobs(model, texts, vectors, **options)
    full = logprobs.target_logprobs(model, texts, vectors, shortcut=False, **options)
    np.testing.assert_allclose(shared, full, atol=1e-5, rtol=0)
    assert not any(
        "forward" in vars(block) for block in model.model.layers
    )  # every block computes again after scoring


# --------------------------------------------------------------------------- comparisons


def test_paired_comparisons_name_a_side_only_when_the_interval_excludes_zero():
    C = protocol.Condition
    conditions = [
        C("unsteered", None, 0, 0.0, False, None),
        C("prompting", None, 0, 0.0, True, None),
        C("md", "md", 0, 0.5, False, None),
        C("ssae", "ssae", 0, 0.5, False, None),
        C("ssae", "ssae", 1, 0.5, False, None),
        C("prompting + ssae", "ssae", 0, 0.5, True, None),
    ]
    n = 40
    rng = np.random.default_rng(0)
    values = np.zeros((len(conditions), n))
    values[1] = rng.random(n) < 0.5  # prompting: about half
    values[2] = 1.0  # md: every item
    values[3] = values[4] = values[1]  # ssae (both members) = prompting, item by item
    values[5] = values[1]
    found = protocol.compare(conditions, values, ["md", "ssae"], resamples=200, seed=0, level=0.95)
    by_pair = {(c["a"], c["b"]): c for c in found}
    assert list(by_pair) == [
        ("prompting", "unsteered"),  # no chat row was scored: no (prompting, chat) pair
        ("md", "unsteered"),
        ("ssae", "unsteered"),
        ("ssae", "md"),
        ("ssae", "prompting"),
        ("prompting + ssae", "prompting"),
    ]  # prompting + md was not scored: no pair
    assert by_pair["md", "unsteered"]["verdict"] == "better"
    assert by_pair["md", "unsteered"]["difference"] == 1.0
    assert by_pair["ssae", "md"]["verdict"] == "worse"
    low, high = by_pair["ssae", "md"]["interval"]
    assert low <= by_pair["ssae", "md"]["difference"] <= high < 0
    # identical per-item scores: a paired difference of exactly 0, no side named
    same = by_pair["ssae", "prompting"]
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0]
    assert same["verdict"] == "no difference"
