"""Embedding extraction: pair tables -> embedding shards (hidden state of each text's last token).

Speed: every distinct text is embedded once per run (x and x~ of all pairs deduplicated); a batch
holds texts of similar token length, left-padded so that the last real token sits at the last
position, with position ids counted from each text's first real token; no logits are computed.
Several layers (``layers=[15, "final"]``) are read from one forward pass (hooks on the blocks); a
run that does not ask for ``final`` stops the pass after the deepest block it asks for.

Texts are tokenised by :func:`ssae_core.lm.tokens.tokenize`: the template, then the BOS rule
(``bos``: :func:`~ssae_core.lm.tokens.prefix_token_ids`); the ids put before every text are
recorded as ``prefix_token_ids`` (a JSON list) in the metadata, beside ``template``.

Shards: pair rows ``[k * shard_rows, (k + 1) * shard_rows)`` go to ``shard-{k:05d}.parquet``, each
written atomically, with the extraction settings in its schema metadata. A run first keeps every
shard whose settings match (so an interrupted run resumes), recomputes the others, and removes
shards beyond the table's end. ``num_shards`` / ``shard_index`` split the work into parts (shard
``k`` belongs to part ``k % num_shards``) that may run at the same time into the same folder.

Reproducibility: a text is embedded in the first of the run's shards that uses it ("its home"), in a
batch made only of that shard's new texts; later shards reuse the value, reading it back from the
home shard after an interruption. Identical settings therefore give identical shards, bit for bit,
resumed or not. Runs split into parts make different batches, so they agree with a single run to
float rounding (~1e-6), not bit for bit.

Layers: with ``layer`` (one layer, or none for ``final``) the shards sit in the output folder
itself; with ``layers`` each layer has its own embedding table in a subfolder named by the layer
(``OUT/layer-15/shard-00000.parquet``, ``OUT/layer-final/...``), whose metadata ``layer`` says which
layer it holds. A shard is complete when every layer's file for it is current. :func:`layer_tables`
finds the tables of either layout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ssae_core import __version__
from ssae_core.errors import InputError
from ssae_core.io import (
    LABEL_COLUMNS,
    LABEL_KEYS,
    STAGING_TAG,
    EmbeddingTable,
    PairLabels,
    check_output,
    decode_metadata,
    encode_metadata,
    load_pairs,
    parquet_files,
    read_parquet,
    resumable_output,
    write_parquet,
)
from ssae_core.lm import loading
from ssae_core.lm.engines import (
    BatchEmbedder,
    Cluster,
    actor_count,
    check_engine,
    engine_session,
    ray_device,
    run_on_actors,
)
from ssae_core.lm.layers import (
    LAYER_FOLDER_PATTERN,
    Layer,
    check_layer,
    decoder_blocks,
    layer_folder,
    layer_name,
    layer_order,
    num_layers,
    parse_layer,
    parse_layers,
    text_config,
)
from ssae_core.lm.tokens import (
    check_template,
    left_pad,
    pad_token_id,
    parse_bos,
    prefix_token_ids,
    tokenize,
)
from ssae_core.progress import show_message, show_progress

TOKEN_POSITION = "last"
EMBED_COMMAND = "embed"
SHARD_NAME = "shard-{:05d}.parquet"
SHARD_PATTERN = re.compile(r"shard-(\d{5,})\.parquet")
# Settings that change a shard's content; a shard whose metadata differs in one of them is redone.
CONTENT_KEYS = (
    "model",
    "revision",
    "layer",
    "token_position",
    "dtype",
    "template",
    "prefix_token_ids",
    "pairs_sha256",
    "shard_rows",
)


@dataclass
class EmbedConfig:
    """The ``embed`` section of params.yaml: how texts become embeddings."""

    layer: int | None = None
    """Decoder block whose output (residual stream) is taken, 0-based; null: final normed state;
    range: [0, blocks - 1]."""
    layers: list[int | str] | None = None
    """Several layers from one forward pass, e.g. [15, final]: one table per layer in
    OUT/layer-L/ (instead of layer); null: only layer, in OUT itself."""
    batch_size: int = 32
    """Texts per forward pass (texts of similar length are batched together); range: [1, inf)."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    shard_rows: int = 2048
    """Pairs per output shard: the unit of resumption; range: [1, inf)."""
    template: str | None = None
    """Prompt with {text}, or "chat" (the tokenizer's chat template); null: the raw text."""
    bos: bool | str = "auto"
    """Put the tokenizer's BOS token before each text: auto (when it has one and neither it nor
    the chat template adds it), true (the same; no BOS token is an error) or false."""
    engine: str = "local"
    """Where the model runs: local (this process) or ray (Ray Data actors, one model each)."""
    num_actors: int | None = None
    """Ray actors (engine ray); null: one per GPU of the cluster, else its CPUs // actor_threads;
    range: [1, inf)."""
    actor_threads: int = 1
    """Torch threads of each CPU actor (engine ray); range: [1, inf)."""
    address: str | None = None
    """Ray cluster to run on, HOST:PORT of its head (engine ray); null: start a local Ray."""

    def __post_init__(self) -> None:
        self.bos = parse_bos(self.bos)
        _check_layer_choice(self.layer, self.layers)
        _check_positive(batch_size=self.batch_size, shard_rows=self.shard_rows)
        if self.layer is not None and not (isinstance(self.layer, int) and self.layer >= 0):
            raise InputError(
                f"layer={self.layer!r}: must be a block index >= 0 (null: the final normed state)"
            )
        check_engine(self.engine, self.num_actors, self.actor_threads, self.address)

    @property
    def layer_list(self) -> list[Layer]:
        """The layers this configuration reads: ``layers``, else the one ``layer``."""
        return parse_layers(self.layers if self.layers is not None else [layer_name(self.layer)])


def _check_layer_choice(layer: object, layers: object) -> None:
    """``layer`` (one table in OUT) or ``layers`` (one table per layer), not both."""
    if layers is not None:
        if layer is not None:
            raise InputError("layers: give layer (one table) or layers (one per layer), not both")
        parse_layers(layers)


# --------------------------------------------------------------------------- the forward pass


class _StopForward(Exception):
    """Raised by a forward hook to end the pass once the deepest block asked for has run."""


@torch.inference_mode()
def last_token_states_at(
    model: torch.nn.Module,
    input_ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    layers: Sequence[Layer],
) -> list[torch.Tensor]:
    """Hidden states at the last position of left-padded inputs, one [B, d] per entry of
    ``layers`` (model dtype, model device), all from one forward pass.

    A block ``L``: the output of decoder block ``L``, read by a forward hook; ``None``: the body's
    ``last_hidden_state`` (after the final norm), without the LM head. When ``None`` is not asked
    for, the pass stops after the deepest block asked for.
    """
    device = next(model.parameters()).device
    input_ids_BT = input_ids_BT.to(device)
    mask_BT = mask_BT.to(device)
    # Left padding: positions must count from each text's first real token, as in an unpadded run.
    position_ids_BT = (mask_BT.cumsum(-1) - 1).clamp(min=0)
    inputs = {
        "input_ids": input_ids_BT,
        "attention_mask": mask_BT,
        "position_ids": position_ids_BT,
        "use_cache": False,
    }
    blocks = sorted({layer for layer in layers if layer is not None})
    last_block = None if None in layers else blocks[-1]
    captured: dict[int, torch.Tensor] = {}

    def reader(index: int) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured[index] = hidden[:, -1, :].clone()
            if index == last_block:
                raise _StopForward

        return hook

    handles = [decoder_blocks(model)[i].register_forward_hook(reader(i)) for i in blocks]
    final = None
    try:
        final = model.base_model(**inputs).last_hidden_state[:, -1, :]
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i in blocks if i not in captured]
    if missing:  # pragma: no cover - a block that never ran
        raise RuntimeError(f"decoder block(s) {missing} did not run")
    return [final if layer is None else captured[layer] for layer in layers]


def last_token_states(
    model: torch.nn.Module,
    input_ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    layer: Layer = None,
) -> torch.Tensor:
    """Hidden state at the last position of left-padded inputs [B, d] at one layer
    (:func:`last_token_states_at`)."""
    return last_token_states_at(model, input_ids_BT, mask_BT, [layer])[0]


def embed_token_ids_at(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    layers: Sequence[Layer],
    *,
    batch_size: int = 32,
    pad_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Last-token states of tokenised texts at each of ``layers`` as float32 [L, N, d], texts in
    input order, one forward pass per batch.

    Texts are batched longest first (ties in input order), so a batch pads little and the result
    depends only on the inputs and ``batch_size``.
    """
    out_LND: np.ndarray | None = None
    for rows in batch_rows(token_ids, batch_size):
        states_LBD = embed_batch(model, [token_ids[i] for i in rows], layers, pad_id)
        if out_LND is None:
            shape = (len(layers), len(token_ids), states_LBD.shape[2])
            out_LND = np.empty(shape, dtype=np.float32)
        out_LND[:, rows] = states_LBD
        if on_batch is not None:
            on_batch(len(rows))
    if out_LND is None:
        hidden = text_config(model.config).hidden_size
        return np.zeros((len(layers), 0, hidden), dtype=np.float32)
    return out_LND


def batch_rows(token_ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """The batches :func:`embed_token_ids_at` runs, as row indices: longest text first (ties in
    input order), ``batch_size`` rows each."""
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def embed_batch(
    model: torch.nn.Module, token_ids: Sequence[Sequence[int]], layers: Sequence[Layer], pad_id: int
) -> np.ndarray:
    """Last-token states of one batch of tokenised texts as float32 [L, B, d] (one forward pass
    of the left-padded batch)."""
    input_ids_BT, mask_BT = left_pad(list(token_ids), pad_id)
    states = last_token_states_at(model, input_ids_BT, mask_BT, layers)
    return torch.stack(states).float().cpu().numpy()


def embed_token_ids(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    *,
    layer: Layer = None,
    batch_size: int = 32,
    pad_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Last-token states of tokenised texts at one layer as float32 [N, d], in input order
    (:func:`embed_token_ids_at`)."""
    return embed_token_ids_at(
        model, token_ids, [layer], batch_size=batch_size, pad_id=pad_id, on_batch=on_batch
    )[0]


def embed_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    layer: Layer = None,
    batch_size: int = 32,
    template: str | None = None,
    bos: object = "auto",
) -> np.ndarray:
    """Embed texts with a loaded model (for notebooks): float32 [N, d], distinct texts run once;
    tokenised as :func:`extract_embeddings` does (same template and BOS rule)."""
    check_layer(layer, num_layers(model.config), model.config.name_or_path)
    check_template(template)
    distinct = list(dict.fromkeys(texts))
    ids = tokenize(tokenizer, distinct, template=template, bos=bos)
    states = embed_token_ids(
        model, ids, layer=layer, batch_size=batch_size, pad_id=pad_token_id(tokenizer)
    )
    index = {text: i for i, text in enumerate(distinct)}
    return states[[index[t] for t in texts]]


def layer_tables(folder: str | Path) -> dict[Layer, Path]:
    """The embedding table of each layer in an extraction folder, ``{layer: path}`` (blocks in
    order, then ``None`` for ``final``): the ``layer-*`` subfolders of a run with ``layers``, or
    the folder itself (its layer read from the metadata) for a run with ``layer``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give the output folder of ssae embed")
    found: dict[Layer, Path] = {}
    for child in sorted(folder.iterdir()):
        match = LAYER_FOLDER_PATTERN.fullmatch(child.name)
        if match and child.is_dir():
            layer = parse_layer(match.group(1))
            if _recorded_layer(child) != layer_name(layer):
                raise InputError(
                    f"{child}: its shards record layer {_recorded_layer(child)}, not "
                    f"{layer_name(layer)}; re-run the extraction into a fresh folder"
                )
            found[layer] = child
    if not found:
        found[parse_layer(_recorded_layer(folder))] = folder
    return dict(sorted(found.items(), key=lambda item: layer_order(item[0])))


def _recorded_layer(folder: Path) -> str:
    """The ``layer`` the first shard of ``folder`` records in its metadata."""
    first = parquet_files(folder)[0]
    try:
        meta = pq.read_schema(first).metadata or {}
    except (OSError, pa.ArrowInvalid):
        raise InputError(f"{first}: not a readable Parquet file; re-run the extraction") from None
    if b"layer" not in meta:
        raise InputError(f"{first}: records no layer; it is not an LM embedding table")
    return meta[b"layer"].decode()


# --------------------------------------------------------------------------- shards


def _pairs_sha256(table: pa.Table, concepts: list[str] | None) -> str:
    """A fingerprint of the pair table's content (not of its file or unrelated metadata)."""
    digest = hashlib.sha256()
    digest.update(table.column("pair_id").to_numpy().astype("<i8").tobytes())
    optional = ["shift", *LABEL_COLUMNS]
    names = ["x", "x_tilde", "split", *(c for c in optional if c in table.column_names)]
    for name in names:
        digest.update(json.dumps(table.column(name).to_pylist()).encode())
    digest.update(json.dumps(concepts).encode())
    return digest.hexdigest()


def _shift_matrix(table: pa.Table, path: object) -> np.ndarray | None:
    """The ``shift`` column as float32 [N, n], or None where the pair table has none."""
    if "shift" not in table.column_names:
        return None
    try:
        values = np.asarray(table.column("shift").to_pylist(), dtype=np.float32)
    except (ValueError, TypeError):
        values = None
    if values is None or values.ndim != 2:
        raise InputError(
            f"{path}: column shift has null rows or rows of different lengths; fix the pair table"
        )
    return values


def _check_out_dir(out: Path, layered: bool, *, in_layer: bool = False) -> None:
    """Refuse a folder that holds anything but shards (with ``layered``: ``layer-*`` folders of
    shards) and hidden files (``in_layer``, a layer folder: none but staging folders): it is not
    ours to fill."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is a file; give a folder for the embedding shards")
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _is_piece(p, layered, in_layer))
    if foreign:
        kind = "per-layer folders of embedding shards" if layered else "embedding shards"
        raise InputError(
            f"{out}: holds files that are not {kind} ({', '.join(foreign[:3])}); "
            "choose an empty or new folder"
        )
    if layered:
        for child in out.iterdir():
            if LAYER_FOLDER_PATTERN.fullmatch(child.name):
                _check_out_dir(child, layered=False, in_layer=True)


def _is_piece(path: Path, layered: bool, in_layer: bool) -> bool:
    """Whether ``path`` may be in a folder of embedding shards: a shard (``layered``: a layer
    folder), a staging folder, or, outside layer folders, any hidden file. A layer folder is
    removed whole when a run no longer asks for its layer, so it may hold nothing of the user's,
    hidden or not."""
    if STAGING_TAG in path.name:
        return True
    if path.name.startswith("."):
        return not in_layer
    pattern = LAYER_FOLDER_PATTERN if layered else SHARD_PATTERN
    return bool(pattern.fullmatch(path.name)) and path.is_dir() == layered


def _holds_only_shards(folder: Path, layered: bool) -> bool:
    """Whether ``folder`` looks like an extraction written before outputs carried a marker."""
    try:
        _check_out_dir(folder, layered)
    except InputError:
        return False
    return True


@dataclass
class _ShardPlan:
    """Which pair rows go to which shard file of each layer's folder, and what each shard's
    metadata must say."""

    out: Path
    folders: dict[Layer, Path]
    table: pa.Table
    shift: np.ndarray | None
    concepts: list[str] | None
    metadata: dict[Layer, dict[bytes, bytes]]
    shard_rows: int
    owned: list[int]

    def __post_init__(self) -> None:
        self.x = self.table.column("x").to_pylist()
        self.x_tilde = self.table.column("x_tilde").to_pylist()

    @property
    def layers(self) -> list[Layer]:
        return list(self.folders)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.table.num_rows / self.shard_rows)

    def rows(self, k: int) -> range:
        return range(k * self.shard_rows, min((k + 1) * self.shard_rows, self.table.num_rows))

    def path(self, k: int, layer: Layer) -> Path:
        return self.folders[layer] / SHARD_NAME.format(k)

    def texts(self, k: int) -> list[str]:
        """Distinct texts of shard ``k`` in order of first use (x before x~ within a pair)."""
        return list(dict.fromkeys(t for i in self.rows(k) for t in (self.x[i], self.x_tilde[i])))

    def is_current(self, k: int) -> bool:
        """Shard ``k`` of every layer exists, is readable, and was written from this table with
        these settings."""
        return all(self._file_is_current(k, layer) for layer in self.layers)

    def _file_is_current(self, k: int, layer: Layer) -> bool:
        try:
            found = pq.read_metadata(self.path(k, layer))
        except (OSError, pa.ArrowInvalid):
            return False
        meta = found.schema.to_arrow_schema().metadata or {}
        wanted = self.metadata[layer]
        return found.num_rows == len(self.rows(k)) and all(
            meta.get(key.encode()) == wanted.get(key.encode()) for key in CONTENT_KEYS
        )

    def progress(self, verbose: bool) -> tuple[set[int], list[int]]:
        """(completed, pending) shards of this part; removes what an older run wrote that this
        one does not (shards past the table's end, folders of layers no longer asked for)."""
        done = {k for k in self.owned if self.is_current(k)}
        pending = [k for k in self.owned if k not in done]
        if done:
            _say(f"{self.out}: keeping {len(done)} completed shard(s)", verbose)
        redo = sum(any(self.path(k, x).exists() for x in self.layers) for k in pending)
        if redo:
            _say(f"{self.out}: redoing {redo} shard(s) written with other settings", verbose)
        self.remove_stale(verbose)
        return done, pending

    def remove_stale(self, verbose: bool) -> None:
        """Delete shards an older run wrote past this table's last shard, and (runs with
        ``layers``) the folders of layers this run does not ask for."""
        for folder in self.folders.values():
            if folder.is_dir():
                for path in folder.iterdir():
                    match = SHARD_PATTERN.fullmatch(path.name)
                    if match and int(match.group(1)) >= self.n_shards:
                        path.unlink(missing_ok=True)
        if self.out in self.folders.values() or not self.out.is_dir():
            return
        for child in sorted(self.out.iterdir()):
            if LAYER_FOLDER_PATTERN.fullmatch(child.name) and child not in self.folders.values():
                _say(f"{child}: removing a layer this run does not ask for", verbose)
                shutil.rmtree(child)

    def read_states(self, k: int, wanted: set[str]) -> dict[str, np.ndarray]:
        """Embeddings [L, d] of the ``wanted`` texts of completed shard ``k``, as it stored them."""
        rows = self.rows(k)
        found: dict[str, list[np.ndarray]] = {}
        for layer in self.layers:
            shard = read_parquet(self.path(k, layer), columns=["z", "z_tilde"])
            seen: set[str] = set()
            for column, texts in (("z", self.x), ("z_tilde", self.x_tilde)):
                flat = shard.column(column).combine_chunks().flatten().to_numpy()
                states = flat.astype(np.float32).reshape(len(rows), -1)
                for j, i in enumerate(rows):
                    if texts[i] in wanted and texts[i] not in seen:
                        seen.add(texts[i])
                        found.setdefault(texts[i], []).append(states[j])
        return {text: np.stack(values) for text, values in found.items()}

    def write(self, k: int, states: dict[str, np.ndarray]) -> None:
        """Write shard ``k`` of every layer atomically from the embeddings [L, d] of its texts."""
        rows = self.rows(k)
        part = self.table.slice(rows.start, len(rows))
        for index, layer in enumerate(self.layers):
            embeddings = EmbeddingTable(
                pair_id=part.column("pair_id").to_numpy().astype(np.int64),
                split=np.asarray(part.column("split").to_pylist(), dtype=object),
                z=np.stack([states[self.x[i]][index] for i in rows]),
                z_tilde=np.stack([states[self.x_tilde[i]][index] for i in rows]),
                shift=None if self.shift is None else self.shift[rows.start : rows.stop],
                concepts=self.concepts,
                labels=PairLabels.from_arrow(part, self.path(k, layer)),
            )
            path = self.path(k, layer)
            if not (np.isfinite(embeddings.z).all() and np.isfinite(embeddings.z_tilde).all()):
                raise RuntimeError(f"{path}: the model produced NaN or inf; try dtype float32")
            path.parent.mkdir(parents=True, exist_ok=True)
            arrow = embeddings.to_arrow().replace_schema_metadata(self.metadata[layer])
            write_parquet(arrow, path)


def _check_positive(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} {value!r}: must be an integer >= 1")


def _say(message: str, verbose: bool) -> None:
    if verbose:
        show_message(message)


def extract_embeddings(
    pairs: str | Path,
    out_dir: str | Path,
    *,
    model: str | None = None,
    revision: str | None = None,
    layer: int | None = None,
    layers: Sequence[object] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    template: str | None = None,
    bos: object = "auto",
    shard_rows: int = 2048,
    num_shards: int = 1,
    shard_index: int = 0,
    engine: str = "local",
    num_actors: int | None = None,
    actor_threads: int = 1,
    address: str | None = None,
    progress: bool = True,
) -> Path:
    """Embed every pair of a pair table into a folder of embedding-table shards; returns the folder.

    ``model``: ``None``/``"embedded"``, a hub id or a local folder (:mod:`.loading`), pinned by
    ``revision``; ``layer``: see :mod:`.layers`; ``layers``: several layers from one forward pass,
    one table per layer in ``out_dir/layer-L`` (:func:`layer_tables` finds them); ``template``:
    ``"... {text} ..."``, ``"chat"`` or ``None``; ``bos``: ``auto``, ``true`` or ``false``
    (:func:`~ssae_core.lm.tokens.prefix_token_ids`). ``num_shards``/``shard_index``: run only
    part ``shard_index``; all parts together write the same folder as one run. ``engine``:
    ``local`` (this process) or ``ray`` (``num_actors`` Ray actors of ``actor_threads`` threads,
    on the cluster at ``address`` or a local Ray instance; :mod:`.engines`), same shards. Bad
    input raises :class:`InputError` before anything is written; an interrupted run resumes from
    its completed shards.
    """
    _check_arguments(batch_size, shard_rows, num_shards, shard_index, template, layer, layers)
    check_engine(engine, num_actors, actor_threads, address)
    out = Path(out_dir)
    ours = functools.partial(_holds_only_shards, layered=layers is not None)
    _check_out_dir(out, layered=layers is not None)
    check_output(out, EMBED_COMMAND, kind="folder", inputs=[pairs], accept=ours)
    table = load_pairs(pairs)
    with engine_session(engine, address) as cluster:
        run = _prepare(
            pairs, out, table, cluster, model=model, revision=revision, layer=layer,
            layers=layers, device=device, dtype=dtype, template=template, bos=bos,
            shard_rows=shard_rows, num_shards=num_shards, shard_index=shard_index,
            progress=progress,
        )  # fmt: skip
        if not run.work.pending:
            return out
        with resumable_output(out, EMBED_COMMAND, inputs=[pairs], accept=ours):
            if cluster is None:
                _run_local(run, batch_size)
            else:
                _run_on_ray(run, cluster, batch_size, num_actors, actor_threads)
    return out


@dataclass
class _Extraction:
    """A run ready to compute: its shards, what is left to embed, and how."""

    source: loading.ModelSource
    layers: list[Layer]
    device: torch.device
    dtype: torch.dtype
    pad_id: int
    plan: _ShardPlan
    done: set[int]
    work: _Work
    token_ids: dict[str, list[int]]
    progress: bool

    def announce(self, where: str) -> None:
        _say(
            f"embedding {len(self.work.to_compute)} distinct text(s) with {self.source.name} "
            f"(layer(s) {', '.join(layer_name(x) for x in self.layers)}, {self.device.type} "
            f"{loading.dtype_name(self.dtype)}{where}) into {len(self.work.pending)} shard(s) "
            f"of {self.plan.out}",
            self.progress,
        )


def _prepare(
    pairs: object,
    out: Path,
    table: pa.Table,
    cluster: Cluster | None,
    *,
    model: str | None,
    revision: str | None,
    layer: int | None,
    layers: Sequence[object] | None,
    device: str,
    dtype: str,
    template: str | None,
    bos: object,
    shard_rows: int,
    num_shards: int,
    shard_index: int,
    progress: bool,
) -> _Extraction:
    """Resolve the model, plan the shards (keeping the completed ones) and tokenise what is
    left; the device is this machine's (engine local) or the Ray cluster's actors'."""
    source = loading.resolve_model(model, revision=revision, verbose=progress)
    config = loading.load_config(source)
    n_layers = num_layers(config)
    wanted = [layer] if layers is None else parse_layers(list(layers))
    for item in wanted:
        check_layer(item, n_layers, source.name)
    tokenizer = loading.load_tokenizer(source)
    if cluster is None:
        torch_device = loading.resolve_device(device)
    else:
        torch_device = ray_device(device, cluster)
    torch_dtype = loading.resolve_dtype(dtype, torch_device)
    settings = _settings(
        source, torch_device, torch_dtype, template, prefix_token_ids(tokenizer, bos, template),
        parse_bos(bos), table, shard_rows,
    )  # fmt: skip
    plan = _plan(out, table, pairs, wanted, layers is not None, settings, num_shards, shard_index)
    done, pending = plan.progress(progress)
    work = _Work.of(plan, pending)
    ids = tokenize(tokenizer, work.to_compute, template=template, bos=bos)
    token_ids = dict(zip(work.to_compute, ids, strict=True))
    _check_lengths(token_ids, loading.max_positions(config), plan, pairs, source.name)
    return _Extraction(
        source, wanted, torch_device, torch_dtype, pad_token_id(tokenizer), plan, done,
        work, token_ids, progress,
    )  # fmt: skip


def _run_local(run: _Extraction, batch_size: int) -> None:
    """Engine ``local``: one model in this process, one shard's new texts after another."""
    net = loading.load_model(run.source, device=run.device, dtype=run.dtype)
    run.announce("")
    embed = functools.partial(embed_token_ids_at, net, batch_size=batch_size, pad_id=run.pad_id)

    def results(on_batch: Callable[[int], None]) -> Iterator[tuple[list[str], np.ndarray]]:
        for k in run.work.pending:
            texts = run.work.new_texts[k]
            yield texts, embed([run.token_ids[t] for t in texts], run.layers, on_batch=on_batch)

    run.work.run(run.plan, run.done, results, run.progress)


def _model_embedder(
    source: loading.ModelSource,
    device: torch.device,
    dtype: torch.dtype,
    layers: list[Layer],
    pad_id: int,
) -> BatchEmbedder:
    """A batch embedder with its own copy of the model (what each Ray actor makes, once)."""
    net = loading.load_model(source, device=device, dtype=dtype)
    return functools.partial(embed_batch, net, layers=layers, pad_id=pad_id)


def _run_on_ray(
    run: _Extraction,
    cluster: Cluster,
    batch_size: int,
    num_actors: int | None,
    actor_threads: int,
) -> None:
    """Engine ``ray``: the local engine's batches, run by a pool of Ray actors; each shard is
    written here as soon as all its texts are in."""
    actors = actor_count(cluster, run.device, num_actors, actor_threads)
    jobs = [
        [texts[i] for i in rows]
        for texts in (run.work.new_texts[k] for k in run.work.pending)
        for rows in batch_rows([run.token_ids[t] for t in texts], batch_size)
    ]
    make = functools.partial(
        _model_embedder, run.source, run.device, run.dtype, run.layers, run.pad_id
    )
    run.announce(f", {actors} Ray actor(s)")

    def results(on_batch: Callable[[int], None]) -> Iterator[tuple[list[str], np.ndarray]]:
        found = run_on_actors(
            [[run.token_ids[t] for t in texts] for texts in jobs], make, actors=actors,
            threads=actor_threads, gpu=run.device.type == "cuda", num_layers=len(run.layers),
        )  # fmt: skip
        for index, states_LBD in found:
            on_batch(len(jobs[index]))
            yield jobs[index], states_LBD

    run.work.run(run.plan, run.done, results, run.progress)


def _plan(
    out: Path,
    table: pa.Table,
    pairs: object,
    wanted: list[Layer],
    layered: bool,
    settings: dict[str, object],
    num_shards: int,
    shard_index: int,
) -> _ShardPlan:
    """The shards of this part, in ``out`` itself (one layer) or in one folder per layer."""
    concepts, _ = decode_metadata(table.schema)
    shard_rows = int(settings["shard_rows"])  # type: ignore[call-overload]
    n_shards = math.ceil(table.num_rows / shard_rows)
    return _ShardPlan(
        out=out,
        folders={x: layer_folder(out, x) if layered else out for x in wanted},
        table=table,
        shift=_shift_matrix(table, pairs),
        concepts=concepts,
        metadata={
            x: encode_metadata(concepts, {**settings, "layer": layer_name(x)}) for x in wanted
        },
        shard_rows=shard_rows,
        owned=[k for k in range(n_shards) if k % num_shards == shard_index],
    )


@dataclass
class _Work:
    """What a run computes: a text is embedded in its home, the first of this part's shards that
    uses it, in a batch of that shard's new texts; later shards reuse the value (read back from
    the home shard if that one is already complete). A shard is written once every one of its
    texts is in, whichever engine computes them and in whatever order."""

    pending: list[int]
    home: dict[str, int]
    new_texts: dict[int, list[str]]

    @classmethod
    def of(cls, plan: _ShardPlan, pending: list[int]) -> _Work:
        home: dict[str, int] = {}
        for k in plan.owned:
            for text in plan.texts(k):
                home.setdefault(text, k)
        new_texts = {k: [t for t in plan.texts(k) if home[t] == k] for k in pending}
        return cls(pending, home, new_texts)

    @property
    def to_compute(self) -> list[str]:
        return [t for k in self.pending for t in self.new_texts[k]]

    def run(
        self,
        plan: _ShardPlan,
        done: set[int],
        results: Callable[[Callable[[int], None]], Iterable[tuple[list[str], np.ndarray]]],
        progress: bool,
    ) -> None:
        """Write every pending shard as soon as the states of all its texts are in.

        ``results(on_batch)`` yields ``(texts, states [L, N, d])`` for every text of
        :attr:`to_compute`, in any order, and calls ``on_batch(count)`` as it computes.
        """
        texts = {k: plan.texts(k) for k in self.pending}
        uses = Counter(t for k in self.pending for t in texts[k])
        states = self._read_back(plan, done, set(uses))
        waiting_on: dict[str, list[int]] = {}
        for k in self.pending:
            for text in texts[k]:
                if text not in states:
                    waiting_on.setdefault(text, []).append(k)
        missing = Counter(k for ks in waiting_on.values() for k in ks)
        total = len(self.to_compute)
        with show_progress(total=total, unit="text", desc="embed", disable=not progress) as bar:

            def write(ready: Iterable[int]) -> None:
                for k in sorted(ready):
                    plan.write(k, states)
                    bar.set_postfix_str(f"shard {k + 1}/{plan.n_shards}")
                    for text in texts[k]:
                        uses[text] -= 1
                        if not uses[text]:
                            del states[text]

            write(k for k in self.pending if not missing[k])
            for batch, computed_LND in results(bar.update):
                ready = []
                for i, text in enumerate(batch):
                    states[text] = computed_LND[:, i]
                    for k in waiting_on.pop(text, ()):
                        missing[k] -= 1
                        ready += [k] if not missing[k] else []
                write(ready)

    def _read_back(self, plan: _ShardPlan, done: set[int], used: set[str]) -> dict[str, np.ndarray]:
        """The stored states of the ``used`` texts whose home is a completed shard."""
        states: dict[str, np.ndarray] = {}
        for k in sorted(done):
            wanted = {t for t in plan.texts(k) if self.home[t] == k and t in used}
            if wanted:
                states.update(plan.read_states(k, wanted))
        return states


def _check_arguments(
    batch_size: int,
    shard_rows: int,
    num_shards: int,
    shard_index: int,
    template: str | None,
    layer: object,
    layers: object,
) -> None:
    _check_positive(batch_size=batch_size, shard_rows=shard_rows, num_shards=num_shards)
    if isinstance(shard_index, bool) or not isinstance(shard_index, int):
        shard_index = -1
    if not 0 <= shard_index < num_shards:
        raise InputError(f"shard_index: must be in 0..{num_shards - 1} (num_shards {num_shards})")
    check_template(template)
    _check_layer_choice(layer, layers)


def _settings(
    source: loading.ModelSource,
    device: torch.device,
    dtype: torch.dtype,
    template: str | None,
    prefix: list[int],
    bos: str,
    table: pa.Table,
    shard_rows: int,
) -> dict[str, object]:
    """What every shard's schema metadata records besides its layer (CONTENT_KEYS decide whether
    a shard is current)."""
    concepts, pair_metadata = decode_metadata(table.schema)
    return {
        "model": source.name,
        "revision": source.revision or "",
        "layer": "",  # each layer's table records its own
        "token_position": TOKEN_POSITION,
        "dtype": loading.dtype_name(dtype),
        "template": template or "",
        "prefix_token_ids": json.dumps(prefix),
        "bos": bos,
        "pairs_sha256": _pairs_sha256(table, concepts),
        "shard_rows": shard_rows,
        "num_pairs": table.num_rows,
        "device": device.type,
        "ssae_version": __version__,
        **{f"pairs.{key}": v for key, v in pair_metadata.items() if key not in LABEL_KEYS},
        **{key: v for key, v in pair_metadata.items() if key in LABEL_KEYS},
    }


def _check_lengths(
    token_ids: dict[str, list[int]],
    limit: int | None,
    plan: _ShardPlan,
    pairs: object,
    model_name: str,
) -> None:
    for text, ids in token_ids.items():
        if ids and (limit is None or len(ids) <= limit):
            continue
        row = next(i for i in range(len(plan.x)) if text in (plan.x[i], plan.x_tilde[i]))
        raise InputError(
            f"{pairs}: pair_id {plan.table.column('pair_id')[row].as_py()} has a text of "
            f"{len(ids)} tokens; model {model_name} takes 1..{limit}: shorten or drop it"
        )
