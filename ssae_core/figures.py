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

:func:`render_plot` writes the picture (``.png`` or ``.svg``, by the file's suffix) atomically;
:func:`render_csv_plot` does the same from a CSV path.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.io import atomic_file

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


def bars_spec(plot: PlotDefinition) -> dict:
    """One horizontal bar per row: length ``x``, label ``y`` (DVC's bar_horizontal)."""
    category = plot.y_columns[0]
    values = [
        {"category": str(row[category]), "value": _number(row[plot.x])}
        for row in plot.rows
        if _number(row[plot.x]) is not None
    ]
    y = {"field": "category", "type": "nominal", "sort": None}
    x = {"field": "value", "type": "quantitative"}
    return {
        "title": _title(plot),
        "width": WIDTH,
        "data": {"values": values},
        "encoding": {
            "y": {**y, "title": _axis_title(plot.y_label, category)},
            "x": {**x, "title": _axis_title(plot.x_label, plot.x)},
        },
        "layer": [
            {"mark": {"type": "bar", "color": SERIES_COLOURS["ssae"]}},
            {
                "mark": {"type": "text", "align": "left", "dx": 3, "fontSize": 10},
                "encoding": {"text": {"field": "value", "type": "quantitative", "format": ".3f"}},
            },
        ],
        "config": {"axisY": {"labelLimit": 260}},
    }


def _grouped_values(plot: PlotDefinition) -> list[dict]:
    """Long rows of a grouped bar plot: one per category and value column, bars starting at the
    category's baseline (the largest baseline column present; 0 without one)."""
    values = []
    for row in plot.rows:
        category = str(row[plot.x])
        numbers = {c: _number(row[c]) for c in plot.y_columns}
        baselines = [v for c, v in numbers.items() if c in BASELINES and v is not None]
        start = max(baselines) if baselines else 0.0
        for column, value in numbers.items():
            if isinstance(value, float):
                baseline = column in BASELINES
                values.append(
                    {
                        "category": category,
                        "series": column,
                        "value": value,
                        "start": value if baseline else start,
                        "is_baseline": baseline,
                    }
                )
    return values


def grouped_bars_spec(plot: PlotDefinition) -> dict:
    """Per category (``x``), one bar per column of ``y``; a baseline column is a black tick the
    other bars start from (.dvc/plots/bars_grouped.json)."""
    values = _grouped_values(plot)
    bars = [c for c in plot.y_columns if c not in BASELINES]
    colour = {"field": "series", "type": "nominal", "title": None}
    colour["scale"] = _colour_scale(plot.y_columns)
    offset = {"field": "series", "sort": [c for c in _colour_scale(bars)["domain"]]}
    is_bar = {"filter": "!datum.is_baseline"}
    return {
        "title": _title(plot),
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
                "title": _axis_title(plot.y_label, ", ".join(plot.y_columns)),
                "scale": {"zero": False},
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
            {
                "transform": [{"filter": "datum.is_baseline"}],
                "mark": {"type": "tick", "thickness": 3, "orient": "vertical", "opacity": 0.9},
            },
        ],
        "config": {"axisY": {"labelLimit": 260}, "legend": {"orient": "top"}},
    }


def _heatmap_values(plot: PlotDefinition, options: Mapping[str, str]) -> list[dict]:
    """One cell per row: its coordinates, value, panel, frame and star, and whether its number
    is drawn in white (on the darker half of the colour scale)."""
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
                "label": label if active else f"{label} *",
            }
        )
    numbers = [c["value"] for c in cells if isinstance(c["value"], float)]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 0.0)
    for cell in cells:
        relative = (cell["value"] - low) / (high - low) if high > low and cell["value"] else 1.0
        cell["dark"] = isinstance(cell["value"], float) and relative < 0.55
    return cells


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
    subtitle = f"colour and number: {value_title}; black border: selected; *: not active"
    panels = list(dict.fromkeys(c["panel"] for c in cells))
    return {
        "title": {**_title(plot), "subtitle": subtitle},
        "data": {"values": cells},
        "facet": {"field": "panel", "type": "nominal", "title": None, "sort": panels},
        "columns": 3,
        "spec": panel,
        "resolve": {"scale": {"x": "independent", "y": "independent"}},
    }


def _line_values(plot: PlotDefinition) -> list[dict]:
    """Long rows of a line plot: one per x and column, with the +-1 std band."""
    values = []
    for column in plot.y_columns:
        for row in plot.rows:
            x, y = _number(row[plot.x]), _number(row[column])
            if not isinstance(x, float) or not isinstance(y, float):
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
    baseline dashed (.dvc/plots/lines_std.json)."""
    values = _line_values(plot)
    colour = {"field": "series", "type": "nominal", "title": None}
    colour["scale"] = _colour_scale([series_name(c) for c in plot.y_columns])
    y_title = _axis_title(plot.y_label, ", ".join(plot.y_columns))
    return {
        "title": _title(plot),
        "width": WIDTH,
        "height": 300,
        "data": {"values": values},
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "title": _axis_title(plot.x_label, plot.x)},
            "color": colour,
        },
        "layer": [
            {
                "mark": {"type": "rule", "opacity": 0.6},
                "encoding": {
                    "y": {"field": "lo", "type": "quantitative"},
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
                        "scale": {"zero": False},
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
