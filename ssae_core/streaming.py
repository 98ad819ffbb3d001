"""Out-of-core training data: the shifts of an embedding table streamed from its Parquet files, so
that memory does not grow with the number of pairs.

The unit of reading is a block, one row group of one file (``ssae embed`` writes one per shard),
read in slices of at most :data:`ssae_core.io.SLICE_BYTES` of z and z_tilde
(:func:`ssae_core.io.read_slices`: a row group of a million rows, as pandas, pyarrow or Spark
write them, is never decoded whole), so memory is bounded whatever the files' layout.
:meth:`ShardSource.prepare` makes one pass over every block that checks the rows as
:func:`ssae_core.io.load_embeddings` does and gathers, in float64, the mean shift and the spread
around it (merged block by block), from which the normaliser and x_rms follow as
:meth:`ssae_core.model.Normalizer.fit` computes them; it keeps the held-out shifts in memory.

- Held out: a pair is held out when a hash of its ``pair_id`` falls below the fraction, so the
  choice is deterministic and the same whatever the order of the files and rows. The fraction is
  ``val_fraction``, lowered where needed so that the held-out set holds at most one buffer of
  shifts (its memory then does not grow with the table either).
- Order: epoch ``e`` reads the blocks in a permutation seeded by ``e`` alone (the slices of one
  block in their order) and cuts the training rows, in that order, into buffers of
  ``buffer_rows`` rows (a multiple of the batch size; the last buffer takes the remainder); the
  trainer permutes each buffer with every member's own generator. While one buffer trains, a
  background thread fills the next (reading READ_AHEAD slices ahead), so two buffers and a few
  slices are in memory at most. If the whole
  training set fits in one buffer, every epoch is a full shuffle, as in memory. Shuffling is
  only as wide as a buffer: a table stored sorted (by topic, by source) trains on batches that
  mix a few blocks; give it small row groups (``ssae embed``'s shards) or shuffle its rows. (A
  file of one large row group is read in the same order every epoch; only buffers shuffle.)
- Every epoch reads the blocks again without the checks of the first pass (Parquet decoding
  is then most of its cost).
- Reading pairs backwards (``reverse``, as the study does) keeps one flag per pair id in memory
  (1 byte per pair: 1 MB per million), drawn as :meth:`EmbeddingTable.reoriented` draws them.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ssae_core import outliers
from ssae_core.errors import InputError
from ssae_core.io import (
    EMBEDDING_COLUMNS,
    LABEL_KEYS,
    MIB,
    Block,
    EmbeddingRows,
    block_rows,
    decode_metadata,
    flipped_ids,
    float_matrix,
    open_embeddings,
    read_slices,
    require_unique_ids,
    width_error,
)
from ssae_core.model import Normalizer, check_shifts

T = TypeVar("T")

HOLDOUT_SEED = 0x5EED_0FF5
ORDER_SEED = 0x0BDE_5EED
READ_AHEAD = 1
"""Slices read ahead (each in one thread, decoded single-threaded) while the current one is used:
every thread that allocates keeps its own allocator cache, so fewer threads take less memory."""


class Reversal(NamedTuple):
    """A seeded ``fraction`` of the pairs read backwards, as
    :meth:`ssae_core.io.EmbeddingTable.reoriented` chooses them (same fraction and seed, same
    pairs)."""

    fraction: float
    seed: int


def pair_uniforms(pair_id: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) for every pair id: a fixed hash (splitmix64) of the id and ``seed``."""
    with np.errstate(over="ignore"):
        z = pair_id.astype(np.int64).view(np.uint64) + np.uint64(seed) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def held_out(pair_id: np.ndarray, fraction: float) -> np.ndarray:
    """True for the pairs held out at ``fraction``: decided by each pair's id alone."""
    return pair_uniforms(pair_id, HOLDOUT_SEED) < fraction


def buffer_rows(buffer_mb: float, dim: int, batch_size: int) -> int:
    """Rows per buffer: as many whole batches of shifts (float32 [., dim]) as ``buffer_mb`` MiB
    holds, at least one."""
    return max(1, int(buffer_mb * MIB // (4 * dim * batch_size))) * batch_size


def buffer_sizes(num_train: int, rows: int, batch_size: int) -> list[int]:
    """The rows of each buffer of an epoch: ``rows`` (whole batches) each; the remainder is a
    buffer of its own when it holds a whole batch, else it joins the last buffer."""
    full, rest = divmod(num_train, rows)
    if full == 0 or rest == 0:
        return [rows] * full or [num_train]
    if rest >= batch_size:
        return [rows] * full + [rest]
    return [rows] * (full - 1) + [rows + rest]


def _cut(
    chunks: Iterator[np.ndarray], sizes: list[int], dim: int, path: object
) -> Iterator[np.ndarray]:
    """The rows of ``chunks``, in order, cut into buffers of ``sizes`` rows (a chunk that
    straddles two buffers is split between them)."""
    carry: np.ndarray | None = None
    for size in sizes:
        buffer = np.empty((size, dim), dtype=np.float32)
        filled = 0
        while filled < size:
            chunk = carry if carry is not None else next(chunks, None)
            if chunk is None:
                raise InputError(
                    f"{path}: has fewer rows than when training started (was it rewritten?); "
                    "train again on the finished table"
                )
            take = min(size - filled, len(chunk))
            buffer[filled : filled + take] = chunk[:take]
            carry = chunk[take:] if take < len(chunk) else None
            filled += take
        yield buffer


_DONE = object()


def read_ahead(
    blocks: list[Block], read: Callable[[Block], Iterator[T]], ahead: int = READ_AHEAD
) -> Iterator[tuple[Block, T]]:
    """``(block, slice)`` for every slice ``read(block)`` yields, block after block, the next
    ``ahead`` slices read in a thread meanwhile (Parquet decoding releases the GIL, so it
    overlaps the caller's work). The one thread advances the readers one slice at a time."""
    slices = ((block, part) for block in blocks for part in read(block))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssae-read") as pool:
        pending: deque[Future] = deque()
        try:
            while True:
                while len(pending) <= ahead:
                    pending.append(pool.submit(next, slices, _DONE))
                item = pending.popleft().result()
                if item is _DONE:
                    return
                yield item
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            slices.close()


@dataclass
class ShiftMoments:
    """Streaming statistics of shifts in float64: count, mean [D] and the sum of squared
    deviations from the mean over all entries; merged block by block (Chan et al.), which is
    exact and does not lose precision to a large mean as sum-of-squares formulas do."""

    count: int = 0
    mean: np.ndarray | None = None
    sq_deviation: float = 0.0
    layer_sq: float = 0.0  # sum over shifts of ||layer_norm(delta)||^2

    def add(self, delta_ND: np.ndarray, mode: str) -> None:
        if not len(delta_ND):
            return
        n = len(delta_ND)
        block_mean = delta_ND.mean(axis=0, dtype=np.float64)
        block_sq = float(((delta_ND - block_mean) ** 2).sum())
        if mode == "layer":
            x, _ = Normalizer("layer", np.zeros(0, np.float32), 1.0)(torch.from_numpy(delta_ND))
            self.layer_sq += float(x.double().pow(2).sum())
        if self.mean is None:
            self.count, self.mean, self.sq_deviation = n, block_mean, block_sq
            return
        total = self.count + n
        gap = block_mean - self.mean
        self.sq_deviation += block_sq + float(gap @ gap) * self.count * n / total
        self.mean = self.mean + gap * (n / total)
        self.count = total

    def x_rms(self, normalizer: Normalizer) -> float:
        """sqrt(mean ||normalizer(delta)||^2) over the shifts, from the statistics alone."""
        mean_sq = self.sq_deviation / self.count
        if normalizer.mode == "global":
            offset = self.mean - normalizer.mean.astype(np.float64)
            return math.sqrt(mean_sq + float(offset @ offset)) / normalizer.scale
        if normalizer.mode == "layer":
            return math.sqrt(self.layer_sq / self.count)
        return math.sqrt(mean_sq + float(self.mean @ self.mean))


@dataclass
class StreamedShifts:
    """What training streams: the blocks, how to select and normalise their rows, the held-out
    shifts (normalised, in memory) and the statistics of the training shifts."""

    source: ShardSource
    normalizer: Normalizer
    x_val: torch.Tensor
    x_rms: float
    num_train: int
    dim: int
    rows_per_buffer: int
    batch_size: int
    holdout_fraction: float
    data_sha256: str
    outlier_threshold: float | None = None
    """Raw shift norm above which pairs are dropped (None: none)."""
    num_outliers: int = 0
    """Training pairs dropped as outliers."""
    eval_rows: int | None = 8192
    """Held-out shifts are evaluated in chunks of this many rows."""

    def buffer_sizes(self) -> list[int]:
        return buffer_sizes(self.num_train, self.rows_per_buffer, self.batch_size)

    def buffers(self, epoch: int) -> Iterator[torch.Tensor]:
        """The normalised training shifts of epoch ``epoch``, buffer by buffer (see the module
        docstring); the next buffer is read in a background thread while one trains, so a
        caller that drops each buffer before asking for the next holds at most two."""
        order = np.random.default_rng([ORDER_SEED, epoch]).permutation(len(self.source.blocks))
        chunks = self._training_rows(order)
        raw = _cut(chunks, self.buffer_sizes(), self.dim, self.source.path)

        def next_buffer() -> torch.Tensor:
            return self.normalizer.apply_(torch.from_numpy(next(raw)))

        count = len(self.buffer_sizes())
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssae-stream")
        try:
            pending = pool.submit(next_buffer)
            for k in range(count):
                buffer = pending.result()
                if k + 1 < count:
                    pending = pool.submit(next_buffer)
                yield buffer
                del buffer
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            raw.close()
            chunks.close()

    def _training_rows(self, order: np.ndarray) -> Iterator[np.ndarray]:
        blocks = [self.source.blocks[k] for k in order]
        read = functools.partial(self.source.training_shifts, fraction=self.holdout_fraction)
        for _, delta in read_ahead(blocks, read):
            if len(delta):
                yield delta


def _floats(table: pa.Table, name: str, block: Block) -> np.ndarray:
    """A z column as float32 [n, D]: a view of Arrow's memory for fixed-size lists, else the
    checked copy :func:`ssae_core.io.embedding_rows` makes."""
    column = table.column(name)
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type) and not array.null_count:
        values = array.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(len(array), array.type.list_size)
    return float_matrix(column, block.file, name)


@dataclass
class ShardSource:
    """An embedding table on disk to stream: its files, their blocks and metadata, which rows
    train (``split``, or ``all``) and the pairs read backwards (``reverse``)."""

    path: str
    files: list[Path]
    blocks: list[Block]
    embedding_bytes: int
    """Uncompressed bytes of the z and z_tilde columns: what loading them takes."""
    concepts: list[str] | None
    metadata: dict[str, str]
    split: str = "train"
    reverse: Reversal | None = None
    flips: np.ndarray | None = None
    outlier_limit: float | None = None
    """Raw shift norm above which a pair is left out of training and held-out shifts alike
    (set by :meth:`prepare` from ``drop_outliers``)."""

    @classmethod
    def open(
        cls, path: str | os.PathLike, *, split: str = "train", reverse: Reversal | None = None
    ) -> ShardSource:
        """Read the files' metadata only (schemas, row groups) and check them."""
        files, schemas, blocks, size = open_embeddings(path)
        concepts, metadata = decode_metadata(schemas[0])
        metadata = {k: v for k, v in metadata.items() if k not in LABEL_KEYS}
        if reverse is not None:
            metadata |= {
                "reversed_fraction": str(reverse.fraction),
                "reverse_seed": str(reverse.seed),
            }
        return cls(str(path), files, blocks, size, concepts, metadata, split, reverse)

    @property
    def num_rows(self) -> int:
        return sum(b.rows for b in self.blocks)

    def _flips(self) -> np.ndarray:
        """Which pair ids read backwards: the draws of ``reoriented`` (one per id up to the
        largest), computed once from the ``pair_id`` column of every block."""
        if self.flips is None:
            largest = -1
            for block in self.blocks:
                for part in read_slices(block, ("pair_id",)):
                    ids = part.column("pair_id")
                    if len(ids) and pc.min(ids).as_py() < 0:
                        raise InputError(
                            f"{block.file}: reading pairs backwards needs pair ids >= 0; "
                            "renumber the table"
                        )
                    largest = max(largest, pc.max(ids).as_py() if len(ids) else -1)
            self.flips = flipped_ids(largest + 1, self.reverse.fraction, self.reverse.seed)
        return self.flips

    def training_shifts(self, block: Block, fraction: float) -> Iterator[np.ndarray]:
        """The raw training shifts of one block, slice by slice (its selected rows that are not
        held out at ``fraction``), without the checks :meth:`prepare` made: the fast read of
        every epoch."""
        for table in read_slices(block, EMBEDDING_COLUMNS):
            pair_id = table.column("pair_id").to_numpy()
            keep = ~held_out(pair_id, fraction)
            if self.split != "all":
                keep &= pc.equal(table.column("split"), self.split).to_numpy(zero_copy_only=False)
            delta = (_floats(table, "z_tilde", block) - _floats(table, "z", block))[keep]
            if self.reverse is not None:
                delta[self._flips()[pair_id[keep]]] *= -1
            if self.outlier_limit is not None:
                delta = delta[~outliers.above(delta, self.outlier_limit)]
            yield delta

    def _outlier_limit(self, fraction: float, factor: float) -> float:
        """``factor`` x the median norm of the training shifts (a pass over every block that
        keeps 4 bytes a pair)."""
        self.outlier_limit = None
        parts = [
            outliers.norms(delta).astype(np.float32)
            for block in self.blocks
            for delta in self.training_shifts(block, fraction)
        ]
        median = float(np.median(np.concatenate(parts))) if parts else 0.0
        return factor * median if median > 0 else float("inf")

    def selected(self, rows: EmbeddingRows) -> tuple[np.ndarray, np.ndarray]:
        """The pair ids and raw shifts [n, D] (float32; reversed pairs negated) of the rows that
        train: those of ``split`` (every row for ``all``), held-out rows included."""
        keep = slice(None) if self.split == "all" else rows.split == self.split
        pair_id, delta = rows.pair_id[keep], rows.z_tilde[keep] - rows.z[keep]
        if self.reverse is not None:
            delta[self._flips()[pair_id]] *= -1
        return pair_id, delta

    def prepare(
        self,
        normalize: str,
        val_fraction: float,
        rows: int,
        batch_size: int,
        drop_outliers: float = 0.0,
    ) -> StreamedShifts:
        """One pass over every block: checks, held-out shifts, normaliser and x_rms; with
        ``drop_outliers``, a pass before it finds the median training shift norm, and pairs above
        ``drop_outliers`` x that are left out of both (:mod:`ssae_core.outliers`)."""
        fraction = min(val_fraction, rows / self.num_rows)
        limit = self._outlier_limit(fraction, drop_outliers) if drop_outliers else None
        dropped = 0
        moments, held, splits, dim, ids = ShiftMoments(), [], set(), None, []
        digest = hashlib.sha256()
        for block, part in read_ahead(self.blocks, block_rows):
            if dim is None and len(part.pair_id):
                dim, first = part.z.shape[1], block.file
            elif len(part.pair_id) and part.z.shape[1] != dim:
                raise width_error(self.path, block.file, part.z.shape[1], first, dim)
            splits |= set(part.split.tolist())
            ids.append(part.pair_id)  # 8 bytes a pair: checked for repeats at the end
            pair_id, delta = self.selected(part)
            check_shifts(delta, pair_id, normalize, block.file)
            digest.update(pair_id.astype("<i8").tobytes())
            digest.update(np.ascontiguousarray(delta, "<f4").tobytes())
            mask = held_out(pair_id, fraction)
            if limit is not None:
                flagged = outliers.above(delta, limit)
                dropped += int((flagged & ~mask).sum())
                delta, mask = delta[~flagged], mask[~flagged]
            moments.add(delta[~mask], normalize)
            held.append(delta[mask])
        require_unique_ids(np.concatenate(ids), self.path)
        del ids
        self.outlier_limit = limit
        _check_rows(self, moments, splits)
        normalizer = Normalizer.from_moments(
            normalize, moments.mean, moments.sq_deviation, moments.count
        )
        val = np.concatenate(held)
        del held  # the held-out shifts are in memory once, normalised where they lie
        x_val = normalizer.apply_(torch.from_numpy(val))
        return StreamedShifts(
            self, normalizer, x_val, moments.x_rms(normalizer), moments.count, int(dim), rows,
            batch_size, fraction, digest.hexdigest(), limit, dropped,
        )  # fmt: skip


def _check_rows(source: ShardSource, moments: ShiftMoments, splits: set[str]) -> None:
    if moments.count == 0 and source.split != "all" and source.split not in splits:
        raise InputError(
            f"{source.path}: no rows with split '{source.split}' (splits present: "
            f"{', '.join(sorted(map(str, splits)))}); choose one with --split, or --split all"
        )
    if moments.count < 4:
        raise InputError(
            f"training needs at least 4 shifts of shape [N, D]; {source.path} has "
            f"{moments.count} training shift(s) in split '{source.split}'"
        )
    if moments.sq_deviation == 0 and not moments.mean.any():
        raise InputError(
            f"all {moments.count} training shifts are zero (z_tilde == z in every pair): nothing "
            "to learn; check that the pairs hold different texts"
        )
