"""File formats shared by every stage: pair tables, embedding tables, atomic writes.

Pair table (Parquet): ``pair_id`` int64, ``x`` string, ``x_tilde`` string, ``split`` string,
``shift`` list<float32>; concept names in the schema metadata.

Embedding table (one Parquet file, or a folder of ``shard-00000.parquet`` ...): ``pair_id`` int64,
``split`` string, ``z`` and ``z_tilde`` fixed_size_list<float32>[d], optional ``shift``
list<float32>. Schema metadata: ``concepts`` (JSON list) and free-form provenance strings
(model, revision, layer, token position, dtype, template, ...).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssae_core.errors import InputError

CONCEPTS_KEY = "concepts"
SHARD_GLOB = "shard-*.parquet"
PAIR_COLUMNS = ("pair_id", "x", "x_tilde", "split", "shift")
EMBEDDING_COLUMNS = ("pair_id", "split", "z", "z_tilde")


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    On any exception the temporary folder is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; remove it or choose another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    """Write one Parquet file atomically."""
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


# --------------------------------------------------------------------------- metadata


def encode_metadata(concepts: list[str] | None, extra: Mapping[str, object] | None) -> dict:
    """Schema metadata: concept names as a JSON list, other values as strings (JSON if not str)."""
    meta: dict[bytes, bytes] = {}
    if concepts is not None:
        meta[CONCEPTS_KEY.encode()] = json.dumps(list(concepts)).encode()
    for key, value in (extra or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        meta[str(key).encode()] = text.encode()
    return meta


def decode_metadata(schema: pa.Schema) -> tuple[list[str] | None, dict[str, str]]:
    raw = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    raw.pop("pandas", None)
    concepts = json.loads(raw.pop(CONCEPTS_KEY)) if CONCEPTS_KEY in raw else None
    return concepts, raw


# --------------------------------------------------------------------------- reading tables


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files behind ``path``: the file itself, or a folder's shards in order."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(SHARD_GLOB)) or sorted(p.glob("*.parquet"))
        if not files:
            raise InputError(f"{p}: folder holds no Parquet shards ({SHARD_GLOB}); check the path")
        return files
    if not p.exists():
        raise InputError(f"{p}: no such file or folder; check the path")
    return [p]


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a Parquet file or a folder of shards as one table (schema metadata of the first)."""
    files = parquet_files(path)
    try:
        tables = [pq.read_table(f) for f in files]
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({first_line})") from None
    if len(tables) == 1:
        return tables[0]
    schema = tables[0].schema
    try:
        return pa.concat_tables([t.cast(schema) for t in tables])
    except (pa.ArrowInvalid, ValueError):
        raise InputError(f"{path}: shards have different schemas; re-create the folder") from None


def _require_columns(table: pa.Table, columns: tuple[str, ...], path: object, what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: not {what}: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(table.column_names) or 'none'})"
        )


def _matrix(column: pa.ChunkedArray, path: object, name: str) -> np.ndarray:
    """A list or fixed_size_list column as a float32 [N, d] array; ragged rows are an error."""
    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if arr.null_count:
        raise InputError(f"{path}: column {name} has {arr.null_count} null row(s); drop them")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return np.array(flat, dtype=np.float32).reshape(len(arr), width)  # owned, writable
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = np.diff(arr.offsets.to_numpy())
        if len(np.unique(lengths)) != 1:
            raise InputError(f"{path}: rows of column {name} have different lengths; fix the table")
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return np.array(flat, dtype=np.float32).reshape(len(arr), int(lengths[0]))
    raise InputError(f"{path}: column {name} must be a list of floats, got {arr.type}")


# --------------------------------------------------------------------------- embedding tables


@dataclass
class EmbeddingTable:
    """Paired embeddings ``z`` (before) and ``z_tilde`` (after), one row per pair."""

    pair_id: np.ndarray  # int64 [N]
    split: np.ndarray  # object (str) [N]
    z: np.ndarray  # float32 [N, d]
    z_tilde: np.ndarray  # float32 [N, d]
    shift: np.ndarray | None = None  # float32 [N, n], the true concept shift where known
    concepts: list[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.z.shape[1])

    @property
    def delta(self) -> np.ndarray:
        """The embedding shifts ``z_tilde - z`` [N, d]."""
        return self.z_tilde - self.z

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def select(self, mask: np.ndarray) -> EmbeddingTable:
        return EmbeddingTable(
            pair_id=self.pair_id[mask],
            split=self.split[mask],
            z=self.z[mask],
            z_tilde=self.z_tilde[mask],
            shift=None if self.shift is None else self.shift[mask],
            concepts=self.concepts,
            metadata=dict(self.metadata),
        )

    def subset(self, split: str) -> EmbeddingTable:
        """Rows of one split (``train``, ``test``...)."""
        return self.select(self.split == split)

    def reoriented(self, fraction: float, seed: int) -> EmbeddingTable:
        """A copy in which a seeded random ``fraction`` of the pairs is read backwards: ``z`` and
        ``z_tilde`` swapped and ``shift`` negated. Which pairs flip depends only on ``pair_id``
        and ``seed``, so a table, its splits and its entangled variant flip the same pairs."""
        if not 0 <= fraction <= 1:
            raise InputError(f"reverse fraction {fraction}: must be in [0, 1]")
        size = int(self.pair_id.max()) + 1 if len(self) else 0
        flip = (np.random.default_rng(seed).random(size) < fraction)[self.pair_id]
        col = flip[:, None]
        return EmbeddingTable(
            pair_id=self.pair_id.copy(),
            split=self.split.copy(),
            z=np.where(col, self.z_tilde, self.z),
            z_tilde=np.where(col, self.z, self.z_tilde),
            shift=None if self.shift is None else np.where(col, -self.shift, self.shift),
            concepts=self.concepts,
            metadata={
                **self.metadata,
                "reversed_fraction": str(fraction),
                "reverse_seed": str(seed),
            },
        )

    def to_arrow(self) -> pa.Table:
        d = self.dim
        columns = {
            "pair_id": pa.array(self.pair_id, type=pa.int64()),
            "split": pa.array(self.split.astype(str), type=pa.string()),
            "z": _fixed_list(self.z, d),
            "z_tilde": _fixed_list(self.z_tilde, d),
        }
        if self.shift is not None:
            columns["shift"] = pa.array(list(self.shift.astype(np.float32)), pa.list_(pa.float32()))
        table = pa.table(columns)
        return table.replace_schema_metadata(encode_metadata(self.concepts, self.metadata))


def _fixed_list(matrix: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def save_embeddings(table: EmbeddingTable, path: str | os.PathLike) -> None:
    """Write an embedding table to one Parquet file, atomically."""
    write_parquet(table.to_arrow(), path)


def load_embeddings(path: str | os.PathLike) -> EmbeddingTable:
    """Read and validate an embedding table (a Parquet file or a folder of shards)."""
    table = read_table(path)
    _require_columns(table, EMBEDDING_COLUMNS, path, "an embedding table")
    if table.num_rows == 0:
        raise InputError(f"{path}: embedding table has no rows; re-run the step that wrote it")
    z = _matrix(table.column("z"), path, "z")
    z_tilde = _matrix(table.column("z_tilde"), path, "z_tilde")
    if z.shape[1] != z_tilde.shape[1]:
        raise InputError(
            f"{path}: z has width {z.shape[1]} but z_tilde has width {z_tilde.shape[1]}; "
            "both must come from the same model and layer"
        )
    for name, values in (("z", z), ("z_tilde", z_tilde)):
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise InputError(
                f"{path}: column {name} has NaN or inf in {int(bad.sum())} row(s) "
                f"(first pair_id {table.column('pair_id')[int(np.argmax(bad))].as_py()}); "
                "drop or re-extract them"
            )
    shift = _matrix(table.column("shift"), path, "shift") if "shift" in table.column_names else None
    concepts, metadata = decode_metadata(table.schema)
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    return EmbeddingTable(
        pair_id=table.column("pair_id").to_numpy().astype(np.int64),
        split=split,
        z=z,
        z_tilde=z_tilde,
        shift=shift,
        concepts=concepts,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- pair tables


def pair_table(
    x: list[str],
    x_tilde: list[str],
    split: list[str],
    shift: np.ndarray,
    concepts: list[str],
    metadata: Mapping[str, object] | None = None,
    pair_id: np.ndarray | None = None,
) -> pa.Table:
    """Build a pair table in the project's format."""
    n = len(x)
    shift = np.asarray(shift, dtype=np.float32).reshape(n, len(concepts))
    ids = np.arange(n, dtype=np.int64) if pair_id is None else np.asarray(pair_id, np.int64)
    table = pa.table(
        {
            "pair_id": pa.array(ids, pa.int64()),
            "x": pa.array(x, pa.string()),
            "x_tilde": pa.array(x_tilde, pa.string()),
            "split": pa.array(split, pa.string()),
            "shift": pa.array(list(shift), pa.list_(pa.float32())),
        }
    )
    return table.replace_schema_metadata(encode_metadata(concepts, metadata))


def load_pairs(path: str | os.PathLike) -> pa.Table:
    """Read and validate a pair table; returns the Arrow table (concepts in its metadata)."""
    table = read_table(path)
    _require_columns(table, PAIR_COLUMNS[:4], path, "a pair table")
    if table.num_rows == 0:
        raise InputError(f"{path}: pair table has no rows; re-run the step that wrote it")
    for name in ("x", "x_tilde"):
        texts = table.column(name).to_pylist()
        empty = [i for i, t in enumerate(texts) if t is None or not str(t).strip()]
        if empty:
            pid = table.column("pair_id")[empty[0]].as_py()
            raise InputError(
                f"{path}: column {name} has {len(empty)} empty text(s) (first pair_id {pid}); "
                "every pair needs two non-empty texts"
            )
    return table


# --------------------------------------------------------------------------- CSV


def write_csv(rows: Sequence[Mapping[str, object]], path: str | os.PathLike) -> None:
    """Write ``rows`` (dicts with the same keys, in column order) as CSV with a header line,
    atomically."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
