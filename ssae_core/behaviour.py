"""Behavioural steering: steer the language model itself with learned vectors and measure what its
behaviour does (issue 5, part 2). :mod:`ssae_core.steering` scores vectors on embeddings; this
module adds them to the LM's residual stream (:func:`ssae_core.steer.steer`) and looks at outputs.

Vectors (one concept c of an embedding table, fitted on its TRAINING pairs, as in
:mod:`ssae_core.steering`): for ``ssae`` and ``aff``, one per run member: the decoder row matched to
c (:func:`~ssae_core.steering.learned_vectors`; a concept whose label is constant, as in lang and
truthfulqa, is matched by the cosine of each row with the mean training shift) oriented along +c;
``md``: the normalised mean training shift. Each comes with its signed least-squares scale
alpha_fit (:func:`~ssae_core.steering.fit_alpha`: the typical size of c's shift along the vector).
The LM is steered with ``multiplier * alpha_fit * v`` for each ``multiplier`` of the sweep, so every
method is compared at the same multiple of its own fitted shift size. Multiplier 0 adds the zero
vector, i.e. it IS the unsteered model (the tests check this bit for bit), so it is evaluated once.
The layer is the one the embeddings were read at (their ``layer`` metadata; ``final`` = the
output of the final norm).

Behaviour 1, TruthfulQA MC1 (concept ``truthfulness``): for each held-out question, every MC1
choice is scored by the sum of the log-probabilities of its answer tokens after the prompt, with
the template of the embeddings (``Q: {question}\\nA: {answer}``: context ``Q: ...\\nA:``, answer
`` <choice>``); the prediction is the highest-scoring choice (sum, not length-normalised, as in
TruthfulQA's MC1); accuracy is the fraction of questions whose prediction is the correct choice.
Every position of the scored text is steered (for the final layer only the positions that predict
answer tokens matter). Speed: at the final layer a steered logit row is ``logits + W_head @ v``
(the LM head is linear), so each batch runs the model once and every condition costs one
log-softmax; this shortcut is checked against the model's own logits on the first batch and
against :func:`~ssae_core.steer.steer` in the tests, and any other layer runs one steered forward
pass per condition.

Behaviour 2, language (concept ``language``, English -> French): greedy continuations
(:func:`~ssae_core.steer.complete`) of neutral English prompts (:data:`NEUTRAL_PROMPTS`), with and
without the vector; the French fraction is the share of continuations that py3langid (a maintained
fork of langid.py with a bundled model, offline) identifies as French; fluency is the perplexity
of the continuations under the UNSTEERED model (exp of the token-weighted mean negative
log-likelihood of the continuation given its prompt, the continuation re-tokenised from its text).
A low perplexity does not prove fluency (repetitive text scores low); read it with the samples.

Shapes in names: N texts, C steering conditions, P scored positions, V vocabulary, D width.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ssae_core import lm
from ssae_core.config import from_mapping
from ssae_core.embed import left_pad, pad_token_id, tokenize
from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable, read_table
from ssae_core.report import num, pm
from ssae_core.steer import POSITIONS, Layer, SteeringVector, complete, parse_layer, steer
from ssae_core.steering import (
    MEAN_DIFFERENCE,
    MERGE_THRESHOLD,
    SteeringModel,
    learned_vectors,
    mean_difference_vectors,
    rounded,
    spread,
)
from ssae_core.train import torch_threads

TRUTHFULNESS = "truthfulness"
LANGUAGE = "language"
MC_COLUMNS = ("question_id", "question", "split", "mc1_choices", "mc1_labels")
QUESTION_FIELD = "{question}"
ANSWER_FIELD = "{answer}"
# Logit post-processing some architectures apply after the head; the shortcut needs none of it.
LOGIT_SCALING_KEYS = ("final_logit_softcapping", "logit_scale", "logits_scaling")

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


# --------------------------------------------------------------------------- parameters


@dataclass
class BehaviourParams:
    """The ``behaviour`` section of params.yaml: what is steered, how hard, on how much data."""

    alpha_multipliers: list[float] = field(default_factory=lambda: [-4.0, 0.0, 1.0, 2.0, 4.0, 8.0])
    """Steering strengths as multiples of each vector's fitted alpha; 0 is the unsteered model."""
    seeds: list[int] | None = None
    """Seeds of the run members that steer (a subsample of the run); null: every member."""
    questions: int | None = 80
    """Held-out TruthfulQA questions scored: a seeded subsample of split 'test'; null: all."""
    prompts: int | None = None
    """Neutral English prompts continued: the first N of NEUTRAL_PROMPTS; null: all of them."""
    max_new_tokens: int = 16
    """Greedy tokens generated per prompt."""
    positions: str = "all"
    """Generation positions steered: all, prompt or generated (see ssae_core.steer)."""
    language: str = "fr"
    """ISO 639-1 code of the language the lang vector should produce (py3langid's codes)."""
    batch_size: int = 16
    """Texts per forward pass (scoring) or per generate call."""
    subsample_seed: int = 0
    """Seed of the question subsample."""
    samples: int = 3
    """Continuations kept in the results per method and multiplier (first member), to read."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    threads: int = 1
    """torch intra-op threads on CPU (0: torch's default); 1 is fastest on a busy 2-core CPU."""


def behaviour_params(
    values: Mapping[str, Any] | None, where: str = "params.yaml:behaviour"
) -> BehaviourParams:
    """Validated :class:`BehaviourParams`; a bad value raises a one-line InputError naming it."""
    params = from_mapping(BehaviourParams, values, where)
    multipliers = params.alpha_multipliers
    if not multipliers or not all(math.isfinite(float(m)) for m in multipliers):
        raise InputError(f"{where}.alpha_multipliers {multipliers!r}: give finite numbers")
    if len(set(multipliers)) != len(multipliers):
        raise InputError(f"{where}.alpha_multipliers {multipliers!r}: a value is repeated")
    if params.seeds is not None and (
        not params.seeds or len(set(params.seeds)) < len(params.seeds)
    ):
        raise InputError(f"{where}.seeds {params.seeds!r}: give distinct seeds, or null for all")
    limits = {
        "questions": (params.questions, 1, None),
        "prompts": (params.prompts, 1, len(NEUTRAL_PROMPTS)),
        "max_new_tokens": (params.max_new_tokens, 1, None),
        "batch_size": (params.batch_size, 1, None),
        "samples": (params.samples, 0, None),
        "threads": (params.threads, 0, None),
    }
    for name, (value, low, high) in limits.items():
        if value is not None and (value < low or (high is not None and value > high)):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise InputError(f"{where}.{name} {value!r}: must be {span}")
    if params.positions not in POSITIONS:
        raise InputError(
            f"{where}.positions {params.positions!r}: use one of {', '.join(POSITIONS)}"
        )
    check_language(params.language, f"{where}.language")
    return params


# --------------------------------------------------------------------------- vectors


class ConceptVector(NamedTuple):
    """One method's (one member's) steering vector for one concept."""

    method: str
    seed: int | None
    """The member's seed; None for md (one deterministic vector)."""
    layer: Layer
    unit_D: np.ndarray
    """Unit direction, oriented along +concept, raw embedding units."""
    alpha: float
    """Signed least-squares scale of the concept's training shifts on ``unit_D``."""
    latent: int | None
    """The matched latent (learnt models)."""
    match_score: float | None
    """Its match score (correlation, or cosine with the mean shift; learnt models)."""

    def steering_vector(self, multiplier: float) -> SteeringVector:
        """``multiplier * alpha * unit`` at this vector's layer."""
        metadata = {"method": self.method, "seed": str(self.seed), "multiplier": repr(multiplier)}
        scaled = float(multiplier) * self.alpha * np.asarray(self.unit_D, np.float64)
        return SteeringVector({self.layer: scaled.astype(np.float32)}, metadata)


def embedding_layer(table: EmbeddingTable, what: str) -> Layer:
    """The LM layer an embedding table was read at (its ``layer`` metadata)."""
    if "layer" not in table.metadata:
        raise InputError(
            f"{what}: the embeddings record no LM layer (synthetic data?); steer with LM "
            "embeddings from the extract_embeddings stage"
        )
    return parse_layer(table.metadata["layer"])


def concept_vectors(
    train: EmbeddingTable,
    runs: Mapping[str, Sequence[SteeringModel]],
    concept: str,
    *,
    seeds: Sequence[int] | None = None,
    merge_threshold: float = MERGE_THRESHOLD,
    what: str = "embeddings",
) -> dict[str, list[ConceptVector]]:
    """``{"md": [vector], method: [one vector per member]}`` for ``concept``, from the training
    rows ``train`` (see the module docstring). ``seeds`` keeps only members with those seeds."""
    concepts = list(train.concepts or [])
    if concept not in concepts:
        raise InputError(f"{what}: no concept {concept!r} (concepts: {concepts or 'none'})")
    if len(train) == 0:
        raise InputError(f"{what}: no training pairs to fit the {concept} vectors on")
    k = concepts.index(concept)
    layer = embedding_layer(train, what)
    if MEAN_DIFFERENCE in runs:
        raise InputError(f"method name {MEAN_DIFFERENCE!r} is reserved for the mean difference")
    md = mean_difference_vectors(train)
    if not np.isfinite(md.alpha_K[k]):
        raise InputError(f"{what}: concept {concept!r} has no single-concept training pair")
    md_vector = ConceptVector(
        MEAN_DIFFERENCE, None, layer, md.vectors_KD[k], float(md.alpha_K[k]), None, None
    )
    out = {MEAN_DIFFERENCE: [md_vector]}
    for method, members in runs.items():
        chosen = [m for m in members if seeds is None or m.config.get("seed") in seeds]
        if not chosen:
            have = [m.config.get("seed") for m in members]
            raise InputError(f"method {method!r}: no member with seeds {seeds} (has {have})")
        vectors = []
        for model in chosen:
            seed = model.config.get("seed")
            recorded = (model.config.get("provenance") or {}).get("layer")
            if recorded is not None and parse_layer(recorded) != layer:
                raise InputError(
                    f"method {method!r} seed {seed}: trained on embeddings of layer {recorded}, "
                    f"but {what} are of layer {lm.layer_name(layer)}; use runs of these embeddings"
                )
            if int(model.config.get("dim", train.dim)) != train.dim:
                raise InputError(
                    f"method {method!r} seed {seed}: width {model.config['dim']} != embedding "
                    f"width {train.dim}; use runs trained on {what}"
                )
            fitted = learned_vectors(model, train, merge_threshold=merge_threshold)
            alpha = float(fitted.alpha_K[k])
            if not math.isfinite(alpha):
                raise InputError(f"method {method!r} seed {seed}: no latent matched {concept!r}")
            matching = fitted.matching
            latent = int(matching.latent_K[k]) if matching is not None else None
            score = float(matching.score_K[k]) if matching is not None else None
            vectors.append(
                ConceptVector(method, seed, layer, fitted.vectors_KD[k], alpha, latent, score)
            )
        out[method] = vectors
    return out


class Condition(NamedTuple):
    """One steered evaluation: a member's vector at one multiplier."""

    method: str
    member: int
    multiplier: float
    vector: SteeringVector


def sweep_conditions(
    vectors: Mapping[str, Sequence[ConceptVector]], multipliers: Sequence[float]
) -> list[Condition]:
    """Every (method, member, non-zero multiplier); multiplier 0 is the unsteered model."""
    return [
        Condition(method, i, float(m), v.steering_vector(m))
        for m in multipliers
        if m != 0
        for method, members in vectors.items()
        for i, v in enumerate(members)
    ]


# --------------------------------------------------------------------------- scoring text


class ScoredText(NamedTuple):
    """Token ids of a context and of the target scored after it."""

    context_ids: list[int]
    target_ids: list[int]


class _Batch(NamedTuple):
    """A left-padded batch and where its target tokens are predicted."""

    rows: list[int]
    inputs: dict[str, Any]
    keep: int
    """The last ``keep`` positions' logits predict every target token of the batch."""
    row_P: torch.Tensor
    col_P: torch.Tensor
    """Row and kept-position index of the logits that predict each target token."""
    token_P: torch.Tensor

    def logits(self, model: nn.Module, **extra: Any) -> tuple[torch.Tensor, Any]:
        """The logits that predict the target tokens [P, V], and the model's whole output."""
        result = model(**self.inputs, **extra)
        return result.logits[:, -self.keep :][self.row_P, self.col_P], result

    def sums(self, logits_PV: torch.Tensor) -> np.ndarray:
        """Sum of the target tokens' log-probabilities per row [B]."""
        logp_P = logits_PV.float().log_softmax(-1).gather(1, self.token_P[:, None])[:, 0]
        total = torch.zeros(len(self.rows), dtype=torch.float64, device=logp_P.device)
        return total.index_add_(0, self.row_P, logp_P.double()).cpu().numpy()


def _batches(
    model: nn.Module, items: Sequence[ScoredText], batch_size: int, pad_id: int
) -> list[_Batch]:
    """Items longest first, left-padded, positions counted from each row's first real token
    (as in :func:`ssae_core.embed.last_token_states`); batches without target tokens are
    left out."""
    device = next(model.parameters()).device
    keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]) - len(items[i][1]))
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        targets = [items[i].target_ids for i in rows]
        keep = max(len(t) for t in targets) + 1
        if keep == 1:
            continue
        ids_BT, mask_BT = left_pad([items[i][0] + items[i][1] for i in rows], pad_id)
        ids_BT, mask_BT = ids_BT.to(device), mask_BT.to(device)
        inputs = {
            "input_ids": ids_BT,
            "attention_mask": mask_BT,
            "position_ids": (mask_BT.cumsum(-1) - 1).clamp(min=0),
            "use_cache": False,
        }
        if keep_arg:
            inputs["logits_to_keep"] = keep
        # kept position p predicts token p + 1: target j of a row with n targets is predicted
        # at kept position keep - n + j - 1
        out.append(
            _Batch(
                rows=rows,
                inputs=inputs,
                keep=keep,
                row_P=torch.tensor([b for b, t in enumerate(targets) for _ in t], device=device),
                col_P=torch.tensor(
                    [keep - len(t) + j - 1 for t in targets for j in range(len(t))], device=device
                ),
                token_P=torch.tensor([x for t in targets for x in t], device=device),
            )
        )
    return out


def _head_shifts(
    model: nn.Module, vectors: Sequence[SteeringVector | None], batch: _Batch
) -> torch.Tensor | None:
    """What each final-layer vector adds to the logits, ``head(v) - head(0)`` [C, V] (float32);
    None unless the model's logits on ``batch`` are its linear head applied to its last hidden
    state (the final-norm output), which makes ``logits + head(v) - head(0)`` exact."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    config = config or model.config
    head = model.get_output_embeddings()
    scaled = any(getattr(config, key, None) not in (None, 1, 1.0) for key in LOGIT_SCALING_KEYS)
    if scaled or not isinstance(head, nn.Linear):
        return None
    logits_PV, result = batch.logits(model, output_hidden_states=True)
    state_PD = result.hidden_states[-1][:, -batch.keep :][batch.row_P, batch.col_P]
    tolerance = 1e-4 * max(1.0, float(logits_PV.abs().max()))
    if not torch.allclose(head(state_PD).float(), logits_PV.float(), rtol=1e-4, atol=tolerance):
        return None
    zero = torch.zeros(1, head.in_features, dtype=head.weight.dtype, device=head.weight.device)
    shifts = [
        torch.zeros(head.out_features, device=head.weight.device)
        if vector is None
        else (head(vector.layer_activations[None].to(zero)[None]) - head(zero))[0].float()
        for vector in vectors
    ]
    return torch.stack(shifts)


@torch.inference_mode()
def target_logprobs(
    model: nn.Module,
    items: Sequence[ScoredText],
    vectors: Sequence[SteeringVector | None] = (None,),
    *,
    pad_id: int,
    batch_size: int = 16,
    shortcut: bool = True,
    progress: bool = False,
    desc: str = "score",
) -> np.ndarray:
    """Sum of log p(target tokens | context) of every item under every steering condition,
    float64 [C, N] (C = ``len(vectors)``; ``None`` is the unsteered model; an empty target
    scores 0). Every position is steered; batches are left-padded (see :func:`_batches`).

    ``shortcut``: when every vector steers the final-norm output, run the model once per batch
    and add ``W_head @ v`` to its logits per condition; it is exact when the logits are the
    linear head of the final-norm output, which is checked on the first batch (otherwise, and
    for block layers, every condition runs the model under :func:`~ssae_core.steer.steer`).
    """
    for i, item in enumerate(items):
        if not item.context_ids:
            raise InputError(f"text {i}: has an empty context; give at least one context token")
    out_CN = np.zeros((len(vectors), len(items)))
    batches = _batches(model, items, batch_size, pad_id)
    shifts_CV = None
    final_only = all(v is None or set(v.layer_activations) == {None} for v in vectors)
    if shortcut and batches and final_only and any(v is not None for v in vectors):
        shifts_CV = _head_shifts(model, vectors, batches[0])
    passes = 1 if shifts_CV is not None else len(vectors)
    with tqdm(total=len(batches) * passes, desc=desc, disable=not progress) as bar:
        for batch in batches:
            if shifts_CV is not None:
                base_PV = batch.logits(model)[0].float()
                for c in range(len(vectors)):
                    out_CN[c, batch.rows] = batch.sums(base_PV + shifts_CV[c])
                bar.update(1)
                continue
            for c, vector in enumerate(vectors):
                steering = steer(model, vector) if vector is not None else contextlib.nullcontext()
                with steering:
                    out_CN[c, batch.rows] = batch.sums(batch.logits(model)[0])
                bar.update(1)
    return out_CN


# --------------------------------------------------------------------------- TruthfulQA MC1


class MCItem(NamedTuple):
    """One multiple-choice question with its (already shuffled) MC1 choices."""

    question_id: int
    question: str
    choices: list[str]
    correct: int
    """Index of the one correct choice."""


def load_mc_questions(path: str | Path, *, split: str = "test") -> list[MCItem]:
    """The MC1 questions of one split of the MC table (data/truthfulqa/mc.parquet)."""
    table = read_table(path)
    missing = [c for c in MC_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: lacks column(s) {', '.join(missing)}; re-run the download_truthfulqa stage"
        )
    items = []
    for row in table.select(list(MC_COLUMNS)).to_pylist():
        if row["split"] != split:
            continue
        labels = [int(v) for v in row["mc1_labels"]]
        choices = list(row["mc1_choices"])
        if len(choices) < 2 or len(labels) != len(choices) or sorted(labels)[-2:] != [0, 1]:
            raise InputError(
                f"{path}: question_id {row['question_id']} needs >= 2 mc1_choices and exactly one "
                "mc1_label 1; re-run the download_truthfulqa stage"
            )
        items.append(MCItem(int(row["question_id"]), row["question"], choices, labels.index(1)))
    if not items:
        raise InputError(f"{path}: no questions with split '{split}'; check the MC table")
    return items


def subsample(items: Sequence[Any], size: int | None, seed: int) -> list[Any]:
    """``size`` items drawn without replacement (seeded), in their original order; all if None."""
    if size is None or size >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size, replace=False))
    return [items[i] for i in keep]


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


def choice_texts(tokenizer: Any, items: Sequence[MCItem], template: str) -> list[ScoredText]:
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


def mc1_correct(logprob_N: np.ndarray, items: Sequence[MCItem]) -> np.ndarray:
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


# --------------------------------------------------------------------------- language and fluency


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


def perplexity(logprob_N: np.ndarray, count_N: np.ndarray) -> float | None:
    """exp(- sum of log-probs / number of tokens) over all texts; None without tokens."""
    tokens = int(np.sum(count_N))
    return float(math.exp(-float(np.sum(logprob_N)) / tokens)) if tokens else None


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


# --------------------------------------------------------------------------- evaluations


def _counts(codes: Iterable[str]) -> dict[str, int]:
    """How often each language code occurs, most frequent first ('' = no letters)."""
    return dict(Counter(codes).most_common())


def _vector_report(
    members: Sequence[ConceptVector], reference: ConceptVector | None = None
) -> dict:
    """Seeds, fitted alphas, matched latents and (learnt models) the cosine of each vector with
    ``reference`` (the md vector): how far the learnt direction is from the mean shift."""
    learnt = members[0].seed is not None
    cosines = None
    if learnt and reference is not None:
        cosines = spread([float(m.unit_D @ reference.unit_D) for m in members])
    return {
        "seeds": [m.seed for m in members] if learnt else None,
        "alpha_fit": spread([m.alpha for m in members]),
        "latent": [m.latent for m in members] if learnt else None,
        "match_score": [rounded(m.match_score) for m in members] if learnt else None,
        "cosine_to_md": cosines,
    }


def evaluate_truthfulqa(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[MCItem],
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
                    "accuracy": spread(values),
                    "change": spread([v - base for v in values]),
                }
            )
        methods[method] = {**_vector_report(members, reference), "sweep": sweep}
    return {
        "concept": TRUTHFULNESS,
        "layer": lm.layer_name(next(iter(vectors.values()))[0].layer),
        "template": template,
        "n_questions": len(questions),
        "n_choices": len(texts),
        "chance_accuracy": rounded(float(np.mean([1 / len(q.choices) for q in questions]))),
        "question_ids": [q.question_id for q in questions],
        "unsteered": {"accuracy": rounded(base)},
        "methods": methods,
    }


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
    identifier = identifier if identifier is not None else language_identifier()
    check_language(language, "language")
    conditions = sweep_conditions(vectors, multipliers)
    reference = (vectors.get(MEAN_DIFFERENCE) or [None])[0]
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "positions": positions}
    texts = []
    bar = tqdm([None, *(c.vector for c in conditions)], desc="language", disable=not progress)
    for vector in bar:
        texts.append(continue_prompts(model, tokenizer, prompts, vector, **settings))
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

    found = [identify_languages(outputs, identifier) for outputs in texts]

    def measures(i: int) -> tuple[float, float | None, int]:
        return (
            float(np.mean([code == language for code in found[i]])),
            perplexity(logprob[i], count[i]),
            int((count[i] == 0).sum()),
        )

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
                    "language_fraction": spread(fraction),
                    "language_change": spread([f - base_fraction for f in fraction]),
                    "perplexity": spread(ppl),
                    "n_empty": list(empty),
                    "languages": _counts(code for r in rows for code in found[r]),
                    "samples": texts[rows[0]][:samples],
                }
            )
        methods[method] = {**_vector_report(members, reference), "sweep": sweep}
    return {
        "concept": LANGUAGE,
        "layer": lm.layer_name(next(iter(vectors.values()))[0].layer),
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


def check_same_model(table: EmbeddingTable, model_name: str, what: str) -> None:
    """The embeddings must come from the model that is steered."""
    recorded = table.metadata.get("model")
    if recorded is not None and recorded != model_name:
        raise InputError(
            f"{what}: embeddings of model {recorded}, but the steered model is {model_name}; "
            "re-extract the embeddings with this model"
        )


def evaluate_behaviour(
    model: nn.Module,
    tokenizer: Any,
    params: BehaviourParams,
    *,
    truthfulqa: EmbeddingTable,
    mc_questions: Sequence[MCItem],
    language: EmbeddingTable,
    runs: Mapping[str, Mapping[str, Sequence[SteeringModel]]],
    progress: bool = True,
) -> dict:
    """Both behavioural evaluations (JSON-ready). ``truthfulqa`` / ``language``: the embedding
    tables (vectors are fitted on their ``train`` rows, the template is the one truthfulqa's
    embeddings recorded); ``mc_questions``: the held-out MC questions (subsampled here);
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
    identifier = language_identifier()
    questions = subsample(mc_questions, params.questions, params.subsample_seed)
    prompts = list(NEUTRAL_PROMPTS[: params.prompts])
    seeds = params.seeds
    tqa_vectors = concept_vectors(
        truthfulqa.subset("train"),
        runs["truthfulqa"],
        TRUTHFULNESS,
        seeds=seeds,
        what="truthfulqa embeddings",
    )
    lang_vectors = concept_vectors(
        language.subset("train"), runs["lang"], LANGUAGE, seeds=seeds, what="lang embeddings"
    )
    with torch_threads(params.threads):
        tqa = evaluate_truthfulqa(
            model,
            tokenizer,
            questions,
            tqa_vectors,
            params.alpha_multipliers,
            template=template,
            batch_size=params.batch_size,
            progress=progress,
        )
        tqa["n_test_questions"] = len(mc_questions)
        tqa["subsample_seed"] = params.subsample_seed
        tqa["embedding_norm"] = rounded(float(np.linalg.norm(truthfulqa.z, axis=1).mean()))
        lang = evaluate_language(
            model,
            tokenizer,
            prompts,
            lang_vectors,
            params.alpha_multipliers,
            language=params.language,
            identifier=identifier,
            max_new_tokens=params.max_new_tokens,
            batch_size=params.batch_size,
            positions=params.positions,
            samples=params.samples,
            progress=progress,
        )
    lang["embedding_norm"] = rounded(float(np.linalg.norm(language.z, axis=1).mean()))
    return {"settings": asdict(params), "truthfulqa": tqa, "language": lang}


# --------------------------------------------------------------------------- reporting


def plot_rows(results: dict, part: str) -> list[dict]:
    """Rows of a wide plot table, one per multiplier: ``alpha_multiplier``, the unsteered value
    and, per method, the mean over seeds and its std. ``part``: ``truthfulqa`` (MC1 accuracy) or
    ``language`` (``*_fraction``: share in the target language, ``*_perplexity``)."""
    section = results[part]
    measures = (
        {"accuracy": "accuracy"}
        if part == "truthfulqa"
        else {"fraction": "language_fraction", "perplexity": "perplexity"}
    )
    multipliers = [e["alpha_multiplier"] for e in next(iter(section["methods"].values()))["sweep"]]
    rows = []
    for i, multiplier in enumerate(multipliers):
        row: dict = {"alpha_multiplier": multiplier}
        for suffix, key in measures.items():
            name = "" if part == "truthfulqa" else f"_{suffix}"
            row[f"unsteered{name}"] = section["unsteered"][key]
            for method, report in section["methods"].items():
                entry = report["sweep"][i][key]
                row[f"{method}{name}"] = entry["mean"]
                row[f"{method}{name}_std"] = entry["std_seeds"]
        rows.append(row)
    return rows


def _per_seed(entry: dict, digits: int = 3) -> str:
    return ", ".join(num(v, digits) for v in entry["values"]) if len(entry["values"]) > 1 else ""


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "/").replace("\n", "⏎").strip() + "`"


def _vector_lines(section: dict) -> list[str]:
    lines = []
    for method, report in section["methods"].items():
        seeds = f"seeds {report['seeds']}" if report["seeds"] is not None else "one vector"
        match = ""
        if report["latent"] is not None:
            match = f"; matched latents {report['latent']}, match scores {report['match_score']}"
        if report.get("cosine_to_md") is not None:
            match += f"; cosine with the md vector {pm(report['cosine_to_md'], 2)}"
        lines.append(f"- {method} ({seeds}): fitted alpha {pm(report['alpha_fit'], 2)}{match}")
    return lines


def behaviour_markdown(results: dict) -> str:
    """The results of :func:`evaluate_behaviour` as Markdown: what was measured, on what data,
    and the tables."""
    tqa, lang = results["truthfulqa"], results["language"]
    lines = [
        "## Behavioural steering of the language model",
        "",
        "The LM itself is steered: `multiplier × alpha_fit × v` is added to its residual stream "
        f"at the layer the embeddings were read at ({tqa['layer']}; `final` = the final-norm "
        "output), at every position. v is a unit vector for the concept: SSAE and aff, the "
        "decoder row matched to the concept on the training pairs (one per seed); MD, the mean "
        "training shift (one deterministic vector). alpha_fit is the least-squares size of the "
        "concept's training shifts along v, so every method is compared at the same multiple of "
        "its own fitted shift. Multiplier 0 is the unsteered model. Values: mean ± std over "
        "seeds (population std), with the per-seed values beside them.",
        "",
        "### TruthfulQA MC1 (truthfulness vector)",
        "",
        f"{tqa['n_questions']} of the {tqa.get('n_test_questions', tqa['n_questions'])} held-out "
        f"questions (subsample seed {tqa.get('subsample_seed', '–')}), {tqa['n_choices']} "
        "choices; each choice is scored by the summed log-probability of its answer tokens after "
        f"the prompt `{tqa['template']!r}`, the best-scoring choice is the answer. Chance: "
        f"{num(tqa['chance_accuracy'])}. Unsteered accuracy: {num(tqa['unsteered']['accuracy'])}."
        f" Mean embedding norm: {num(tqa.get('embedding_norm'), 1)}.",
        "",
        *_vector_lines(tqa),
        "",
        "| method | multiplier | MC1 accuracy | per seed | unsteered | change |",
        "|---|---|---|---|---|---|",
    ]
    for method, report in tqa["methods"].items():
        for entry in report["sweep"]:
            lines.append(
                f"| {method} | {entry['alpha_multiplier']:g} | {pm(entry['accuracy'])} | "
                f"{_per_seed(entry['accuracy'])} | {num(tqa['unsteered']['accuracy'])} | "
                f"{pm(entry['change'])} |"
            )
    code = lang["language"]
    base = lang["unsteered"]
    lines += [
        "",
        f"### Language (language vector: English -> {code})",
        "",
        f"{lang['n_prompts']} neutral English prompts, greedy continuations of "
        f"{lang['max_new_tokens']} new tokens (steered positions: {lang['positions']}). "
        f"'{code} share': continuations that py3langid identifies as `{code}`. Perplexity: of "
        "the continuations given their prompts, under the unsteered model (lower is more "
        "predictable; repetitive text also scores low, see the samples). Unsteered: "
        f"{code} share {num(base['language_fraction'])}, perplexity "
        f"{num(base['perplexity'], 1)}. Mean embedding norm: "
        f"{num(lang.get('embedding_norm'), 1)}.",
        "",
        *_vector_lines(lang),
        "",
        f"| method | multiplier | {code} share | per seed | unsteered | perplexity | per seed | "
        "unsteered | empty outputs | languages found |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, report in lang["methods"].items():
        for entry in report["sweep"]:
            found = ", ".join(f"{k or 'none'} {v}" for k, v in list(entry["languages"].items())[:4])
            lines.append(
                f"| {method} | {entry['alpha_multiplier']:g} | {pm(entry['language_fraction'])} "
                f"| {_per_seed(entry['language_fraction'])} | {num(base['language_fraction'])} | "
                f"{pm(entry['perplexity'], 1)} | {_per_seed(entry['perplexity'], 1)} | "
                f"{num(base['perplexity'], 1)} | {sum(entry['n_empty'])} | {found} |"
            )
    if base["samples"]:
        prompt = lang["prompts"][0]
        lines += [
            "",
            f"Continuations of {_cell(prompt)} (first seed of each method):",
            "",
            "| method | multiplier | continuation |",
            "|---|---|---|",
            f"| unsteered | 0 | {_cell(base['samples'][0])} |",
        ]
        for method, report in lang["methods"].items():
            for entry in report["sweep"]:
                if entry["alpha_multiplier"] != 0 and entry["samples"]:
                    lines.append(
                        f"| {method} | {entry['alpha_multiplier']:g} | "
                        f"{_cell(entry['samples'][0])} |"
                    )
    return "\n".join(lines) + "\n"
