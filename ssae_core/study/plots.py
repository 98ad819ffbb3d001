"""Every row of the plot tables under metrics/plots/ (declared under ``plots:`` in dvc.yaml).

Each function turns one metrics structure into rows (dicts, in column order) for
:func:`ssae_core.io.write_csv`; :func:`write_plots` writes the tables of one stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from ssae_core.evaluation.steering_accuracy import MEAN_DIFFERENCE
from ssae_core.figures import (
    STATUS_SUFFIX,
    PlotDefinition,
    read_plot_table,
    render_plot,
    shared_domains,
)
from ssae_core.io import write_csv
from ssae_core.record import NO_ADMISSIBLE_MODEL
from ssae_core.study.layout import StudyLayout
from ssae_core.study.usability import missing_reason

STEERING_METHODS = ("ssae", "aff", MEAN_DIFFERENCE)
SSAE_STATUS = "ssae" + STATUS_SUFFIX
"""The plot tables' column that says why a row has no SSAE value (empty where it has one)."""
UDR_GRID_COLUMNS = (
    "set",
    "budget_ratio",
    "lr",
    "decoder_udr",
    "codes_udr",
    "mcc",
    "usable",
    "selected",
)


def synthetic_mcc_rows(synthetic: Mapping) -> list[dict]:
    """identifiability_mcc.csv: held-out MCC vs the true shifts per synthetic cell and method."""
    rows = []
    for data, methods in synthetic.items():
        for latent in methods.get("ssae", {}):
            row = {"cell": f"{data} m={latent[1:]}"}
            for method in ("ssae", "aff"):
                row[method] = methods.get(method, {}).get(latent, {}).get("mcc", {}).get("mean", "")
            rows.append(row)
    return rows


def _udr_or_blank(scores: Mapping) -> object:
    return scores["decoder_mcc"]["udr"] if "decoder_mcc" in scores else ""


def llm_udr_rows(layers: Mapping[str, Mapping]) -> list[dict]:
    """identifiability_llm.csv: decoder UDR per layer and pair set (and its entangled variant);
    the SSAE value only where its entry is admissible (the report's rule), ``ssae_status`` says
    why it is blank (``no admissible model`` and the members' statuses)."""
    rows = []
    for key, llm in layers.items():
        for part, suffix in (("sets", ""), ("entangled", " entangled")):
            for name, methods in llm[part].items():
                reason = missing_reason(methods["ssae"])
                ssae = "" if reason else _udr_or_blank(methods["ssae"])
                aff = _udr_or_blank(methods["aff"])
                rows.append(
                    {
                        "data": f"{name}{suffix} @{key}",
                        "ssae": ssae,
                        "aff": aff,
                        SSAE_STATUS: reason,
                    }
                )
    return rows


def udr_grid_rows(udr: Mapping) -> list[dict]:
    """udr_grid.csv: every grid cell's scores at every layer, the selected cell flagged."""
    rows = []
    for key, name, entry in (
        (key, name, entry)
        for key, layer in udr["layers"].items()
        for name, entry in layer["sets"].items()
    ):
        chosen = entry["selected"] and (entry["selected"]["lr"], entry["selected"]["budget_ratio"])
        for cell in entry["cells"]:
            values = (
                f"{name} @{key}",
                cell["budget_ratio"],
                cell["lr"],
                cell["decoder_mcc"]["udr"],
                cell["codes_mcc"]["udr"],
                cell.get("mcc", {}).get("mean", ""),
                int(cell["usable"]),
                int((cell["lr"], cell["budget_ratio"]) == chosen),
            )
            rows.append(dict(zip(UDR_GRID_COLUMNS, values, strict=True)))
    return rows


def steering_rows(summary: Mapping) -> list[dict]:
    """steering.csv: mean steered cosine per layer, evaluation and method, with the identity
    baseline; ``ssae_status`` is ``no admissible model`` where the set has no SSAE model."""
    rows = []
    for layer, part, results in (
        (layer, part, results)
        for layer, parts in summary["layers"].items()
        for part, results in parts.items()
    ):
        for key, result in results.items():
            label = key if part == "in_distribution" else f"OOD {key}"
            row = {
                "evaluation": f"{label} @{layer}",
                "identity": result[MEAN_DIFFERENCE]["identity"]["mean"],
            }
            row.update(
                {m: result.get(m, {}).get("steered", {}).get("mean", "") for m in STEERING_METHODS}
            )
            rows.append({**row, SSAE_STATUS: "" if row["ssae"] != "" else NO_ADMISSIBLE_MODEL})
    return rows


BEHAVIOUR_MEASURES = {"truthfulqa": ("accuracy",), "language": ("concept", "fluency")}
"""The measures of each behaviour's training sweep drawn against the strength."""


def behaviour_rows(results: dict, part: str) -> list[dict]:
    """Rows of a wide plot table of one behaviour's TRAINING sweep, one per strength (0 = the
    unsteered model): ``strength`` and, per method and measure, ``METHOD_MEASURE`` (MC1
    ``accuracy``; language ``concept`` share and ``fluency`` share, the concept-vs-fluency
    trade-off). A method without a model (a set with no admissible SSAE cell) has empty cells, so
    every plot's columns exist, and ``ssae_status`` says ``no admissible model`` then."""
    sweep = results[part]["train_sweep"]
    by_strength: dict[float, dict] = {}
    for entry in sweep:
        row = by_strength.setdefault(entry["strength"], {"strength": entry["strength"]})
        for measure in BEHAVIOUR_MEASURES[part]:
            row[f"{entry['method']}_{measure}"] = entry[measure]
    methods = list(dict.fromkeys([*STEERING_METHODS, *(e["method"] for e in sweep)]))
    columns = [f"{m}_{k}" for m in methods for k in BEHAVIOUR_MEASURES[part]]
    status = "" if any(e["method"] == "ssae" for e in sweep) else NO_ADMISSIBLE_MODEL
    return [
        {"strength": s, **{c: row.get(c, "") for c in columns}, SSAE_STATUS: status}
        for s, row in sorted(by_strength.items())
    ]


def write_plots(layout: StudyLayout, tables: Mapping[str, list[dict]]) -> None:
    """Write ``{name: rows}`` as metrics/plots/NAME.csv."""
    for name, rows in tables.items():
        write_csv(rows, layout.plot(name))


BEHAVIOUR_PARTS = ("truthfulqa", "language")


def behaviour_tables(layers: Mapping[str, dict]) -> dict[str, list[dict]]:
    """``{behaviour/PART_LAYER: rows}`` of every layer's behavioural evaluation."""
    return {
        f"behaviour/{part}_{key}": behaviour_rows(results, part)
        for key, results in layers.items()
        for part in BEHAVIOUR_PARTS
    }


TEMPLATE_KINDS = {
    "bar_horizontal": "bars",
    "bars_grouped": "grouped_bars",
    "udr_heatmap": "heatmap",
    "lines_std": "lines",
}
"""The figure kind (:mod:`ssae_core.figures`) that draws what each dvc.yaml template draws."""


def _columns_of(value: object) -> tuple[str | None, object]:
    """(file, column(s)) of a dvc.yaml plot's ``x`` or ``y``: ``{file: columns}`` or ``columns``."""
    if isinstance(value, Mapping):
        ((path, columns),) = value.items()
        return path, columns
    return None, value


def declared_plots(dvc_yaml: Path) -> list[tuple[str, Path, dict]]:
    """Every plot dvc.yaml declares that a figure kind can draw: (name, its CSV table, the
    :func:`ssae_core.figures.render_csv_plot` arguments)."""
    plots = []
    for entry in yaml.safe_load(dvc_yaml.read_text()).get("plots") or []:
        ((name, spec),) = entry.items()
        kind = TEMPLATE_KINDS.get((spec or {}).get("template", ""))
        if kind is None:
            continue
        x_file, x = _columns_of(spec.get("x"))
        y_file, y = _columns_of(spec.get("y"))
        table = Path(x_file or y_file or name)
        arguments = {"title": spec.get("title", name), "kind": kind, "x": x, "y": y}
        arguments |= {k: spec[k] for k in ("x_label", "y_label") if k in spec}
        plots.append((name, table, arguments))
    return plots


def _figure_name(name: str, table: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", Path(name).stem if name == str(table) else name)
    return slug.strip("_").lower()


def render_figures(layout: StudyLayout, dvc_yaml: Path) -> list[tuple[str, Path]]:
    """Every declared plot whose table exists, as metrics/figures/NAME.png: (title, path).
    Figures of one kind share their value axis (:func:`ssae_core.figures.shared_domains`)."""
    plots = {}
    for name, table, arguments in declared_plots(dvc_yaml):
        if (layout.root / table).is_file():
            rows = read_plot_table(layout.root / table)
            plots[_figure_name(name, table)] = PlotDefinition(rows=rows, **arguments)
    written = []
    for name, plot in shared_domains(plots).items():
        written.append((plot.title, render_plot(plot, layout.figure(name))))
    return written
