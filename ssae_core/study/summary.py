"""metrics/summary.json: the study's headline numbers, few enough for `dvc metrics show`,
`dvc exp show` and `dvc metrics diff` to print as a readable table (every detail stays in the
other JSON files under metrics/, which the report reads).

At the headline layer (``report.headline_layer``), per pair set: the decoder UDR of the selected
SSAE cell and of aff, and the probe flip rate (common concept set) of SSAE, aff and MD; and the
held-out behavioural results at each method's operating point (chosen on training data):
TruthfulQA MC1 accuracy and the share of fluent continuations in the target language, per method,
unsteered and for the prompting baseline.
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


BEHAVIOUR_CONDITIONS = (*STEER_METHODS, "unsteered", "prompting")


def _behaviour(section: Mapping, measure: str) -> dict:
    test = section["test"]
    return {c: test[c][measure]["mean"] if c in test else None for c in BEHAVIOUR_CONDITIONS}


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
        out["mc1"] = _behaviour(behaviour["truthfulqa"], "accuracy")
        out["target_language"] = _behaviour(behaviour["language"], "concept")
    numbers = sum(len(v) for v in out.values() if isinstance(v, dict))
    if numbers > MAX_KEYS:
        raise InputError(
            f"report: metrics/summary.json would hold {numbers} numbers (> {MAX_KEYS}); list "
            "the sets it shows in report.headline_sets"
        )
    return out
