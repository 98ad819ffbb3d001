"""TruthfulQA MC1 under steering (concept ``truthfulness``).

For each held-out question, every MC1 choice is scored by the sum of the log-probabilities of its
answer tokens after the prompt, with the template of the embeddings
(``Q: {question}\\nA: {answer}``: context ``Q: ...\\nA:``, answer `` <choice>``); the prediction is
the highest-scoring choice (sum, not length-normalised, as in TruthfulQA's MC1); accuracy is the
fraction of questions whose prediction is the correct choice. Every position of the scored text is
steered (for the final layer only the positions that predict answer tokens matter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssae_core.datasets.truthfulqa import MC1Question, read_mc_table
from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.logprobs import ScoredText, target_logprobs
from ssae_core.evaluation.behaviour.vectors import ConceptVector, sweep_conditions, vector_report
from ssae_core.evaluation.steering_accuracy import MEAN_DIFFERENCE
from ssae_core.lm.layers import layer_name
from ssae_core.lm.tokens import pad_token_id, tokenize
from ssae_core.metrics import rounded, seed_summary

TRUTHFULNESS = "truthfulness"
QUESTION_FIELD = "{question}"
ANSWER_FIELD = "{answer}"


def load_mc_questions(path: str | Path, *, split: str = "test") -> list[MC1Question]:
    """The MC1 questions of one split of the MC table (data/truthfulqa/mc.parquet)."""
    return [row.mc1() for row in read_mc_table(path, split=split)]


def split_template(template: str) -> str:
    """The context part of a ``...{question}...{answer}`` template (what precedes the answer)."""
    if QUESTION_FIELD not in template or not template.endswith(ANSWER_FIELD):
        raise InputError(
            f"template {template!r}: must contain {QUESTION_FIELD} and end with {ANSWER_FIELD}"
        )
    context = template[: -len(ANSWER_FIELD)]
    if ANSWER_FIELD in context:
        raise InputError(f"template {template!r}: has {ANSWER_FIELD} twice")
    return context


def choice_texts(tokenizer: Any, items: Sequence[MC1Question], template: str) -> list[ScoredText]:
    """One :class:`ScoredText` per choice of every question, question by question. The context is
    the template up to the answer with trailing spaces moved to the answer (``Q: ...\\nA:`` +
    `` answer``, as a tokenizer splits the joined text); the answer is tokenised without special
    tokens."""
    prefix = split_template(template)
    context_texts, answers = [], []
    for item in items:
        context = prefix.replace(QUESTION_FIELD, item.question)
        stripped = context.rstrip(" ")
        for choice in item.choices:
            context_texts.append(stripped)
            answers.append(context[len(stripped) :] + choice)
    context_ids = tokenize(tokenizer, context_texts)
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"] if answers else []
    return [ScoredText(c, list(a)) for c, a in zip(context_ids, answer_ids, strict=True)]


def mc1_correct(logprob_N: np.ndarray, items: Sequence[MC1Question]) -> np.ndarray:
    """Per question: whether the highest-scoring choice is the correct one (bool [Q]); ``logprob_N``
    lists the choices question by question (as :func:`choice_texts`)."""
    bounds = np.cumsum([0] + [len(item.choices) for item in items])
    if bounds[-1] != len(logprob_N):
        raise ValueError(f"{len(logprob_N)} scores for {bounds[-1]} choices")
    return np.array(
        [
            int(np.argmax(logprob_N[bounds[q] : bounds[q + 1]])) == item.correct
            for q, item in enumerate(items)
        ],
        dtype=bool,
    )


def evaluate_truthfulqa(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[MC1Question],
    vectors: Mapping[str, Sequence[ConceptVector]],
    multipliers: Sequence[float],
    *,
    template: str,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """MC1 accuracy unsteered and with every vector at every multiplier (JSON-ready)."""
    texts = choice_texts(tokenizer, questions, template)
    conditions = sweep_conditions(vectors, multipliers)
    reference = (vectors.get(MEAN_DIFFERENCE) or [None])[0]
    scores_CN = target_logprobs(
        model,
        texts,
        [None, *(c.vector for c in conditions)],
        pad_id=pad_token_id(tokenizer),
        batch_size=batch_size,
        progress=progress,
        desc="truthfulqa",
    )
    base = float(mc1_correct(scores_CN[0], questions).mean())
    accuracy = {
        (c.method, c.member, c.multiplier): float(mc1_correct(scores_CN[i + 1], questions).mean())
        for i, c in enumerate(conditions)
    }
    methods = {}
    for method, members in vectors.items():
        sweep = []
        for m in multipliers:
            values = [accuracy.get((method, i, float(m)), base) for i in range(len(members))]
            sweep.append(
                {
                    "alpha_multiplier": float(m),
                    "accuracy": seed_summary(values),
                    "change": seed_summary([v - base for v in values]),
                }
            )
        methods[method] = {**vector_report(members, reference), "sweep": sweep}
    return {
        "concept": TRUTHFULNESS,
        "layer": layer_name(next(iter(vectors.values()))[0].layer),
        "template": template,
        "n_questions": len(questions),
        "n_choices": len(texts),
        "chance_accuracy": rounded(float(np.mean([1 / len(q.choices) for q in questions]))),
        "question_ids": [q.question_id for q in questions],
        "unsteered": {"accuracy": rounded(base)},
        "methods": methods,
    }
