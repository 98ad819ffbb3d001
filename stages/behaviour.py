"""Stage `behaviour`: steer the language model with the learned vectors at the layers of
behaviour.layers (null: every layer of embed.layers) and measure its behaviour
(ssae_core/evaluation/behaviour) -> metrics/behaviour.json and the plot tables
metrics/plots/behaviour/{truthfulqa,language}_LAYER.csv."""

from __future__ import annotations

import time

from ssae_core.evaluation.behaviour.config import BehaviourConfig, behaviour_layers
from ssae_core.io import write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.study.behaviour import score_behaviour
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import behaviour_tables, write_plots
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    started = time.perf_counter()
    config = load_section(BehaviourConfig, "behaviour")
    layers = behaviour_layers(config, load_section(EmbedConfig, "embed").layer_list)
    results = score_behaviour(load_section(StudyConfig, "study"), LAYOUT, config, layers)
    write_json({"layers": results}, LAYOUT.metrics("behaviour"))
    write_plots(LAYOUT, behaviour_tables(results))
    print(f"behaviour: wrote metrics/behaviour.json in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    run_stage(main)
