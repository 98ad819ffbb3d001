"""Stage `select`: score every SSAE grid cell of the LLM study and choose one per set, label-free.

Reads models/study/SET/grid/ and the held-out pairs of data/embeddings/SET; writes
metrics/udr.json (every cell's UDR, MCC and constraint state; the selected cell per set, which
the steering and behaviour stages use) and metrics/plots/udr_grid.csv (the heatmaps).
"""

from __future__ import annotations

import csv

from ssae_core.io import atomic_file, write_json
from ssae_core.study import (
    STUDY_MODELS,
    UDR_FILE,
    load_set,
    load_study_config,
    score_grid,
    select_cell,
)
from stages.common import load_params, run_stage

PLOT_FILE = "metrics/plots/udr_grid.csv"
PLOT_COLUMNS = ["set", "sparsity", "lr", "decoder_udr", "codes_udr", "mcc", "active", "selected"]


def _cell_key(cell: dict) -> tuple[float, float]:
    return cell["lr"], cell["sparsity"]


def main() -> None:
    study = load_study_config(load_params("study"))
    sets: dict = {}
    for name in study.sets:
        test = load_set(study, name).subset("test")
        cells = score_grid(STUDY_MODELS / name, test)
        chosen = select_cell(cells)
        selected = {
            key: chosen[key] for key in ("lr", "sparsity", "run", "seeds", "active", "decoder_mcc")
        }
        sets[name] = {
            "selected": selected,
            "rule": "max decoder UDR among active cells; ties: codes UDR, then smaller budget",
            "cells": cells,
        }
        print(
            f"{name}: selected lr={chosen['lr']:g} eps={chosen['sparsity']:g} "
            f"(decoder UDR {chosen['decoder_mcc']['udr']:.4f}, {len(cells)} cells)"
        )
    write_json({"sets": sets}, UDR_FILE)
    with atomic_file(PLOT_FILE) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PLOT_COLUMNS)
        for name, entry in sets.items():
            for cell in entry["cells"]:
                writer.writerow(
                    [
                        name,
                        cell["sparsity"],
                        cell["lr"],
                        cell["decoder_mcc"]["udr"],
                        cell["codes_mcc"]["udr"],
                        cell.get("mcc", {}).get("mean", ""),
                        int(cell["active"]),
                        int(_cell_key(cell) == _cell_key(entry["selected"])),
                    ]
                )


if __name__ == "__main__":
    run_stage(main)
