"""Your own pairs: a CSV, TSV, JSON Lines or Parquet file, or a local Hugging Face ``datasets``
folder (``save_to_disk``), turned into a pair table (:func:`ssae_core.io.pair_table`).

One row of the file is one pair: column ``x`` holds the first text, ``x_tilde`` the second
(posts and their replies, texts and their edits, sentences and their translations). What the
importer does with it:

* ``pair_id`` is the row's position in the file (0 = the first data row), so every pair can be
  traced back to its source row.
* Texts are stored in Unicode NFC form (``é`` as one code point, whether the file wrote it as
  one or as ``e`` + a combining accent), so one text is one text however it was typed.
* Rows with an empty text are an error (naming the first such row); rows whose two texts are
  identical and exact duplicates of an earlier pair (same ``x`` and ``x_tilde``) are dropped and
  counted (:class:`CustomPairs`).
* The split: the user's own (a column of ``train``/``test`` values), or a seeded split by a group
  column (a thread, an author, a question: every pair of one group lands on the same side; the
  fraction is a fraction of groups), or, with neither, a seeded split by pair. The group of every
  pair (its ``pair_id`` where no group column is given) is stored in ``PairLabels.group``.
* Labels (:class:`LabelSpec`) become per-text states (:class:`ssae_core.io.PairLabels`). Where a
  label gives the state of each text, every pair of values that some pair changes between becomes
  a concept ``variable:a->b`` (``a`` sorts before ``b``; shift +1 from ``a`` to ``b``, -1 back),
  as in the semi-synthetic sets, and the table gets its ``shift`` column. Without such labels
  the table has no ``shift``: the common case of unlabelled pairs.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ssae_core.datasets.semisynthetic import DATASETS, split_entities
from ssae_core.errors import InputError
from ssae_core.io import (
    PairLabels,
    is_text,
    pair_table,
    safe_output,
    stamped,
    write_table_file,
)

PAIRS_COMMAND = "pairs"
FORMATS = ("auto", "csv", "tsv", "jsonl", "parquet", "hf")
SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
"""Text files (CSV, TSV, JSON Lines) may be compressed; the reader infers it from the name."""
SPLIT_VALUES = ("train", "test")
HF_STATE = "state.json"
HF_INFO = "dataset_info.json"
HF_DICT = "dataset_dict.json"
HF_SPLIT_COLUMN = "split"
"""A ``DatasetDict`` folder's splits are read as one table with their names in this column."""
RESERVED_NAMES = (*DATASETS, "truthfulqa")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- configuration


class LabelSpec(NamedTuple):
    """One ``--label``: variable ``name`` read from ``x_column`` for x and ``x_tilde_column`` for
    x~ (the same column for a pair-level label, whose state never changes within a pair)."""

    name: str
    x_column: str
    x_tilde_column: str

    @property
    def per_text(self) -> bool:
        return self.x_column != self.x_tilde_column

    @classmethod
    def parse(cls, text: str) -> LabelSpec:
        """``NAME=COL_X:COL_X_TILDE`` (a state per text), ``NAME=COL`` or ``COL`` (pair-level)."""
        name, _, columns = text.partition("=") if "=" in text else (text, "", text)
        x_column, colon, x_tilde_column = columns.partition(":")
        name, x_column, x_tilde_column = name.strip(), x_column.strip(), x_tilde_column.strip()
        if not name or not x_column or (colon and not x_tilde_column) or ":" in x_tilde_column:
            raise InputError(
                f"labels: {text!r} is not a label; write NAME=COL_X:COL_X_TILDE (a state per "
                "text, e.g. language=lang_x:lang_x_tilde), NAME=COL or COL (one value per pair)"
            )
        return cls(name, x_column, x_tilde_column or x_column)


@dataclass(frozen=True)
class CustomPairsConfig:
    """A pair table built from a file of your own (params.yaml ``pairs.custom.NAME``)."""

    path: str
    """The file: .csv, .tsv, .jsonl (optionally .gz/.bz2/.zst), .parquet, or a Hugging Face
    datasets folder written by save_to_disk (a DatasetDict folder's split names are read into a
    column 'split')."""
    x: str
    """Column of the first text of each pair."""
    x_tilde: str
    """Column of the second text of each pair."""
    split: str | None = None
    """Column holding the split of each pair (values train or test) instead of a seeded split."""
    group: str | None = None
    """Column naming the entity of each pair (a thread, an author, a question): the seeded split
    keeps every group on one side (with --split: checks that it does). Without it, pairs are
    split one by one."""
    test_fraction: float = 0.25
    """Share of the groups (or pairs) held out for the test split (unused with --split); range:
    (0, 1)."""
    labels: tuple[str, ...] = ()
    """Label columns, kept as per-text states (repeat for several): NAME=COL_X:COL_X_TILDE gives
    each text's state (e.g. language=lang_x:lang_x_tilde; every pair of values that a pair
    changes between becomes a concept NAME:a->b with a known shift); NAME=COL or just COL is one
    value per pair (the same state for both texts, no concept)."""
    seed: int = 0
    """Seed of the train/test split; the same file and seed give the same table; range:
    [0, inf)."""
    format: str = "auto"
    """File format: auto (from the file name, or a save_to_disk folder), csv, tsv, jsonl,
    parquet or hf."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.format not in FORMATS:
            raise InputError(f"format={self.format!r} is unknown; use one of {', '.join(FORMATS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed={self.seed!r}: must be an integer >= 0")
        if not 0 < self.test_fraction < 1:
            raise InputError(f"test_fraction={self.test_fraction}: must be strictly in (0, 1)")
        if self.x == self.x_tilde:
            raise InputError(f"x={self.x!r} and x_tilde: give two different columns")
        names = [spec.name for spec in self.label_specs()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"labels: {', '.join(repeated)} given twice; name each label once")

    def label_specs(self) -> list[LabelSpec]:
        return [LabelSpec.parse(text) for text in self.labels]

    def columns(self) -> list[str]:
        """Every column of the file this configuration reads, in a stable order."""
        wanted = [self.x, self.x_tilde, self.split, self.group]
        for spec in self.label_specs():
            wanted += [spec.x_column, spec.x_tilde_column]
        return list(dict.fromkeys(c for c in wanted if c is not None))


def custom_pair_configs(values: object, where: str) -> dict[str, CustomPairsConfig]:
    """``pairs.custom`` of params.yaml: ``{name: {path: ..., x: ..., x_tilde: ...}}`` loaded and
    checked (names become file names, data/pairs/NAME.parquet, and may not hide a built-in set)."""
    from ssae_core.config import load_config

    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping of set names to settings, got {values!r}")
    configs = {}
    for name, settings in values.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise InputError(
                f"{where}.{name}: give each set a new name of letters, digits, '_', '-' or '.' "
                f"(not one of {', '.join(RESERVED_NAMES)})"
            )
        configs[name] = load_config(CustomPairsConfig, settings, f"{where}.{name}")
    return configs


# --------------------------------------------------------------------------- reading files


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The format of ``path``: ``fmt`` itself, or inferred from the name (or folder contents)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    if fmt != "auto":
        if (fmt == "hf" and not path.is_dir()) or (
            fmt in ("csv", "tsv", "jsonl") and path.is_dir()
        ):
            kind = "a folder" if path.is_dir() else "a file"
            raise InputError(f"{path}: is {kind}, which format {fmt} cannot be; check --format")
        return fmt
    if path.is_dir():
        if any((path / name).is_file() for name in (HF_STATE, HF_DICT)):
            return "hf"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise InputError(
            f"{path}: a folder, but neither a Hugging Face datasets folder (no {HF_STATE} or "
            f"{HF_DICT}: write it with save_to_disk) nor a folder of .parquet files"
        )
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    found = SUFFIXES.get(suffixes[-1] if suffixes else "")
    if found is None or (found == "parquet" and len(path.suffixes) > len(suffixes)):
        shown = "".join(path.suffixes) or "no extension"
        raise InputError(
            f"{path}: unknown format ({shown}); use a .csv, .tsv, .jsonl or .parquet file or a "
            "save_to_disk folder, or name the format with --format"
        )
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


BLOCK_BYTES = 1 << 20
"""pyarrow's first block size for CSV and JSON Lines; a row larger than a block is read again
with blocks 4x larger, up to the file's size (one 3 MB cell is a valid row)."""


def _in_blocks(path: Path, read: Callable[[int], pa.Table]) -> pa.Table:
    """``read(block_size)`` with a block size large enough for the file's largest row."""
    block, size = BLOCK_BYTES, path.stat().st_size
    while True:
        try:
            return read(block)
        except pa.ArrowInvalid as exc:
            if "block" not in str(exc) or block >= size:
                raise
            block *= 4


def _read_delimited(path: Path, delimiter: str) -> pa.Table:
    """Every column as text (no type guessing: '007' stays '007', 'NA' stays 'NA')."""
    from pyarrow import csv

    parse = csv.ParseOptions(delimiter=delimiter, newlines_in_values=True)

    def read(block: int) -> pa.Table:
        options = csv.ReadOptions(block_size=block)
        names = csv.open_csv(path, read_options=options, parse_options=parse).schema.names
        convert = csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        )
        return csv.read_csv(
            path, read_options=options, parse_options=parse, convert_options=convert
        )

    return _in_blocks(path, read)


def _read_jsonl(path: Path) -> pa.Table:
    from pyarrow import json as pajson

    parse = pajson.ParseOptions(newlines_in_values=False, unexpected_field_behavior="infer")
    return _in_blocks(
        path,
        lambda block: pajson.read_json(
            path, read_options=pajson.ReadOptions(block_size=block), parse_options=parse
        ),
    )


def _read_hf_dataset(folder: Path) -> pa.Table:
    """One ``Dataset.save_to_disk`` folder: its Arrow stream files in order, ClassLabel columns
    as their names."""
    try:
        state = json.loads((folder / HF_STATE).read_text())
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"{folder}: {HF_STATE} is missing or does not list the data files (_data_files); "
            "write the folder with Dataset.save_to_disk"
        ) from None
    tables = []
    for file in files:
        with pa.OSFile(str(file)) as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return _class_label_names(table, folder)


def _class_label_names(table: pa.Table, folder: Path) -> pa.Table:
    """Integer ClassLabel columns of a datasets folder replaced by their label names."""
    try:
        features = json.loads((folder / HF_INFO).read_text()).get("features") or {}
    except (OSError, ValueError, AttributeError):
        features = {}
    for name, feature in features.items():
        if not isinstance(feature, dict) or feature.get("_type") != "ClassLabel":
            continue
        if name not in table.column_names or "names" not in feature:
            continue
        codes = table.column(name)
        valid = pc.and_(pc.greater_equal(codes, 0), pc.less(codes, len(feature["names"])))
        codes = pc.if_else(valid, codes, pa.scalar(None, codes.type))
        names = pc.take(pa.array(feature["names"], pa.string()), codes)
        table = table.set_column(table.column_names.index(name), name, names)
    return table


def _read_hf(path: Path) -> pa.Table:
    if not (path / HF_DICT).is_file():
        return _read_hf_dataset(path)
    try:
        splits = json.loads((path / HF_DICT).read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"{path / HF_DICT}: does not list the splits; re-save the folder"
        ) from None
    parts = []
    for split in splits:
        part = _read_hf_dataset(path / split)
        if HF_SPLIT_COLUMN in part.column_names:
            raise InputError(
                f"{path}: the DatasetDict's rows already have a column {HF_SPLIT_COLUMN!r}; give "
                f"one split folder ({path / split}) instead"
            )
        parts.append(part.append_column(HF_SPLIT_COLUMN, pa.array([split] * len(part))))
    return pa.concat_tables(parts, promote_options="default")


_READERS = {
    "csv": lambda p: _read_delimited(p, ","),
    "tsv": lambda p: _read_delimited(p, "\t"),
    "jsonl": _read_jsonl,
    "parquet": lambda p: pq.read_table(p),
    "hf": _read_hf,
}


def read_rows(path: str | os.PathLike, fmt: str = "auto") -> tuple[pa.Table, str]:
    """The file's rows as one Arrow table, and the format it was read as."""
    path = Path(path)
    fmt = detect_format(path, fmt)
    try:
        return _READERS[fmt](path), fmt
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable {fmt} file ({_first_line(exc)})") from None


# --------------------------------------------------------------------------- building the table


def _require_columns(table: pa.Table, wanted: list[str], path: Path) -> None:
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} (columns present: "
            f"{', '.join(table.column_names) or 'none'}); check the column names"
        )


def _rows_text(rows: np.ndarray) -> str:
    """Data rows (0-based indices) for an error message, 1-based as a user counts them."""
    shown = ", ".join(str(int(r) + 1) for r in rows[:3])
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return f"data row {shown}{more}"


def _texts(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """A text column as an object array; null or blank texts are an error naming the rows."""
    column = table.column(name)
    if not is_text(column.type):
        raise InputError(
            f"{path}: column {name!r} holds {column.type} values, not texts; give a text column"
        )
    texts = _filled(np.asarray(column.to_pylist(), dtype=object), name, path, "text(s)")
    return np.array([unicodedata.normalize("NFC", t) for t in texts], dtype=object)


def _filled(values: np.ndarray, name: str, path: Path, what: str) -> np.ndarray:
    """``values`` of column ``name``; null or blank ones are an error naming the rows."""
    empty = np.flatnonzero([v is None or not v.strip() for v in values])
    if len(empty):
        raise InputError(
            f"{path}: column {name!r} has {len(empty)} empty {what} ({_rows_text(empty)}); "
            "fill or drop those rows"
        )
    return values


def _values(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """A label, group or split column as strings (numbers and booleans written as text)."""
    column = table.column(name)
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if not (
        is_text(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_floating(kind)
    ):
        raise InputError(f"{path}: column {name!r} holds {kind} values; give a column of names")
    values = np.asarray(column.cast(pa.string()).to_pylist(), dtype=object)
    return _filled(values, name, path, "value(s)")


def _kept_rows(x: np.ndarray, x_tilde: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Rows to keep: not identical texts, first occurrence of each (x, x~); and the two counts."""
    identical = x == x_tilde
    seen: set[tuple[str, str]] = set()
    keep = np.zeros(len(x), dtype=bool)
    duplicates = 0
    for i in np.flatnonzero(~identical):
        key = (x[i], x_tilde[i])
        if key in seen:
            duplicates += 1
        else:
            seen.add(key)
            keep[i] = True
    return keep, duplicates, int(identical.sum())


def _seeded_split(groups: np.ndarray, cfg: CustomPairsConfig, path: Path, what: str) -> np.ndarray:
    """train/test per row: a seeded share of the distinct groups (sorted, so the split depends
    only on the groups and the seed, not on the order of the rows) is test."""
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    if len(names) < 2:
        raise InputError(
            f"{path}: {len(names)} distinct {what}; a train/test split needs at least 2 "
            "(add pairs or groups, or give the split with --split)"
        )
    sides = split_entities(len(names), np.random.default_rng(cfg.seed), cfg.test_fraction)
    return np.asarray(sides, dtype=object)[inverse]


def _user_split(
    split: np.ndarray, groups: np.ndarray | None, cfg: CustomPairsConfig, path: Path
) -> np.ndarray:
    """The split column as given: only train/test, and (with a group column) no group on both
    sides."""
    unknown = sorted(set(split.tolist()) - set(SPLIT_VALUES))
    if unknown:
        raise InputError(
            f"{path}: column {cfg.split!r} holds {', '.join(repr(v) for v in unknown[:3])}; "
            f"its values must be {' or '.join(SPLIT_VALUES)} (rename the others)"
        )
    if groups is not None:
        test_groups = set(groups[split == "test"].tolist())
        both = sorted(test_groups & set(groups[split == "train"].tolist()))
        if both:
            rows = np.flatnonzero(groups == both[0])
            raise InputError(
                f"{path}: group {both[0]!r} of column {cfg.group!r} is in both train and test "
                f"({_rows_text(rows)}; {len(both)} such group(s)); put each group on one side "
                f"of column {cfg.split!r}, or leave out --group"
            )
    return split


@dataclass
class LabelStates:
    """The states of every label of the kept rows: [N, K] for x and for x~."""

    names: list[str]
    per_text: list[bool]
    x_states: np.ndarray
    x_tilde_states: np.ndarray


def _read_labels(
    table: pa.Table, cfg: CustomPairsConfig, path: Path, keep: np.ndarray
) -> LabelStates:
    specs = cfg.label_specs()
    n = int(keep.sum())
    x_states = np.empty((n, len(specs)), dtype=object)
    x_tilde_states = np.empty((n, len(specs)), dtype=object)
    for k, spec in enumerate(specs):
        x_states[:, k] = _values(table, spec.x_column, path)[keep]
        x_tilde_states[:, k] = _values(table, spec.x_tilde_column, path)[keep]
    return LabelStates(
        [s.name for s in specs], [s.per_text for s in specs], x_states, x_tilde_states
    )


def derive_concepts(
    labels: LabelStates,
) -> tuple[np.ndarray | None, list[str], dict[str, list[str]]]:
    """One concept per pair of values of a per-text label that some pair changes between:
    the shifts [N, C] (None when no pair changes a per-text label), names and concept_states."""
    keys: list[tuple[int, str, str]] = []
    for k, per_text in enumerate(labels.per_text):
        if not per_text:
            continue
        a, b = labels.x_states[:, k], labels.x_tilde_states[:, k]
        changed = a != b
        pairs = {tuple(sorted(p)) for p in zip(a[changed], b[changed], strict=True)}
        keys += [(k, low, high) for low, high in sorted(pairs)]
    if not keys:
        return None, [], {}
    names = [f"{labels.names[k]}:{low}->{high}" for k, low, high in keys]
    states = {
        n: [labels.names[k], low, high] for n, (k, low, high) in zip(names, keys, strict=True)
    }
    shift = np.zeros((len(labels.x_states), len(keys)), dtype=np.float32)
    for c, (k, low, high) in enumerate(keys):
        a, b = labels.x_states[:, k], labels.x_tilde_states[:, k]
        shift[(a == low) & (b == high), c] = 1.0
        shift[(a == high) & (b == low), c] = -1.0
    return shift, names, states


@dataclass
class CustomPairs:
    """A built pair table and what the import did."""

    table: pa.Table
    rows_read: int
    duplicates: int
    """Rows dropped because an earlier row holds the same (x, x~)."""
    identical: int
    """Rows dropped because x and x~ are the same text (a zero shift)."""
    format: str
    concepts: list[str] = field(default_factory=list)

    def summary(self, out: object) -> str:
        splits = self.table.column("split").to_pylist()
        counts = ", ".join(f"{s} {splits.count(s)}" for s in SPLIT_VALUES)
        known = f"{len(self.concepts)} concept(s)" if self.concepts else "no concept labels"
        return (
            f"read {self.rows_read} rows ({self.format}); dropped {self.duplicates} duplicate "
            f"pair(s) and {self.identical} with identical texts; wrote {self.table.num_rows} "
            f"pairs ({counts}; {known}) to {out}"
        )


def _split_and_groups(
    table: pa.Table, cfg: CustomPairsConfig, path: Path, keep: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The split of every kept row, and its group (None without a group column)."""
    groups = _values(table, cfg.group, path)[keep] if cfg.group else None
    if cfg.split:
        return _user_split(_values(table, cfg.split, path)[keep], groups, cfg, path), groups
    if groups is not None:
        return _seeded_split(groups, cfg, path, f"groups in column {cfg.group!r}"), groups
    return _seeded_split(ids, cfg, path, "pairs"), None


def build_custom_pairs(cfg: CustomPairsConfig, name: str | None = None) -> CustomPairs:
    """Read ``cfg.path`` and build its pair table (see the module docstring); ``name`` is
    recorded as the table's ``dataset`` (default: the file's stem)."""
    path = Path(cfg.path)
    table, fmt = read_rows(path, cfg.format)
    _require_columns(table, cfg.columns(), path)
    x, x_tilde = _texts(table, cfg.x, path), _texts(table, cfg.x_tilde, path)
    keep, duplicates, identical = _kept_rows(x, x_tilde)
    if not keep.any():
        raise InputError(f"{path}: no pair with two different texts; check --x and --x-tilde")
    ids = np.flatnonzero(keep).astype(np.int64)
    split, groups = _split_and_groups(table, cfg, path, keep, ids)
    labels = _read_labels(table, cfg, path, keep)
    shift, concepts, concept_states = derive_concepts(labels)
    pair_labels = None
    if cfg.labels or groups is not None:
        pair_labels = PairLabels(
            groups if groups is not None else ids.astype(str).astype(object),
            labels.x_states,
            labels.x_tilde_states,
            labels.names,
            concept_states,
        )
    metadata = {
        "dataset": name or path.name.split(".")[0],
        "source": str(path),
        "source_format": fmt,
        "columns": {"x": cfg.x, "x_tilde": cfg.x_tilde},
        "split_by": f"column {cfg.split}" if cfg.split else (cfg.group or "pair"),
        "group": cfg.group,
        "seed": cfg.seed,
        "test_fraction": None if cfg.split else cfg.test_fraction,
        "labels": list(cfg.labels),
        "rows_read": table.num_rows,
        "duplicates_dropped": duplicates,
        "identical_dropped": identical,
    }
    out = pair_table(
        x[keep].tolist(),
        x_tilde[keep].tolist(),
        split.tolist(),
        shift,
        concepts or None,
        metadata,
        pair_id=ids,
        labels=pair_labels,
    )
    return CustomPairs(out, table.num_rows, duplicates, identical, fmt, concepts)


def write_custom_pairs(
    cfg: CustomPairsConfig, out: str | os.PathLike, name: str | None = None
) -> CustomPairs:
    """``ssae pairs``: build the pair table of ``cfg`` and write it to the Parquet file ``out``,
    which must be new or an earlier output of ``ssae pairs`` (nothing else is ever replaced)."""
    with safe_output(out, PAIRS_COMMAND, kind="file", inputs=[cfg.path]) as tmp:
        pairs = build_custom_pairs(cfg, name)
        write_table_file(stamped(pairs.table, PAIRS_COMMAND), tmp)
    return pairs
