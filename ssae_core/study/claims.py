"""The paper's claims, decided from the metrics files: reproduced, not reproduced, or not testable.

Each claim is checked at every layer of the study from the numbers the pipeline wrote, against
thresholds kept in params.yaml (``report.claims``, :class:`ClaimsConfig`); a claim's verdict
lists the numbers that decide it. A set whose SSAE grid has no usable cell counts against a claim
about SSAE (it is never replaced by an unusable run); so does an unusable entangled or
overcomplete SSAE run (shown as –).

1. Cross-seed consistency: SSAE's decoder UDR is at least ``udr_min`` on every multi-concept set.
2. Identifiability: SSAE's held-out MCC against the full-rank coding of the labels exceeds aff's
   by at least ``identifiability_margin`` on every multi-concept set.
3. Robustness to entanglement: testable only where the entangling map costs aff at least
   ``entangle_aff_drop_min`` of that MCC; then SSAE loses at most ``entangle_ssae_drop_max``.
4. Robustness to an overcomplete m: SSAE's MCC at the largest m is within ``overcomplete_drop_max``
   of its MCC at m = n.
5. / 6. Better steering in distribution / out of distribution: SSAE's probe flip rate (common
   concept set) exceeds aff's by at least ``steering_margin`` on every evaluation with probes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable on this model"


@dataclass(frozen=True)
class ClaimsConfig:
    """Thresholds that decide the paper's claims (params.yaml ``report.claims``)."""

    multi_concept_sets: tuple[str, ...] = ("binary", "corr", "cat")
    """The sets whose pairs change several concepts: the real tests of identifiability."""
    udr_min: float = 0.9
    """Claim 1: the decoder UDR SSAE must reach."""
    identifiability_margin: float = 0.02
    """Claim 2: how much higher SSAE's MCC against the full-rank coding must be than aff's."""
    entangle_aff_drop_min: float = 0.05
    """Claim 3 is testable only where entanglement costs aff at least this much MCC."""
    entangle_ssae_drop_max: float = 0.02
    """Claim 3: the most MCC SSAE may lose to entanglement."""
    overcomplete_drop_max: float = 0.05
    """Claim 4: the most MCC SSAE may lose from m = n to the largest m."""
    steering_margin: float = 0.02
    """Claims 5 and 6: how much higher SSAE's flip rate must be than aff's."""


class Verdict(NamedTuple):
    claim: str
    layer: str
    verdict: str
    evidence: str
    """The numbers that decide it."""
    threshold: str


def _mean(entry: Mapping | None, key: str) -> float | None:
    part = (entry or {}).get(key)
    return None if not part else part.get("mean")


def _usable_mean(entry: Mapping | None, key: str) -> float | None:
    """The mean of an SSAE entry's score, None where the run is unusable (it never counts)."""
    return None if (entry or {}).get("usable") is False else _mean(entry, key)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _all_pass(checks: Sequence[tuple[str, bool]]) -> str:
    return REPRODUCED if checks and all(ok for _, ok in checks) else NOT_REPRODUCED


def _consistency(config: ClaimsConfig, llm: Mapping, key: str) -> Verdict:
    checks, shown = [], []
    for name in config.multi_concept_sets:
        udr = (llm["sets"].get(name, {}).get("ssae", {}).get("decoder_mcc") or {}).get("udr")
        checks.append((name, udr is not None and udr >= config.udr_min))
        shown.append(f"{name} {_fmt(udr)}")
    return Verdict(
        "cross-seed consistency (SSAE decoder UDR)",
        key,
        _all_pass(checks),
        ", ".join(shown),
        f">= {config.udr_min}",
    )


def _identifiability(config: ClaimsConfig, llm: Mapping, key: str) -> Verdict:
    checks, shown = [], []
    for name in config.multi_concept_sets:
        methods = llm["sets"].get(name, {})
        ssae, aff = _mean(methods.get("ssae"), "state_mcc"), _mean(methods.get("aff"), "state_mcc")
        ok = ssae is not None and aff is not None and ssae - aff >= config.identifiability_margin
        checks.append((name, ok))
        shown.append(f"{name} SSAE {_fmt(ssae)} vs aff {_fmt(aff)}")
    return Verdict(
        "SSAE identifies the concepts better than aff (MCC vs full-rank coding)",
        key,
        _all_pass(checks),
        "; ".join(shown),
        f"SSAE - aff >= {config.identifiability_margin}",
    )


def _entanglement(config: ClaimsConfig, llm: Mapping, key: str) -> Verdict:
    shown, tested = [], []
    for name in config.multi_concept_sets:
        plain, mixed = llm["sets"].get(name, {}), llm["entangled"].get(name, {})
        drops = {}
        for method in ("ssae", "aff"):
            before, after = (
                _usable_mean(plain.get(method), "state_mcc"),
                _usable_mean(mixed.get(method), "state_mcc"),
            )
            drops[method] = None if before is None or after is None else before - after
        shown.append(f"{name} drop aff {_fmt(drops['aff'])}, SSAE {_fmt(drops['ssae'])}")
        if drops["aff"] is not None and drops["aff"] >= config.entangle_aff_drop_min:
            ssae_ok = drops["ssae"] is not None and drops["ssae"] <= config.entangle_ssae_drop_max
            tested.append((name, ssae_ok))
    verdict = _all_pass(tested) if tested else NOT_TESTABLE
    return Verdict(
        "robustness to entanglement",
        key,
        verdict,
        "; ".join(shown),
        f"testable where aff drops >= {config.entangle_aff_drop_min}; "
        f"SSAE drop <= {config.entangle_ssae_drop_max}",
    )


def _overcompleteness(config: ClaimsConfig, llm: Mapping, key: str) -> Verdict:
    shown, checks = [], []
    for name, sizes in llm["overcomplete"].items():
        ordered = sorted(sizes, key=lambda m: int(m[1:]))
        values = [_usable_mean(sizes[m].get("ssae"), "state_mcc") for m in ordered]
        pairs = zip(ordered, values, strict=True)
        shown.append(f"{name} " + ", ".join(f"{m} {_fmt(v)}" for m, v in pairs))
        ok = None not in (values[0], values[-1]) and values[0] - values[-1] <= (
            config.overcomplete_drop_max
        )
        checks.append((name, ok))
    return Verdict(
        "robustness to an overcomplete m (SSAE MCC vs full-rank coding)",
        key,
        _all_pass(checks),
        "; ".join(shown),
        f"drop from m = n to the largest m <= {config.overcomplete_drop_max}",
    )


def _flip_rate(summary: Mapping, method: str) -> float | None:
    probe = (summary.get(method) or {}).get("probe")
    return None if probe is None else _mean(probe["common"], "flip_rate")


def _steering(config: ClaimsConfig, steering: Mapping, key: str, part: str) -> Verdict:
    checks, shown = [], []
    for name, summary in steering[part].items():
        if "probe_common_set" not in summary:
            continue
        ssae, aff, md = (_flip_rate(summary, m) for m in ("ssae", "aff", "md"))
        ok = ssae is not None and aff is not None and ssae - aff >= config.steering_margin
        checks.append((name, ok))
        shown.append(f"{name} SSAE {_fmt(ssae)}, aff {_fmt(aff)}, MD {_fmt(md)}")
    where = "in distribution" if part == "in_distribution" else "out of distribution"
    return Verdict(
        f"better steering than aff {where} (probe flip rate)",
        key,
        _all_pass(checks) if checks else NOT_TESTABLE,
        "; ".join(shown) or "no evaluation with probes",
        f"SSAE - aff >= {config.steering_margin}",
    )


CHECKS: tuple[Callable[[ClaimsConfig, Mapping, str], Verdict], ...] = (
    _consistency,
    _identifiability,
    _entanglement,
    _overcompleteness,
)


def decide_claims(
    config: ClaimsConfig, identifiability: Mapping, steering: Mapping
) -> list[Verdict]:
    """Every claim at every layer, from metrics/identifiability.json and metrics/steering.json."""
    verdicts = []
    for key, llm in identifiability["layers"].items():
        verdicts += [check(config, llm, key) for check in CHECKS]
        for part in ("in_distribution", "out_of_distribution"):
            verdicts.append(_steering(config, steering["layers"][key], key, part))
    return verdicts
