"""Stage `ablation`: the outlier treatments compared on the study's embeddings (global
normalisation, per-shift normalisation, outlier pairs dropped), aff and SSAE at every layer ->
metrics/ablation.json and metrics/plots/ablation.csv (ssae_core/study/ablation.py)."""

from __future__ import annotations

import time

from ssae_core.io import write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.study.ablation import ablate, ablation_rows, chosen_option
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import write_plots
from ssae_core.train import torch_threads
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    study = load_section(StudyConfig, "study")
    layouts = [LAYOUT.at(layer) for layer in load_section(EmbedConfig, "embed").layer_list]
    started = time.perf_counter()
    with torch_threads(study.optim.threads):
        layers = ablate(study, study.ablation, layouts)
    seconds = time.perf_counter() - started
    print(f"ablation: {seconds:.0f} s, {study.workers} worker(s)", flush=True)
    out = {"chosen": chosen_option(study), "seeds": list(study.ablation.seeds), "layers": layers}
    write_json(out, LAYOUT.metrics("ablation"))
    rows = ablation_rows(layers)
    write_plots(LAYOUT, {"ablation": rows})
    for row in rows:
        print(", ".join(f"{key} {value}" for key, value in row.items()))


if __name__ == "__main__":
    run_stage(main)
