"""TruthfulQA MC1 under steering (concept ``truthfulness``).

For each held-out question, every MC1 choice is scored by the sum of the log-probabilities of its
answer tokens after the prompt, with the template of the embeddings
(``Q: {question}\\nA: {answer}``: context ``Q: ...\\nA:``, answer `` <choice>``); the prediction is
the highest-scoring choice (sum, not length-normalised, as in TruthfulQA's MC1); accuracy is the
fraction of questions whose prediction is the correct choice. Every position of the scored text is
steered (for the final layer only the positions that predict answer tokens matter). In the chat
format (``prompt_format: chat``) the question is the user's turn of the model's chat template and
each choice, as written, the assistant's answer.
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
from ssae_core.evaluation.behaviour.protocol import (
    CHAT,
    PLAIN,
    UNSTEERED,
    Condition,
    choose_points,
    compare,
    condition_prompts,
    held_out,
    prompt_groups,
    summarise,
    sweep,
    with_instruction,
)
from ssae_core.evaluation.behaviour.vectors import ConceptVector, vector_report
from ssae_core.evaluation.steering_accuracy import MEAN_DIFFERENCE
from ssae_core.lm.layers import layer_name
from ssae_core.lm.tokens import pad_token_id, tokenize
from ssae_core.metrics import rounded

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


def choice_texts(
    tokenizer: Any,
    items: Sequence[MC1Question],
    template: str,
    instruction: str | None = None,
    *,
    chat: bool = False,
) -> list[ScoredText]:
    """One :class:`ScoredText` per choice of every question, question by question. Plain: the
    context is the template up to the answer with trailing spaces moved to the answer
    (``Q: ...\\nA:`` + `` answer``, as a tokenizer splits the joined text), after ``instruction``
    and a line break where one is given (the prompting baseline). ``chat``: the context is the
    chat template with the question (after ``instruction`` and a space) as the user's turn, the
    answer the choice as written. Answers are tokenised without special tokens."""
    prefix = split_template(template)
    if chat:
        questions = [item.question for item in items]
        users, chat_template = condition_prompts(questions, instruction, chat=True)
        contexts = tokenize(tokenizer, users, template=chat_template)
        context_ids = [ids for ids, item in zip(contexts, items, strict=True) for _ in item.choices]
        answers = [choice for item in items for choice in item.choices]
    else:
        context_texts, answers = [], []
        for item in items:
            context = prefix.replace(QUESTION_FIELD, item.question)
            if instruction is not None:
                context = with_instruction([context], instruction)[0]
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


def score_mc1(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[MC1Question],
    conditions: Sequence[Condition],
    *,
    template: str,
    instruction: str,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Whether each condition answers each question correctly, bool [C, Q]: the conditions whose
    prompts are written alike (:func:`~.protocol.prompt_groups`) are scored in one call each (at
    the final layer, one pass per batch)."""
    out_CQ = np.zeros((len(conditions), len(questions)), dtype=bool)
    for (instructed, chat), rows in prompt_groups(conditions).items():
        told = instruction if instructed else None
        texts = choice_texts(tokenizer, questions, template, told, chat=chat)
        scores_CN = target_logprobs(
            model,
            texts,
            [conditions[i].vector for i in rows],
            pad_id=pad_token_id(tokenizer),
            batch_size=batch_size,
            progress=progress,
            desc="truthfulqa",
        )
        for i, scores_N in zip(rows, scores_CN, strict=True):
            out_CQ[i] = mc1_correct(scores_N, questions)
    return out_CQ


def evaluate_truthfulqa(
    model: nn.Module,
    tokenizer: Any,
    vectors: Mapping[str, Sequence[ConceptVector]],
    strengths: Sequence[float],
    *,
    norm: float,
    train_questions: Sequence[MC1Question],
    test_questions: Sequence[MC1Question],
    template: str,
    instruction: str,
    batch_size: int = 16,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chat: bool = False,
    progress: bool = True,
) -> dict:
    """MC1 under the shared protocol (:mod:`.protocol`): operating points chosen by accuracy on
    ``train_questions``, accuracies with bootstrap intervals over ``test_questions``; ``chat``:
    the prompting conditions ask through the chat template."""
    options = {
        "template": template,
        "instruction": instruction,
        "batch_size": batch_size,
        "progress": progress,
    }
    base = Condition(UNSTEERED, None, 0, 0.0, False, None)
    grid = sweep(vectors, strengths, norm)
    train_CQ = score_mc1(model, tokenizer, train_questions, [base, *grid], **options)
    chosen, rows = choose_points(
        grid, {"accuracy": train_CQ[1:]}, {"accuracy": train_CQ[0]}, lambda m: m["accuracy"]
    )
    tests = held_out(vectors, chosen, norm, chat=chat)
    test_CQ = score_mc1(model, tokenizer, test_questions, tests, **options)
    reference = (vectors.get(MEAN_DIFFERENCE) or [None])[0]
    return {
        "concept": TRUTHFULNESS,
        "layer": layer_name(next(iter(vectors.values()))[0].layer),
        "template": template,
        "instruction": instruction,
        "prompt_format": CHAT if chat else PLAIN,
        "norm": rounded(norm),
        "n_train_questions": len(train_questions),
        "n_questions": len(test_questions),
        "n_choices": sum(len(q.choices) for q in test_questions),
        "chance_accuracy": rounded(float(np.mean([1 / len(q.choices) for q in test_questions]))),
        "question_ids": [q.question_id for q in test_questions],
        "vectors": {m: vector_report(v, reference) for m, v in vectors.items()},
        "operating_points": chosen,
        "train_sweep": rows,
        "test": summarise(
            tests, {"accuracy": test_CQ}, resamples=resamples, seed=seed, level=level
        ),
        "comparisons": compare(
            tests, test_CQ, list(vectors), resamples=resamples, seed=seed, level=level
        ),
    }
