"""What each latent of a trained run does, for a person to read (``ssae inspect``).

In memory by nature: latents are ranked over the codes of every pair, so the table is read whole
by :func:`ssae_core.io.load_embeddings` (the table's own size and one slice more, whatever its
row groups).

For every latent of one member of a run (the *reference* member: by default the one whose
latents agree best with the other seeds), :func:`inspect_run` collects:

- **stability**: for every other member, the |cosine| between this latent's decoder row and the
  row it is matched to, rows matched one-to-one by ``linear_sum_assignment`` on |cosine| as MCC
  matches columns (:func:`ssae_core.metrics.match_vectors`); the mean and the minimum over the
  other members. Latents are listed from the most to the least stable;
- **duplicates**: latents of the same member whose decoder rows are near duplicates
  (|cos| > ``duplicate_threshold``, grouped as
  :func:`~ssae_core.evaluation.steering_accuracy.merge_duplicate_latents` groups them);
- **the pairs that move it**: every pair is read both ways (x -> x~ and x~ -> x: pair order
  carries no information, and a concept that every pair changes the same way would otherwise
  show no negative side); the ``top_k`` pairs that raise the code most, separately for the
  training split and for the held-out pairs (every other split), each pair once, in the reading
  whose code is the larger, its texts, code and labelled change all of that reading (a reading
  is *backwards* when it goes x~ -> x of the pair table, also where the table itself reversed
  the row, as the study's sets do). The code of the other reading is listed beside it and never
  as a reading of its own: the encoder is affine up to the codes, so the two codes of a pair sum
  to the same number for every pair (measured per latent: ``two_way_sum``; on the planted set
  of tests/test_inspect.py its spread is below 1e-6 while the codes reach about 5), and the most
  negative readings would be these pairs read the other way, in the same order;
- **labelled concepts**, where the table has a ``shift`` column: the score of the latent against
  every concept on the training pairs, as the steering evaluation scores them
  (:func:`~ssae_core.evaluation.steering_accuracy.concept_scores`: Pearson correlation of the
  codes with the concept's shift, or, for a concept whose label is constant, the cosine with the
  mean shift), the best concept (largest |score|), the concept the one-to-one matching of
  :func:`~ssae_core.evaluation.steering_accuracy.match_concepts` gives it, and the cosine with
  every concept's mean-difference vector. Each latent is oriented so that + points along its
  best concept (``orientation`` -1: the decoder row was flipped);
- **alpha**: the least-squares scale of the training shifts along the latent's unit vector, as
  :func:`~ssae_core.evaluation.steering_accuracy.fit_alpha` fits it: over the single-concept
  training pairs of the best concept where there are some (the alpha the behavioural evaluation
  uses), else over every training pair read both ways, each signed by its code;
- **steering**: greedy continuations of the first ``prompts`` neutral prompts
  (:data:`~ssae_core.evaluation.behaviour.language.NEUTRAL_PROMPTS`) with ``strength x norm``
  times the unit vector added at the layer the embeddings were read at, for every strength
  (``norm``: the typical residual norm there, :func:`~ssae_core.lm.steer.typical_norm`, the unit
  ``ssae steer --strength`` and the behaviour stage use; a multiple of alpha is no unit: at
  block 15 of SmolLM2 4 x alpha broke every continuation),
  with the share of continuations in ``language`` and their perplexity under the unsteered model
  (:func:`~ssae_core.evaluation.behaviour.language.steered_continuations`).

Texts come from a pair table joined on ``pair_id`` (:func:`pair_texts`); without one, pairs are
shown by id. :func:`inspect_files` is the file-level entry (what ``ssae inspect`` runs): an
embedding table is used as it is (texts from ``texts``, checked against the pair table its
shards record), a pair table is embedded first with the run's language model, layer, template
and BOS setting.

Shapes in names: N pairs, D embedding width, M latents, K concepts, S members.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from ssae_core.config import check_multipliers, check_ranges
from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.evaluate import check_same_model
from ssae_core.evaluation.behaviour.language import (
    NEUTRAL_PROMPTS,
    check_language,
    steered_continuations,
)
from ssae_core.evaluation.behaviour.vectors import ConceptVector
from ssae_core.evaluation.inspection_page import INSPECT_COMMAND, write_inspection
from ssae_core.evaluation.mean_difference import EMBEDDINGS, load_or_embed, table_kind
from ssae_core.evaluation.steering_accuracy import (
    MERGE_THRESHOLD,
    concept_scores,
    fit_alpha,
    match_concepts,
    mean_difference_directions,
    merge_duplicate_latents,
)
from ssae_core.io import (
    EmbeddingTable,
    check_output,
    decode_metadata,
    load_embeddings,
    load_pairs,
    pair_ids,
)
from ssae_core.lm import loading
from ssae_core.lm.embed import _pairs_sha256
from ssae_core.lm.layers import Layer, layer_name, parse_layer
from ssae_core.lm.steer import POSITIONS, typical_norm
from ssae_core.lm.tokens import MAX_NEW_TOKENS
from ssae_core.lm.vector_files import recorded_lm
from ssae_core.metrics import cosine_matrix, match_vectors, rounded
from ssae_core.model import ShiftAutoencoder
from ssae_core.record import RECORD_KEY
from ssae_core.runs import load_run
from ssae_core.train import MAX_SEED, torch_threads

ALPHA_BY_CONCEPT = "single-concept training pairs of the best concept"
ALPHA_BY_CODE_SIGN = "every training pair read both ways, signed by its code"
SPREAD_DIGITS = 3
"""Significant digits kept of the spread of a pair's two-way code sum (float noise: tiny)."""


@dataclass
class InspectConfig:
    """What ``ssae inspect`` shows of each latent, and how hard it steers."""

    top_k: int = 5
    """Pairs listed per latent and split (training / held-out), each once, in the reading that
    raises the code; range: [1, inf)."""
    prompts: int = 3
    """Neutral English prompts continued under steering: the first N of NEUTRAL_PROMPTS; range:
    [1, 16]."""
    strengths: tuple[float, ...] = (-1.2, -0.6, 0.6, 1.2)
    """Steering strengths in units of the typical residual norm at the layer (unsteered is
    always shown; 1.2 is ``ssae steer``'s default); range: [-1000, 1000] each."""
    max_new_tokens: int = 16
    """Greedy tokens generated per prompt; range: [1, 4096]."""
    language: str = "fr"
    """ISO 639-1 code whose share of the continuations is reported (py3langid's codes)."""
    positions: str = "all"
    """Positions steered while generating: all, prompt or generated."""
    batch_size: int = 16
    """Prompts per generate call and texts per scoring pass; range: [1, inf)."""
    steered_latents: int | None = None
    """Continue the prompts for the N most stable latents only; null: every latent; range:
    [0, inf)."""
    duplicate_threshold: float = MERGE_THRESHOLD
    """|cos| between two decoder rows of one member above which they count as one direction;
    range: (0, 1]."""
    reference_seed: int | None = None
    """Seed of the member whose latents are shown; null: the most stable member; range:
    [0, 4294967295]."""
    threads: int = 1
    """torch intra-op threads on CPU while steering (0: torch's default); 1 is fastest on a busy
    2-core CPU; range: [0, inf)."""

    def __post_init__(self) -> None:
        check_multipliers(list(self.strengths), "strengths")
        self.strengths = tuple(float(m) for m in self.strengths)
        check_ranges(
            {
                "top_k": (self.top_k, 1, None),
                "prompts": (self.prompts, 1, len(NEUTRAL_PROMPTS)),
                "max_new_tokens": (self.max_new_tokens, 1, MAX_NEW_TOKENS),
                "batch_size": (self.batch_size, 1, None),
                "steered_latents": (self.steered_latents, 0, None),
                "threads": (self.threads, 0, None),
                "reference_seed": (self.reference_seed, 0, MAX_SEED),
            }
        )
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise InputError(f"duplicate_threshold {self.duplicate_threshold}: must be in (0, 1]")
        if self.positions not in POSITIONS:
            raise InputError(f"positions {self.positions!r}: use one of {', '.join(POSITIONS)}")
        check_language(self.language, "language")


# --------------------------------------------------------------------------- texts


def pair_texts(pairs: pa.Table) -> dict[int, tuple[str, str]]:
    """``{pair_id: (x, x_tilde)}`` of a pair table."""
    columns = (pairs.column(name).to_pylist() for name in ("pair_id", "x", "x_tilde"))
    return {int(i): (x, x_tilde) for i, x, x_tilde in zip(*columns, strict=True)}


def check_texts(table: EmbeddingTable, texts: Mapping[int, tuple[str, str]], where: str) -> None:
    """Every pair of ``table`` must have its texts in ``texts`` (``where`` names the table)."""
    missing = np.array([int(i) not in texts for i in table.pair_id])
    if missing.any():
        raise InputError(
            f"{where}: {int(missing.sum())} pair(s) of the embeddings have no texts there "
            f"({pair_ids(table.pair_id, missing)}); give the pair table the embeddings came from"
        )


# --------------------------------------------------------------------------- stability


class Stability(NamedTuple):
    """Cross-seed stability of the reference member's latents."""

    reference: int
    """Index of the reference member."""
    mean_M: np.ndarray
    min_M: np.ndarray
    """Mean and minimum over the other members of the matched |cosine| (NaN for one member)."""
    matches: list[list[tuple[int, int, float]]]
    """Per latent: (other member index, its matched latent, |cosine|)."""


def cross_seed_stability(vectors: Sequence[np.ndarray], reference: int | None = None) -> Stability:
    """Stability of every latent of one member against the others (module docstring).

    ``vectors``: each member's decoder rows [M, D]. ``reference``: the member whose latents are
    scored; None picks the member with the highest mean stability over its latents."""
    num = len(vectors)
    widths = {np.asarray(v).shape for v in vectors}
    if len(widths) != 1:
        raise InputError(f"members have decoders of different shapes {sorted(widths)}")
    latents = np.asarray(vectors[0]).shape[0]
    abs_cos = np.full((num, num, latents), np.nan)
    partner = np.full((num, num, latents), -1, np.int64)
    for a in range(num):
        for b in range(num):
            if a != b:
                matching = match_vectors(vectors[a], vectors[b])
                abs_cos[a, b, matching.rows] = np.abs(matching.corr)
                partner[a, b, matching.rows] = matching.cols
    if reference is None:
        reference = 0 if num == 1 else int(np.argmax(np.nanmean(abs_cos, axis=(1, 2))))
    others = [b for b in range(num) if b != reference]
    values = abs_cos[reference, others]
    mean_M = values.mean(axis=0) if others else np.full(latents, np.nan)
    min_M = values.min(axis=0) if others else np.full(latents, np.nan)
    matches = [
        [(b, int(partner[reference, b, k]), float(abs_cos[reference, b, k])) for b in others]
        for k in range(latents)
    ]
    return Stability(reference, mean_M, min_M, matches)


def duplicate_groups(vectors_MD: np.ndarray, threshold: float) -> list[dict]:
    """Groups of latents of one member whose decoder rows look like one direction, with the
    |cosine| of every two of them."""
    groups = merge_duplicate_latents(vectors_MD, threshold)
    abs_cos = np.abs(cosine_matrix(vectors_MD, vectors_MD))
    out = []
    for members in groups.members:
        if len(members) > 1:
            pairs = [
                {"latents": [a, b], "abs_cosine": rounded(abs_cos[a, b])}
                for i, a in enumerate(members)
                for b in members[i + 1 :]
            ]
            out.append({"latents": list(members), "pairs": pairs})
    return out


def largest_other_cosine(vectors_MD: np.ndarray) -> float | None:
    """The largest |cosine| between two different decoder rows (None with one latent)."""
    abs_cos = np.abs(cosine_matrix(vectors_MD, vectors_MD))
    np.fill_diagonal(abs_cos, -1.0)
    return rounded(float(abs_cos.max())) if len(abs_cos) > 1 else None


# --------------------------------------------------------------------------- pairs and codes


class BothWays(NamedTuple):
    """Every pair of a table read forwards (rows 0..N-1) and backwards (rows N..2N-1)."""

    row_R: np.ndarray
    """The table row of each reading."""
    reversed_R: np.ndarray
    """Whether the reading is the table row read backwards (z_tilde -> z)."""
    backwards_R: np.ndarray
    """Whether the reading is the pair read backwards as its texts give it (x_tilde -> x): the
    table row read backwards, or read forwards where the table itself reversed the row
    (:meth:`~ssae_core.io.EmbeddingTable.reversed_rows`, as the study's sets do)."""
    codes_RM: np.ndarray
    delta_RD: np.ndarray


def read_both_ways(model: ShiftAutoencoder, table: EmbeddingTable) -> BothWays:
    """Codes of every pair of ``table`` read both ways."""
    delta = table.delta
    both = np.concatenate([delta, -delta])
    rows = np.tile(np.arange(len(table)), 2)
    flags = np.repeat([False, True], len(table))
    backwards = flags ^ table.reversed_rows()[rows]
    codes = model.encode(both).astype(np.float64)
    return BothWays(rows, flags, backwards, codes, both.astype(np.float64))


def labelled_changes(table: EmbeddingTable, row: int, backwards: bool) -> dict[str, float] | None:
    """The labelled concept shift of one reading of a pair (``backwards``: the table row read
    backwards), ``{concept: value}`` of the concepts it changes (None: the table has no
    labels)."""
    if table.shift is None:
        return None
    names = table.concepts or [f"concept-{k}" for k in range(table.shift.shape[1])]
    values = -table.shift[row] if backwards else table.shift[row]
    return {name: float(v) for name, v in zip(names, values, strict=True) if v != 0}


def two_way_sum(code_R: np.ndarray) -> dict:
    """The code of a pair read forwards plus read backwards: its mean over the pairs and its
    spread (std). The encoder is affine up to the codes (normalisation, linear map, BatchNorm
    with running statistics), so the sum is one number per latent (2 x its offset): the spread
    is float noise, and a pair's most negative reading mirrors its largest."""
    forwards, backwards = np.split(code_R, 2)
    total = forwards + backwards
    if not len(total):
        return {"mean": None, "spread": None}
    spread = float(total.std())
    return {"mean": rounded(float(total.mean())), "spread": float(f"{spread:.{SPREAD_DIGITS}g}")}


def _pair_entry(
    r: int,
    code_R: np.ndarray,
    readings: BothWays,
    table: EmbeddingTable,
    texts: Mapping[int, tuple[str, str]] | None,
) -> dict:
    """One reading ``r`` as the page lists it: its texts, code and labelled change all of that
    reading, and the code of the same pair read the other way."""
    row, half = int(readings.row_R[r]), len(table)
    pair_id = int(table.pair_id[row])
    backwards = bool(readings.backwards_R[r])
    shown: tuple[str | None, str | None] = (None, None)
    if texts is not None:
        x, x_tilde = texts[pair_id]
        shown = (x_tilde, x) if backwards else (x, x_tilde)
    return {
        "pair_id": pair_id,
        "split": str(table.split[row]),
        "reversed": backwards,
        "code": rounded(float(code_R[r])),
        "other_way": rounded(float(code_R[(r + half) % (2 * half)])),
        "from": shown[0],
        "to": shown[1],
        "changes": labelled_changes(table, row, bool(readings.reversed_R[r])),
    }


def top_pairs(
    code_R: np.ndarray,
    keep_N: np.ndarray,
    readings: BothWays,
    table: EmbeddingTable,
    texts: Mapping[int, tuple[str, str]] | None,
    top_k: int,
) -> list[dict]:
    """The ``top_k`` pairs among the rows ``keep_N`` that raise the code most, each in the
    reading whose code is the larger and positive, each pair (and each pair of texts) once: its
    other reading is its mirror (:func:`two_way_sum`), never listed."""
    half = len(table)
    larger_N = np.where(code_R[:half] >= code_R[half:], 0, half) + np.arange(half)
    chosen: list[dict] = []
    seen: set[tuple[int, object]] = set()
    for row in np.argsort(-code_R[larger_N], kind="stable"):
        r = int(larger_N[row])
        if len(chosen) == top_k or code_R[r] <= 0:
            break
        if not keep_N[row]:
            continue
        entry = _pair_entry(r, code_R, readings, table, texts)
        keys = {(0, entry["pair_id"]), (1, (entry["from"], entry["to"]))}
        if entry["from"] is None:
            keys.discard((1, (None, None)))
        if keys & seen:
            continue
        seen |= keys
        chosen.append(entry)
    return chosen


def pair_lists(
    code_R: np.ndarray,
    readings: BothWays,
    table: EmbeddingTable,
    is_train_N: np.ndarray,
    texts: Mapping[int, tuple[str, str]] | None,
    top_k: int,
) -> dict:
    """``{"train" | "held_out": [...]}``: the pairs that raise one latent most
    (:func:`top_pairs`)."""
    return {
        part: top_pairs(code_R, keep_N, readings, table, texts, top_k)
        for part, keep_N in (("train", is_train_N), ("held_out", ~is_train_N))
    }


# --------------------------------------------------------------------------- concepts and alpha


class ConceptView(NamedTuple):
    """Every latent against every labelled concept, on the training pairs."""

    names: list[str]
    score_KM: np.ndarray
    by: list[str]
    md_cosine_KM: np.ndarray
    """Cosine of each latent's decoder row with each concept's MD vector (NaN: no MD vector)."""
    changes_K: np.ndarray
    matched_M: list[int | None]
    """The concept the one-to-one matching gives each latent (None: none)."""


def concept_view(
    model: ShiftAutoencoder, train: EmbeddingTable, threshold: float
) -> ConceptView | None:
    """Scores of the latents against the concepts (None when the table has no labels)."""
    if train.shift is None or not len(train) or not np.any(train.shift != 0):
        return None
    shift = np.asarray(train.shift, np.float64)
    names = list(train.concepts or [f"concept-{k}" for k in range(shift.shape[1])])
    delta, vectors = train.delta, model.steering_vectors
    codes = model.encode(delta)
    score_KM, by = concept_scores(codes, shift, vectors, delta_ND=delta)
    md = mean_difference_directions(train).vectors_KD
    with np.errstate(invalid="ignore"):
        md_cosine_KM = np.where(
            np.isfinite(md).all(axis=1)[:, None], np.nan_to_num(md) @ vectors.T, np.nan
        )
    matching = match_concepts(codes, shift, vectors, delta_ND=delta, merge_threshold=threshold)
    matched_M: list[int | None] = [None] * vectors.shape[0]
    for k, members in enumerate(matching.members):
        for latent in members:
            matched_M[latent] = k
    return ConceptView(names, score_KM, by, md_cosine_KM, (shift != 0).any(axis=0), matched_M)


def best_concept(view: ConceptView | None, latent: int) -> int | None:
    """The concept with the largest |score| for ``latent`` among those that change in training."""
    if view is None or not view.changes_K.any():
        return None
    scores = np.where(view.changes_K, np.abs(view.score_KM[:, latent]), -np.inf)
    return int(np.argmax(scores))


def latent_alpha(
    unit_D: np.ndarray,
    code_R: np.ndarray,
    train_R: np.ndarray,
    readings: BothWays,
    train: EmbeddingTable,
    concept: int | None,
) -> tuple[float, str]:
    """The fitted alpha of one (oriented) latent and how it was fitted (module docstring)."""
    if concept is not None:
        vectors_KD = np.tile(unit_D, (train.shift.shape[1], 1))
        alpha = float(fit_alpha(vectors_KD, train.delta, train.shift)[0][concept])
        if math.isfinite(alpha):
            return alpha, ALPHA_BY_CONCEPT
    signs = np.sign(code_R[train_R])[:, None]
    alpha = float(fit_alpha(unit_D[None], readings.delta_RD[train_R], signs)[0][0])
    return (alpha if math.isfinite(alpha) else 0.0), ALPHA_BY_CODE_SIGN


def _concept_entries(view: ConceptView, latent: int, sign: float) -> list[dict]:
    return [
        {
            "concept": name,
            "score": rounded(sign * float(view.score_KM[k, latent])),
            "by": view.by[k],
            "md_cosine": rounded(sign * float(view.md_cosine_KM[k, latent])),
            "changes_in_training": bool(view.changes_K[k]),
        }
        for k, name in enumerate(view.names)
    ]


class _Latent(NamedTuple):
    """One oriented latent of the reference member: its entry and what steering needs."""

    entry: dict
    unit_D: np.ndarray
    alpha: float


def describe_latent(
    latent: int,
    ref: ShiftAutoencoder,
    readings: BothWays,
    table: EmbeddingTable,
    is_train_N: np.ndarray,
    view: ConceptView | None,
    stability: Stability,
    seeds: list,
    texts: Mapping[int, tuple[str, str]] | None,
    top_k: int,
) -> _Latent:
    """Everything the page shows of one latent but its continuations."""
    concept = best_concept(view, latent)
    score = None if concept is None else float(view.score_KM[concept, latent])
    sign = -1.0 if score is not None and score < 0 else 1.0
    unit_D = sign * ref.steering_vectors[latent].astype(np.float64)
    code_R = sign * readings.codes_RM[:, latent]
    train_R = is_train_N[readings.row_R]
    alpha, alpha_by = latent_alpha(
        unit_D, code_R, train_R, readings, table.select(is_train_N), concept
    )
    matches = stability.matches[latent]
    entry = {
        "latent": latent,
        "orientation": int(sign),
        "stability": {
            "mean": rounded(float(stability.mean_M[latent])),
            "min": rounded(float(stability.min_M[latent])),
            "matches": [
                {"seed": seeds[b], "latent": other, "abs_cosine": rounded(c)}
                for b, other, c in matches
            ],
        },
        "alpha": rounded(alpha),
        "alpha_by": alpha_by,
        "code_std_train": rounded(float(np.std(code_R[train_R]))) if train_R.any() else None,
        "best_concept": None,
        "matched_concept": None,
        "concepts": [],
        "two_way_sum": two_way_sum(code_R),
        "top_pairs": pair_lists(code_R, readings, table, is_train_N, texts, top_k),
    }
    if view is not None:
        entry["concepts"] = _concept_entries(view, latent, sign)
        if concept is not None:
            entry["best_concept"] = {
                "concept": view.names[concept],
                "score": rounded(abs(score)),
                "by": view.by[concept],
            }
        matched = view.matched_M[latent]
        entry["matched_concept"] = None if matched is None else view.names[matched]
    return _Latent(entry, unit_D, alpha)


# --------------------------------------------------------------------------- steering


def steering_layer(members: Sequence[ShiftAutoencoder], table: EmbeddingTable) -> str | None:
    """The name of the layer the run's embeddings were read at (``final`` or a block index; None:
    not recorded, e.g. synthetic data); the table and every member must agree."""
    recorded = {
        str((m.config.get("provenance") or {}).get("layer"))
        for m in members
        if (m.config.get("provenance") or {}).get("layer") is not None
    }
    if "layer" in table.metadata:
        recorded.add(table.metadata["layer"])
    names = sorted({layer_name(parse_layer(name)) for name in recorded})
    if len(names) > 1:
        raise InputError(
            f"the run and the embeddings record different layers ({', '.join(names)}); "
            "inspect a run with embeddings of the layer it was trained on"
        )
    return names[0] if names else None


def steer_latents(
    lm: tuple[Any, Any],
    latents: Sequence[_Latent],
    layer: Layer,
    seed: object,
    config: InspectConfig,
    progress: bool,
) -> tuple[dict, list[list[dict]]]:
    """The unsteered continuations and, per latent, one entry per strength (0 included)."""
    model, tokenizer = lm
    prompts = list(NEUTRAL_PROMPTS[: config.prompts])
    strengths = sorted({*config.strengths, 0.0})
    steered = [m for m in strengths if m != 0]
    vectors = [
        ConceptVector("latent", seed, layer, item.unit_D, item.alpha, item.entry["latent"], None)
        for item in latents
    ]
    with torch_threads(config.threads):
        norm = typical_norm(model, tokenizer, layer, prompts)
        runs = steered_continuations(
            model,
            tokenizer,
            prompts,
            [None, *(v.scaled(m * norm, strength=repr(m)) for v in vectors for m in steered)],
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            positions=config.positions,
            progress=progress,
        )

    def condition(index: int, strength: float) -> dict:
        return {
            "strength": strength,
            "scale": rounded(strength * norm),
            "continuations": runs.texts[index],
            "languages": runs.languages[index],
            "language_share": rounded(runs.share(index, config.language)),
            "perplexity": rounded(runs.perplexity(index)),
            "n_empty": runs.n_empty(index),
        }

    unsteered = {"prompts": prompts, "norm": rounded(norm), **condition(0, 0.0)}
    per_latent = []
    for i in range(len(latents)):
        index = {m: 1 + i * len(steered) + j for j, m in enumerate(steered)} | {0.0: 0}
        per_latent.append([condition(index[m], m) for m in strengths])
    return unsteered, per_latent


# --------------------------------------------------------------------------- the inspection


def _training_rows(members: Sequence[ShiftAutoencoder], table: EmbeddingTable) -> np.ndarray:
    """Which rows of ``table`` are training pairs: the split the run was trained on."""
    split = str((members[0].config.get("provenance") or {}).get("split", "train"))
    if split == "all":
        return np.ones(len(table), bool)
    mask = table.split == split
    if not mask.any():
        have = ", ".join(sorted({str(s) for s in table.split}))
        raise InputError(
            f"the embeddings have no rows of the run's training split {split!r} (splits: {have}); "
            "inspect a run with the embeddings it was trained on"
        )
    return mask


def member_statuses(members: Sequence[ShiftAutoencoder]) -> list[str | None]:
    """Each member's status (:class:`~ssae_core.record.MemberRecord`); None where a member
    carries no training record (written by an older version)."""
    return [
        m.record.status if isinstance(m.config.get(RECORD_KEY), dict) else None for m in members
    ]


def _run_summary(members: Sequence[ShiftAutoencoder], reference: int) -> dict:
    config = members[reference].config
    provenance = config.get("provenance") or {}
    return {
        "statuses": member_statuses(members),
        "method": config.get("method"),
        "seeds": [m.config.get("seed") for m in members],
        "sparsity": config.get("sparsity"),
        "latent_dim": config.get("latent_dim"),
        "dim": config.get("dim"),
        "reference_seed": config.get("seed"),
        "model": provenance.get("model"),
        "embeddings": provenance.get("embeddings"),
    }


def _reference_index(members: Sequence[ShiftAutoencoder], seed: int | None) -> int | None:
    if seed is None:
        return None
    seeds = [m.config.get("seed") for m in members]
    if seed not in seeds:
        raise InputError(f"reference seed {seed}: the run has seeds {seeds}")
    return seeds.index(seed)


def _checked_layer(
    members: Sequence[ShiftAutoencoder],
    table: EmbeddingTable,
    texts: Mapping[int, tuple[str, str]] | None,
    steer: bool,
) -> str | None:
    """Refuse inputs that do not belong together; the layer to steer (:func:`steering_layer`)."""
    if not members:
        raise InputError("the run has no members; train it first")
    for m in members:
        if int(m.config.get("dim", table.dim)) != table.dim:
            raise InputError(
                f"seed {m.config.get('seed')}: model width {m.config['dim']} != embedding width "
                f"{table.dim}; inspect a run with the embeddings it was trained on"
            )
    if texts is not None:
        check_texts(table, texts, "texts")
    layer = steering_layer(members, table)
    if steer and layer is None:
        raise InputError(
            "the embeddings record no LM layer (synthetic data?), so there is nothing to steer; "
            "inspect without a language model"
        )
    return layer


def inspect_run(
    members: Sequence[ShiftAutoencoder],
    table: EmbeddingTable,
    *,
    texts: Mapping[int, tuple[str, str]] | None = None,
    lm: tuple[Any, Any] | None = None,
    config: InspectConfig | None = None,
    paths: Mapping[str, str] | None = None,
    progress: bool = True,
) -> dict:
    """What every latent of the run ``members`` does (see the module docstring), JSON-ready.

    ``table``: the embeddings the run was trained on (training split as recorded) with any
    held-out rows; ``texts``: ``{pair_id: (x, x_tilde)}`` (:func:`pair_texts`); ``lm``: the
    language model and tokenizer to steer (None: no continuations); ``paths``: where the run,
    the embeddings and the texts came from (``run``, ``embeddings``, ``texts``), for the page.
    """
    config = config or InspectConfig()
    layer = _checked_layer(members, table, texts, lm is not None)
    is_train_N = _training_rows(members, table)
    stability = cross_seed_stability(
        [m.steering_vectors for m in members], _reference_index(members, config.reference_seed)
    )
    ref = members[stability.reference]
    readings = read_both_ways(ref, table)
    view = concept_view(ref, table.select(is_train_N), config.duplicate_threshold)
    seeds = [m.config.get("seed") for m in members]
    latents = [
        describe_latent(
            k, ref, readings, table, is_train_N, view, stability, seeds, texts, config.top_k
        )
        for k in range(ref.steering_vectors.shape[0])
    ]
    order = sorted(
        range(len(latents)),
        key=lambda k: (-np.nan_to_num(stability.mean_M[k], nan=-1.0), k),
    )
    unsteered = None
    if lm is not None:
        chosen = order[: config.steered_latents] if config.steered_latents is not None else order
        unsteered, sweeps = steer_latents(
            lm,
            [latents[k] for k in chosen],
            parse_layer(layer),
            ref.config.get("seed"),
            config,
            progress,
        )
        for k, sweep in zip(chosen, sweeps, strict=True):
            latents[k].entry["steering"] = sweep
    vectors_MD = ref.steering_vectors
    return {
        "paths": dict(paths or {}),
        "run": _run_summary(members, stability.reference),
        "data": {
            "layer": layer,
            "model": table.metadata.get("model"),
            "concepts": list(table.concepts or []),
            "n_train_pairs": int(is_train_N.sum()),
            "n_held_out_pairs": int((~is_train_N).sum()),
            "texts": texts is not None,
        },
        "settings": {**asdict(config), "strengths": list(config.strengths)},
        "duplicates": duplicate_groups(vectors_MD, config.duplicate_threshold),
        "largest_other_cosine": largest_other_cosine(vectors_MD),
        "unsteered": unsteered,
        "latents": [latents[k].entry for k in order],
    }


# --------------------------------------------------------------------------- files


def run_members(
    models: Sequence[ShiftAutoencoder], sparsity: float | None, where: object
) -> list[ShiftAutoencoder]:
    """The members of one cell of a run: those trained with budget ``sparsity``; a run that
    stacks several budgets needs one."""
    budgets = sorted({m.config.get("sparsity") for m in models}, key=lambda b: (b is None, b))
    if sparsity is None:
        if len(budgets) > 1:
            shown = ", ".join(f"{b:g}" for b in budgets if b is not None)
            raise InputError(
                f"{where}: stacks members of several L1 budgets ({shown}); pick one with --sparsity"
            )
        return list(models)
    chosen = [m for m in models if m.config.get("sparsity") == sparsity]
    if not chosen:
        shown = ", ".join("none" if b is None else f"{b:g}" for b in budgets)
        raise InputError(f"{where}: no member with L1 budget {sparsity:g} (budgets: {shown})")
    return chosen


def load_inspected_pairs(
    path: str | Path,
    members: Sequence[ShiftAutoencoder],
    *,
    texts: str | Path | None = None,
    lm: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> tuple[EmbeddingTable, dict[int, tuple[str, str]] | None]:
    """The embeddings to inspect with their texts (module docstring): an embedding table as it
    is, its texts from the pair table ``texts`` (checked against the pair table its shards
    record); a pair table embedded as the run's training embeddings were (``lm`` overrides the
    model the run records)."""
    if table_kind(path) == EMBEDDINGS:
        table = load_embeddings(path)
        if texts is None:
            return table, None
        pairs = load_pairs(texts)
        recorded = table.metadata.get("pairs_sha256")
        if recorded and recorded != _pairs_sha256(pairs, decode_metadata(pairs.schema)[0]):
            raise InputError(
                f"--texts {texts}: is not the pair table {path} was embedded from (its content "
                "differs); give that pair table"
            )
        return table, pair_texts(pairs)
    if texts is not None:
        raise InputError(f"--texts {texts}: only for an embedding table; {path} holds the texts")
    provenance = members[0].config.get("provenance") or {}
    embedded = load_or_embed(
        path,
        lm=lm or recorded_lm(str(provenance.get("model", ""))),
        revision=provenance.get("revision") or None,
        layer=provenance.get("layer"),
        split="all",
        template=provenance.get("template") or None,
        bos=provenance.get("bos") or "false",
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    return embedded.table, pair_texts(load_pairs(path))


def inspect_files(
    run_dir: str | Path,
    pairs: str | Path,
    out: str | Path,
    *,
    texts: str | Path | None = None,
    lm: str | None = None,
    steer: bool = True,
    sparsity: float | None = None,
    config: InspectConfig | None = None,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> dict:
    """``ssae inspect``: inspect the run folder ``run_dir`` on ``pairs`` (an embedding table, or
    a pair table to embed) and write the page into the folder ``out``; returns the result.

    ``lm``: the language model to steer (default: the one the run records; none recorded: no
    continuations); ``steer=False`` runs none. ``sparsity``: the members of one budget of a
    stacked grid run.
    """
    config = config or InspectConfig()
    check_output(
        out, INSPECT_COMMAND, kind="folder", inputs=[p for p in (run_dir, pairs, texts) if p]
    )
    members = run_members(load_run(run_dir), sparsity, run_dir)
    table, joined = load_inspected_pairs(
        pairs,
        members,
        texts=texts,
        lm=lm,
        batch_size=config.batch_size,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    model = None
    name = lm or recorded_lm(str((members[0].config.get("provenance") or {}).get("model", "")))
    if steer and name is not None:
        source = loading.resolve_model(name, verbose=progress)
        check_same_model(table, source.name, str(pairs))
        model = (
            loading.load_model(source, device=device, dtype=dtype),
            loading.load_tokenizer(source),
        )
    paths = {"run": str(run_dir), "embeddings": str(pairs), "texts": str(texts or "")}
    result = inspect_run(
        members, table, texts=joined, lm=model, config=config, paths=paths, progress=progress
    )
    write_inspection(result, out, inputs=[p for p in (run_dir, pairs, texts) if p])
    return result
