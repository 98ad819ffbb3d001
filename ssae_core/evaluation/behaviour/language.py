"""Language under steering (concept ``language``, English -> French).

Greedy continuations (:func:`~ssae_core.lm.tokens.complete`) of neutral English prompts
(:data:`NEUTRAL_PROMPTS`), with and without the vector; the target-language share is the share of
continuations that py3langid (a maintained fork of langid.py with a bundled model, offline)
identifies as that language; fluency is the perplexity of the continuations under the UNSTEERED
model (exp of the token-weighted mean negative log-likelihood of the continuation given its prompt,
the continuation re-tokenised from its text). A low perplexity does not prove fluency (repetitive
text scores low); read it with the samples.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.fluency import (
    FluencyRule,
    distinct_share,
    fluency_rule,
    harmonic_mean,
    text_perplexities,
)
from ssae_core.evaluation.behaviour.logprobs import ScoredText, perplexity, target_logprobs
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
    prompt_template,
    summarise,
    sweep,
)
from ssae_core.evaluation.behaviour.vectors import ConceptVector, vector_report
from ssae_core.evaluation.steering_accuracy import MEAN_DIFFERENCE
from ssae_core.lm.layers import layer_name
from ssae_core.lm.steer import (
    SteeringVector,
    at_strength,
    steer,
    steer_rows,
    typical_norm,
    vector_layers,
)
from ssae_core.lm.tokens import complete, pad_token_id, tokenize
from ssae_core.metrics import rounded
from ssae_core.progress import show_progress

LANGUAGE = "language"


NEUTRAL_PROMPTS = (
    "The weather today is",
    "My favourite food is",
    "On weekends, I like to",
    "The best way to start the morning is",
    "Yesterday I went to the",
    "My neighbour has a small",
    "The train to the city leaves at",
    "After dinner we usually",
    "The library downtown is",
    "My brother works as a",
    "The most beautiful place I know is",
    "When I was a child, I",
    "The meeting this afternoon will",
    "Every summer, our family",
    "The story begins on a cold night when",
    "The new restaurant near the station",
)
"""Neutral English sentence openings: no French words, no household-object nouns (the lang
word list is made of those), so a French continuation comes from the steering. The behaviour
stage chooses operating points on these (the training prompts) and evaluates on
:data:`HELD_OUT_PROMPTS`."""

HELD_OUT_PROMPTS = (
    "The bus was late again because",
    "Last night the sky over the hills",
    "Our teacher always told us that",
    "The small shop on the corner sells",
    "In the evening my grandmother",
    "The football match on Sunday was",
    "This year the garden has",
    "The doctor said that I should",
    "At the end of the street there is",
    "My best friend from school",
    "The museum opens its doors at",
    "During the holidays we visited",
    "The old bridge across the river",
    "Every morning the baker",
    "The children in the park were",
    "Tomorrow the whole town will",
    "The letter from my aunt said",
    "The concert in the square",
    "When the rain stopped, we",
    "The new teacher at our school",
    "My favourite season of the year is",
    "The road to the village",
    "Before the exam, the students",
    "The painting in the hall shows",
)
"""Held-out neutral English openings (same rules as :data:`NEUTRAL_PROMPTS`, none shared)."""


def at_typical_strength(
    model: nn.Module,
    tokenizer: Any,
    vector: SteeringVector,
    strength: float,
    *,
    template: str | None = None,
    bos: object = "auto",
) -> SteeringVector:
    """``vector`` rescaled to ``strength`` x the typical residual norm at each of its layers
    (:func:`~ssae_core.lm.steer.typical_norm` over :data:`NEUTRAL_PROMPTS`, read with
    ``template`` and ``bos``): the unit of ``ssae steer --strength`` and the behaviour stage."""
    norms = {
        layer: typical_norm(model, tokenizer, layer, NEUTRAL_PROMPTS, template=template, bos=bos)
        for layer in vector.layer_activations
    }
    return at_strength(vector, strength, norms)


def continue_prompts(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    vector: SteeringVector | None = None,
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    positions: str = "all",
    template: str | None = None,
) -> list[str]:
    """Greedy continuations (new text only) with ``vector`` added (none: unsteered), the prompts
    read with ``template`` (:func:`~ssae_core.lm.tokens.tokenize`)."""
    context = (
        steer(model, vector, positions=positions)
        if vector is not None
        else contextlib.nullcontext()
    )
    with context:
        return complete(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            template=template,
        )


def _rows_steerable(
    model: nn.Module, vectors: Sequence[SteeringVector | None], positions: str
) -> bool:
    """Whether :func:`~ssae_core.lm.steer.steer_rows` can run ``vectors`` as the rows of one
    batch: every position steered, and every vector at one and the same single layer."""
    steered = [v for v in vectors if v is not None]
    return (
        positions == "all"
        and bool(steered)
        and all(len(v.layer_activations) == 1 for v in steered)
        and len(vector_layers(model, steered)) == 1
    )


def continue_conditions(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    vectors: Sequence[SteeringVector | None],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    positions: str = "all",
    template: str | None = None,
    progress: bool = False,
) -> list[list[str]]:
    """Greedy continuations of ``prompts`` (read with ``template``) under every vector, [C][P]
    (``None``: unsteered).
    Where :func:`_rows_steerable`, each chunk of ``batch_size`` prompts runs under all the
    vectors in one generate call (row-wise vectors: the same continuations as one condition at a
    time, to float rounding); else one condition after another (:func:`continue_prompts`)."""
    settings = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "positions": positions,
        "template": template,
    }
    if not _rows_steerable(model, vectors, positions):
        return [
            continue_prompts(model, tokenizer, prompts, vector, **settings)
            for vector in show_progress(
                vectors, desc="continuations", unit="condition", disable=not progress
            )
        ]
    out: list[list[str]] = [[] for _ in vectors]
    starts = range(0, len(prompts), batch_size)
    for start in show_progress(
        starts, desc="continuations", unit="prompt batch", disable=not progress
    ):
        chunk = list(prompts[start : start + batch_size])
        with steer_rows(model, vectors, repeat=len(chunk)):
            texts = complete(
                model,
                tokenizer,
                chunk * len(vectors),
                max_new_tokens=max_new_tokens,
                batch_size=len(chunk) * len(vectors),
                template=template,
            )
        for c, row in enumerate(out):
            row += texts[c * len(chunk) : (c + 1) * len(chunk)]
    return out


def continuation_texts(
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[str],
    template: str | None = None,
) -> list[ScoredText]:
    """Each prompt (read with ``template``) as context and its continuation, re-tokenised from its
    text, as target."""
    context_ids = tokenize(tokenizer, list(prompts), template=template)
    targets = (
        tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
        if continuations
        else []
    )
    return [ScoredText(c, list(t)) for c, t in zip(context_ids, targets, strict=True)]


def language_identifier(languages: Sequence[str] | None = None) -> Any:
    """A py3langid identifier of its own (the module-level one is shared state), optionally
    restricted to ``languages``."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    if languages is not None:
        try:
            identifier.set_languages(list(languages))
        except ValueError as exc:
            raise InputError(f"languages {list(languages)}: {exc}") from None
    return identifier


@functools.cache
def language_codes() -> frozenset[str]:
    """Every language code py3langid knows (ISO 639-1 where one exists)."""
    return frozenset(language_identifier().nb_classes)


def check_language(language: str, where: str) -> None:
    """``language`` must be a code py3langid can output; ``where`` names the parameter."""
    if language not in language_codes():
        raise InputError(
            f"{where} {language!r}: not a py3langid language; use an ISO 639-1 code such as fr, "
            "de or es"
        )


def identify_languages(texts: Sequence[str], identifier: Any) -> list[str]:
    """The language code of each text ('' for a text without letters)."""
    return [
        identifier.classify(text)[0] if any(ch.isalpha() for ch in text) else "" for text in texts
    ]


def language_fraction(texts: Sequence[str], language: str, identifier: Any) -> float:
    """Share of ``texts`` identified as ``language`` (texts without letters count as not)."""
    if not texts:
        raise InputError("language_fraction: no texts given")
    found = identify_languages(texts, identifier)
    return sum(code == language for code in found) / len(found)


def _counts(codes: Iterable[str]) -> dict[str, int]:
    """How often each language code occurs, most frequent first ('' = no letters)."""
    return dict(Counter(codes).most_common())


def _continuation_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    texts: Sequence[Sequence[str]],
    batch_size: int,
    progress: bool,
    templates: Sequence[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-probabilities under the unsteered model and token counts of every continuation,
    [conditions, prompts] each (``texts``: one list of continuations per condition; ``templates``:
    the template each condition's prompts are read with, default none)."""
    templates = templates if templates is not None else [None] * len(texts)
    scored = [
        t
        for outputs, template in zip(texts, templates, strict=True)
        for t in continuation_texts(tokenizer, prompts, outputs, template)
    ]
    logprob = target_logprobs(
        model,
        scored,
        pad_id=pad_token_id(tokenizer),
        batch_size=batch_size,
        progress=progress,
        desc="perplexity",
    )[0].reshape(len(texts), len(prompts))
    count = np.array([len(t.target_ids) for t in scored]).reshape(len(texts), len(prompts))
    return logprob, count


class Continuations(NamedTuple):
    """Greedy continuations of the same prompts under several steering conditions, with their
    languages and their log-probabilities under the unsteered model ([C][P] / [C, P])."""

    texts: list[list[str]]
    languages: list[list[str]]
    """py3langid code of every continuation ('' for one without letters)."""
    logprob_CP: np.ndarray
    count_CP: np.ndarray
    """Tokens of every continuation (re-tokenised from its text)."""

    def share(self, condition: int, language: str) -> float:
        """Share of the condition's continuations identified as ``language``."""
        return float(np.mean([code == language for code in self.languages[condition]]))

    def perplexity(self, condition: int) -> float | None:
        """Perplexity of the condition's continuations under the unsteered model."""
        return perplexity(self.logprob_CP[condition], self.count_CP[condition])

    def n_empty(self, condition: int) -> int:
        """Continuations of the condition without any token."""
        return int((self.count_CP[condition] == 0).sum())


def steered_continuations(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    vectors: Sequence[SteeringVector | None],
    *,
    identifier: Any = None,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    positions: str = "all",
    progress: bool = True,
) -> Continuations:
    """Continue ``prompts`` under every condition of ``vectors`` (``None``: unsteered), identify
    the language of each continuation and score it under the unsteered model."""
    identifier = identifier if identifier is not None else language_identifier()
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "positions": positions}
    texts = continue_conditions(model, tokenizer, prompts, vectors, progress=progress, **settings)
    logprob, count = _continuation_logprobs(model, tokenizer, prompts, texts, batch_size, progress)
    found = [identify_languages(outputs, identifier) for outputs in texts]
    return Continuations(texts, found, logprob, count)


class LanguageScores(NamedTuple):
    """Continuations of one prompt set under several conditions ([C][N] / [C, N])."""

    texts: list[list[str]]
    languages: list[list[str]]
    perplexity_CN: np.ndarray
    distinct_CN: np.ndarray


def score_language(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    conditions: Sequence[Condition],
    *,
    instruction: str,
    identifier: Any,
    max_new_tokens: int,
    batch_size: int,
    positions: str,
    progress: bool,
) -> LanguageScores:
    """Greedy continuations of ``prompts`` under every condition (written by
    :func:`~.protocol.condition_prompts`: the instruction added where a condition is
    ``instructed``, through the chat template where it is ``chat``), their languages, their
    perplexities under the UNSTEERED model given the prompt WITHOUT the instruction in the
    condition's format (so prompting is not scored by its own instruction) and their
    distinct-token shares."""
    settings = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "positions": positions,
        "progress": progress,
    }
    texts: list[list[str]] = [[] for _ in conditions]
    for (instructed, chat), rows in prompt_groups(conditions).items():
        given, template = condition_prompts(prompts, instruction if instructed else None, chat=chat)
        # a method at strength 0 is the unsteered model: its rows share one None
        vectors = list({id(c.vector): c.vector for c in (conditions[i] for i in rows)}.values())
        outputs = continue_conditions(
            model, tokenizer, given, vectors, template=template, **settings
        )
        for i in rows:
            texts[i] = outputs[next(k for k, v in enumerate(vectors) if v is conditions[i].vector)]
    templates = [prompt_template(c.chat) for c in conditions]
    logprob, count = _continuation_logprobs(
        model, tokenizer, prompts, texts, batch_size, progress, templates
    )
    ids = [tokenizer(list(t), add_special_tokens=False)["input_ids"] for t in texts]
    distinct = np.array([[distinct_share(row) for row in rows] for rows in ids])
    found = [identify_languages(outputs, identifier) for outputs in texts]
    return LanguageScores(texts, found, text_perplexities(logprob, count), distinct)


def _add_readings(
    results: dict[str, dict],
    conditions: Sequence[Condition],
    scores: LanguageScores,
    samples: int,
) -> None:
    """Add to each held-out condition's results its harmonic-mean score, its first member's
    first ``samples`` continuations and the languages found."""
    for name, entry in results.items():
        rows = [i for i, c in enumerate(conditions) if c.name == name]
        entry["score"] = rounded(harmonic_mean(entry["concept"]["mean"], entry["fluency"]["mean"]))
        entry["samples"] = scores.texts[rows[0]][:samples]
        entry["languages"] = _counts(code for i in rows for code in scores.languages[i])


def _measures(scores: LanguageScores, rule: FluencyRule, language: str) -> dict[str, np.ndarray]:
    """Bool [C, N] per measure: ``concept`` (fluent and in ``language``), ``fluency``, and
    ``detected`` (in ``language`` by the detector alone)."""
    fluent_CN = rule.fluent(scores.distinct_CN, scores.perplexity_CN)
    target_CN = np.array([[code == language for code in row] for row in scores.languages])
    return {"concept": target_CN & fluent_CN, "fluency": fluent_CN, "detected": target_CN}


def evaluate_language(
    model: nn.Module,
    tokenizer: Any,
    vectors: Mapping[str, Sequence[ConceptVector]],
    strengths: Sequence[float],
    *,
    norm: float,
    train_prompts: Sequence[str],
    test_prompts: Sequence[str],
    instruction: str,
    language: str = "fr",
    identifier: Any = None,
    min_distinct: float = 0.4,
    perplexity_factor: float = 5.0,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    positions: str = "all",
    samples: int = 3,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chat: bool = False,
    progress: bool = True,
) -> dict:
    """The language behaviour under the shared protocol (:mod:`.protocol`): fluency rule and
    operating points from ``train_prompts``, scores on ``test_prompts`` (JSON-ready); ``chat``:
    the prompting conditions ask through the chat template."""
    check_language(language, "language")
    identifier = identifier if identifier is not None else language_identifier()
    options = {
        "instruction": instruction,
        "identifier": identifier,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "positions": positions,
        "progress": progress,
    }
    base = Condition(UNSTEERED, None, 0, 0.0, False, None)
    grid = sweep(vectors, strengths, norm)
    train = score_language(model, tokenizer, train_prompts, [base, *grid], **options)
    rule = fluency_rule(
        train.perplexity_CN[0], min_distinct=min_distinct, perplexity_factor=perplexity_factor
    )

    train_measures = _measures(train, rule, language)
    chosen, rows = choose_points(
        grid,
        {k: v[1:] for k, v in train_measures.items()},
        {k: v[0] for k, v in train_measures.items()},
        lambda means: harmonic_mean(means["concept"], means["fluency"]),
    )
    tests = held_out(vectors, chosen, norm, chat=chat)
    test = score_language(model, tokenizer, test_prompts, tests, **options)
    test_measures = _measures(test, rule, language)
    bootstrap = {"resamples": resamples, "seed": seed, "level": level}
    results = summarise(tests, test_measures, **bootstrap)
    _add_readings(results, tests, test, samples)
    reference = (vectors.get(MEAN_DIFFERENCE) or [None])[0]
    return {
        "concept": LANGUAGE,
        "layer": layer_name(next(iter(vectors.values()))[0].layer),
        "language": language,
        "norm": rounded(norm),
        "instruction": instruction,
        "prompt_format": CHAT if chat else PLAIN,
        "positions": positions,
        "max_new_tokens": max_new_tokens,
        "train_prompts": list(train_prompts),
        "test_prompts": list(test_prompts),
        "fluency": {
            "min_distinct": min_distinct,
            "perplexity_factor": perplexity_factor,
            "max_perplexity": rounded(rule.max_perplexity),
        },
        "vectors": {m: vector_report(v, reference) for m, v in vectors.items()},
        "operating_points": chosen,
        "train_sweep": rows,
        "test": results,
        "comparisons": compare(tests, test_measures["concept"], list(vectors), **bootstrap),
    }
