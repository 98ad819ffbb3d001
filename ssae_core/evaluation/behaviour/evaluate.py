"""Behavioural steering: steer the language model itself with learned vectors and measure what
its behaviour does. :mod:`ssae_core.evaluation.steering_accuracy` scores vectors on embeddings;
this package adds them to the LM's residual stream (:func:`ssae_core.lm.steer.steer`) and looks at
outputs: TruthfulQA MC1 accuracy (:mod:`.mc1`) and the language of continuations (:mod:`.language`),
with the vectors of :mod:`.vectors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from torch import nn

from ssae_core.datasets.truthfulqa import MC1Question
from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.config import BehaviourConfig
from ssae_core.evaluation.behaviour.language import (
    HELD_OUT_PROMPTS,
    LANGUAGE,
    NEUTRAL_PROMPTS,
    evaluate_language,
    language_identifier,
)
from ssae_core.evaluation.behaviour.mc1 import TRUTHFULNESS, evaluate_truthfulqa
from ssae_core.evaluation.behaviour.protocol import CHAT, prompt_format
from ssae_core.evaluation.behaviour.vectors import concept_vectors
from ssae_core.evaluation.steering_accuracy import SteeringModel
from ssae_core.io import EmbeddingTable
from ssae_core.lm.steer import typical_norm
from ssae_core.train import torch_threads


def subsample(items: Sequence[Any], size: int | None, seed: int) -> list[Any]:
    """``size`` items drawn without replacement (seeded), in their original order; all if None."""
    if size is None or size >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size, replace=False))
    return [items[i] for i in keep]


def check_same_model(table: EmbeddingTable, model_name: str, what: str) -> None:
    """The embeddings must come from the model that is steered."""
    recorded = table.metadata.get("model")
    if recorded is not None and recorded != model_name:
        raise InputError(
            f"{what}: embeddings of model {recorded}, but the steered model is {model_name}; "
            "re-extract the embeddings with this model"
        )


def _vectors(
    params: BehaviourConfig,
    truthfulqa: EmbeddingTable,
    language: EmbeddingTable,
    runs: Mapping[str, Mapping[str, Sequence[SteeringModel]]],
) -> tuple[dict, dict]:
    """The truthfulness and language vectors of every method, fitted on the training rows."""
    tqa = concept_vectors(
        truthfulqa.subset("train"),
        runs["truthfulqa"],
        TRUTHFULNESS,
        seeds=params.seeds,
        what="truthfulqa embeddings",
    )
    lang = concept_vectors(
        language.subset("train"),
        runs["lang"],
        LANGUAGE,
        seeds=params.seeds,
        what="lang embeddings",
    )
    return tqa, lang


def evaluate_behaviour(
    model: nn.Module,
    tokenizer: Any,
    params: BehaviourConfig,
    *,
    truthfulqa: EmbeddingTable,
    mc_questions: Sequence[MC1Question],
    mc_train_questions: Sequence[MC1Question],
    language: EmbeddingTable,
    runs: Mapping[str, Mapping[str, Sequence[SteeringModel]]],
    progress: bool = True,
) -> dict:
    """Both behavioural evaluations (JSON-ready) under the protocol of :mod:`.protocol`.
    ``truthfulqa`` / ``language``: the embedding tables (vectors are fitted on their ``train``
    rows; the MC template is the one truthfulqa's embeddings recorded); ``mc_questions`` /
    ``mc_train_questions``: the held-out and training MC questions (subsampled here);
    ``runs``: ``{"truthfulqa": {method: members}, "lang": {method: members}}``."""
    for name in ("truthfulqa", "lang"):
        if name not in runs:
            raise InputError(f"runs: no trained runs for the {name} set; train them first")
    template = truthfulqa.metadata.get("pairs.template")
    if not template:
        raise InputError(
            "truthfulqa embeddings record no prompt template (pairs.template); re-run "
            "download_truthfulqa and extract_embeddings"
        )
    chat = prompt_format(params.prompt_format, tokenizer) == CHAT
    tqa_vectors, lang_vectors = _vectors(params, truthfulqa, language, runs)
    train_prompts = list(NEUTRAL_PROMPTS[: params.prompts])
    shared = {
        "strengths": params.strengths,
        "batch_size": params.batch_size,
        "resamples": params.resamples,
        "seed": params.subsample_seed,
        "level": params.level,
        "chat": chat,
        "progress": progress,
    }
    with torch_threads(params.threads):
        layer = next(iter(lang_vectors.values()))[0].layer
        norm = typical_norm(model, tokenizer, layer, train_prompts)
        tqa = evaluate_truthfulqa(
            model,
            tokenizer,
            tqa_vectors,
            norm=norm,
            train_questions=subsample(
                mc_train_questions, params.train_questions, params.subsample_seed
            ),
            test_questions=subsample(mc_questions, params.questions, params.subsample_seed),
            template=template,
            instruction=params.truth_instruction,
            **shared,
        )
        tqa["n_test_questions"] = len(mc_questions)
        lang = evaluate_language(
            model,
            tokenizer,
            lang_vectors,
            norm=norm,
            train_prompts=train_prompts,
            test_prompts=list(HELD_OUT_PROMPTS[: params.test_prompts]),
            instruction=params.language_instruction,
            language=params.language,
            identifier=language_identifier(),
            min_distinct=params.min_distinct,
            perplexity_factor=params.perplexity_factor,
            max_new_tokens=params.max_new_tokens,
            positions=params.positions,
            samples=params.samples,
            **shared,
        )
    return {"settings": asdict(params), "truthfulqa": tqa, "language": lang}
