"""Plots as PNG or SVG files, without a browser or a network: Vega-Lite specs rendered by
vl-convert (``vl-convert-python``, which bundles Vega, Vega-Lite and its fonts' fallbacks; it is
told to load no URL at all, so a plot can never fetch anything).

A plot is a :class:`PlotDefinition`: a title, a ``kind``, the ``x`` and ``y`` columns and the rows
of its table (:func:`read_plot_table` reads a CSV). Each kind draws what the DVC template of the
same purpose draws for one revision (``dvc plots show`` keeps using the templates):

- ``bars``: one horizontal bar per row, length = the ``x`` column, label = the ``y`` column
  (DVC's ``bar_horizontal``);
- ``grouped_bars``: per category (the ``x`` column, one row each), one bar per value column in
  ``y``; a column named ``identity`` or ``unsteered`` is the baseline, a black tick from which
  the other bars start (``.dvc/plots/bars_grouped.json``);
- ``heatmap``: ``x`` and ``y`` as ordinal axes, colour and number = the ``value`` column, one
  panel per value of ``facet``; the row whose ``selected`` column is 1 is framed in black and
  rows whose ``usable`` column is 0 are starred (``.dvc/plots/udr_heatmap.json``);
- ``lines``: one line per column of ``y`` against a numeric ``x``, +-1 std error bars from the
  column ``NAME_std`` where it exists; series are named without a ``_fraction``,
  ``_perplexity`` or ``_accuracy`` suffix and the baseline is dashed
  (``.dvc/plots/lines_std.json``).

Every kind draws only admissible values: a row whose ``METHOD_status`` column is not empty (the
plot tables write ``ssae_status``: ``no admissible model`` and the members' statuses, the
report's words of :mod:`ssae_core.record`) has no value of that method, and a missing value is
marked by that text, never silently absent; a legend lists only series with values and the
subtitle names a series without any. The value axis spans at least [0, 1]
(:data:`UNIT_DOMAIN`) and :func:`shared_domains` gives every chart of one kind the same one.

:func:`render_plot` writes the picture (``.png`` or ``.svg``, by the file's suffix) atomically;
:func:`render_csv_plot` does the same from a CSV path.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.io import atomic_file
from ssae_core.record import INFEASIBLE, NO_ADMISSIBLE_MODEL, NOT_CONVERGED, SLACK, UNUSABLE

KINDS = ("bars", "grouped_bars", "heatmap", "lines")
BASELINES = ("identity", "unsteered")
SERIES_COLOURS = {
    "ssae": "#945dd6",
    "aff": "#13adc7",
    "md": "#f46837",
    "identity": "#333333",
    "unsteered": "#333333",
}
"""The templates' colours of the known series, in legend order."""
OTHER_COLOURS = ("#48bb78", "#4299e1", "#718096", "#d53f8c", "#38a169")
SERIES_SUFFIX = re.compile(r"_(fraction|perplexity|accuracy)$")
STD_SUFFIX = "_std"
STATUS_SUFFIX = "_status"
"""``METHOD_status``: why a row has no value of that method (empty where it has one)."""
NO_VALUE = "no value"
"""The mark of a missing value of a method other than SSAE (without a status column)."""
UNIT_DOMAIN = (0.0, 1.0)
"""Every value axis spans at least [0, 1] (MCC, UDR, cosines, shares, accuracies, flip rates):
charts of one kind, and any two charts of bounded measures, compare by eye."""
NOTE_COLOUR = "#666666"
WIDTH = 520
PNG_SCALE = 1.5
NO_URLS: list[str] = []  # vl-convert's allowed_base_urls: no data, image or font URL is loaded


@dataclass(frozen=True)
class PlotDefinition:
    """One plot: what it shows and the rows of its table (values as read from CSV: strings are
    parsed as numbers where they are numbers, empty strings are missing values)."""

    title: str
    kind: str
    x: str
    y: str | Sequence[str]
    rows: Sequence[Mapping[str, object]]
    x_label: str | None = None
    y_label: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    """Heatmap columns other than x and y: ``value`` (default ``decoder_udr``), ``facet``
    (``set``), ``selected`` (``selected``), ``active`` (``usable``)."""
    domain: Sequence[float] | None = None
    """The value axis [low, high]; None: :func:`value_domain` of this plot alone."""

    @property
    def y_columns(self) -> list[str]:
        return [self.y] if isinstance(self.y, str) else list(self.y)


HEATMAP_DEFAULTS = {
    "value": "decoder_udr",
    "facet": "set",
    "selected": "selected",
    "active": "usable",
}


def read_plot_table(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a plot table (CSV with a header line)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read it ({exc.strerror}); run the stage that writes it"
        ) from None
    if not rows:
        raise InputError(f"{path}: has no rows; run the stage that writes it")
    return rows


def _number(value: object) -> object:
    """A CSV value as a number where it is one; '' and non-finite numbers are None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else None


def _method(column: str) -> str:
    """The method a value column belongs to: ``ssae`` of ``ssae``, ``ssae_accuracy``, ..."""
    return column.split("_", 1)[0]


def shown_value(row: Mapping[str, object], column: str) -> tuple[float | None, str]:
    """(the value a figure draws, None where there is none; the note that marks a missing one).
    A row whose ``METHOD_status`` is not empty has no value of that method (the report's rule:
    only admissible SSAE values are shown) and the status is its note."""
    status = str(row.get(_method(column) + STATUS_SUFFIX) or "").strip()
    value = _number(row[column])
    if status:
        return None, status
    if isinstance(value, float):
        return value, ""
    return None, NO_ADMISSIBLE_MODEL if _method(column) == "ssae" else NO_VALUE


def _columns(plot: PlotDefinition) -> list[str]:
    """Every column the plot reads (the optional ones only where the table has them)."""
    needed = [plot.x, *plot.y_columns]
    if plot.kind == "heatmap":
        options = {**HEATMAP_DEFAULTS, **plot.options}
        needed.append(options["value"])
    return needed


def check_plot(plot: PlotDefinition) -> None:
    """The kind must be known and every column the plot reads must be in its table."""
    if plot.kind not in KINDS:
        raise InputError(f"plot {plot.title!r}: kind {plot.kind!r}; use one of {', '.join(KINDS)}")
    if not plot.rows:
        raise InputError(f"plot {plot.title!r}: the table has no rows")
    have = list(plot.rows[0])
    missing = [c for c in _columns(plot) if c not in have]
    if missing:
        raise InputError(
            f"plot {plot.title!r}: column(s) {', '.join(missing)} not in its table (has "
            f"{', '.join(have)}); fix the plot definition or the table"
        )


def series_name(column: str) -> str:
    """The legend name of a value column: without a _fraction/_perplexity/_accuracy suffix."""
    return SERIES_SUFFIX.sub("", column)


def _colour_scale(names: Sequence[str]) -> dict:
    """Fixed colours for the known series (ssae, aff, md, baselines), in their order first."""
    known = [n for n in SERIES_COLOURS if n in names]
    domain = known + [n for n in dict.fromkeys(names) if n not in known]
    extra = iter(OTHER_COLOURS)
    colours = [SERIES_COLOURS.get(n) or next(extra, "#999999") for n in domain]
    return {"domain": domain, "range": colours}


def _title(plot: PlotDefinition) -> dict:
    return {"text": plot.title, "anchor": "middle", "limit": 900}


def _axis_title(label: str | None, column: str) -> str:
    return label if label is not None else column


# --------------------------------------------------------------------------- the four kinds


def _missing_series(notes: Iterable[tuple[str, str]], present: Iterable[str]) -> str:
    """``ssae: no admissible model``: every series without a value at all and why (the legend
    lists only series with values)."""
    shown = set(present)
    missing = {name: note for name, note in notes if name not in shown}
    return "; ".join(f"{name}: {note}" for name, note in missing.items())


def _with_subtitle(plot: PlotDefinition, subtitle: str) -> dict:
    return {**_title(plot), "subtitle": subtitle} if subtitle else _title(plot)


def _value_scale(plot: PlotDefinition) -> dict:
    return {"domain": list(plot.domain) if plot.domain else value_domain([plot])}


def _note_layer(offset: Mapping | None = None) -> dict:
    """Text at the start of the value axis where a value is missing (``datum.note``)."""
    encoding = {
        "x": {"value": 0},
        "text": {"field": "note", "type": "nominal"},
        "color": {"value": NOTE_COLOUR},
    }
    return {
        "transform": [{"filter": "datum.note"}],
        "mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 9, "fontStyle": "italic"},
        "encoding": {**encoding, **({"yOffset": offset} if offset else {})},
    }


def _bar_values(plot: PlotDefinition) -> list[dict]:
    """One row per category: its value (None where missing) and the note marking a missing one."""
    category = plot.y_columns[0]
    values = []
    for row in plot.rows:
        value, note = shown_value(row, plot.x)
        values.append({"category": str(row[category]), "value": value, "note": note})
    return values


def bars_spec(plot: PlotDefinition) -> dict:
    """One horizontal bar per row: length ``x``, label ``y`` (DVC's bar_horizontal); a row
    without a value is marked by its note (``no admissible model``)."""
    category = plot.y_columns[0]
    y = {"field": "category", "type": "nominal", "sort": None}
    x = {"field": "value", "type": "quantitative", "scale": _value_scale(plot)}
    valid = {"filter": "isValid(datum.value)"}
    return {
        "title": _title(plot),
        "width": WIDTH,
        "data": {"values": _bar_values(plot)},
        "encoding": {
            "y": {**y, "title": _axis_title(plot.y_label, category)},
            "x": {**x, "title": _axis_title(plot.x_label, plot.x)},
        },
        "layer": [
            {"transform": [valid], "mark": {"type": "bar", "color": SERIES_COLOURS["ssae"]}},
            {
                "transform": [valid],
                "mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 10},
                "encoding": {"text": {"field": "value", "type": "quantitative", "format": ".3f"}},
            },
            _note_layer(),
        ],
        "config": {"axisY": {"labelLimit": 260}},
    }


def _grouped_values(plot: PlotDefinition) -> list[dict]:
    """Long rows of a grouped bar plot: one per category and value column, bars starting at the
    category's baseline (the largest baseline column present; 0 without one); a missing bar is
    a row without a value whose note marks it."""
    values = []
    for row in plot.rows:
        shown = {c: shown_value(row, c) for c in plot.y_columns}
        baselines = [v for c, (v, _) in shown.items() if c in BASELINES and v is not None]
        start = max(baselines) if baselines else 0.0
        for column, (value, note) in shown.items():
            baseline = column in BASELINES
            if value is None and baseline:
                continue
            values.append(
                {
                    "category": str(row[plot.x]),
                    "series": column,
                    "value": value,
                    "start": value if baseline else start,
                    "is_baseline": baseline,
                    "note": note,
                }
            )
    return values


def grouped_bars_spec(plot: PlotDefinition) -> dict:
    """Per category (``x``), one bar per column of ``y``; a baseline column is a black tick the
    other bars start from (.dvc/plots/bars_grouped.json). A missing bar is marked by its note;
    the legend lists only series with a value."""
    values = _grouped_values(plot)
    present = [v["series"] for v in values if v["value"] is not None]
    colour = {"field": "series", "type": "nominal", "title": None}
    colour["scale"] = _colour_scale(present)
    bars = [c for c in plot.y_columns if c not in BASELINES]
    offset = {"field": "series", "sort": _colour_scale(bars)["domain"]}
    is_bar = {"filter": "!datum.is_baseline && isValid(datum.value)"}
    missing = _missing_series(((v["series"], v["note"]) for v in values), present)
    x_title = _axis_title(plot.y_label, ", ".join(plot.y_columns))
    return {
        "title": _with_subtitle(plot, missing),
        "width": WIDTH,
        "height": {"step": 16, "for": "offset"},
        "data": {"values": values},
        "encoding": {
            "y": {
                "field": "category",
                "type": "nominal",
                "sort": None,
                "title": _axis_title(plot.x_label, plot.x),
            },
            "x": {
                "field": "value",
                "type": "quantitative",
                "title": x_title,
                "scale": _value_scale(plot),
            },
            "color": colour,
        },
        "layer": [
            {
                "transform": [is_bar],
                "mark": {"type": "bar"},
                "encoding": {"yOffset": offset, "x2": {"field": "start"}},
            },
            {
                "transform": [is_bar],
                "mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 9},
                "encoding": {
                    "yOffset": offset,
                    "text": {"field": "value", "type": "quantitative", "format": ".3f"},
                    "color": {"value": "#333333"},
                },
            },
            _note_layer(offset),
            {
                "transform": [{"filter": "datum.is_baseline"}],
                "mark": {"type": "tick", "thickness": 3, "orient": "vertical", "opacity": 0.9},
            },
        ],
        "config": {"axisY": {"labelLimit": 260}, "legend": {"orient": "top"}},
    }


def _heatmap_values(plot: PlotDefinition, options: Mapping[str, str]) -> list[dict]:
    """One cell per row: its coordinates, value, panel, frame and star, and whether its number
    is drawn in white (on the darker half of the colour scale). A panel without any usable cell
    is named ``SET: no admissible model``."""
    cells = []
    for row in plot.rows:
        value = _number(row[options["value"]])
        active = _number(row.get(options["active"], 1)) != 0
        label = "n/a" if not isinstance(value, float) else f"{value:.3f}"
        cells.append(
            {
                "x": _number(row[plot.x]),
                "y": _number(row[plot.y_columns[0]]),
                "value": value,
                "panel": str(row.get(options["facet"], "")),
                "selected": _number(row.get(options["selected"], 0)) == 1,
                "active": active,
                "label": label if active else f"{label} *",
            }
        )
    admissible = {c["panel"] for c in cells if c["active"]}
    numbers = [c["value"] for c in cells if isinstance(c["value"], float)]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 0.0)
    for cell in cells:
        relative = (cell["value"] - low) / (high - low) if high > low and cell["value"] else 1.0
        cell["dark"] = isinstance(cell["value"], float) and relative < 0.55
        if cell["panel"] not in admissible:
            cell["panel"] = f"{cell['panel']}: {NO_ADMISSIBLE_MODEL}"
    return cells


def heatmap_subtitle(value_title: str) -> str:
    """The heatmap's key, in the report's words (:mod:`ssae_core.record`)."""
    return (
        f"colour and number: {value_title}; black border: selected; *: {UNUSABLE} (a member is "
        f"{SLACK} on a set that is not a control, {INFEASIBLE} or {NOT_CONVERGED})"
    )


def heatmap_spec(plot: PlotDefinition) -> dict:
    """``x`` by ``y`` cells coloured and labelled by ``value``, one panel per ``facet``; the
    selected cell framed, inactive cells starred (.dvc/plots/udr_heatmap.json)."""
    options = {**HEATMAP_DEFAULTS, **plot.options}
    cells = _heatmap_values(plot, options)
    value_title = options["value"].replace("_", " ")
    panel = {
        "width": 240,
        "height": 130,
        "encoding": {
            "x": {
                "field": "x",
                "type": "ordinal",
                "title": _axis_title(plot.x_label, plot.x),
                "axis": {"labelAngle": 0},
            },
            "y": {
                "field": "y",
                "type": "ordinal",
                "title": _axis_title(plot.y_label, plot.y_columns[0]),
                "sort": "descending",
            },
        },
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {
                        "field": "value",
                        "type": "quantitative",
                        "title": value_title,
                        "scale": {"scheme": "viridis"},
                    }
                },
            },
            {
                "transform": [{"filter": "datum.selected"}],
                "mark": {"type": "rect", "filled": False, "color": "black", "strokeWidth": 4},
            },
            {
                "mark": {"type": "text", "fontSize": 13},
                "encoding": {
                    "text": {"field": "label", "type": "nominal"},
                    "color": {
                        "condition": {"test": "datum.dark", "value": "white"},
                        "value": "black",
                    },
                },
            },
        ],
    }
    subtitle = heatmap_subtitle(value_title)
    panels = list(dict.fromkeys(c["panel"] for c in cells))
    return {
        "title": {**_title(plot), "subtitle": subtitle},
        "data": {"values": cells},
        "facet": {"field": "panel", "type": "nominal", "title": None, "sort": panels},
        "columns": 3,
        "spec": panel,
        "resolve": {"scale": {"x": "independent", "y": "independent"}},
    }


def _line_notes(plot: PlotDefinition) -> list[tuple[str, str]]:
    """(series, note) of every missing value of a line plot."""
    notes = [(series_name(c), shown_value(row, c)[1]) for c in plot.y_columns for row in plot.rows]
    return [(name, note) for name, note in notes if note]


def _line_values(plot: PlotDefinition) -> list[dict]:
    """Long rows of a line plot: one per x and column with a value, with the +-1 std band."""
    values = []
    for column in plot.y_columns:
        for row in plot.rows:
            x, (y, _) = _number(row[plot.x]), shown_value(row, column)
            if not isinstance(x, float) or y is None:
                continue
            std = _number(row.get(column + STD_SUFFIX))
            std = std if isinstance(std, float) else 0.0
            name = series_name(column)
            values.append(
                {
                    "x": x,
                    "y": y,
                    "std": std,
                    "lo": y - std,
                    "hi": y + std,
                    "series": name,
                    "is_baseline": name in BASELINES,
                }
            )
    return values


def lines_spec(plot: PlotDefinition) -> dict:
    """One line per column of ``y`` against a numeric ``x``, +-1 std bars from ``NAME_std``, the
    baseline dashed (.dvc/plots/lines_std.json). The legend lists only series with values; the
    subtitle names a series without any and why (``ssae: no admissible model``)."""
    values = _line_values(plot)
    present = list(dict.fromkeys(v["series"] for v in values))
    colour = {"field": "series", "type": "nominal", "title": None}
    colour["scale"] = _colour_scale(present)
    y_title = _axis_title(plot.y_label, ", ".join(plot.y_columns))
    return {
        "title": _with_subtitle(plot, _missing_series(_line_notes(plot), present)),
        "width": WIDTH,
        "height": 300,
        "data": {"values": values},
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "title": _axis_title(plot.x_label, plot.x)},
            "color": colour,
        },
        "layer": [
            {
                "mark": {"type": "rule", "opacity": 0.6, "clip": True},
                "encoding": {
                    "y": {"field": "lo", "type": "quantitative", "scale": _value_scale(plot)},
                    "y2": {"field": "hi"},
                },
            },
            {
                "mark": {"type": "line", "point": True, "strokeWidth": 2},
                "encoding": {
                    "y": {
                        "field": "y",
                        "type": "quantitative",
                        "title": y_title,
                        "scale": _value_scale(plot),
                    },
                    "strokeDash": {
                        "condition": {"test": "datum.is_baseline", "value": [6, 4]},
                        "value": [1, 0],
                    },
                },
            },
        ],
        "config": {"legend": {"orient": "top"}},
    }


VALUE_READERS = {
    "bars": lambda plot: [v["value"] for v in _bar_values(plot)],
    "grouped_bars": lambda plot: [v[k] for v in _grouped_values(plot) for k in ("value", "start")],
    "heatmap": lambda plot: [],
    "lines": lambda plot: [v["y"] for v in _line_values(plot)],
}
"""The numbers each kind puts on its value axis (a heatmap has none: its value is a colour; a
line's std bars are clipped to the axis, so a share of 0 +- std reads on [0, 1])."""


def value_domain(plots: Iterable[PlotDefinition]) -> list[float]:
    """One value axis for all ``plots``: their lowest and highest drawn values, widened to span
    at least :data:`UNIT_DOMAIN` (so bounded measures always read on [0, 1])."""
    numbers = [v for p in plots for v in VALUE_READERS[p.kind](p) if isinstance(v, float)]
    return [min([UNIT_DOMAIN[0], *numbers]), max([UNIT_DOMAIN[1], *numbers])]


def shared_domains(plots: Mapping[str, PlotDefinition]) -> dict[str, PlotDefinition]:
    """``plots`` with one value axis per kind: every bar chart reads on the same scale, every
    grouped bar chart on another, every line chart on a third (:func:`value_domain`)."""
    by_kind: dict[str, list[PlotDefinition]] = {}
    for plot in plots.values():
        by_kind.setdefault(plot.kind, []).append(plot)
    domains = {kind: value_domain(group) for kind, group in by_kind.items()}
    return {name: replace(plot, domain=domains[plot.kind]) for name, plot in plots.items()}


SPEC_BUILDERS = {
    "bars": bars_spec,
    "grouped_bars": grouped_bars_spec,
    "heatmap": heatmap_spec,
    "lines": lines_spec,
}


def vega_lite_spec(plot: PlotDefinition) -> dict:
    """The Vega-Lite spec of ``plot`` (its data inline; see the module docstring)."""
    check_plot(plot)
    spec = SPEC_BUILDERS[plot.kind](plot)
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", **spec}


def render_spec(spec: Mapping, path: str | os.PathLike) -> Path:
    """Write a Vega-Lite spec as a picture: PNG or SVG by the suffix of ``path`` (atomically).
    No URL is loaded: a spec that refers to one fails."""
    import vl_convert

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise InputError(f"{path}: write a .png or an .svg file")
    with atomic_file(path) as tmp:
        if suffix == ".png":
            png = vl_convert.vegalite_to_png(dict(spec), scale=PNG_SCALE, allowed_base_urls=NO_URLS)
            tmp.write_bytes(png)
        else:
            svg = vl_convert.vegalite_to_svg(dict(spec), allowed_base_urls=NO_URLS)
            tmp.write_text(svg, encoding="utf-8")
    return path


def render_plot(plot: PlotDefinition, path: str | os.PathLike) -> Path:
    """Write ``plot`` as a PNG or SVG file (by the suffix of ``path``)."""
    return render_spec(vega_lite_spec(plot), path)


def render_csv_plot(
    table: str | os.PathLike,
    path: str | os.PathLike,
    *,
    title: str,
    kind: str,
    x: str,
    y: str | Sequence[str],
    x_label: str | None = None,
    y_label: str | None = None,
    **options: str,
) -> Path:
    """:func:`render_plot` of the plot table ``table`` (a CSV file): one call per plot that
    dvc.yaml declares, with the same title, columns and labels."""
    plot = PlotDefinition(
        title, kind, x, y, read_plot_table(table), x_label, y_label, dict(options)
    )
    return render_plot(plot, path)
