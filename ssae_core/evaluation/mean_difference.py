"""The supervised mean-difference (MD) steering vector of an embedding table or a pair table.

The vector is :func:`~ssae_core.evaluation.steering_accuracy.mean_shift` of the chosen rows, in
raw embedding units (``multiplier=1`` adds the average shift):

- a table that labels its pairs (a ``shift`` column) and a concept: the mean of s * (z~ - z) over
  the pairs in which only that concept changes (s: the sign of its change), the MD baseline of
  the steering evaluation before it is normalised; a table with one concept uses it by default;
- a table without labels: the mean of z~ - z over its pairs (a concept is then only a name).

It is saved like learnt vectors (:func:`~ssae_core.lm.vector_files.save_steering_vector`), with
the embeddings' model, revision, layer, template and ``pairs_sha256`` (the hash of the pair table
they were read from) in its metadata, ``method = md``, the concept, the number of pairs and
``alpha_fit`` (its length: the least-squares scale of the averaged shifts along its direction).
The table is read whole by :func:`ssae_core.io.load_embeddings` (its
own size and one slice more, whatever its row groups: the concept's pairs are chosen from the
labels of every row). A pair table is embedded first by
:func:`~ssae_core.lm.embed.extract_embeddings` (the same shards ``ssae embed`` writes, in a
temporary folder), so the vector equals the one of ``ssae embed`` followed by this on the shards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ssae_core.errors import InputError
from ssae_core.evaluation.steering_accuracy import MEAN_DIFFERENCE, mean_shift
from ssae_core.io import EmbeddingTable, load_embeddings, load_pairs, parquet_files, write_parquet
from ssae_core.lm import loading
from ssae_core.lm.embed import extract_embeddings
from ssae_core.lm.layers import layer_name, num_layers, parse_layer, resolve_layer
from ssae_core.lm.steer import SteeringVector

ALL_SPLITS = "all"
PAIRS = "pairs"
EMBEDDINGS = "embeddings"
RECORDED_KEYS = ("model", "revision", "template", "token_position", "dtype")
"""Embedding-table metadata an MD vector keeps (with ``layer``)."""


def table_kind(path: str | Path) -> str:
    """``pairs`` (columns x, x_tilde) or ``embeddings`` (z, z_tilde), from the Parquet schema."""
    files = parquet_files(path)
    columns = set(pq.read_schema(files[0]).names)
    if {"x", "x_tilde"} <= columns:
        return PAIRS
    if {"z", "z_tilde"} <= columns:
        return EMBEDDINGS
    raise InputError(
        f"{path}: neither a pair table (x, x_tilde) nor an embedding table (z, z_tilde); "
        f"it has columns {sorted(columns)}"
    )


def _rows_of_split(table: EmbeddingTable, split: str, what: object) -> EmbeddingTable:
    if split == ALL_SPLITS:
        return table
    rows = table.subset(split)
    if len(rows) == 0:
        have = sorted({str(s) for s in table.split})
        raise InputError(
            f"{what}: no pairs in split {split!r} (splits: {have}); or use --split all"
        )
    return rows


def _concept(table: EmbeddingTable, concept: str | None, what: object) -> str | None:
    """The concept whose single-concept pairs to average (None: every pair)."""
    if table.shift is None:
        return None
    names = list(table.concepts or [])
    if concept is None and len(names) > 1:
        raise InputError(
            f"{what}: its pairs change the concepts {names}; pick one with --concept "
            "(the mean of every shift mixes them)"
        )
    return concept if concept is not None else (names[0] if names else None)


def mean_difference_vector(
    table: EmbeddingTable,
    *,
    concept: str | None = None,
    split: str = "train",
    layer: object = None,
    source: str = "",
) -> SteeringVector:
    """The MD vector of ``table``'s ``split`` rows (``all``: every row), see the module docstring.

    ``layer``: where the vector acts; default the layer the embeddings record (required for a
    table that records none, e.g. synthetic; must agree with a recorded one). ``source``: where
    the table came from, for the metadata.
    """
    what = source or "embedding table"
    if "layer" in table.metadata:
        at = parse_layer(table.metadata["layer"])
        if layer is not None and parse_layer(layer) != at:
            raise InputError(
                f"{what}: embeddings of layer {layer_name(at)}, not {layer}; omit --layer"
            )
    elif layer is None:
        raise InputError(
            f"{what}: the embeddings record no LM layer (synthetic data?); give the layer the "
            "vector is for (--layer)"
        )
    else:
        at = parse_layer(layer)
    rows = _rows_of_split(table, split, what)
    averaged = _concept(rows, concept, what)
    vector_D, count = mean_shift(rows, averaged, what=str(what))
    metadata = {key: table.metadata.get(key, "") for key in RECORDED_KEYS}
    how = "every pair" if averaged is None else f"the pairs in which only {averaged} changes"
    metadata |= {
        "layer": layer_name(at),
        "method": MEAN_DIFFERENCE,
        "concept": concept if concept is not None else (averaged or ""),
        "n_pairs": str(count),
        "split": split,
        "scale": f"vector = mean of z_tilde - z over {how}, raw embedding units",
        "source": source,
        # the least-squares scale of the averaged shifts along the unit vector is its length
        "alpha_fit": repr(float(np.linalg.norm(vector_D))),
    }
    if table.metadata.get("pairs_sha256"):
        metadata["pairs_sha256"] = table.metadata["pairs_sha256"]
    return SteeringVector({at: vector_D.astype(np.float32)}, metadata)


class Embedded(NamedTuple):
    """An embedding table and, when the model was at hand, its config."""

    table: EmbeddingTable
    config: Any | None


def load_or_embed(
    path: str | Path,
    *,
    lm: str | None = None,
    revision: str | None = None,
    layer: object = None,
    split: str = "train",
    template: str | None = None,
    bos: object = "auto",
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    progress: bool = True,
) -> Embedded:
    """An embedding table read from ``path``, or, for a pair table, its ``split`` pairs embedded
    by ``lm`` (default: the embedded model) at ``layer`` (default: the final normed state; a
    negative block counts from the end), with ``template`` and the ``bos`` rule
    (:func:`~ssae_core.lm.tokens.prefix_token_ids`). ``lm`` and the embedding settings apply to
    pair tables only."""
    if table_kind(path) == EMBEDDINGS:
        return Embedded(load_embeddings(path), None)
    source = loading.resolve_model(lm, revision=revision, verbose=progress)
    config = loading.load_config(source)
    block = resolve_layer(layer, num_layers(config), source.name)
    pairs = load_pairs(path)
    if split != ALL_SPLITS:
        pairs = pairs.filter(pc.equal(pairs.column("split"), split))
        if pairs.num_rows == 0:
            raise InputError(f"{path}: no pairs in split {split!r}; or use --split all")
    with tempfile.TemporaryDirectory(prefix="ssae-md-") as tmp:
        write_parquet(pairs, Path(tmp) / "pairs.parquet")
        shards = extract_embeddings(
            Path(tmp) / "pairs.parquet",
            Path(tmp) / "embeddings",
            model=lm,
            revision=revision,
            layer=block,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            template=template,
            bos=bos,
            progress=progress,
        )
        return Embedded(load_embeddings(shards), config)
