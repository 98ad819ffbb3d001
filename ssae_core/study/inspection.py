"""The inspection pages of the study's selected runs (``ssae inspect`` on each): what every latent
of the selected SSAE cell of a set does, at each inspected layer, written to
metrics/inspect/SET_layer-L/ (index.html, summary.md, inspection.json)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ssae_core.config import load_config
from ssae_core.errors import InputError
from ssae_core.evaluation.inspection import InspectConfig, inspect_run, pair_texts
from ssae_core.evaluation.inspection_page import write_inspection
from ssae_core.io import load_pairs
from ssae_core.lm import loading as lm
from ssae_core.lm.layers import parse_layers
from ssae_core.runs import load_run
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.study.selection import cell_members, selected_cell
from ssae_core.study.sets import load_set


@dataclass(frozen=True)
class StudyInspectConfig:
    """params.yaml ``inspect``: which selected runs get a page (every other key is one of
    :class:`~ssae_core.evaluation.inspection.InspectConfig`'s)."""

    sets: tuple[str, ...] = ("binary",)
    """The sets whose selected SSAE run is inspected (each page steers the LM: a minute each)."""
    layers: tuple[int | str, ...] = ("final",)
    """The layers at which they are inspected (of embed.layers)."""
    page: InspectConfig = field(default_factory=InspectConfig)
    """What each page shows."""


def load_inspect_config(values: Mapping | None) -> StudyInspectConfig:
    where = "params.yaml:inspect"
    values = dict(values or {})
    own = {f.name for f in fields(StudyInspectConfig)} - {"page"}
    mine = {key: values.pop(key) for key in own if key in values}
    page = load_config(InspectConfig, values, where)
    return load_config(StudyInspectConfig, {**mine, "page": page}, where)


def inspect_study(study: StudyConfig, layout: StudyLayout, config: StudyInspectConfig) -> Path:
    """Every page of ``config`` under metrics/inspect/, and its README.md: which set and layer
    got a page and which had no usable SSAE cell to inspect. Returns the folder."""
    for name in config.sets:
        if name not in study.sets:
            raise InputError(f"inspect.sets: {name!r} is not in study.sets")
    root = layout.root / "metrics" / "inspect"
    root.mkdir(parents=True, exist_ok=True)
    lines = ["# Inspection pages of the selected SSAE runs", ""]
    source = lm.resolve_model(str(layout.lm), verbose=False)
    model = (lm.load_model(source), lm.load_tokenizer(source))  # once for every set
    for name in config.sets:
        lines += inspect_selected(study, layout, config, name, model)
    (root / "README.md").write_text("\n".join(lines) + "\n")
    return root


def inspect_selected(
    study: StudyConfig,
    layout: StudyLayout,
    config: StudyInspectConfig,
    name: str,
    model: tuple[Any, Any],
) -> list[str]:
    """The page of set ``name``'s selected SSAE run at every layer of ``config.layers``, in
    metrics/inspect/NAME_layer-L/, steering ``model`` (the LM and its tokenizer); returns one
    README line per layer."""
    texts = pair_texts(load_pairs(layout.pairs(name)))
    lines = []
    for layer in parse_layers(list(config.layers)):
        at = layout.at(layer)
        cell = selected_cell(at, name)
        out = layout.root / "metrics" / "inspect" / f"{name}_layer-{at.key}"
        if cell is None:
            print(f"inspect: {name} at layer {at.key} has no usable SSAE cell; no page")
            lines.append(
                f"- {name}, layer {at.key}: no usable SSAE cell (metrics/udr.json); no page"
            )
            continue
        members = cell_members(load_run(at.root / cell["run"]), cell["sparsity"])
        paths = {"run": cell["run"], "embeddings": at.relative(at.embeddings(name))}
        result = inspect_run(
            members,
            load_set(study, at, name),
            texts=texts,
            lm=model,
            config=config.page,
            paths={**paths, "texts": at.relative(layout.pairs(name))},
        )
        write_inspection(result, out)
        print(f"inspect: wrote {layout.relative(out)}/index.html")
        lines.append(
            f"- {name}, layer {at.key}: [{out.name}/index.html]({out.name}/index.html)"
            f" (run {cell['run']})"
        )
    return lines
