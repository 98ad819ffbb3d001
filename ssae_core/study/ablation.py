"""The outlier ablation of the report: which treatment of massive-activation outliers the study
uses, measured on the study's own embeddings.

Per set of ``study.ablation.sets`` and layer, and per option of :data:`OPTIONS` (normalise
globally; normalise each shift by its own RMS, as the authors' code does; normalise globally
and drop the outlier pairs from every split, ``study.outlier_factor``), aff and SSAE (at the
set's middle grid ratio, seeds ``study.ablation.seeds``) are trained on the training split and
scored on that option's test split: MCC against the full-rank coding of the labels, and the
probe flip rate of the common concept set (:mod:`ssae_core.evaluation.probes`). An option that
drops no pair is the same data as ``global`` and is not trained twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from ssae_core.errors import InputError
from ssae_core.evaluation.identifiability import score_run
from ssae_core.evaluation.probes import evaluate_probe_steering, fit_probes
from ssae_core.io import EmbeddingTable
from ssae_core.metrics import rounded
from ssae_core.runs import resolve_latent_dim
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import AblationConfig, StudyConfig
from ssae_core.study.layout import LayerLayout
from ssae_core.study.sets import load_set, outlier_pairs
from ssae_core.train import train
from ssae_core.workers import map_in_processes


class Option(NamedTuple):
    """One outlier treatment: the shift normalisation and whether outlier pairs are dropped."""

    normalize: str
    drop: bool


OPTIONS = {
    "global": Option("global", False),
    "layer": Option("layer", False),
    "global+drop": Option("global", True),
}
"""The treatments compared, by the name the report gives them."""


def variant(study: StudyConfig, option: Option, seeds: tuple[int, ...]) -> StudyConfig:
    """The study's settings under one treatment (and the ablation's seeds)."""
    optim = replace(study.optim, normalize=option.normalize)
    return replace(study, drop_outliers=option.drop, seeds=seeds, optim=optim)


def _mcc(scores: dict) -> float | None:
    part = scores.get("state_mcc") or scores.get("mcc")
    return None if part is None else rounded(part["mean"])


def _flip_rates(
    study: StudyConfig, table: EmbeddingTable, runs: dict, probes: dict
) -> dict[str, float | None]:
    """The common-set probe flip rate of each method's runs on ``table``'s test split;
    ``probes``: the probes of earlier calls by ``study.drop_outliers`` (the table's only
    difference between options), filled on first use."""
    if table.labels is None:
        return dict.fromkeys(runs)
    config = replace(study.probes, resamples=1)  # only the means are reported: no intervals
    if study.drop_outliers not in probes:
        probes[study.drop_outliers] = fit_probes(table.subset("train"), config)
    result = evaluate_probe_steering(
        table,
        runs,
        mean_difference=False,
        config=config,
        probes=probes[study.drop_outliers],
    )
    return {m: rounded(result["methods"][m]["common"]["flip_rate"]["mean"]) for m in runs}


def run_option(study: StudyConfig, at: LayerLayout, name: str, probes: dict | None = None) -> dict:
    """aff and SSAE (the set's middle grid ratio) trained under ``study``'s settings on one set
    at one layer: held-out MCC and probe flip rate of each, with the SSAE members' statuses.
    ``probes``: see :func:`_flip_rates` (a fresh one: fitted here)."""
    table = load_set(study, at, name)
    train_rows, test = table.subset("train"), table.subset("test")
    base = study.train_config("aff", lr=study.lr)
    latent = resolve_latent_dim(base, train_rows)
    groups = train_rows.labels.group if train_rows.labels is not None else None
    aff = train(
        train_rows.delta, replace(base, latent_dim=latent), groups=groups, progress=False
    ).models
    ratios = sorted(study.grid_ratios(name))
    ratio = ratios[len(ratios) // 2]
    budget = Budgets.from_aff(aff, [ratio]).budget(ratio)
    cfg = study.train_config("ssae", lr=study.lr, sparsity=budget, ratios=(ratio,))
    ssae = train(
        train_rows.delta, replace(cfg, latent_dim=latent), groups=groups, progress=False
    ).models
    flips = _flip_rates(study, table, {"aff": aff, "ssae": ssae}, {} if probes is None else probes)
    return {
        "n_train": len(train_rows),
        "n_test": len(test),
        "budget_ratio": ratio,
        "aff": {"mcc": _mcc(score_run(aff, test)), "flip_rate": flips["aff"]},
        "ssae": {"mcc": _mcc(score_run(ssae, test)), "flip_rate": flips["ssae"]},
        "statuses": sorted({m.record.status_at(study.usable_tolerance) for m in ssae}),
    }


class _Job(NamedTuple):
    """One set at one layer: every option."""

    study: StudyConfig
    seeds: tuple[int, ...]
    at: LayerLayout
    name: str


def _ablate_set(job: _Job) -> dict:
    """``{option: scores}`` of one set at one layer; an option identical to ``global`` (no
    outlier to drop) repeats its scores with ``"same_as": "global"``."""
    plain = load_set(replace(job.study, drop_outliers=False), job.at, job.name)
    same = not outlier_pairs(plain, job.study.outlier_factor).any()
    entry: dict = {}
    probes: dict = {}  # global and layer read the same table: its probes are fitted once
    for option_name, option in OPTIONS.items():
        if option.drop and same:
            entry[option_name] = {**entry["global"], "same_as": "global"}
            continue
        entry[option_name] = run_option(
            variant(job.study, option, job.seeds), job.at, job.name, probes
        )
    return entry


def ablate(study: StudyConfig, config: AblationConfig, layouts: Sequence[LayerLayout]) -> dict:
    """``{layer: {set: {option: scores}}}`` for every layer of ``layouts`` and set of
    ``config.sets``: ``study.workers`` (set, layer) pairs at a time, each in a worker process
    of one torch thread (a single member of a few latents trains no faster on two); with one
    worker, in this process with ``study.optim.threads``."""
    for name in config.sets:
        if name not in study.sets:
            raise InputError(f"study.ablation.sets: {name!r} is not one of study.sets")
    if study.workers > 1:
        study = replace(study, optim=replace(study.optim, threads=1))
    jobs = [_Job(study, config.seeds, at, name) for at in layouts for name in config.sets]
    out: dict = {at.key: {} for at in layouts}
    for job, entry in zip(jobs, map_in_processes(_ablate_set, jobs, study.workers), strict=True):
        out[job.at.key][job.name] = entry
    return out


def chosen_option(study: StudyConfig) -> str:
    """The name of the option the study itself uses."""
    current = Option(study.optim.normalize, study.drop_outliers)
    return next((n for n, o in OPTIONS.items() if o == current), "other")


def ablation_rows(layers: dict) -> list[dict]:
    """One row per layer, set and option (for the report's table and the plots CSV)."""
    rows = []
    for layer, sets in layers.items():
        for name, options in sets.items():
            for option, found in options.items():
                aff, ssae = found["aff"], found["ssae"]
                rows.append(
                    {
                        "layer": layer,
                        "set": name,
                        "option": option,
                        "aff_mcc": aff["mcc"],
                        "ssae_mcc": ssae["mcc"],
                        "aff_flip_rate": aff["flip_rate"],
                        "ssae_flip_rate": ssae["flip_rate"],
                        "n_train": found["n_train"],
                        "statuses": ", ".join(found["statuses"]),
                    }
                )
    return rows


def mean_by_option(rows: list[dict], key: str) -> dict[str, float | None]:
    """The mean of one score over every set and layer, per option (None where none is known)."""
    out = {}
    for option in OPTIONS:
        values = [r[key] for r in rows if r["option"] == option and r[key] is not None]
        out[option] = rounded(float(np.mean(values))) if values else None
    return out
