"""Embedding extraction: pair tables -> embedding shards (hidden state of each text's last token).

Speed: every distinct text is embedded once per run (x and x~ of all pairs deduplicated); a batch
holds texts of similar token length, left-padded so that the last real token sits at the last
position, with position ids counted from each text's first real token; no logits are computed, and
a run that asks for block ``L`` stops the forward pass after that block.

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
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
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
    EmbeddingTable,
    PairLabels,
    decode_metadata,
    encode_metadata,
    load_pairs,
    write_parquet,
)
from ssae_core.lm import loading
from ssae_core.lm.layers import check_layer, decoder_blocks, layer_name, num_layers, text_config
from ssae_core.lm.tokens import check_template, left_pad, pad_token_id, tokenize
from ssae_core.progress import show_message, show_progress

TOKEN_POSITION = "last"
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
    "pairs_sha256",
    "shard_rows",
)


@dataclass
class EmbedConfig:
    """The ``embed`` section of params.yaml: how texts become embeddings."""

    layer: int | None = None
    """Decoder block whose output (residual stream) is taken, 0-based; null: final normed state."""
    batch_size: int = 32
    """Texts per forward pass (texts of similar length are batched together)."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    shard_rows: int = 2048
    """Pairs per output shard: the unit of resumption."""
    template: str | None = None
    """Prompt with {text}, or "chat" (the tokenizer's chat template); null: the raw text."""


# --------------------------------------------------------------------------- prompts and tokens


# --------------------------------------------------------------------------- the forward pass


class _BlockOutput(Exception):
    """Raised by a forward hook to stop the pass once the requested block has run."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def _stop_after(module: torch.nn.Module, args: Any, output: Any) -> None:
    raise _BlockOutput(output[0] if isinstance(output, tuple) else output)


@torch.inference_mode()
def last_token_states(
    model: torch.nn.Module,
    input_ids_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    layer: int | None = None,
) -> torch.Tensor:
    """Hidden state at the last position of left-padded inputs [B, d] (model dtype, model device).

    ``layer=None``: the body's ``last_hidden_state`` (after the final norm), without the LM head.
    ``layer=L``: the output of decoder block ``L``; the pass stops there.
    """
    device = next(model.parameters()).device
    input_ids_BT = input_ids_BT.to(device)
    mask_BT = mask_BT.to(device)
    # Left padding: positions must count from each text's first real token, as in an unpadded run.
    position_ids_BT = (mask_BT.cumsum(-1) - 1).clamp(min=0)
    body = model.base_model
    inputs = {
        "input_ids": input_ids_BT,
        "attention_mask": mask_BT,
        "position_ids": position_ids_BT,
        "use_cache": False,
    }
    if layer is None:
        return body(**inputs).last_hidden_state[:, -1, :]
    handle = decoder_blocks(model)[layer].register_forward_hook(_stop_after)
    try:
        body(**inputs)
    except _BlockOutput as captured:
        return captured.hidden[:, -1, :]
    finally:
        handle.remove()
    raise RuntimeError(f"decoder block {layer} did not run")  # pragma: no cover


def embed_token_ids(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    *,
    layer: int | None = None,
    batch_size: int = 32,
    pad_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Last-token states of tokenised texts as float32 [N, d], in input order.

    Texts are batched longest first (ties in input order), so a batch pads little and the result
    depends only on the inputs and ``batch_size``.
    """
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    out_ND: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids_BT, mask_BT = left_pad([token_ids[i] for i in rows], pad_id)
        states_BD = last_token_states(model, input_ids_BT, mask_BT, layer).float().cpu().numpy()
        if out_ND is None:
            out_ND = np.empty((len(token_ids), states_BD.shape[1]), dtype=np.float32)
        out_ND[rows] = states_BD
        if on_batch is not None:
            on_batch(len(rows))
    if out_ND is None:
        hidden = text_config(model.config).hidden_size
        return np.zeros((0, hidden), dtype=np.float32)
    return out_ND


def embed_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    layer: int | None = None,
    batch_size: int = 32,
    template: str | None = None,
) -> np.ndarray:
    """Embed texts with a loaded model (for notebooks): float32 [N, d], distinct texts run once."""
    check_layer(layer, num_layers(model.config), model.config.name_or_path)
    check_template(template)
    distinct = list(dict.fromkeys(texts))
    ids = tokenize(tokenizer, distinct, template=template)
    states = embed_token_ids(
        model, ids, layer=layer, batch_size=batch_size, pad_id=pad_token_id(tokenizer)
    )
    index = {text: i for i, text in enumerate(distinct)}
    return states[[index[t] for t in texts]]


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


def _check_out_dir(out: Path) -> None:
    """Refuse a folder that holds anything but shards (and hidden files): it is not ours to fill."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is a file; give a folder for the embedding shards")
    if not out.is_dir():
        return
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if not p.name.startswith(".") and not SHARD_PATTERN.fullmatch(p.name)
    )
    if foreign:
        raise InputError(
            f"{out}: holds files that are not embedding shards ({', '.join(foreign[:3])}); "
            "choose an empty or new folder"
        )


@dataclass
class _ShardPlan:
    """Which pair rows go to which shard file, and what each shard's metadata must say."""

    out: Path
    table: pa.Table
    shift: np.ndarray | None
    concepts: list[str] | None
    metadata: dict[bytes, bytes]
    shard_rows: int
    owned: list[int]

    def __post_init__(self) -> None:
        self.x = self.table.column("x").to_pylist()
        self.x_tilde = self.table.column("x_tilde").to_pylist()

    @property
    def n_shards(self) -> int:
        return math.ceil(self.table.num_rows / self.shard_rows)

    def rows(self, k: int) -> range:
        return range(k * self.shard_rows, min((k + 1) * self.shard_rows, self.table.num_rows))

    def path(self, k: int) -> Path:
        return self.out / SHARD_NAME.format(k)

    def texts(self, k: int) -> list[str]:
        """Distinct texts of shard ``k`` in order of first use (x before x~ within a pair)."""
        return list(dict.fromkeys(t for i in self.rows(k) for t in (self.x[i], self.x_tilde[i])))

    def is_current(self, k: int) -> bool:
        """Shard ``k`` exists, is readable, and was written from this table with these settings."""
        try:
            found = pq.read_metadata(self.path(k))
        except (OSError, pa.ArrowInvalid):
            return False
        meta = found.schema.to_arrow_schema().metadata or {}
        return found.num_rows == len(self.rows(k)) and all(
            meta.get(key.encode()) == self.metadata.get(key.encode()) for key in CONTENT_KEYS
        )

    def progress(self, verbose: bool) -> tuple[set[int], list[int]]:
        """(completed, pending) shards of this part; removes shards past the table's end."""
        done = {k for k in self.owned if self.is_current(k)}
        pending = [k for k in self.owned if k not in done]
        if done:
            _say(f"{self.out}: keeping {len(done)} completed shard(s)", verbose)
        if redo := sum(self.path(k).exists() for k in pending):
            _say(f"{self.out}: redoing {redo} shard(s) written with other settings", verbose)
        self.remove_beyond_end()
        return done, pending

    def remove_beyond_end(self) -> None:
        """Delete shards an older run wrote past this table's last shard."""
        if self.out.is_dir():
            for path in self.out.iterdir():
                match = SHARD_PATTERN.fullmatch(path.name)
                if match and int(match.group(1)) >= self.n_shards:
                    path.unlink(missing_ok=True)

    def read_states(self, k: int, wanted: set[str]) -> dict[str, np.ndarray]:
        """Embeddings of the ``wanted`` texts of completed shard ``k``, as it stored them."""
        rows = self.rows(k)
        shard = pq.read_table(self.path(k), columns=["z", "z_tilde"])
        found: dict[str, np.ndarray] = {}
        for column, texts in (("z", self.x), ("z_tilde", self.x_tilde)):
            flat = shard.column(column).combine_chunks().flatten().to_numpy()
            states = flat.astype(np.float32).reshape(len(rows), -1)
            for j, i in enumerate(rows):
                if texts[i] in wanted:
                    found.setdefault(texts[i], states[j])
        return found

    def write(self, k: int, states: dict[str, np.ndarray]) -> None:
        """Write shard ``k`` atomically from the embeddings of its texts."""
        rows = self.rows(k)
        part = self.table.slice(rows.start, len(rows))
        embeddings = EmbeddingTable(
            pair_id=part.column("pair_id").to_numpy().astype(np.int64),
            split=np.asarray(part.column("split").to_pylist(), dtype=object),
            z=np.stack([states[self.x[i]] for i in rows]),
            z_tilde=np.stack([states[self.x_tilde[i]] for i in rows]),
            shift=None if self.shift is None else self.shift[rows.start : rows.stop],
            concepts=self.concepts,
            labels=PairLabels.from_arrow(part, self.path(k)),
        )
        if not (np.isfinite(embeddings.z).all() and np.isfinite(embeddings.z_tilde).all()):
            raise RuntimeError(f"{self.path(k)}: the model produced NaN or inf; try dtype float32")
        write_parquet(embeddings.to_arrow().replace_schema_metadata(self.metadata), self.path(k))


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
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    template: str | None = None,
    shard_rows: int = 2048,
    num_shards: int = 1,
    shard_index: int = 0,
    progress: bool = True,
) -> Path:
    """Embed every pair of a pair table into a folder of embedding-table shards; returns the folder.

    ``model``: ``None``/``"embedded"``, a hub id or a local folder (:mod:`.loading`), pinned by
    ``revision``; ``layer``: see :mod:`.layers`; ``template``: ``"... {text} ..."``, ``"chat"``
    or ``None``. ``num_shards``/``shard_index``: run only part ``shard_index``; all parts together
    write the same folder as one run. Bad input raises :class:`InputError` before anything is
    written; an interrupted run resumes from its completed shards.
    """
    _check_arguments(batch_size, shard_rows, num_shards, shard_index, template)
    out = Path(out_dir)
    _check_out_dir(out)

    table = load_pairs(pairs)
    concepts, _ = decode_metadata(table.schema)
    shift = _shift_matrix(table, pairs)
    source = loading.resolve_model(model, revision=revision, verbose=progress)
    config = loading.load_config(source)
    layer = check_layer(layer, num_layers(config), source.name)
    torch_device = loading.resolve_device(device)
    torch_dtype = loading.resolve_dtype(dtype, torch_device)
    settings = _settings(source, layer, torch_device, torch_dtype, template, table, shard_rows)
    n_shards = math.ceil(table.num_rows / shard_rows)
    plan = _ShardPlan(
        out=out,
        table=table,
        shift=shift,
        concepts=concepts,
        metadata=encode_metadata(concepts, settings),
        shard_rows=shard_rows,
        owned=[k for k in range(n_shards) if k % num_shards == shard_index],
    )
    done, pending = plan.progress(progress)
    if not pending:
        return out
    work = _Work.of(plan, pending)
    tokenizer = loading.load_tokenizer(source)
    token_ids = dict(
        zip(work.to_compute, tokenize(tokenizer, work.to_compute, template=template), strict=True)
    )
    _check_lengths(token_ids, loading.max_positions(config), plan, pairs, source.name)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        net = loading.load_model(source, device=torch_device, dtype=torch_dtype)
        _say(
            f"embedding {len(work.to_compute)} distinct text(s) with {source.name} (layer "
            f"{layer_name(layer)}, {torch_device.type} {loading.dtype_name(torch_dtype)}) into "
            f"{len(pending)} shard(s) of {out}",
            progress,
        )
        embed = functools.partial(
            embed_token_ids,
            net,
            layer=layer,
            batch_size=batch_size,
            pad_id=pad_token_id(tokenizer),
        )
        work.run(
            plan, done, lambda texts, **kw: embed([token_ids[t] for t in texts], **kw), progress
        )
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    return out


@dataclass
class _Work:
    """What a run computes: a text is embedded in its home, the first of this part's shards that
    uses it, in a batch of that shard's new texts; later shards reuse the value (read back from
    the home shard if that one is already complete)."""

    pending: list[int]
    home: dict[str, int]
    last_use: dict[str, int]
    new_texts: dict[int, list[str]]

    @classmethod
    def of(cls, plan: _ShardPlan, pending: list[int]) -> _Work:
        home: dict[str, int] = {}
        last_use: dict[str, int] = {}
        for k in plan.owned:
            for text in plan.texts(k):
                home.setdefault(text, k)
                last_use[text] = k
        new_texts = {k: [t for t in plan.texts(k) if home[t] == k] for k in pending}
        return cls(pending, home, last_use, new_texts)

    @property
    def to_compute(self) -> list[str]:
        return [t for k in self.pending for t in self.new_texts[k]]

    def run(
        self,
        plan: _ShardPlan,
        done: set[int],
        embed: Callable[..., np.ndarray],
        progress: bool,
    ) -> None:
        """Write every pending shard; ``embed(texts, on_batch=...)`` gives their states [N, d]."""
        states: dict[str, np.ndarray] = {}
        for k in sorted(done):
            wanted = {t for t in plan.texts(k) if self.home[t] == k and self.last_use[t] > k}
            if wanted:
                states.update(plan.read_states(k, wanted))
        total = len(self.to_compute)
        with show_progress(total=total, unit="text", desc="embed", disable=not progress) as bar:
            for k in self.pending:
                bar.set_postfix_str(f"shard {k + 1}/{plan.n_shards}")
                computed = embed(self.new_texts[k], on_batch=bar.update)
                states.update(zip(self.new_texts[k], computed, strict=True))
                plan.write(k, states)
                for text in [t for t in states if self.last_use[t] <= k]:
                    del states[text]


def _check_arguments(
    batch_size: int, shard_rows: int, num_shards: int, shard_index: int, template: str | None
) -> None:
    _check_positive(batch_size=batch_size, shard_rows=shard_rows, num_shards=num_shards)
    if isinstance(shard_index, bool) or not isinstance(shard_index, int):
        shard_index = -1
    if not 0 <= shard_index < num_shards:
        raise InputError(f"shard_index: must be in 0..{num_shards - 1} (num_shards {num_shards})")
    check_template(template)


def _settings(
    source: loading.ModelSource,
    layer: int | None,
    device: torch.device,
    dtype: torch.dtype,
    template: str | None,
    table: pa.Table,
    shard_rows: int,
) -> dict[str, object]:
    """What every shard's schema metadata records (CONTENT_KEYS decide whether it is current)."""
    concepts, pair_metadata = decode_metadata(table.schema)
    return {
        "model": source.name,
        "revision": source.revision or "",
        "layer": layer_name(layer),
        "token_position": TOKEN_POSITION,
        "dtype": loading.dtype_name(dtype),
        "template": template or "",
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
