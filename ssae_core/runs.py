"""A training run on disk: embedding table in, one model folder per member out.

Layout of a run folder::

    RUN/seed-0/{model.safetensors, config.json}     one folder per member (eps-1.0_seed-0 when
    RUN/seed-1/...                                  several sparsities are stacked)
    RUN/history.csv                                 per-epoch, per-member log (dvc plots)
    RUN/run.json                                    the TrainConfig, data provenance, timing
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from ssae_core import outliers
from ssae_core.errors import InputError
from ssae_core.io import (
    EmbeddingRows,
    EmbeddingTable,
    block_rows,
    check_output,
    load_embeddings,
    open_embeddings,
    read_json,
    require_unique_ids,
    safe_output,
    stamped,
    table_writer,
)
from ssae_core.model import ShiftAutoencoder, check_shifts
from ssae_core.progress import show_message
from ssae_core.record import SLACK
from ssae_core.streaming import Reversal, ShardSource, read_ahead
from ssae_core.train import (
    TrainConfig,
    TrainResult,
    status_warnings,
    train,
)

RUN_FILE = "run.json"
HISTORY_FILE = "history.csv"
TRAIN_COMMAND = "train"
ENCODE_COMMAND = "encode"


def member_name(seed: int, eps: float, stacked_sparsities: bool) -> str:
    return f"eps-{eps:g}_seed-{seed}" if stacked_sparsities else f"seed-{seed}"


def training_rows(table: EmbeddingTable, split: str, path: object) -> EmbeddingTable:
    """The rows to train on: one split, or every row with ``split='all'``."""
    if split == "all":
        return table
    rows = table.subset(split)
    if len(rows) == 0:
        present = ", ".join(sorted({str(s) for s in table.split.tolist()}))
        raise InputError(
            f"{path}: no rows with split '{split}' (splits present: {present}); "
            "choose one with --split, or --split all"
        )
    return rows


def resolve_latent_dim(
    cfg: TrainConfig, table: EmbeddingTable | ShardSource, overcomplete: float = 1.0
) -> int:
    """``cfg.latent_dim``, or (when 0) the number of concepts in the table x ``overcomplete``."""
    if cfg.latent_dim > 0:
        return cfg.latent_dim
    if not table.concepts:
        raise InputError(
            "latent_dim=0 means 'number of concepts', but the table names none; give --latent-dim"
        )
    return max(1, round(len(table.concepts) * overcomplete))


IN_MEMORY_FACTOR = 3.5
"""GiB that training in memory takes per GiB of a table's z and z_tilde (uncompressed), above the
fixed overhead, rounded up: ``benchmarks/bench_streaming.py`` prints the measured figure ("in
memory: 3.37 GiB per GiB of z and z_tilde above it" with its defaults: 200,000 x 576, 5 seeds;
3.26 for 100,000 pairs). The table is loaded, its training split selected, the shifts taken and
normalised: copies of the data that the in-memory path holds at once."""


def choose_loading(path: str | Path, cfg: TrainConfig) -> str:
    """``memory`` or ``stream`` for the table at ``path``: ``cfg.loading``, or for ``auto``,
    stream when training in memory would take more than ``cfg.memory_budget`` GiB above the
    fixed overhead: its z and z_tilde columns (uncompressed, from the Parquet metadata alone)
    times ``IN_MEMORY_FACTOR``."""
    if cfg.loading != "auto":
        return cfg.loading
    try:
        size = ShardSource.open(path).embedding_bytes
    except InputError:  # the in-memory reader reports the problem in its own words
        return "memory"
    return "stream" if size * IN_MEMORY_FACTOR > cfg.memory_budget * 2**30 else "memory"


class TrainingData(NamedTuple):
    """What :func:`train_run` trains on: raw shifts in memory or a source to stream, and what is
    recorded about them."""

    shifts: np.ndarray | ShardSource
    table: EmbeddingTable | ShardSource  # for its concepts and metadata
    source: str
    groups: np.ndarray | None = None
    """The entity of each row where the table has labels: the held-out rows are whole ones."""


def training_data(
    embeddings: str | Path | EmbeddingTable,
    cfg: TrainConfig,
    split: str = "train",
    reverse: Reversal | None = None,
) -> TrainingData:
    """The shifts to train ``cfg`` on: a table in memory, or one on disk loaded or streamed
    (:func:`choose_loading`); ``reverse`` reads a seeded fraction of the pairs backwards, as
    :meth:`EmbeddingTable.reoriented` does."""
    if isinstance(embeddings, EmbeddingTable):
        if cfg.loading == "stream":
            raise InputError(
                "loading=stream reads an embedding table from disk: give its path, not a table"
            )
        table, source = embeddings, embeddings.metadata.get("path", "<table>")
    elif choose_loading(embeddings, cfg) == "stream":
        stream = ShardSource.open(embeddings, split=split, reverse=reverse)
        stream.metadata["loading"] = "stream"
        return TrainingData(stream, stream, str(embeddings))
    else:
        table, source = load_embeddings(embeddings), str(embeddings)
    if reverse is not None:
        table = table.reoriented(reverse.fraction, reverse.seed)
    rows = training_rows(table, split, source)
    check_shifts(rows.delta, rows.pair_id, cfg.normalize, source)
    groups = rows.labels.group if rows.labels is not None else None
    return TrainingData(rows.delta, table, source, groups)


def train_run(
    embeddings: str | Path | EmbeddingTable,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    split: str = "train",
    require_active: bool = True,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    reverse: Reversal | None = None,
    warn: bool | None = None,
) -> TrainResult:
    """Train ``cfg`` on one embedding table and write the run folder atomically.

    ``embeddings``: a table in memory, or the path of one, which is loaded or streamed from disk
    as ``cfg.loading`` says (:func:`choose_loading`; streamed runs record ``loading: stream`` in
    their provenance). ``reverse``: read a seeded fraction of the pairs backwards (as the study
    does; see :meth:`EmbeddingTable.reoriented`). ``out_dir`` must be new, empty or an earlier
    run folder (see :func:`ssae_core.io.check_output`); it is replaced only once the new run is
    complete. ``checkpoint`` (default: a hidden file beside ``out_dir``) lets an interrupted run
    resume. ``warn``: print one ``warning:`` line per member that ends off its budget (slack,
    infeasible, not converged; default: as ``progress``; warnings are no progress, so ``ssae
    train --quiet`` still prints them).
    """
    data = training_data(embeddings, cfg, split, reverse)
    cfg = replace(cfg, latent_dim=resolve_latent_dim(cfg, data.table))
    inputs = [data.source] if data.source != "<table>" else []
    out_dir = check_output(out_dir, TRAIN_COMMAND, kind="folder", inputs=inputs)
    if checkpoint is None:
        checkpoint = out_dir.parent / f".{out_dir.name}.checkpoint"
    if progress and isinstance(data.shifts, ShardSource):
        show_message(stream_note(data.shifts))
    with safe_output(out_dir, TRAIN_COMMAND, kind="folder", inputs=inputs) as tmp:
        started = time.perf_counter()
        result = train(
            data.shifts,
            cfg,
            groups=data.groups,
            checkpoint=checkpoint,
            progress=progress,
            provenance={"embeddings": data.source, "split": split, **data.table.metadata},
        )
        seconds = time.perf_counter() - started
        problems = status_warnings(result, where=str(out_dir))
        if require_active and any(m.record.status == SLACK for m in result.models):
            raise InputError(next(line for line in problems if f" is {SLACK} " in line))
        if progress if warn is None else warn:  # the study reports or gates them itself
            for line in problems:
                show_message(f"warning: {line}")
        write_run(result, cfg, tmp, seconds=seconds, concepts=data.table.concepts)
    return result


def stream_note(source: ShardSource) -> str:
    """One line on what streaming reads (and in slices of how many rows)."""
    largest = max(b.slice_rows for b in source.blocks)
    return (
        f"{source.path}: streaming {source.num_rows} pairs from {len(source.files)} file(s), "
        f"{len(source.blocks)} row group(s) ({source.embedding_bytes / 2**30:.2f} GiB of z and "
        f"z_tilde; read in slices of at most {largest} rows)"
    )


def write_run(
    result: TrainResult,
    cfg: TrainConfig,
    folder: Path,
    *,
    seconds: float,
    concepts: list[str] | None,
) -> None:
    """Model folders, history.csv and run.json of a finished training into ``folder``."""
    stacked = len(cfg.sparsities) > 1
    names = []
    for model in result.models:
        name = member_name(model.config["seed"], model.config["sparsity"] or 0.0, stacked)
        (folder / name).mkdir()
        model.config["concepts"] = concepts
        model.save(folder / name)
        names.append(name)
    with (folder / HISTORY_FILE).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    run = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "members": names,
        "epochs_run": result.stopped_epoch,
        "train_seconds": round(seconds, 3),
    }
    (folder / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")


def load_run(run_dir: str | Path) -> list[ShiftAutoencoder]:
    """Every member of a run folder, in the order training wrote them."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).exists():
        raise InputError(
            f"{run_dir}: not a run folder (no {RUN_FILE}); give a folder from ssae train"
        )
    run = read_json(run_dir / RUN_FILE)
    names = run.get("members") if isinstance(run, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InputError(
            f"{run_dir / RUN_FILE}: has no list of member folders ('members'); re-run ssae train"
        )
    return [ShiftAutoencoder.load(run_dir / name) for name in names]


def load_model(path: str | Path) -> ShiftAutoencoder:
    """One model folder; a run folder with exactly one member is accepted too."""
    path = Path(path)
    if (path / RUN_FILE).exists():
        models = load_run(path)
        if len(models) != 1:
            raise InputError(
                f"{path}: run folder has {len(models)} members; pick one, e.g. {path}/seed-0"
            )
        return models[0]
    return ShiftAutoencoder.load(path)


def encode_table(
    model_dir: str | Path, embeddings: str | Path, out_file: str | Path, *, rescale: bool = False
) -> tuple[int, int]:
    """Write the codes of every pair in ``embeddings`` as Parquet: ``pair_id``, ``split``, ``h``
    and ``outlier`` (the shift's norm exceeds the outlier threshold the model recorded in
    training, :mod:`ssae_core.outliers`: such pairs were dropped from its training shifts, and
    their codes are extrapolations). Returns the numbers of pairs and of outliers.

    Reads the table in slices and writes the codes of each slice as it goes (one row group per
    slice), so memory does not grow with the table whatever its row groups; the rows are checked
    as :func:`ssae_core.io.load_embeddings` checks them (pair ids: 8 bytes a pair, kept to refuse
    repeats). ``out_file`` must be new or an earlier output of encode; it is replaced only once
    complete.
    """
    model = load_model(model_dir)
    blocks = open_embeddings(embeddings).blocks
    ids: list[np.ndarray] = []
    flagged = 0
    with safe_output(out_file, ENCODE_COMMAND, kind="file", inputs=[model_dir, embeddings]) as tmp:
        writer = None
        try:
            for _, rows in read_ahead(blocks, block_rows):
                if not len(rows.pair_id):
                    continue  # an empty row group
                if rows.z.shape[1] != model.config["dim"]:
                    raise InputError(
                        f"{embeddings}: embeddings have width {rows.z.shape[1]} but the model at "
                        f"{model_dir} expects {model.config['dim']}; use embeddings from the same "
                        "model and layer"
                    )
                part = _codes_table(model, rows, rescale)
                flagged += int(np.sum(part.column("outlier").to_numpy()))
                if writer is None:
                    writer = table_writer(tmp, stamped(part, ENCODE_COMMAND).schema)
                writer.write_table(part)
                ids.append(rows.pair_id)
        finally:
            if writer is not None:
                writer.close()
        require_unique_ids(np.concatenate(ids), embeddings)
    return sum(len(i) for i in ids), flagged


def _codes_table(model: ShiftAutoencoder, rows: EmbeddingRows, rescale: bool) -> pa.Table:
    """The codes of some rows of an embedding table: ``pair_id``, ``split``, ``h``, ``outlier``."""
    delta_ND = rows.z_tilde - rows.z
    codes = model.encode(delta_ND, rescale=rescale).astype(np.float32)
    flat = pa.array(codes.reshape(-1), pa.float32())
    limit = model.record.outlier_threshold
    flagged = outliers.above(delta_ND, limit) if limit is not None else np.zeros(len(codes), bool)
    return pa.table(
        {
            "pair_id": pa.array(rows.pair_id, pa.int64()),
            "split": pa.array(rows.split.astype(str), pa.string()),
            "h": pa.FixedSizeListArray.from_arrays(flat, codes.shape[1]),
            "outlier": pa.array(flagged, pa.bool_()),
        }
    )


def train_timed(
    table: EmbeddingTable,
    out: Path,
    cfg: TrainConfig,
    checkpoint: Path,
    *,
    require_active: bool = False,
) -> None:
    """:func:`train_run` of one part of a pipeline stage, then one line: the part's folder name,
    method, number of members and wall time."""
    started = time.perf_counter()
    train_run(table, out, cfg, require_active=require_active, checkpoint=checkpoint)
    print(
        f"{out.name}: {cfg.method} x{len(cfg.members())} in {time.perf_counter() - started:.1f} s"
    )


def checkpoint_beside(out_dir: Path, part: str) -> Path:
    """Where the run ``part`` (a path inside ``out_dir``) keeps its checkpoint."""
    return out_dir.parent / f".{out_dir.name}-{part.replace('/', '-')}.checkpoint"
