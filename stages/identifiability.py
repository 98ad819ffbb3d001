"""Stage `identifiability`: MCC / cross-seed MCC / UDR of every synthetic and LLM-study run.

Writes metrics/identifiability.json ({"synthetic", "llm"}) and the plot tables
metrics/plots/identifiability_mcc.csv (synthetic, MCC vs the true shifts) and
metrics/plots/identifiability_llm.csv (decoder UDR across seeds per set).
"""

from __future__ import annotations

from ssae_core.io import write_json
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
    llm = score_study(load_section(StudyConfig, "study"), LAYOUT)
    write_json({"synthetic": synthetic, "llm": llm}, LAYOUT.metrics("identifiability"))
    write_plots(
        LAYOUT,
        {
            "identifiability_mcc": synthetic_mcc_rows(synthetic),
            "identifiability_llm": llm_udr_rows(llm),
        },
    )
    print(f"wrote {LAYOUT.relative(LAYOUT.metrics('identifiability'))}")


if __name__ == "__main__":
    run_stage(main)
