"""Behavioural steering on a tiny random Llama (no downloads): log-likelihood scoring, MC1,
steering sweeps, language and perplexity helpers, the Markdown report and the stage."""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ssae_core.config import load_config
from ssae_core.datasets.truthfulqa import MC1Question, MCQuestion, mc_table
from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour import evaluate, language, logprobs, mc1
from ssae_core.evaluation.behaviour import vectors as bvec
from ssae_core.evaluation.behaviour.config import BehaviourConfig, behaviour_layers
from ssae_core.io import EmbeddingTable, load_embeddings, write_json, write_parquet
from ssae_core.lm import loading as lm
from ssae_core.lm.steer import steer_rows
from ssae_core.lm.tokens import pad_token_id, tokenize
from ssae_core.runs import load_run, train_run
from ssae_core.study.behaviour import score_behaviour
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.study.plots import behaviour_tables, write_plots
from ssae_core.study.report import behaviour_findings, behaviour_section
from ssae_core.train import TrainConfig

WIDTH = 48
TEMPLATE = "Q: {question}\nA: {answer}"
QUESTIONS = [
    MC1Question(0, "who is the king", ["the man", "a woman is the queen", "the cat"], 0),
    MC1Question(1, "what is red", ["the ball", "the box is blue", "a door", "no"], 0),
    MC1Question(2, "where is the dog", ["in the house", "on the table ."], 0),
    MC1Question(3, "why is the sky blue", ["yes", "it is blue and red and green", "no"], 0),
]
PROMPTS = ["the king was", "a cat sat on the", "the woman and the man", "this is"]


@pytest.fixture(scope="module")
def tiny(tiny_lm_dir: Path):
    source = lm.resolve_model(str(tiny_lm_dir), verbose=False)
    return lm.load_model(source), lm.load_tokenizer(source)


def unit(seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(WIDTH)
    return v / np.linalg.norm(v)


def vector(layer: int | None = None, alpha: float = 4.0, seed: int = 0) -> bvec.ConceptVector:
    return bvec.ConceptVector("md", None, layer, unit(seed), alpha, None, None)


@torch.no_grad()
def direct_logprob(model, text: logprobs.ScoredText) -> float:
    """log p(target | context) from one unpadded forward pass of the whole sequence."""
    ids = torch.tensor([text.context_ids + text.target_ids])
    logp = model(ids).logits[0].double().log_softmax(-1)
    start = len(text.context_ids)
    return float(sum(logp[start + j - 1, t] for j, t in enumerate(text.target_ids)))


# --------------------------------------------------------------------------- scoring


def test_choice_texts_split_the_template_at_the_answer(tiny):
    _, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    assert len(texts) == sum(len(q.choices) for q in QUESTIONS)
    full = [TEMPLATE.format(question=q.question, answer=c) for q in QUESTIONS for c in q.choices]
    assert [t.context_ids + t.target_ids for t in texts] == tokenize(tokenizer, full)
    first = texts[0]
    assert tokenizer.decode(first.target_ids) == "the man"
    assert tokenize(tokenizer, ["Q: who is the king\nA:"])[0] == first.context_ids


def test_mc1_ranks_by_summed_answer_log_likelihood(tiny):
    model, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    scores = logprobs.target_logprobs(model, texts, pad_id=pad_token_id(tokenizer), batch_size=3)[0]
    direct = np.array([direct_logprob(model, t) for t in texts])
    np.testing.assert_allclose(scores, direct, atol=1e-4, rtol=0)

    bounds = np.cumsum([0] + [len(q.choices) for q in QUESTIONS])
    best = [int(np.argmax(direct[a:b])) for a, b in itertools.pairwise(bounds)]
    right = [q._replace(correct=k) for q, k in zip(QUESTIONS, best, strict=True)]
    wrong = [
        q._replace(correct=(k + 1) % len(q.choices)) for q, k in zip(QUESTIONS, best, strict=True)
    ]
    assert mc1.mc1_correct(scores, right).all()
    assert not mc1.mc1_correct(scores, wrong).any()


@pytest.mark.parametrize("shortcut", [True, False])
def test_left_padded_batches_equal_one_text_at_a_time(tiny, shortcut):
    model, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    conditions = [None, vector().steering_vector(1.0)]
    kwargs = {"pad_id": pad_token_id(tokenizer), "shortcut": shortcut}
    batched = logprobs.target_logprobs(model, texts, conditions, batch_size=len(texts), **kwargs)
    single = logprobs.target_logprobs(model, texts, conditions, batch_size=1, **kwargs)
    np.testing.assert_allclose(batched, single, atol=1e-4, rtol=0)


def test_empty_targets_score_zero_and_empty_contexts_are_refused(tiny):
    model, tokenizer = tiny
    texts = [logprobs.ScoredText([1, 5], []), logprobs.ScoredText([1, 5], [6])]
    scores = logprobs.target_logprobs(model, texts, pad_id=pad_token_id(tokenizer))
    assert scores[0, 0] == 0.0 and scores[0, 1] < 0
    with pytest.raises(InputError, match="empty context"):
        logprobs.target_logprobs(model, [logprobs.ScoredText([], [5])], pad_id=0)


@pytest.mark.parametrize("layer", [None, 1, "none"])
@pytest.mark.parametrize("shortcut", [True, False])
def test_shared_contexts_score_like_one_text_per_row(tiny, layer, shortcut):
    """Packing the choices of a question after one copy of its context (a 4D tree mask) and
    scoring repeated texts once gives the plain batches' sums, steered at every position."""
    model, tokenizer = tiny
    assert model.config._attn_implementation in logprobs.MASKED_ATTENTION  # packing is used
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    texts += [*texts[:3], logprobs.ScoredText(texts[0].context_ids, [])]
    conditions = [None] + (
        [] if layer == "none" else [vector(layer, 3.0, s).steering_vector(2.0) for s in (0, 1)]
    )
    kwargs = {"pad_id": pad_token_id(tokenizer), "shortcut": shortcut}
    for batch_size in (1, 4, 64):
        packed = logprobs.target_logprobs(model, texts, conditions, batch_size=batch_size, **kwargs)
        plain = logprobs.target_logprobs(
            model, texts, conditions, batch_size=batch_size, share_contexts=False, **kwargs
        )
        np.testing.assert_allclose(packed, plain, atol=1e-4, rtol=0)
        assert (packed[:, -1] == 0).all() and (packed[:, :-1] < 0).all()


def test_packed_rows_hold_each_context_once(tiny):
    _, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    rows = logprobs._packed_rows(texts, per_row=3)
    assert sorted(i for row in rows for i in row.items) == list(range(len(texts)))
    assert len(rows) == len(QUESTIONS) + 1  # the question with 4 choices takes two rows
    for row in rows:
        context = texts[row.items[0]].context_ids
        assert row.ids[: len(context)] == context
        assert len(row.ids) == len(context) + sum(len(t) - 1 for t in row.targets)


# --------------------------------------------------------------------------- steering


@pytest.mark.parametrize("layer", [None, 1])
def test_multiplier_zero_is_the_unsteered_model_exactly(tiny, layer):
    model, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    v = vector(layer)
    scores = logprobs.target_logprobs(
        model,
        texts,
        [None, v.steering_vector(0.0), v.steering_vector(2.0)],
        pad_id=pad_token_id(tokenizer),
    )
    assert np.array_equal(scores[1], scores[0])
    assert not np.allclose(scores[2], scores[0], atol=1e-3)
    plain = language.continue_prompts(model, tokenizer, PROMPTS, max_new_tokens=4)
    assert (
        language.continue_prompts(
            model, tokenizer, PROMPTS, v.steering_vector(0.0), max_new_tokens=4
        )
        == plain
    )


def test_final_layer_shortcut_equals_steering_the_model(tiny):
    """logits + W_head v per condition == a forward pass under steer(), at every multiplier."""
    model, tokenizer = tiny
    texts = mc1.choice_texts(tokenizer, QUESTIONS, TEMPLATE)
    conditions = [None] + [vector(None, 3.0, s).steering_vector(m) for s in (0, 1) for m in (-2, 5)]
    kwargs = {"pad_id": pad_token_id(tokenizer), "batch_size": 5}
    fast = logprobs.target_logprobs(model, texts, conditions, shortcut=True, **kwargs)
    slow = logprobs.target_logprobs(model, texts, conditions, shortcut=False, **kwargs)
    np.testing.assert_allclose(fast, slow, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layer", [None, 1, -1])
def test_conditions_as_rows_of_one_batch_continue_like_one_at_a_time(tiny, layer):
    """continue_conditions runs every vector as rows of one generate call (steer_rows): the
    same greedy continuations as steering the model with one vector at a time."""
    model, tokenizer = tiny
    vectors = [None] + [vector(layer, 3.0, s).steering_vector(m) for s in (0, 1) for m in (1, 4)]
    settings = {"max_new_tokens": 5, "batch_size": 3}
    batched = language.continue_conditions(model, tokenizer, PROMPTS, vectors, **settings)
    single = [language.continue_prompts(model, tokenizer, PROMPTS, v, **settings) for v in vectors]
    assert batched == single
    assert len({tuple(t) for t in single}) > 1  # the vectors change the continuations


def test_steer_rows_refuses_vectors_at_several_layers(tiny):
    model, _ = tiny
    mixed = [vector(1).steering_vector(1.0), vector(None).steering_vector(1.0)]
    with pytest.raises(InputError, match="layers"), steer_rows(model, mixed):
        pass


def planted_table(concept: str, *, seed: int = 0, layer: str = "final") -> EmbeddingTable:
    """z random, z~ = z + 6 * direction + noise: one concept that always changes (+1)."""
    rng = np.random.default_rng(seed)
    num = 120
    z = rng.standard_normal((num, WIDTH)).astype(np.float32)
    z_tilde = (z + 6.0 * unit(seed + 10) + 0.3 * rng.standard_normal((num, WIDTH))).astype(
        np.float32
    )
    return EmbeddingTable(
        pair_id=np.arange(num, dtype=np.int64),
        split=np.array(["train"] * 90 + ["test"] * 30, dtype=object),
        z=z,
        z_tilde=z_tilde,
        shift=np.ones((num, 1), np.float32),
        concepts=[concept],
        metadata={"layer": layer, "pairs.template": TEMPLATE},
    )


def tiny_run(table: EmbeddingTable, folder: Path, method: str):
    cfg = TrainConfig(method=method, latent_dim=2, seeds=(0, 1), epochs=2, min_steps=0)
    train_run(table, folder, cfg, require_active=False, progress=False)
    return load_run(folder)


def test_concept_vectors_fit_md_and_every_member(tmp_path):
    table = planted_table("language")
    runs = {"aff": tiny_run(table, tmp_path / "aff", "aff")}
    vectors = bvec.concept_vectors(table.subset("train"), runs, "language")
    (md,) = vectors["md"]
    assert md.seed is None and md.layer is None
    assert float(md.unit_D @ unit(10)) > 0.99 and md.alpha == pytest.approx(6.0, rel=0.05)
    assert [v.seed for v in vectors["aff"]] == [0, 1]
    for v in vectors["aff"]:
        assert np.linalg.norm(v.unit_D) == pytest.approx(1.0, abs=1e-5)
        expected = float(np.mean(table.subset("train").delta @ v.unit_D))
        assert v.alpha == pytest.approx(expected, rel=1e-4)
        step = v.steering_vector(2.0).layer_activations[None].numpy()
        np.testing.assert_allclose(step, 2.0 * v.alpha * v.unit_D, rtol=1e-5, atol=1e-6)
    only = bvec.concept_vectors(table.subset("train"), runs, "language", seeds=[1])
    assert [v.seed for v in only["aff"]] == [1]
    with pytest.raises(InputError, match="no member with seeds"):
        bvec.concept_vectors(table.subset("train"), runs, "language", seeds=[7])
    with pytest.raises(InputError, match="no concept 'gender'"):
        bvec.concept_vectors(table.subset("train"), runs, "gender")
    block = planted_table("language", layer="1")
    with pytest.raises(InputError, match="layer"):
        bvec.concept_vectors(block.subset("train"), runs, "language")


# --------------------------------------------------------------------------- helpers


def test_language_fraction_and_identification():
    identifier = language.language_identifier()
    texts = [
        "Le chat est sur la table et la maison est très grande.",
        "The cat is on the table and the house is very big.",
        "",
        "12345 !!",
    ]
    assert language.identify_languages(texts, identifier) == ["fr", "en", "", ""]
    assert language.language_fraction(texts, "fr", identifier) == 0.25
    assert language.language_fraction(texts[:2], "en", identifier) == 0.5
    with pytest.raises(InputError, match=r"params\.yaml:behaviour\.language 'xx'"):
        language.check_language("xx", "params.yaml:behaviour.language")


def test_perplexity_of_known_log_probabilities(tiny):
    assert logprobs.perplexity(np.array([-2.0, -4.0]), np.array([2, 2])) == pytest.approx(
        math.exp(1.5)
    )
    assert logprobs.perplexity(np.array([0.0]), np.array([0])) is None
    model, tokenizer = tiny
    texts = language.continuation_texts(tokenizer, ["the king was", "a cat"], [" a man .", " on"])
    assert [len(t.target_ids) for t in texts] == [3, 1]
    scores = logprobs.target_logprobs(model, texts, pad_id=pad_token_id(tokenizer))[0]
    direct = [direct_logprob(model, t) for t in texts]
    expected = math.exp(-sum(direct) / 4)
    assert logprobs.perplexity(scores, np.array([3, 1])) == pytest.approx(expected, rel=1e-4)


def test_subsample_is_seeded_and_keeps_order():
    items = list(range(50))
    first = evaluate.subsample(items, 10, seed=3)
    assert first == evaluate.subsample(items, 10, seed=3) == sorted(first)
    assert first != evaluate.subsample(items, 10, seed=4)
    assert evaluate.subsample(items, None, 0) == items == evaluate.subsample(items, 99, 0)


# --------------------------------------------------------------------------- the stage


def tiny_root(root: Path, tiny_lm_dir: Path) -> None:
    """models/lm, embeddings and MC table as the stage expects them, at tiny scale."""
    shutil.copytree(tiny_lm_dir, root / "models" / "lm")
    model_name = str(root / "models" / "lm")
    for name, concept, seed in (("truthfulqa", "truthfulness", 0), ("lang", "language", 1)):
        table = planted_table(concept, seed=seed)
        table.metadata["model"] = model_name
        folder = StudyLayout(root).embeddings(name, None)
        folder.mkdir(parents=True)
        write_parquet(table.to_arrow(), folder / "shard-00000.parquet")
    labels = [[int(i == q.correct) for i in range(len(q.choices))] for q in QUESTIONS]
    questions = [
        MCQuestion(q.question, q.choices, ls, q.choices, ls)
        for q, ls in zip(QUESTIONS * 2, labels * 2, strict=True)
    ]
    split = ["test"] * len(QUESTIONS) + ["train"] * len(QUESTIONS)
    write_parquet(mc_table(questions, split, seed=0), root / "data" / "truthfulqa" / "mc.parquet")


def run_stage(root: Path, runs: dict) -> dict:
    """What stages/behaviour.py does, on ``root`` and with the given runs."""
    layout = StudyLayout(root)
    config = load_config(BehaviourConfig, PARAMS, "params.yaml:behaviour")
    layers = score_behaviour(
        StudyConfig(), layout, config, [None], runs={"final": runs}, progress=False
    )
    write_json({"layers": layers}, layout.metrics("behaviour"))
    write_plots(layout, behaviour_tables(layers))
    return layers["final"]


PARAMS = {
    "strengths": [0.5, 2.0],
    "questions": 3,
    "train_questions": 3,
    "prompts": 4,
    "test_prompts": 3,
    "max_new_tokens": 3,
    "batch_size": 4,
    "samples": 2,
    "resamples": 50,
}


@pytest.fixture(scope="module")
def stage_run(no_bos_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The stage on a tokenizer with a chat template, as the embedded Instruct model's: the
    prompting conditions ask through the chat (prompt_format auto)."""
    root = tmp_path_factory.mktemp("behaviour")
    tiny_root(root, no_bos_lm_dir)
    runs = {}
    for name in ("truthfulqa", "lang"):
        table = load_embeddings(StudyLayout(root).embeddings(name, None))
        runs[name] = {m: tiny_run(table, root / "runs" / name / m, m) for m in ("ssae", "aff")}
    results = run_stage(root, runs)
    return root, runs, results


def test_stage_writes_metrics_and_plot_tables(stage_run):
    root, _, results = stage_run
    assert (
        json.loads((StudyLayout(root).metrics("behaviour")).read_text())["layers"]["final"]
        == results
    )
    tqa, lang = results["truthfulqa"], results["language"]
    assert tqa["n_questions"] == 3 and tqa["n_test_questions"] == 4
    assert tqa["n_choices"] == sum(len(QUESTIONS[i].choices) for i in tqa["question_ids"])
    assert lang["train_prompts"] == list(language.NEUTRAL_PROMPTS[:4])
    assert lang["test_prompts"] == list(language.HELD_OUT_PROMPTS[:3])
    conditions = ["unsteered", "chat", "prompting", "md", "ssae", "aff"]
    conditions += ["prompting + md", "prompting + ssae", "prompting + aff"]
    for section, key in ((tqa, "accuracy"), (lang, "concept")):
        assert section["prompt_format"] == "chat"
        assert list(section["test"]) == conditions
        assert section["vectors"]["ssae"]["seeds"] == [0, 1]
        for method, point in section["operating_points"].items():
            assert point in (0.0, 0.5, 2.0)
            assert section["test"][method]["strength"] == point
            assert section["test"][method]["members"] == (1 if method == "md" else 2)
        for entry in section["test"].values():
            low, high = entry[key]["interval"]
            assert low <= entry[key]["mean"] <= high
        strengths = [r["strength"] for r in section["train_sweep"] if r["method"] == "aff"]
        assert strengths == [0.0, 0.5, 2.0]
        pairs = [(c["a"], c["b"]) for c in section["comparisons"]]
        assert ("ssae", "md") in pairs and ("prompting + aff", "prompting") in pairs
        assert ("prompting", "chat") in pairs
        for c in section["comparisons"]:
            low, high = c["interval"]
            assert low <= c["difference"] <= high
    with (StudyLayout(root).plot("behaviour/truthfulqa_final")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["strength"]) for r in rows] == [0, 0.5, 2.0]
    assert {"md_accuracy", "ssae_accuracy", "aff_accuracy"} <= set(rows[0])
    sweep = {(r["method"], r["strength"]): r for r in tqa["train_sweep"]}
    assert float(rows[2]["ssae_accuracy"]) == sweep["ssae", 2.0]["accuracy"]
    with (StudyLayout(root).plot("behaviour/language_final")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"md_concept", "aff_fluency", "ssae_concept"} <= set(rows[0])


def test_markdown_renders_every_condition_with_intervals_and_samples(stage_run):
    _, _, results = stage_run
    text = "\n".join(behaviour_section(results)) + "\n"
    assert "### TruthfulQA MC1" in text and "### Language" in text
    assert "3 of the 4 held-out questions" in text
    for name, entry in results["language"]["test"].items():
        concept = entry["concept"]
        low, high = concept["interval"]
        cell = f"{concept['mean']:.3f} [{low:.3f}, {high:.3f}]"
        assert f"| {name} | {entry['strength']:g} | {cell} | " in text
        assert text.count(f"| {name} | `") == len(entry["samples"]) == 2
    assert "`Answer truthfully.`" in text and "`Answer in French.`" in text
    assert "user's turn of the model's chat template" in text
    assert text.count("Paired differences of") == 2 and "| ssae - md | " in text
    assert "seeds [0, 1]" in text and "operating point" in text
    assert text.endswith("\n") and "\n\n\n" not in text


def test_stage_reports_missing_and_mismatched_inputs(tmp_path, tiny_lm_dir, stage_run):
    _, runs, _ = stage_run
    with pytest.raises(InputError, match="models/lm: no prepared model"):
        run_stage(tmp_path / "empty", runs)
    root = tmp_path / "root"
    tiny_root(root, tiny_lm_dir)
    shutil.copytree(root, tmp_path / "moved")
    with pytest.raises(InputError, match=r"embeddings of model .* but the steered model is"):
        run_stage(tmp_path / "moved", runs)
    (root / "data" / "truthfulqa" / "mc.parquet").unlink()
    with pytest.raises(InputError, match=r"mc\.parquet: missing"):
        run_stage(root, runs)
    assert not (root / "metrics").exists()


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"strengths": []}, "strengths"),
        ({"strengths": [1, 1]}, "strengths"),
        ({"strengths": [1, float("nan")]}, "strengths"),
        ({"strengths": "1, 2"}, "strengths"),
        ({"questions": 0}, "questions"),
        ({"train_questions": 0}, "train_questions"),
        ({"prompts": 99}, "prompts"),
        ({"test_prompts": 99}, "test_prompts"),
        ({"min_distinct": 1.5}, "min_distinct"),
        ({"perplexity_factor": 0.5}, "perplexity_factor"),
        ({"language_instruction": " "}, "language_instruction"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"positions": "middle"}, "positions"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"threads": -1}, "threads"),
        ({"language": "xx"}, "language"),
        ({"batch_sise": 4}, "batch_sise"),
    ],
)
def test_bad_params_name_the_parameter_in_one_line(values, name):
    with pytest.raises(InputError, match=name) as error:
        load_config(BehaviourConfig, values, "params.yaml:behaviour")
    assert "\n" not in str(error.value) and "params.yaml:behaviour" in str(error.value)


def test_bad_templates_and_mc_tables_are_refused(tmp_path):
    with pytest.raises(InputError, match="end with"):
        mc1.split_template("{answer} is the answer to {question}")
    with pytest.raises(InputError, match="question"):
        mc1.split_template("A: {answer}")
    table = mc_table([MCQuestion("q", ["a", "b"], [1, 0], ["a", "b"], [1, 0])], ["train"])
    write_parquet(table, tmp_path / "mc.parquet")
    with pytest.raises(InputError, match="no questions with split 'test'"):
        mc1.load_mc_questions(tmp_path / "mc.parquet")
    write_parquet(table.drop(["mc1_labels"]), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="mc1_labels"):
        mc1.load_mc_questions(tmp_path / "bad.parquet")


def test_behaviour_layers_pick_study_layers_and_name_a_missing_one():
    study = [15, None]  # embed.layers [15, final]
    assert behaviour_layers(BehaviourConfig(), study) == [15, None]
    assert behaviour_layers(BehaviourConfig(layers=["final"]), study) == [None]
    with pytest.raises(InputError) as caught:
        behaviour_layers(BehaviourConfig(layers=[3, "final"]), study)
    message = str(caught.value)
    assert message.startswith("behaviour.layers: 3 not in embed.layers (15, final)")
    assert "\n" not in message


def test_summary_shows_each_method_at_its_operating_point(stage_run):
    from ssae_core.study.summary import _behaviour

    _, _, results = stage_run
    for part, measure in (("truthfulqa", "accuracy"), ("language", "concept")):
        shown = _behaviour(results[part], measure)
        test = results[part]["test"]
        assert set(shown) == {"ssae", "aff", "md", "unsteered", "prompting"}
        assert all(shown[name] == test[name][measure]["mean"] for name in shown)


def test_findings_name_the_best_condition_and_every_called_difference(stage_run):
    _, _, results = stage_run
    text = behaviour_findings({"final": results})
    assert text.startswith("**Behaviour.**") and "\n" not in text
    for name, measure, label in (("truthfulqa", "accuracy", "MC1 accuracy"),):
        test = results[name]["test"]
        best = max(test, key=lambda n: test[n][measure]["mean"])
        assert f"At layer final, {label}: best {best} " in text
    for section in (results["truthfulqa"], results["language"]):
        for c in section["comparisons"]:
            if c["verdict"] == "no difference":
                assert f"{c['a']} vs {c['b']}" in text
            else:
                assert f"{c['a']} {c['verdict']} than {c['b']} (" in text
    assert behaviour_findings({}).endswith("steered no layer.")
