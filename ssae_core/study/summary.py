"""metrics/summary.json: the study's headline numbers, few enough for `dvc metrics show`,
`dvc exp show` and `dvc metrics diff` to print as a readable table (every detail stays in the
other JSON files under metrics/, which the report reads).

At the headline layer (``report.headline_layer``), per pair set: the decoder UDR of the selected
SSAE cell and of aff, and the probe flip rate (common concept set) of SSAE, aff and MD; and the
behavioural results at ``report.behaviour_multiplier`` x the fitted alpha: TruthfulQA MC1
accuracy and the share of continuations in the target language, per method and unsteered.
"""

from __future__ import annotations

from collections.abc import Mapping

from ssae_core.errors import InputError
from ssae_core.study.config import ReportConfig

STEER_METHODS = ("ssae", "aff", "md")
MAX_KEYS = 40


def _udr(scores: Mapping) -> float | None:
    return (scores.get("decoder_mcc") or {}).get("udr")


def _flip(summary: Mapping, method: str) -> float | None:
    probe = (summary.get(method) or {}).get("probe")
    return None if probe is None else probe["common"]["flip_rate"]["mean"]


def _sweep_value(section: Mapping, method: str, measure: str, multiplier: float) -> float | None:
    for entry in section["methods"].get(method, {}).get("sweep", []):
        if entry["alpha_multiplier"] == multiplier:
            return entry[measure]["mean"]
    return None


def _behaviour(section: Mapping, measure: str, multiplier: float) -> dict:
    values = {m: _sweep_value(section, m, measure, multiplier) for m in STEER_METHODS}
    return {**values, "unsteered": section["unsteered"][measure]}


def headline_metrics(config: ReportConfig, metrics: Mapping[str, Mapping]) -> dict:
    """The content of metrics/summary.json (at most MAX_KEYS numbers)."""
    key = config.headline_layer
    layers = metrics["identifiability"]["layers"]
    if key not in layers:
        raise InputError(
            f"report.headline_layer={key!r}: not a layer of the study ({', '.join(layers)})"
        )
    llm, steering = layers[key], metrics["steering"]["layers"][key]["in_distribution"]
    out: dict = {"layer": key}
    for name, methods in llm["sets"].items():
        if config.headline_sets is not None and name not in config.headline_sets:
            continue
        out[name] = {"ssae_udr": _udr(methods["ssae"]), "aff_udr": _udr(methods["aff"])}
        if name in steering:  # sets without labels have no steering scores
            out[name] |= {f"{m}_flip": _flip(steering[name], m) for m in STEER_METHODS}
    behaviour = metrics["behaviour"]["layers"].get(key)
    if behaviour is not None:
        multiplier = config.behaviour_multiplier
        out["mc1"] = _behaviour(behaviour["truthfulqa"], "accuracy", multiplier)
        out["target_language"] = _behaviour(behaviour["language"], "language_fraction", multiplier)
    numbers = sum(len(v) for v in out.values() if isinstance(v, dict))
    if numbers > MAX_KEYS:
        raise InputError(
            f"report: metrics/summary.json would hold {numbers} numbers (> {MAX_KEYS}); list "
            "the sets it shows in report.headline_sets"
        )
    return out
