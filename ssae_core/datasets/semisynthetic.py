"""Semi-synthetic pair sets: lang, gender, binary, corr and cat.

Every set is built from a word list in ``wordlists/`` (a TSV file whose ``#`` lines document its
conventions). Conventions shared by all sets:

* Texts are bare nouns or noun phrases without article, so that a word token is any run of
  letters (case-folded) and "shared vocabulary" needs no stop-word list. The only function words
  are inside French compound nouns of ``lang`` ("machine à laver"); binary and corr have none.
* Splits are by entity, never by pair: a word (``lang``, ``gender``), a profession (``binary``,
  ``corr``) or a phrase (``cat``). All pairs of one entity share its split, so no test text occurs
  in a training pair. Splits are seeded and deterministic.
* The word lists of an OOD source (``binary``, ``corr``) and its targets (``gender``, ``lang``)
  share no word token at all, so :func:`ood_vocabulary_overlap` is empty for every seed and split.
* ``shift`` is ``attributes(x_tilde) - attributes(x)``; a pair is single-concept when exactly one
  entry is non-zero (derivable, so not stored).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ssae_core.errors import InputError
from ssae_core.io import PairLabels, pair_table

WORDLIST_DIR = Path(__file__).resolve().parent / "wordlists"
DATASETS = ("lang", "gender", "binary", "corr", "cat")
SPLITS = ("train", "test")
CAT_ATTRIBUTES = ("shape", "colour", "object")

_WORD = re.compile(r"[^\W\d_]+")

DEFAULT_CONTEXTS = (
    *("{}", "- {}", "* {}", "> {}", "# {}", "1. {}"),
    *("... {}", ": {}", "| {}", "2) {}", "~ {}", "= {}"),
)
"""Wrappers that multiply the pairs of the small word-list sets (``pairs.contexts``): the word
stays the last token read, after a different prefix, and no letter is added."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CatConfig:
    """Sampling of the ``cat`` pairs (params.yaml ``pairs.cat``)."""

    num_pairs: int = 20_000
    """Total number of pairs, train and test together; the test share is ``test_fraction``."""
    max_changes: int = 3
    """Pairs change 1 to ``max_changes`` attributes (at most 3), equally many pairs per count."""

    def __post_init__(self) -> None:
        if self.num_pairs < 2:
            raise InputError(f"pairs.cat.num_pairs must be at least 2, got {self.num_pairs}")
        if not 1 <= self.max_changes <= len(CAT_ATTRIBUTES):
            raise InputError(
                f"pairs.cat.max_changes must be between 1 and {len(CAT_ATTRIBUTES)}, "
                f"got {self.max_changes}"
            )


@dataclass(frozen=True)
class PairsConfig:
    """The ``pairs`` section of params.yaml."""

    seed: int = 0
    """Seed of the entity split (and of the ``cat`` pair sampling); same seed, same bytes."""
    test_fraction: float = 0.25
    """Share of entities (words, professions, phrases) held out for the test split."""
    cat: CatConfig = field(default_factory=CatConfig)
    """Settings of the ``cat`` set."""
    min_train_pairs: int = 1000
    """Word-list sets with fewer training pairs than this repeat every pair in the next of
    ``contexts`` until they have this many (0: bare words only); range: [0, 100000]."""
    contexts: tuple[str, ...] = DEFAULT_CONTEXTS
    """Wrappers of the words, ``{}`` the word: the same wrapper on x and x~ of a pair, used in
    this order; punctuation and digits only (no letters: no word is shared between sets)."""
    custom: dict = field(default_factory=dict)
    """Pair sets of your own, ``{name: {path, x, x_tilde, ...}}``: see
    :class:`ssae_core.datasets.custom.CustomPairsConfig` (read by the ``custom_pairs`` stage)."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise InputError(f"pairs.seed must be a non-negative integer, got {self.seed}")
        if self.min_train_pairs < 0:
            raise InputError(
                f"pairs.min_train_pairs must be a non-negative integer, got {self.min_train_pairs}"
            )
        object.__setattr__(self, "contexts", tuple(self.contexts))
        for context in self.contexts:
            if context.count("{}") != 1 or _WORD.search(context.replace("{}", "")):
                raise InputError(
                    f"pairs.contexts: {context!r} must hold '{{}}' once and no letters "
                    "(punctuation, digits and spaces only)"
                )
        if not self.contexts or self.contexts[0] != "{}":
            raise InputError("pairs.contexts must start with '{}' (the bare word)")
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(
                f"pairs.test_fraction must be strictly between 0 and 1, got {self.test_fraction}"
            )


# --------------------------------------------------------------------------- word lists


@dataclass(frozen=True)
class WordList:
    """One TSV word list: its header, its rows and the SHA-256 of the file."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    sha256: str


def load_wordlist(name: str, directory: Path = WORDLIST_DIR) -> WordList:
    """Read and check ``directory/NAME.tsv``.

    ``#`` lines are comments, the first other line is the header. Every row must have one non-empty
    cell per column, and no text may occur twice in the file (case-insensitively), which rules out
    identical ``x``/``x_tilde`` and entities that share a text.
    """
    path = directory / f"{name}.tsv"
    if not path.is_file():
        raise InputError(f"{path}: word list not found; restore it from git")
    raw = path.read_bytes()
    lines = [
        (number, line)
        for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1)
        if line.strip() and not line.startswith("#")
    ]
    if not lines:
        raise InputError(f"{path}: no header line; restore the file from git")
    columns = tuple(cell.strip() for cell in lines[0][1].split("\t"))
    rows: list[tuple[str, ...]] = []
    seen: dict[str, int] = {}
    for number, line in lines[1:]:
        cells = tuple(cell.strip() for cell in line.split("\t"))
        if len(cells) != len(columns) or not all(cells):
            raise InputError(
                f"{path}:{number}: expected {len(columns)} non-empty tab-separated forms "
                f"({', '.join(columns)}); fix the line"
            )
        for cell in cells:
            key = cell.casefold()
            if key in seen:
                raise InputError(
                    f"{path}:{number}: '{cell}' already occurs on line {seen[key]}; "
                    "every text must be unique"
                )
            seen[key] = number
        rows.append(cells)
    return WordList(name, columns, tuple(rows), hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------- pair sets


@dataclass
class PairSet:
    """Pairs of one set before conversion to a table; ``entity`` says which entity made each row."""

    name: str
    concepts: list[str]
    split_by: str
    x: list[str] = field(default_factory=list)
    x_tilde: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    entity: list[str] = field(default_factory=list)
    shifts: list[np.ndarray] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)
    state_names: list[str] = field(default_factory=list)
    """The labelled variables of every text (``language``, ``gender``...)."""
    concept_states: dict[str, list[str]] = field(default_factory=dict)
    """concept -> [variable, value at -1, value at +1] (see :class:`ssae_core.io.PairLabels`)."""
    states: list[tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)

    def add(
        self,
        x: str,
        x_tilde: str,
        split: str,
        entity: str,
        shift: np.ndarray,
        states: tuple[tuple[str, ...], tuple[str, ...]],
    ) -> None:
        """One pair; ``states``: the values of every variable of ``state_names`` in x and x~."""
        self.x.append(x)
        self.x_tilde.append(x_tilde)
        self.split.append(split)
        self.entity.append(entity)
        self.shifts.append(np.asarray(shift, dtype=np.float32))
        self.states.append(states)

    @property
    def shift(self) -> np.ndarray:
        """The concept shifts as a float32 [N, n] array."""
        if not self.shifts:
            return np.zeros((0, len(self.concepts)), dtype=np.float32)
        return np.stack(self.shifts).astype(np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def entities(self, split: str) -> set[str]:
        """The entities whose pairs are in ``split``."""
        return {e for e, s in zip(self.entity, self.split, strict=True) if s == split}

    @property
    def labels(self) -> PairLabels:
        width = len(self.state_names)
        return PairLabels(
            group=np.asarray(self.entity, dtype=object),
            x_states=np.array([x for x, _ in self.states], dtype=object).reshape(-1, width),
            x_tilde_states=np.array([t for _, t in self.states], dtype=object).reshape(-1, width),
            state_names=list(self.state_names),
            concept_states=dict(self.concept_states),
        )

    def to_table(self) -> pa.Table:
        """The pair table (format: ssae_core.io; concept names and provenance in the metadata)."""
        return pair_table(
            self.x,
            self.x_tilde,
            self.split,
            self.shift,
            self.concepts,
            self.metadata,
            labels=self.labels,
        )


def _rng(seed: int, name: str) -> np.random.Generator:
    """One independent, stable stream per (seed, set)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def split_entities(count: int, rng: np.random.Generator, test_fraction: float) -> list[str]:
    """Assign ``count`` entities to train/test: ``round(count * test_fraction)`` (at least one, at
    most ``count - 1``) chosen at random are ``test``."""
    if count < 2:
        raise InputError(f"cannot split {count} entit(y/ies) into train and test; add entries")
    num_test = min(max(round(count * test_fraction), 1), count - 1)
    test = set(rng.permutation(count)[:num_test].tolist())
    return ["test" if i in test else "train" for i in range(count)]


WordPair = tuple[str, str, tuple[float, ...], tuple[tuple[str, ...], tuple[str, ...]]]
"""(x, x~, shift, (states of x, states of x~)) of one pair made from a word-list row."""


def _word_pair_set(
    name: str,
    concepts: list[str],
    split_by: str,
    config: PairsConfig,
    pairs_of: Callable[[tuple[str, ...]], list[WordPair]],
    concept_states: dict[str, list[str]],
) -> PairSet:
    """A set built from a word list: one entity per row, ``pairs_of(row)`` gives its pairs."""
    words = load_wordlist(name)
    splits = split_entities(len(words.rows), _rng(config.seed, name), config.test_fraction)
    pairs = PairSet(
        name,
        concepts,
        split_by,
        metadata=_metadata(name, split_by, config, words),
        state_names=list(dict.fromkeys(v[0] for v in concept_states.values())),
        concept_states=concept_states,
    )
    contexts = contexts_needed(
        sum(len(pairs_of(row)) for row, s in zip(words.rows, splits, strict=True) if s == "train"),
        config,
    )
    pairs.metadata["contexts"] = list(contexts)
    for row, split in zip(words.rows, splits, strict=True):
        for context in contexts:
            for x, x_tilde, shift, states in pairs_of(row):
                x, x_tilde = context.format(x), context.format(x_tilde)
                pairs.add(x, x_tilde, split, row[0], np.asarray(shift), states)
    return pairs


def contexts_needed(train_pairs: int, config: PairsConfig) -> tuple[str, ...]:
    """The first of ``config.contexts`` that give at least ``config.min_train_pairs`` training
    pairs when every pair is repeated in each (all of them when even that is short)."""
    if train_pairs == 0:
        return config.contexts[:1]
    count = -(-config.min_train_pairs // train_pairs)
    return config.contexts[: max(1, min(count, len(config.contexts)))]


def _metadata(name: str, split_by: str, config: PairsConfig, words: WordList) -> dict[str, object]:
    return {
        "dataset": name,
        "split_by": split_by,
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        "wordlist": f"ssae_core/datasets/wordlists/{name}.tsv",
        "wordlist_sha256": words.sha256,
    }


LANGUAGE_STATES = ["language", "en", "fr"]
GENDER_STATES = ["gender", "masc", "fem"]


def lang_pairs(config: PairsConfig) -> PairSet:
    """English -> French household objects; concept ``language`` (English 0, French 1)."""
    return _word_pair_set(
        "lang",
        ["language"],
        "word",
        config,
        lambda row: [(row[0], row[1], (1.0,), (("en",), ("fr",)))],
        {"language": LANGUAGE_STATES},
    )


def gender_pairs(config: PairsConfig) -> PairSet:
    """Masculine -> feminine English nouns; concept ``gender`` (masculine 0, feminine 1)."""
    return _word_pair_set(
        "gender",
        ["gender"],
        "word",
        config,
        lambda row: [(row[0], row[1], (1.0,), (("masc",), ("fem",)))],
        {"gender": GENDER_STATES},
    )


# Attributes (language, gender) of the four forms, in the column order of binary.tsv.
BINARY_FORMS = {"en_masc": (0, 0), "en_fem": (0, 1), "fr_masc": (1, 0), "fr_fem": (1, 1)}


BINARY_CONCEPT_STATES = {"language": LANGUAGE_STATES, "gender": GENDER_STATES}


def _binary_states(attributes: tuple[int, ...]) -> tuple[str, ...]:
    """The (language, gender) states of a binary form."""
    return tuple(
        BINARY_CONCEPT_STATES[c][1 + a]
        for c, a in zip(BINARY_CONCEPT_STATES, attributes, strict=True)
    )


def _binary_row_pairs(row: tuple[str, ...]) -> list[WordPair]:
    forms = list(zip(row, BINARY_FORMS.values(), strict=True))
    return [
        (
            x,
            x_tilde,
            tuple(float(b - a) for a, b in zip(ax, bx, strict=True)),
            (_binary_states(ax), _binary_states(bx)),
        )
        for (x, ax), (x_tilde, bx) in itertools.permutations(forms, 2)
    ]


def binary_pairs(config: PairsConfig) -> PairSet:
    """Every ordered pair of distinct forms of one profession (12 per profession); concepts
    ``language`` and ``gender``, shifts in {-1, 0, 1}^2."""
    return _word_pair_set(
        "binary",
        ["language", "gender"],
        "profession",
        config,
        _binary_row_pairs,
        BINARY_CONCEPT_STATES,
    )


def corr_pairs(config: PairsConfig) -> PairSet:
    """English -> French ([1, 0]) and English -> German ([0, 1]) for each profession."""
    return _word_pair_set(
        "corr",
        ["french", "german"],
        "profession",
        config,
        lambda row: [
            (row[0], row[1], (1.0, 0.0), (("en",), ("fr",))),
            (row[0], row[2], (0.0, 1.0), (("en",), ("de",))),
        ],
        {"french": LANGUAGE_STATES, "german": ["language", "en", "de"]},
    )


# --------------------------------------------------------------------------- cat


@dataclass(frozen=True)
class CatSpace:
    """The ``cat`` phrase space: attribute values, phrases and the 135 contrast concepts."""

    values: tuple[tuple[str, ...], ...]  # per attribute, in file order
    codes: np.ndarray  # int [P, 3]: value index of each attribute of each phrase
    phrases: tuple[str, ...]
    concepts: tuple[str, ...]
    concept_offset: tuple[int, ...]  # first concept index of each attribute

    def concept_index(self, attribute: int, a: int, b: int) -> tuple[int, float]:
        """Concept index and sign of changing ``attribute`` from value ``a`` to value ``b``."""
        low, high = min(a, b), max(a, b)
        size = len(self.values[attribute])
        # index of (low, high) among the pairs low < high in lexicographic order
        within = low * size - low * (low + 1) // 2 + (high - low - 1)
        return self.concept_offset[attribute] + within, 1.0 if a < b else -1.0


def cat_space(words: WordList | None = None) -> CatSpace:
    """All phrases ``"shape colour object"`` and the concepts ``"attribute:a->b"`` (a before b)."""
    words = words or load_wordlist("cat")
    if words.columns != CAT_ATTRIBUTES:
        raise InputError(
            f"{WORDLIST_DIR / 'cat.tsv'}: header must be {' '.join(CAT_ATTRIBUTES)}; fix the file"
        )
    values = tuple(tuple(row[i] for row in words.rows) for i in range(len(CAT_ATTRIBUTES)))
    several = [value for row in values for value in row if len(value.split()) != 1]
    if several:
        raise InputError(
            f"{WORDLIST_DIR / 'cat.tsv'}: '{several[0]}' is not one word; join it with a hyphen"
        )
    codes = np.array(list(itertools.product(*(range(len(v)) for v in values))), dtype=np.int64)
    phrases = tuple(" ".join(values[i][c] for i, c in enumerate(code)) for code in codes)
    concepts: list[str] = []
    offsets: list[int] = []
    for attribute, vals in zip(CAT_ATTRIBUTES, values, strict=True):
        offsets.append(len(concepts))
        concepts += [f"{attribute}:{a}->{b}" for a, b in itertools.combinations(vals, 2)]
    return CatSpace(values, codes, phrases, tuple(concepts), tuple(offsets))


def _quotas(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _sample_cat_split(
    space: CatSpace, members: np.ndarray, num_pairs: int, max_changes: int, rng: np.random.Generator
) -> np.ndarray:
    """``num_pairs`` distinct ordered phrase pairs [num_pairs, 2] within ``members``, about equally
    many per number of changed attributes; a count short of candidates passes its rest upwards."""
    codes = space.codes[members]
    changes = (codes[:, None, :] != codes[None, :, :]).sum(axis=-1)
    chosen: list[np.ndarray] = []
    carry = 0
    for k, quota in enumerate(_quotas(num_pairs, max_changes), start=1):
        candidates = np.argwhere(changes == k)  # row-major, hence deterministic
        take = min(quota + carry, len(candidates))
        carry = quota + carry - take
        picked = np.sort(rng.choice(len(candidates), size=take, replace=False))
        chosen.append(members[candidates[picked]])
    if carry:
        raise InputError(
            f"pairs.cat.num_pairs={num_pairs} needs more distinct pairs than {len(members)} "
            "phrases give; lower num_pairs or test_fraction, or raise max_changes"
        )
    return np.concatenate(chosen)


def balance_split(codes: np.ndarray, is_test: np.ndarray) -> np.ndarray:
    """Swap test and training phrases until, for every attribute, the numbers of test phrases of
    any two of its values differ by at most one (greedy; stops early if no swap helps).

    A plain random split leaves some values with half the average number of test phrases, and the
    concepts that involve them with few test pairs.
    """
    is_test = is_test.copy()
    num_attributes = codes.shape[1]
    num_values = int(codes.max()) + 1
    target = is_test.sum() / num_values
    for _ in range(len(codes)):
        deviation = (
            np.stack(
                [
                    np.bincount(codes[is_test, a], minlength=num_values)
                    for a in range(num_attributes)
                ]
            )
            - target
        )
        spread = deviation.max(axis=1) - deviation.min(axis=1)
        attribute = int(np.argmax(spread))
        if spread[attribute] <= 1:
            break
        over = int(np.argmax(deviation[attribute]))
        under = int(np.argmin(deviation[attribute]))
        out_of_test = np.flatnonzero(is_test & (codes[:, attribute] == over))
        into_test = np.flatnonzero(~is_test & (codes[:, attribute] == under))
        # change of the squared deviations for every candidate swap, summed over attributes
        columns = np.arange(num_attributes)
        leaving = deviation[columns, codes[out_of_test]]  # [T, A]
        entering = deviation[columns, codes[into_test]]  # [U, A]
        same = codes[out_of_test][:, None, :] == codes[into_test][None, :, :]
        change = np.where(same, 0.0, 2.0 * (entering[None] - leaving[:, None] + 1.0)).sum(-1)
        best = np.unravel_index(int(np.argmin(change)), change.shape)
        if change[best] >= 0:
            break
        is_test[out_of_test[best[0]]] = False
        is_test[into_test[best[1]]] = True
    return is_test


def cat_pairs(config: PairsConfig) -> PairSet:
    """Pairs of "shape colour object" phrases that change 1 to ``max_changes`` attributes.

    Entities are phrases: train pairs join two training phrases, test pairs two test phrases. The
    random phrase split is balanced so that every attribute value has as many test phrases.
    """
    words = load_wordlist("cat")
    space = cat_space(words)
    rng = _rng(config.seed, "cat")
    is_test = np.array(split_entities(len(space.phrases), rng, config.test_fraction)) == "test"
    splits = np.where(balance_split(space.codes, is_test), "test", "train")
    num_test = min(
        max(round(config.cat.num_pairs * config.test_fraction), 1), config.cat.num_pairs - 1
    )
    metadata = _metadata("cat", "phrase", config, words)
    metadata |= {"num_pairs": config.cat.num_pairs, "max_changes": config.cat.max_changes}
    pairs = PairSet(
        "cat",
        list(space.concepts),
        "phrase",
        metadata=metadata,
        state_names=list(CAT_ATTRIBUTES),
        concept_states={c: [c.split(":")[0], *c.split(":")[1].split("->")] for c in space.concepts},
    )
    for split, count in (("train", config.cat.num_pairs - num_test), ("test", num_test)):
        members = np.flatnonzero(splits == split)
        for a, b in _sample_cat_split(space, members, count, config.cat.max_changes, rng):
            shift = np.zeros(len(space.concepts), dtype=np.float32)
            for attribute in np.flatnonzero(space.codes[a] != space.codes[b]):
                index, sign = space.concept_index(
                    int(attribute), int(space.codes[a, attribute]), int(space.codes[b, attribute])
                )
                shift[index] = sign
            states = tuple(
                tuple(space.values[i][c] for i, c in enumerate(space.codes[p])) for p in (a, b)
            )
            pairs.add(space.phrases[a], space.phrases[b], split, space.phrases[a], shift, states)
    return pairs


# --------------------------------------------------------------------------- public API

_BUILDERS: dict[str, Callable[[PairsConfig], PairSet]] = {
    "lang": lang_pairs,
    "gender": gender_pairs,
    "binary": binary_pairs,
    "corr": corr_pairs,
    "cat": cat_pairs,
}


def build_pairs(name: str, config: PairsConfig | None = None) -> PairSet:
    """The pairs of set ``name`` (one of :data:`DATASETS`), with their entities."""
    if name not in _BUILDERS:
        raise InputError(f"unknown pair set '{name}'; known sets: {', '.join(DATASETS)}")
    return _BUILDERS[name](config or PairsConfig())


def make_pairs(
    name: str, *, seed: int = 0, test_fraction: float = 0.25, cat: CatConfig | None = None
) -> pa.Table:
    """The pair table of set ``name``: ``pair_id``, ``x``, ``x_tilde``, ``split``, ``shift``.

    Deterministic: the same arguments give the same table (and byte-identical Parquet).
    """
    config = PairsConfig(seed=seed, test_fraction=test_fraction, cat=cat or CatConfig())
    return build_pairs(name, config).to_table()


# --------------------------------------------------------------------------- vocabulary checks


class OodEvaluation(NamedTuple):
    """A steering vector learnt on ``source`` for ``source_concept``, applied to the test pairs of
    ``target`` whose concept is ``target_concept``."""

    source: str
    target: str
    source_concept: str
    target_concept: str


OOD_EVALUATIONS = (
    OodEvaluation("binary", "gender", "gender", "gender"),
    OodEvaluation("binary", "lang", "language", "language"),
    OodEvaluation("corr", "lang", "french", "language"),
)


def word_tokens(text: str) -> set[str]:
    """The word tokens of ``text``: runs of letters, case-folded (``"taie d'oreiller"`` gives
    ``{"taie", "d", "oreiller"}``)."""
    return {token.casefold() for token in _WORD.findall(text)}


def vocabulary(table: pa.Table, split: str | None = None) -> set[str]:
    """All word tokens of ``x`` and ``x_tilde`` in a pair table, optionally of one split only."""
    splits = table.column("split").to_pylist()
    tokens: set[str] = set()
    for column in ("x", "x_tilde"):
        for text, row_split in zip(table.column(column).to_pylist(), splits, strict=True):
            if split is None or row_split == split:
                tokens |= word_tokens(text)
    return tokens


def ood_vocabulary_overlap(source: pa.Table, target: pa.Table) -> set[str]:
    """Word tokens of ``target``'s test pairs that also occur in ``source``'s training pairs.

    Empty for every :data:`OOD_EVALUATIONS` entry, whatever the seed.
    """
    return vocabulary(target, "test") & vocabulary(source, "train")


def single_concept(shift: np.ndarray) -> np.ndarray:
    """Boolean [N]: rows whose shift changes exactly one concept."""
    return np.count_nonzero(np.asarray(shift), axis=1) == 1
