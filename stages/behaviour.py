"""Stage `behaviour`: steer the language model with the learned vectors, measure its behaviour.

    python -m stages.behaviour

Reads params.yaml `behaviour` (see :class:`ssae_core.behaviour.BehaviourParams`), the LM in
models/lm, the embeddings data/embeddings/{truthfulqa,lang} (vectors and alphas are fitted on
their training pairs), the selected SSAE cell and the aff run of each set
(:func:`ssae_core.study.selected_runs`) and the MC questions data/truthfulqa/mc.parquet. Writes
metrics/behaviour.json and the plot tables metrics/plots/behaviour_{truthfulqa,language}.csv.
See :mod:`ssae_core.behaviour` for what is measured.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ssae_core import lm
from ssae_core.behaviour import (
    behaviour_params,
    check_same_model,
    evaluate_behaviour,
    load_mc_questions,
    plot_rows,
)
from ssae_core.errors import InputError
from ssae_core.io import atomic_file, load_embeddings, write_json
from ssae_core.steering import SteeringModel
from ssae_core.study import load_study_config, selected_runs
from stages.common import ROOT, load_params, run_stage

SETS = ("truthfulqa", "lang")
MODEL_DIR = Path("models/lm")
MC_FILE = Path("data/truthfulqa/mc.parquet")
METRICS_FILE = Path("metrics/behaviour.json")
PLOTS = {
    "truthfulqa": Path("metrics/plots/behaviour_truthfulqa.csv"),
    "language": Path("metrics/plots/behaviour_language.csv"),
}


def write_csv(rows: list[dict], path: Path) -> None:
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(
    values: Mapping | None = None,
    *,
    root: Path = ROOT,
    runs: Mapping[str, Mapping[str, Sequence[SteeringModel]]] | None = None,
    progress: bool = True,
) -> dict:
    """Run the stage; ``values`` replaces params.yaml's `behaviour` section and ``runs``
    (``{set: {method: members}}``) the selected runs (both for tests and notebooks)."""
    started = time.perf_counter()
    params = behaviour_params(load_params("behaviour") if values is None else values)
    model_dir = root / MODEL_DIR
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: no prepared model; run `dvc repro prepare_model` first")
    source = lm.resolve_model(str(model_dir), verbose=progress)
    study = load_study_config(load_params("study"))
    tables = {}
    for name in SETS:
        path = root / "data" / "embeddings" / name
        if not path.exists():
            raise InputError(f"{path}: missing; run `dvc repro extract_embeddings@{name}` first")
        # the pairs as the study trained on them (a seeded half read backwards, study.py)
        tables[name] = load_embeddings(path).reoriented(study.reverse_fraction, study.reverse_seed)
        check_same_model(tables[name], source.name, str(path))
    if not (root / MC_FILE).is_file():
        raise InputError(f"{root / MC_FILE}: missing; run `dvc repro download_truthfulqa` first")
    questions = load_mc_questions(root / MC_FILE)
    if runs is None:
        runs = {name: selected_runs(name, root) for name in SETS}
    model = lm.load_model(source, device=params.device, dtype=params.dtype)
    tokenizer = lm.load_tokenizer(source)
    results = evaluate_behaviour(
        model,
        tokenizer,
        params,
        truthfulqa=tables["truthfulqa"],
        mc_questions=questions,
        language=tables["lang"],
        runs=runs,
        progress=progress,
    )
    results["model"] = source.name
    write_json(results, root / METRICS_FILE)
    for part, path in PLOTS.items():
        write_csv(plot_rows(results, part), root / path)
    print(f"behaviour: wrote {METRICS_FILE} in {time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    run_stage(main)
