"""Stage `identifiability`: MCC / cross-seed MCC / UDR of every synthetic and LLM-study run.

Reads models/synthetic/<data>/<method>/m<M>/ with the held-out pairs of
data/synthetic/<data>.parquet, and the LLM study's runs (ssae_core/study.py, the selected cells
of metrics/udr.json); writes metrics/identifiability.json ({"synthetic", "llm"}) and the plot
tables metrics/plots/identifiability_mcc.csv (synthetic, MCC vs the true shifts) and
metrics/plots/identifiability_llm.csv (decoder UDR across seeds per set).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.evaluate import score_run
from ssae_core.io import atomic_file, load_embeddings, write_json
from ssae_core.runs import load_run
from ssae_core.study import load_study_config, score_study
from stages.common import load_params, run_stage

MODELS = Path("models/synthetic")
DATA = Path("data/synthetic")
METRICS = Path("metrics")


def collect() -> dict:
    results: dict = {}
    data_dirs = sorted(p for p in MODELS.iterdir() if p.is_dir()) if MODELS.exists() else []
    if not data_dirs:
        raise InputError(f"{MODELS}: no trained runs; run `dvc repro train` first")
    for data_dir in data_dirs:
        test = load_embeddings(DATA / f"{data_dir.name}.parquet").subset("test")
        for method_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
            for run_dir in sorted(method_dir.iterdir(), key=lambda p: int(p.name[1:])):
                scores = score_run(load_run(run_dir), test)
                results.setdefault(data_dir.name, {}).setdefault(method_dir.name, {})[
                    run_dir.name
                ] = scores
    return results


def main() -> None:
    synthetic = collect()
    llm = score_study(load_study_config(load_params("study")))
    write_json({"synthetic": synthetic, "llm": llm}, METRICS / "identifiability.json")
    with atomic_file(METRICS / "plots" / "identifiability_mcc.csv") as tmp, tmp.open("w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cell", "ssae", "aff"])
        for data, methods in synthetic.items():
            for latent in methods.get("ssae", {}):
                row = [f"{data} m={latent[1:]}"]
                row += [
                    methods.get(m, {}).get(latent, {}).get("mcc", {}).get("mean", "")
                    for m in ("ssae", "aff")
                ]
                writer.writerow(row)
    with atomic_file(METRICS / "plots" / "identifiability_llm.csv") as tmp, tmp.open("w") as fh:
        writer = csv.writer(fh)
        writer.writerow(["data", "ssae", "aff"])
        for part, suffix in (("sets", ""), ("entangled", " (entangled)")):
            for name, methods in llm[part].items():
                writer.writerow(
                    [
                        f"{name}{suffix}",
                        *(methods[m]["decoder_mcc"]["udr"] for m in ("ssae", "aff")),
                    ]
                )
    print(f"wrote {METRICS / 'identifiability.json'}")


if __name__ == "__main__":
    run_stage(main)
