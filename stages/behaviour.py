"""Stage `behaviour`: steer the language model with the learned vectors and measure its
behaviour (ssae_core/evaluation/behaviour) -> metrics/behaviour.json and the plot tables
metrics/plots/behaviour_{truthfulqa,language}.csv. Params: `behaviour`, `study`."""

from __future__ import annotations

import time

from ssae_core.evaluation.behaviour.config import BehaviourConfig
from ssae_core.io import write_json
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import behaviour_rows, write_plots
from ssae_core.study.scores import score_behaviour
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    started = time.perf_counter()
    config = load_section(BehaviourConfig, "behaviour")
    results = score_behaviour(load_section(StudyConfig, "study"), LAYOUT, config)
    write_json(results, LAYOUT.metrics("behaviour"))
    parts = ("truthfulqa", "language")
    write_plots(LAYOUT, {f"behaviour_{p}": behaviour_rows(results, p) for p in parts})
    print(f"behaviour: wrote metrics/behaviour.json in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    run_stage(main)
