"""Stage `steering`: steering accuracy of SSAE (the selected grid cell), aff and MD on every pair
set, in distribution and out of distribution (protocol: ssae_core/steering.py, DESIGN section 6).

Writes metrics/steering.json (compact: per evaluation and method, the aggregate over concepts),
metrics/steering_details.json (every concept, every seed, the latent matching) and the plot table
metrics/plots/steering.csv.
"""

from __future__ import annotations

import csv

import pyarrow.parquet as pq

from ssae_core.datasets.semisynthetic import OOD_EVALUATIONS, ood_vocabulary_overlap
from ssae_core.errors import InputError
from ssae_core.io import atomic_file, write_json
from ssae_core.steering import MEAN_DIFFERENCE, evaluate_steering
from ssae_core.study import load_set, load_study_config, selected_cell, selected_runs
from stages.common import load_params, run_stage

METRICS_FILE = "metrics/steering.json"
DETAILS_FILE = "metrics/steering_details.json"
PLOT_FILE = "metrics/plots/steering.csv"
METHODS = ("ssae", "aff", MEAN_DIFFERENCE)
SUMMARY_KEYS = ("steered", "identity", "gain", "reconstruction", "reconstruction_gain")


def summarize(result: dict) -> dict:
    """The aggregate of every method of one evaluation, without per-concept detail."""
    out: dict = {"n_single_concept_test_pairs": result["n_single_concept_test_pairs"]}
    for method, report in result["methods"].items():
        agg = report["aggregate"]
        out[method] = {"n_concepts": agg["n_concepts"], "n_scored": agg["n_scored"]}
        out[method].update({key: agg[key] for key in SUMMARY_KEYS if key in agg})
    return out


def require_disjoint_vocabulary(source: str, target: str) -> None:
    """OOD must not reuse words: no test word of ``target`` may occur in ``source``'s training."""
    overlap = ood_vocabulary_overlap(
        pq.read_table(f"data/pairs/{source}.parquet"), pq.read_table(f"data/pairs/{target}.parquet")
    )
    if overlap:
        raise InputError(
            f"data/pairs/{target}.parquet: {len(overlap)} test words also occur in {source}'s "
            f"training pairs (e.g. {sorted(overlap)[:3]}); regenerate the pairs"
        )


def main() -> None:
    study = load_study_config(load_params("study"))
    tables = {name: load_set(study, name) for name in study.sets}
    runs = {name: selected_runs(name) for name in study.sets}
    details: dict = {"in_distribution": {}, "out_of_distribution": {}}
    for name in study.sets:
        result = evaluate_steering(tables[name], runs[name])
        result["ssae_cell"] = {k: selected_cell(name)[k] for k in ("lr", "sparsity")}
        details["in_distribution"][name] = result
    for ood in OOD_EVALUATIONS:
        if ood.source not in tables or ood.target not in tables:
            continue
        require_disjoint_vocabulary(ood.source, ood.target)
        result = evaluate_steering(
            tables[ood.source],
            runs[ood.source],
            target=tables[ood.target],
            concept_map={ood.source_concept: ood.target_concept},
        )
        details["out_of_distribution"][f"{ood.source}->{ood.target}"] = result
    metrics = {
        part: {key: summarize(result) for key, result in results.items()}
        for part, results in details.items()
    }
    write_json(details, DETAILS_FILE)
    write_json(metrics, METRICS_FILE)
    with atomic_file(PLOT_FILE) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["evaluation", "identity", *METHODS])
        for part, results in metrics.items():
            for key, summary in results.items():
                label = key if part == "in_distribution" else f"OOD {key}"
                identity = summary[MEAN_DIFFERENCE]["identity"]["mean"]
                writer.writerow(
                    [label, identity, *(summary[m]["steered"]["mean"] for m in METHODS)]
                )
                print(
                    f"{label}: identity {identity}, "
                    + ", ".join(f"{m} {summary[m]['steered']['mean']}" for m in METHODS)
                )


if __name__ == "__main__":
    run_stage(main)
