"""Stage `steering`: steering accuracy of SSAE (the selected grid cell), aff and MD on every pair
set and layer, in distribution and out of distribution -> metrics/steering.json (per evaluation
and method), metrics/steering_details.json (every concept and seed), metrics/plots/steering.csv;
the layers side by side in study.workers processes."""

from __future__ import annotations

from ssae_core.io import write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import steering_rows, write_plots
from ssae_core.study.scores import score_steering_layers
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    study = load_section(StudyConfig, "study")
    layouts = [LAYOUT.at(layer) for layer in load_section(EmbedConfig, "embed").layer_list]
    details, summary = {"layers": {}}, {"layers": {}}
    found = score_steering_layers(study, layouts)
    for at, (layer_details, layer_summary) in zip(layouts, found, strict=True):
        details["layers"][at.key], summary["layers"][at.key] = layer_details, layer_summary
    write_json(details, LAYOUT.metrics("steering_details"))
    write_json(summary, LAYOUT.metrics("steering"))
    rows = steering_rows(summary)
    write_plots(LAYOUT, {"steering": rows})
    for row in rows:
        print(", ".join(f"{key} {value}" for key, value in row.items()))


if __name__ == "__main__":
    run_stage(main)
