"""Stage `identifiability`: MCC / cross-seed MCC / UDR of every synthetic run and of the LLM
study at every layer -> metrics/identifiability.json ({"synthetic", "layers"}) and the plot
tables metrics/plots/identifiability_{mcc,llm}.csv."""

from __future__ import annotations

from ssae_core.io import write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.study.config import (
    StudyConfig,
    load_synthetic_data,
    load_synthetic_runs,
    synthetic_latent_sizes,
)
from ssae_core.study.plots import llm_udr_rows, synthetic_mcc_rows, write_plots
from ssae_core.study.scores import score_study, score_synthetic
from stages.common import LAYOUT, load_params, load_section, run_stage


def main() -> None:
    data, _ = load_synthetic_data(load_params("synthetic"))
    runs = load_synthetic_runs(load_params("train"), "ssae")
    synthetic = score_synthetic(LAYOUT, synthetic_latent_sizes(data, runs))
    study = load_section(StudyConfig, "study")
    layers = load_section(EmbedConfig, "embed").layer_list
    llm = {LAYOUT.at(x).key: score_study(study, LAYOUT.at(x)) for x in layers}
    write_json({"synthetic": synthetic, "layers": llm}, LAYOUT.metrics("identifiability"))
    tables = {"identifiability_mcc": synthetic_mcc_rows(synthetic)}
    write_plots(LAYOUT, {**tables, "identifiability_llm": llm_udr_rows(llm)})
    print(f"wrote {LAYOUT.relative(LAYOUT.metrics('identifiability'))}")


if __name__ == "__main__":
    run_stage(main)
