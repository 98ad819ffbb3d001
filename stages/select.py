"""Stage `select`: score every SSAE grid cell of the LLM study and choose one per set, without
labels -> metrics/udr.json (the choice later stages use) and metrics/plots/udr_grid.csv."""

from __future__ import annotations

from ssae_core.io import write_json
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import udr_grid_rows, write_plots
from ssae_core.study.selection import select_study
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    udr = select_study(load_section(StudyConfig, "study"), LAYOUT)
    write_json(udr, LAYOUT.metrics("udr"))
    write_plots(LAYOUT, {"udr_grid": udr_grid_rows(udr)})
    for name, entry in udr["sets"].items():
        chosen = entry["selected"]
        print(
            f"{name}: selected lr={chosen['lr']:g} eps={chosen['sparsity']:g} "
            f"(decoder UDR {chosen['decoder_mcc']['udr']:.4f}, {len(entry['cells'])} cells)"
        )


if __name__ == "__main__":
    run_stage(main)
