"""Plots to PNG and SVG without a browser or a network (ssae_core.figures): every kind from a
small CSV, what each spec draws, and that no URL can be loaded."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from ssae_core.errors import InputError
from ssae_core.figures import (
    KINDS,
    NO_VALUE,
    PlotDefinition,
    read_plot_table,
    render_csv_plot,
    render_plot,
    render_spec,
    vega_lite_spec,
)
from ssae_core.io import write_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TABLES = {
    "bars": [
        {"cell": "synth_3_2 m=3", "ssae": 0.99, "aff": 0.6},
        {"cell": "synth_4_3 m=4", "ssae": 0.97, "aff": 0.5},
    ],
    "grouped_bars": [
        {"evaluation": "lang", "identity": 0.77, "ssae": 0.79, "aff": 0.80, "md": 0.80},
        {"evaluation": "OOD corr->lang", "identity": 0.76, "ssae": 0.77, "aff": "", "md": 0.79},
    ],
    "heatmap": [
        {"set": s, "budget_ratio": r, "lr": lr, "decoder_udr": u, "usable": a, "selected": int(c)}
        for s in ("lang", "binary")
        for (r, lr, u, a, c) in [
            (0.25, 0.001, 0.9, 1, False), (0.5, 0.001, 0.8, 1, False),
            (0.25, 0.003, 0.95, 1, s == "lang"), (0.5, 0.003, 0.97, 0, s == "binary"),
        ]
    ],
    "lines": [
        {"alpha_multiplier": m, "unsteered_fraction": 0.0, "ssae_fraction": f,
         "ssae_fraction_std": 0.1, "md_fraction": f / 2}
        for m, f in ((-4, 0.0), (0, 0.0), (2, 0.4), (8, 0.9))
    ],
}  # fmt: skip
PLOTS = {
    "bars": {"x": "ssae", "y": "cell"},
    "grouped_bars": {"x": "evaluation", "y": ["ssae", "aff", "md", "identity"]},
    "heatmap": {"x": "budget_ratio", "y": "lr"},
    "lines": {"x": "alpha_multiplier", "y": ["ssae_fraction", "md_fraction", "unsteered_fraction"]},
}


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Python-level connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a plot tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def urls(value: object) -> list[str]:
    """Every ``url`` entry anywhere in a spec."""
    if isinstance(value, dict):
        found = [str(v) for k, v in value.items() if k == "url"]
        return found + [u for v in value.values() for u in urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in urls(v)]
    return []


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_a_png_from_a_csv(kind: str, tmp_path: Path, no_network):
    write_csv(TABLES[kind], tmp_path / "table.csv")
    out = render_csv_plot(
        tmp_path / "table.csv", tmp_path / "plot.png", title=f"a {kind} plot", kind=kind,
        x_label="the x", y_label="the y", **PLOTS[kind],
    )  # fmt: skip
    width, height = png_size(out.read_bytes())
    assert width > 200 and height > 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # written atomically
    spec = vega_lite_spec(PlotDefinition(f"a {kind} plot", kind, rows=TABLES[kind], **PLOTS[kind]))
    assert urls({k: v for k, v in spec.items() if k != "$schema"}) == []  # data inline


def test_svg_by_suffix_and_other_suffixes_refused(tmp_path: Path, no_network):
    plot = PlotDefinition("lines", "lines", rows=TABLES["lines"], **PLOTS["lines"])
    text = render_plot(plot, tmp_path / "plot.svg").read_text()
    assert text.lstrip().startswith("<svg") and "ssae" in text
    with pytest.raises(InputError, match=r"\.png or an \.svg"):
        render_plot(plot, tmp_path / "plot.jpg")


def test_no_url_is_ever_loaded(tmp_path: Path):
    spec = {
        "data": {"url": "https://example.com/plot.csv"},
        "mark": "bar",
        "encoding": {"x": {"field": "a", "type": "quantitative"}},
    }
    with pytest.raises(ValueError, match="not allowed"):
        render_spec(spec, tmp_path / "remote.png")
    assert list(tmp_path.iterdir()) == []


def test_grouped_bars_start_at_the_baseline():
    plot = PlotDefinition("s", "grouped_bars", rows=TABLES["grouped_bars"], **PLOTS["grouped_bars"])
    values = vega_lite_spec(plot)["data"]["values"]
    lang = {v["series"]: v for v in values if v["category"] == "lang"}
    assert lang["ssae"]["start"] == 0.77 and lang["identity"]["is_baseline"]
    ood = {v["series"]: v for v in values if v["category"] == "OOD corr->lang"}
    assert ood["aff"]["value"] is None and ood["aff"]["note"] == NO_VALUE  # no bar, a mark
    no_baseline = PlotDefinition(
        "s", "grouped_bars", rows=TABLES["bars"], x="cell", y=["ssae", "aff"]
    )
    assert {v["start"] for v in vega_lite_spec(no_baseline)["data"]["values"]} == {0.0}


def test_lines_carry_their_std_and_series_names():
    plot = PlotDefinition("l", "lines", rows=TABLES["lines"], **PLOTS["lines"])
    values = vega_lite_spec(plot)["data"]["values"]
    ssae = [v for v in values if v["series"] == "ssae"]
    assert [(v["lo"], v["hi"]) for v in ssae][-1] == pytest.approx((0.8, 1.0))
    assert {v["series"] for v in values} == {"ssae", "md", "unsteered"}
    assert all(v["is_baseline"] == (v["series"] == "unsteered") for v in values)


def test_heatmap_frames_the_selected_cell_and_stars_inactive_ones():
    plot = PlotDefinition("h", "heatmap", rows=TABLES["heatmap"], **PLOTS["heatmap"])
    spec = vega_lite_spec(plot)
    cells = spec["data"]["values"]
    assert spec["facet"]["sort"] == ["lang", "binary"]
    selected = [(c["panel"], c["x"], c["y"]) for c in cells if c["selected"]]
    assert selected == [("lang", 0.25, 0.003), ("binary", 0.5, 0.003)]
    assert [c["label"] for c in cells if c["label"].endswith("*")] == ["0.970 *", "0.970 *"]


def test_a_missing_column_or_kind_is_one_clear_error(tmp_path: Path):
    write_csv(TABLES["heatmap"], tmp_path / "grid.csv")
    with pytest.raises(InputError, match=r"column\(s\) sparsity not in its table \(has set, "):
        render_csv_plot(tmp_path / "grid.csv", tmp_path / "g.png", title="g", kind="heatmap",
                        x="sparsity", y="lr")  # fmt: skip
    with pytest.raises(InputError, match="kind 'pie'"):
        vega_lite_spec(PlotDefinition("p", "pie", rows=TABLES["bars"], x="ssae", y="cell"))
    with pytest.raises(InputError, match="cannot read it"):
        read_plot_table(tmp_path / "missing.csv")
    assert not (tmp_path / "g.png").exists()


def test_the_udr_grid_table_has_every_column_its_plot_and_template_read():
    import yaml

    from ssae_core.study.plots import UDR_GRID_COLUMNS

    root = Path(__file__).resolve().parents[1]
    plots = yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
    (grid,) = [p["UDR grid per pair set"] for p in plots if "UDR grid per pair set" in p]
    read = {*grid["x"].values(), *grid["y"].values()}
    template = (root / ".dvc" / "plots" / "udr_heatmap.json").read_text()
    read |= {
        c for c in ("usable", "selected", "decoder_udr", "codes_udr") if f"datum.{c}" in template
    }
    assert read <= set(UDR_GRID_COLUMNS), read - set(UDR_GRID_COLUMNS)


def test_behaviour_rows_keep_a_column_for_a_method_without_a_model():
    from ssae_core.study.plots import behaviour_rows

    sweep = [{"method": "aff", "strength": s, "accuracy": 0.3 + s} for s in (0.0, 0.5)]
    results = {"truthfulqa": {"train_sweep": sweep}}
    rows = behaviour_rows(results, "truthfulqa")  # no usable SSAE cell, no MD either
    assert rows[0]["ssae_accuracy"] == rows[0]["md_accuracy"] == ""
    assert rows[1]["aff_accuracy"] == 0.8
    assert [r["strength"] for r in rows] == [0.0, 0.5]


def test_an_unusable_ssae_row_gets_no_value_and_a_visible_mark(tmp_path: Path):
    from ssae_core.record import INFEASIBLE, NO_ADMISSIBLE_MODEL
    from ssae_core.study.plots import SSAE_STATUS, llm_udr_rows

    udr = {"decoder_mcc": {"udr": 0.9}}
    unusable = {**udr, "usable": False, "usability": [INFEASIBLE, "usable"]}
    sets = {"lang": {"ssae": unusable, "aff": udr}, "corr": {"ssae": udr, "aff": udr}}
    rows = llm_udr_rows({"15": {"sets": sets, "entangled": {}}})
    assert rows[0]["ssae"] == "" and rows[0][SSAE_STATUS] == f"{NO_ADMISSIBLE_MODEL} ({INFEASIBLE})"
    rows[0]["ssae"] = 0.95  # a value the table should not have: the figure still drops it
    for kind, x, y in (("grouped_bars", "data", ["ssae", "aff"]), ("bars", "ssae", "data")):
        spec = vega_lite_spec(PlotDefinition("u", kind, x=x, y=y, rows=rows))
        lang = [v for v in spec["data"]["values"] if v["category"] == "lang @15"]
        ssae = [v for v in lang if v.get("series", "ssae") == "ssae"]
        assert [v["value"] for v in ssae] == [None]
        assert ssae[0]["note"].startswith(NO_ADMISSIBLE_MODEL)
        texts = [layer.get("encoding", {}).get("text", {}) for layer in spec["layer"]]
        assert {"field": "note", "type": "nominal"} in texts
        render_spec(spec, tmp_path / f"{kind}.png")  # a valid spec


def test_legends_list_only_series_with_values_and_name_the_missing_one():
    from ssae_core.record import NO_ADMISSIBLE_MODEL
    from ssae_core.study.plots import behaviour_rows

    sweep = [{"method": m, "strength": s, "accuracy": 0.3} for m in ("aff", "md") for s in (0, 1)]
    rows = behaviour_rows({"truthfulqa": {"train_sweep": sweep}}, "truthfulqa")
    columns = ["ssae_accuracy", "aff_accuracy", "md_accuracy"]
    lines = vega_lite_spec(PlotDefinition("l", "lines", x="strength", y=columns, rows=rows))
    assert lines["encoding"]["color"]["scale"]["domain"] == ["aff", "md"]
    assert lines["title"]["subtitle"] == f"ssae: {NO_ADMISSIBLE_MODEL}"
    bars = [{"set": "a", "ssae": "", "aff": 0.5}, {"set": "b", "ssae": "", "aff": 0.6}]
    grouped = vega_lite_spec(PlotDefinition("g", "grouped_bars", x="set", y=["ssae", "aff"],
                                            rows=bars))  # fmt: skip
    assert grouped["encoding"]["color"]["scale"]["domain"] == ["aff"]
    assert grouped["title"]["subtitle"] == f"ssae: {NO_ADMISSIBLE_MODEL}"
    full = vega_lite_spec(PlotDefinition("l", "lines", rows=TABLES["lines"], **PLOTS["lines"]))
    assert "subtitle" not in full["title"]


def test_status_words_come_from_the_report_vocabulary():
    from ssae_core.record import INFEASIBLE, NOT_CONVERGED, SLACK, UNUSABLE

    plot = PlotDefinition("h", "heatmap", rows=TABLES["heatmap"], **PLOTS["heatmap"])
    subtitle = vega_lite_spec(plot)["title"]["subtitle"]
    assert all(word in subtitle for word in (UNUSABLE, SLACK, INFEASIBLE, NOT_CONVERGED))
    assert "active" not in subtitle


def test_a_panel_without_a_usable_cell_says_no_admissible_model():
    from ssae_core.record import NO_ADMISSIBLE_MODEL

    rows = [{**r, "usable": 0} if r["set"] == "binary" else r for r in TABLES["heatmap"]]
    spec = vega_lite_spec(PlotDefinition("h", "heatmap", rows=rows, **PLOTS["heatmap"]))
    assert spec["facet"]["sort"] == ["lang", f"binary: {NO_ADMISSIBLE_MODEL}"]


def value_scale(spec: dict) -> dict:
    """The scale of the value axis of a bars, grouped bars or lines spec."""
    if "y" in spec["layer"][-1]["encoding"]:
        return spec["layer"][-1]["encoding"]["y"]["scale"]
    return spec["encoding"]["x"]["scale"]


def test_charts_of_one_kind_share_one_value_axis():
    from ssae_core.figures import UNIT_DOMAIN, shared_domains

    low = [{"cell": "a", "ssae": 0.2}, {"cell": "b", "ssae": 0.3}]
    high = [{"cell": "a", "ssae": 0.97}, {"cell": "b", "ssae": 0.99}]
    wide = [{"cell": "a", "ssae": 2.5}]
    bounded = {n: PlotDefinition(n, "bars", x="ssae", y="cell", rows=r) for n, r in
               (("low", low), ("high", high))}  # fmt: skip
    domains = [value_scale(vega_lite_spec(p))["domain"] for p in bounded.values()]
    assert domains == [list(UNIT_DOMAIN)] * 2  # bounded measures read on [0, 1] alone too
    plots = {**bounded, "wide": PlotDefinition("w", "bars", x="ssae", y="cell", rows=wide)}
    lines = PlotDefinition("l", "lines", rows=TABLES["lines"], **PLOTS["lines"])
    shared = shared_domains({**plots, "lines": lines})
    bars = {n: value_scale(vega_lite_spec(shared[n]))["domain"] for n in plots}
    assert set(map(tuple, bars.values())) == {(UNIT_DOMAIN[0], 2.5)}
    assert value_scale(vega_lite_spec(shared["lines"]))["domain"] == list(UNIT_DOMAIN)
