"""Stage `steering`: steering accuracy of SSAE (the selected grid cell), aff and MD on every pair
set and layer, in distribution and out of distribution -> metrics/steering.json (per evaluation
and method), metrics/steering_details.json (every concept and seed), metrics/plots/steering.csv."""

from __future__ import annotations

from ssae_core.io import write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import steering_rows, write_plots
from ssae_core.study.scores import score_steering
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    study = load_section(StudyConfig, "study")
    details, summary = {"layers": {}}, {"layers": {}}
    for layer in load_section(EmbedConfig, "embed").layer_list:
        at = LAYOUT.at(layer)
        details["layers"][at.key], summary["layers"][at.key] = score_steering(study, at)
    write_json(details, LAYOUT.metrics("steering_details"))
    write_json(summary, LAYOUT.metrics("steering"))
    rows = steering_rows(summary)
    write_plots(LAYOUT, {"steering": rows})
    for row in rows:
        print(", ".join(f"{key} {value}" for key, value in row.items()))


if __name__ == "__main__":
    run_stage(main)
