"""The study's evaluation loops: identifiability of every run, steering accuracy of every set.

- :func:`score_synthetic`: MCC / cross-seed MCC / UDR of every synthetic run on held-out pairs;
- :func:`score_study`: the same for the LLM study (selected SSAE cell and aff per set, the
  entangled runs, the overcompleteness sweep);
- :func:`score_steering`: steering accuracy of SSAE (selected cell), aff and MD, in
  distribution and out of distribution
  (:data:`~ssae_core.datasets.semisynthetic.OOD_EVALUATIONS`).

Behavioural steering of the LM itself is :mod:`ssae_core.study.behaviour`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ssae_core import outliers
from ssae_core.datasets.semisynthetic import OOD_EVALUATIONS, ood_vocabulary_overlap
from ssae_core.errors import InputError
from ssae_core.evaluation.identifiability import mcc_difference, score_run
from ssae_core.evaluation.probes import evaluate_probe_steering
from ssae_core.evaluation.steering_accuracy import SteeringModel, evaluate_steering
from ssae_core.io import EmbeddingTable, load_embeddings, read_table
from ssae_core.metrics import rounded
from ssae_core.runs import load_run
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import METHODS, LayerLayout, StudyLayout
from ssae_core.study.selection import (
    SENSITIVITY,
    cell_members,
    score_ssae,
    selected_cell,
    selected_runs,
    sensitivity_cell,
)
from ssae_core.study.sets import load_set
from ssae_core.workers import map_in_processes

CELL_KEYS = ("lr", "budget_ratio", "sparsity", "usable")
PROBE_PARTS = ("common", "all_concepts")
STEERING_SUMMARY_KEYS = ("steered", "identity", "gain", "reconstruction", "reconstruction_gain")


def score_synthetic(
    layout: StudyLayout, latent_sizes: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, dict[str, dict]]]:
    """``{data: {method: {mM: scores}}}`` of every synthetic run, on its table's test split.

    ``latent_sizes``: the latent sizes trained on each synthetic table (``synth_3_2``,
    ``synth_3_2_ent``, ...). Tables, methods and sizes are reported in sorted order.
    """
    results: dict = {}
    for data in sorted(latent_sizes):
        test = load_embeddings(layout.synthetic(data)).subset("test")
        for method in sorted(METHODS):
            for latent in sorted(latent_sizes[data]):
                folder = StudyLayout.latent_folder(latent)
                run = load_run(layout.synthetic_models / data / method / folder)
                results.setdefault(data, {}).setdefault(method, {})[folder] = score_run(run, test)
    return results


def _bootstrap(study: StudyConfig) -> dict:
    """The bootstrap settings of every interval of the study (``study.probes``)."""
    probes = study.probes
    return {"resamples": probes.resamples, "seed": probes.bootstrap_seed, "level": probes.level}


def outlier_counts(study: StudyConfig, at: LayerLayout, name: str) -> dict:
    """Texts (z and z~ alike) and shifts of one set whose norm exceeds ``study.outlier_factor``
    x the median of the training split, per split, as read before any pair is dropped; with the
    median norms and the largest ratio to them."""
    table = load_embeddings(at.embeddings(name))
    train = table.subset("train")
    texts = {split: np.concatenate([t.z, t.z_tilde]) for split, t in _splits(table).items()}
    shifts = {split: t.delta for split, t in _splits(table).items()}
    train_texts = np.concatenate([train.z, train.z_tilde])
    out = {"factor": study.outlier_factor, "dropped": study.drop_outliers}
    for kind, rows, reference in (("texts", texts, train_texts), ("shifts", shifts, train.delta)):
        median = float(np.median(outliers.norms(reference)))
        largest = max(float(outliers.norms(r).max()) for r in rows.values() if len(r))
        out[kind] = {
            "median_norm": rounded(median),
            "max_ratio": rounded(largest / median) if median > 0 else None,
            **outliers.count(reference, rows, study.outlier_factor),
        }
    return out


def _splits(table: EmbeddingTable) -> dict[str, EmbeddingTable]:
    return {split: table.subset(split) for split in sorted(set(table.split)) if split}


def _no_usable_cell() -> dict:
    return {"status": "no usable cell", "usable": False}


def _aff_and_ssae(study: StudyConfig, folder: Path, test: EmbeddingTable) -> dict:
    """Scores of the ``aff`` and ``ssae`` runs in ``folder`` (SSAE with its budget ratio and
    usability)."""
    tolerances = (study.usable_tolerance, study.sensitivity_tolerance)
    ssae = score_ssae(load_run(folder / "ssae"), test, tolerances, control=False)
    return {"ssae": ssae, "aff": score_run(load_run(folder / "aff"), test)}


def score_study(study: StudyConfig, at: LayerLayout) -> dict:
    """Identifiability of the LLM study on held-out pairs (see :func:`score_run` for the keys):

    - ``sets``: per set, the selected SSAE cell (or ``no usable cell``) and aff (decoder and
      codes MCC across seeds, MCC against the known shifts where they vary);
    - ``entangled``: the same on data/entangled/SET of ``study.entangled_sets`` (SSAE at
      study.budget_ratio);
    - ``overcomplete``: SSAE and aff with m = factor x n on ``study.overcomplete.set``.
    """
    out: dict = {"sets": {}, "entangled": {}, "overcomplete": {}, "outliers": {}}
    for name in study.sets:
        table = load_set(study, at, name)
        out["outliers"][name] = outlier_counts(study, at, name)
        test = table.subset("test")
        runs = selected_runs(at, name)
        entry = {"aff": score_run(runs["aff"], test), "control": study.is_control(name)}
        for key, cell in (
            ("ssae", selected_cell(at, name)),
            (SENSITIVITY, sensitivity_cell(at, name)),
        ):
            if cell is None:
                entry[key] = _no_usable_cell()
                continue
            members = cell_members(load_run(at.root / cell["run"]), cell["sparsity"])
            entry[key] = {
                **score_run(members, test),
                **{k: cell[k] for k in CELL_KEYS},
                "versus_aff": mcc_difference(members, runs["aff"], test, **_bootstrap(study)),
            }
        out["sets"][name] = entry
    for name in study.entangled_sets:
        entangled_test = load_set(study, at, name, entangled=True).subset("test")
        out["entangled"][name] = _aff_and_ssae(study, at.entangled_models(name), entangled_test)
    name = study.overcomplete.set
    test = load_set(study, at, name).subset("test")
    base = study.latent_dim(name, test.concepts)
    out["overcomplete"][name] = {
        StudyLayout.latent_folder(m): _aff_and_ssae(
            study, at.overcomplete_models(name) / StudyLayout.latent_folder(m), test
        )
        for m in sorted(factor * base for factor in study.overcomplete.factors)
    }
    return out


def _summarize_steering(result: dict) -> dict:
    """The aggregate of every method of one evaluation, without per-concept detail: the cosine
    score, and the probe scores (``probe``: common-set and all-concept columns) where the
    scored table has labels."""
    out: dict = {"n_single_concept_test_pairs": result["n_single_concept_test_pairs"]}
    probes = result.get("probes")
    for method, report in result["methods"].items():
        agg = report["aggregate"]
        out[method] = {"n_concepts": agg["n_concepts"], "n_scored": agg["n_scored"]}
        out[method].update({key: agg[key] for key in STEERING_SUMMARY_KEYS if key in agg})
        if probes is not None:
            scores = probes["methods"][method]
            out[method]["probe"] = {part: scores[part] for part in PROBE_PARTS}
    if probes is not None:
        out["probe_differences"] = probes["differences"]
        out["probe_references"] = probes["references"]
        out["probe_common_set"] = probes["common_set"]
        out["probe_accuracy"] = {v: p["test_accuracy"] for v, p in probes["probes"].items()}
    return out


def _evaluate(
    study: StudyConfig,
    source: EmbeddingTable,
    runs: Mapping[str, Sequence[SteeringModel]],
    target: EmbeddingTable | None = None,
    concept_map: Mapping[str, str] | None = None,
) -> dict:
    """The cosine steering score and, where the scored table has labels, the probe scores."""
    result = evaluate_steering(source, runs, target=target, concept_map=concept_map)
    if (target if target is not None else source).labels is not None:
        result["probes"] = evaluate_probe_steering(
            source, runs, target=target, concept_map=concept_map, config=study.probes
        )
    return result


def _require_disjoint_vocabulary(at: LayerLayout, source: str, target: str) -> None:
    """OOD must not reuse words: no test word of ``target`` may occur in ``source``'s training."""
    overlap = ood_vocabulary_overlap(read_table(at.pairs(source)), read_table(at.pairs(target)))
    if overlap:
        raise InputError(
            f"{at.pairs(target)}: {len(overlap)} test words also occur in {source}'s "
            f"training pairs (e.g. {sorted(overlap)[:3]}); regenerate the pairs"
        )


def score_steering(study: StudyConfig, at: LayerLayout) -> tuple[dict, dict]:
    """(details, summary) of the steering evaluation: every concept and seed, and per
    evaluation and method the aggregate over concepts."""
    tables = {name: load_set(study, at, name) for name in study.sets}
    runs = {name: selected_runs(at, name) for name in study.sets}
    details: dict = {"in_distribution": {}, "out_of_distribution": {}}
    for name in study.sets:
        if tables[name].shift is None:  # unlabelled pairs: no concept to steer towards
            continue
        result = _evaluate(study, tables[name], runs[name])
        cell = selected_cell(at, name)
        result["ssae_cell"] = None if cell is None else {k: cell[k] for k in CELL_KEYS}
        details["in_distribution"][name] = result
    for ood in OOD_EVALUATIONS:
        if ood.source not in tables or ood.target not in tables:
            continue
        _require_disjoint_vocabulary(at, ood.source, ood.target)
        details["out_of_distribution"][f"{ood.source}->{ood.target}"] = _evaluate(
            study,
            tables[ood.source],
            runs[ood.source],
            target=tables[ood.target],
            concept_map={ood.source_concept: ood.target_concept},
        )
    summary = {
        part: {key: _summarize_steering(result) for key, result in results.items()}
        for part, results in details.items()
    }
    return details, summary


def _score_steering_at(job: tuple[StudyConfig, LayerLayout]) -> tuple[dict, dict]:
    return score_steering(*job)


def score_steering_layers(
    study: StudyConfig, layouts: Sequence[LayerLayout]
) -> list[tuple[dict, dict]]:
    """:func:`score_steering` of every layer, ``study.workers`` layers at a time in worker
    processes of one thread each (the probes' fits and bootstraps are largely Python and
    single-threaded BLAS calls)."""
    return map_in_processes(_score_steering_at, [(study, at) for at in layouts], study.workers)
