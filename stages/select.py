"""Stage `select`: score every SSAE grid cell of the LLM study at every layer and choose one per
set, without labels -> metrics/udr.json (the choice later stages use) and udr_grid.csv."""

from __future__ import annotations

from ssae_core.io import write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.study.config import StudyConfig
from ssae_core.study.plots import udr_grid_rows, write_plots
from ssae_core.study.selection import select_layer
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    study = load_section(StudyConfig, "study")
    layers = load_section(EmbedConfig, "embed").layer_list
    udr = {"layers": {LAYOUT.at(x).key: select_layer(study, LAYOUT.at(x)) for x in layers}}
    write_json(udr, LAYOUT.metrics("udr"))
    write_plots(LAYOUT, {"udr_grid": udr_grid_rows(udr)})
    for key, layer in udr["layers"].items():
        for name, entry in layer["sets"].items():
            chosen = entry["selected"]
            print(f"layer {key} {name}: " + ("no usable cell" if chosen is None else (
                f"lr {chosen['lr']:g} r {chosen['budget_ratio']:g} "
                f"(decoder UDR {chosen['decoder_mcc']['udr']:.4f})"
            )))  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
