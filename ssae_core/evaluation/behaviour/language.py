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
from ssae_core.evaluation.behaviour.logprobs import ScoredText, perplexity, target_logprobs
from ssae_core.evaluation.behaviour.vectors import ConceptVector, sweep_conditions, vector_report
from ssae_core.evaluation.steering_accuracy import MEAN_DIFFERENCE
from ssae_core.lm.layers import layer_name
from ssae_core.lm.steer import SteeringVector, steer
from ssae_core.lm.tokens import complete, pad_token_id, tokenize
from ssae_core.metrics import rounded, seed_summary
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
word list is made of those), so a French continuation comes from the steering."""


def continue_prompts(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    vector: SteeringVector | None = None,
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    positions: str = "all",
) -> list[str]:
    """Greedy continuations (new text only) with ``vector`` added (none: unsteered)."""
    context = (
        steer(model, vector, positions=positions)
        if vector is not None
        else contextlib.nullcontext()
    )
    with context:
        return complete(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )


def continuation_texts(
    tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str]
) -> list[ScoredText]:
    """Each prompt as context and its continuation, re-tokenised from its text, as target."""
    context_ids = tokenize(tokenizer, list(prompts))
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
) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-probabilities under the unsteered model and token counts of every continuation,
    [conditions, prompts] each (``texts``: one list of continuations per condition)."""
    scored = [t for outputs in texts for t in continuation_texts(tokenizer, prompts, outputs)]
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
    texts = [
        continue_prompts(model, tokenizer, prompts, vector, **settings)
        for vector in show_progress(vectors, desc="continuations", disable=not progress)
    ]
    logprob, count = _continuation_logprobs(model, tokenizer, prompts, texts, batch_size, progress)
    found = [identify_languages(outputs, identifier) for outputs in texts]
    return Continuations(texts, found, logprob, count)


def evaluate_language(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    vectors: Mapping[str, Sequence[ConceptVector]],
    multipliers: Sequence[float],
    *,
    language: str = "fr",
    identifier: Any = None,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    positions: str = "all",
    samples: int = 3,
    progress: bool = True,
) -> dict:
    """Share of continuations in ``language`` and their perplexity under the unsteered model,
    unsteered and with every vector at every multiplier (JSON-ready)."""
    check_language(language, "language")
    conditions = sweep_conditions(vectors, multipliers)
    reference = (vectors.get(MEAN_DIFFERENCE) or [None])[0]
    runs = steered_continuations(
        model,
        tokenizer,
        prompts,
        [None, *(c.vector for c in conditions)],
        identifier=identifier,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        positions=positions,
        progress=progress,
    )
    texts, found = runs.texts, runs.languages

    def measures(i: int) -> tuple[float, float | None, int]:
        return runs.share(i, language), runs.perplexity(i), runs.n_empty(i)

    base_fraction, base_ppl, base_empty = measures(0)
    index = {(c.method, c.member, c.multiplier): i + 1 for i, c in enumerate(conditions)}
    methods = {}
    for method, members in vectors.items():
        sweep = []
        for m in multipliers:
            rows = [index.get((method, i, float(m)), 0) for i in range(len(members))]
            fraction, ppl, empty = zip(*(measures(r) for r in rows), strict=True)
            sweep.append(
                {
                    "alpha_multiplier": float(m),
                    "language_fraction": seed_summary(fraction),
                    "language_change": seed_summary([f - base_fraction for f in fraction]),
                    "perplexity": seed_summary(ppl),
                    "n_empty": list(empty),
                    "languages": _counts(code for r in rows for code in found[r]),
                    "samples": texts[rows[0]][:samples],
                }
            )
        methods[method] = {**vector_report(members, reference), "sweep": sweep}
    return {
        "concept": LANGUAGE,
        "layer": layer_name(next(iter(vectors.values()))[0].layer),
        "language": language,
        "n_prompts": len(prompts),
        "prompts": list(prompts),
        "max_new_tokens": max_new_tokens,
        "positions": positions,
        "unsteered": {
            "language_fraction": rounded(base_fraction),
            "perplexity": rounded(base_ppl),
            "n_empty": base_empty,
            "languages": _counts(found[0]),
            "samples": texts[0][:samples],
        },
        "methods": methods,
    }
