"""The paper's claims, decided from the metrics files: reproduced, not reproduced, or not testable.

Each claim is checked at every layer of the study from the numbers the pipeline wrote, against
thresholds kept in params.yaml (``report.claims``, :class:`ClaimsConfig`), set by set. A set (or
evaluation) is *testable* only where SSAE has an admissible model there (a set whose grid has no
admissible cell is "not testable", never a loss) and, for steering, only where the evaluation can
tell a steering vector from none (the MD vector's paired flip-rate interval against no steering
lies above 0). A claim is *reproduced* when it holds on every testable set, *not reproduced* when
it fails on one, and *not testable* when no set is testable; each verdict says how many sets were
testable. Claims 2, 5 and 6 are decided from paired bootstrap intervals over test entities of the
difference SSAE - aff (not from point values): SSAE wins a set only where the whole interval lies
above the margin. The control sets (``study.controls``: one concept per pair, where sparsity
cannot help) are left out of every SSAE-vs-aff claim.

1. Cross-seed consistency: SSAE's decoder UDR is at least ``udr_min``.
2. Identifiability: the interval of SSAE's minus aff's held-out MCC against the full-rank coding
   of the labels lies above ``identifiability_margin``.
3. Robustness to entanglement: testable only where the entangling map costs aff at least
   ``entangle_aff_drop_min`` of that MCC; then SSAE loses at most ``entangle_ssae_drop_max``
   (point values over seeds: the two drops have no paired interval).
4. Robustness to an overcomplete m: SSAE's MCC at the largest m is within ``overcomplete_drop_max``
   of its MCC at m = n (point values).
5. / 6. Better steering in distribution / out of distribution: the interval of SSAE's minus aff's
   probe flip rate (common concept set) lies above ``steering_margin``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    identifiability_margin: float = 0.0
    """Claim 2: the lower end of the interval of SSAE's minus aff's MCC against the full-rank
    coding must lie above this."""
    entangle_aff_drop_min: float = 0.05
    """Claim 3 is testable only where entanglement costs aff at least this much MCC."""
    entangle_ssae_drop_max: float = 0.02
    """Claim 3: the most MCC SSAE may lose to entanglement."""
    overcomplete_drop_max: float = 0.05
    """Claim 4: the most MCC SSAE may lose from m = n to the largest m."""
    steering_margin: float = 0.0
    """Claims 5 and 6: the lower end of the interval of SSAE's minus aff's flip rate must lie
    above this."""


class Verdict(NamedTuple):
    claim: str
    layer: str
    verdict: str
    evidence: str
    """The numbers that decide it."""
    threshold: str
    testable: int = 0
    """How many sets (or evaluations) could test it."""
    total: int = 0
    """How many sets (or evaluations) it was checked on."""
    losses: tuple[str, ...] = ()
    """The numbers of every set where SSAE is worse than aff: the whole interval below 0."""


class Outcome(NamedTuple):
    """One set's part in a claim: whether it could test it, whether it passed, and its numbers."""

    name: str
    testable: bool
    passed: bool
    shown: str
    lost: bool = False
    """SSAE is worse than aff there: the whole interval of SSAE - aff lies below 0."""


def _verdict(outcomes: Sequence[Outcome]) -> str:
    tested = [o for o in outcomes if o.testable]
    if not tested:
        return NOT_TESTABLE
    return REPRODUCED if all(o.passed for o in tested) else NOT_REPRODUCED


def _claim(claim: str, layer: str, outcomes: Sequence[Outcome], threshold: str) -> Verdict:
    shown = "; ".join(o.shown + ("" if o.testable else " (not testable)") for o in outcomes)
    testable = sum(o.testable for o in outcomes)
    return Verdict(
        claim,
        layer,
        _verdict(outcomes),
        shown or "nothing to test",
        threshold,
        testable,
        len(outcomes),
        tuple(o.shown for o in outcomes if o.testable and o.lost),
    )


def _mean(entry: Mapping | None, key: str) -> float | None:
    part = (entry or {}).get(key)
    return None if not part else part.get("mean")


def _admissible(entry: Mapping | None) -> bool:
    """An SSAE entry of a selected, admissible cell (not ``no usable cell``, not unusable)."""
    return bool(entry) and not entry.get("status") and entry.get("usable") is not False


def _usable_mean(entry: Mapping | None, key: str) -> float | None:
    """The mean of an SSAE entry's score, None where the run is unusable (it never counts)."""
    return None if (entry or {}).get("usable") is False else _mean(entry, key)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def interval_text(entry: Mapping | None) -> str:
    """``+0.120 [0.050, 0.190]`` for a difference with its interval; – without one."""
    if not entry or entry.get("low") is None:
        return "–"
    return f"{entry['difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]"


def _above(entry: Mapping | None, margin: float) -> bool:
    return bool(entry) and entry.get("low") is not None and entry["low"] > margin


def _below_zero(entry: Mapping | None) -> bool:
    return bool(entry) and entry.get("high") is not None and entry["high"] < 0


def _multi_concept(config: ClaimsConfig, llm: Mapping) -> list[tuple[str, Mapping]]:
    return [(n, llm["sets"][n]) for n in config.multi_concept_sets if n in llm["sets"]]


def _consistency(config: ClaimsConfig, llm: Mapping, key: str, ssae: str = "ssae") -> Verdict:
    outcomes = []
    for name, methods in _multi_concept(config, llm):
        entry = methods.get(ssae)
        udr = (entry or {}).get("decoder_mcc", {}).get("udr") if _admissible(entry) else None
        ok = udr is not None and udr >= config.udr_min
        outcomes.append(Outcome(name, udr is not None, ok, f"{name} {_fmt(udr)}"))
    return _claim(
        "cross-seed consistency (SSAE decoder UDR)", key, outcomes, f">= {config.udr_min}"
    )


def _identifiability(config: ClaimsConfig, llm: Mapping, key: str, ssae: str = "ssae") -> Verdict:
    outcomes = []
    for name, methods in _multi_concept(config, llm):
        entry = methods.get(ssae)
        testable = _admissible(entry) and (entry.get("versus_aff") or {}).get("low") is not None
        diff = (entry or {}).get("versus_aff") if testable else None
        shown = (
            f"{name} SSAE {_fmt(_mean(entry, 'state_mcc'))} vs aff "
            f"{_fmt(_mean(methods.get('aff'), 'state_mcc'))}, difference {interval_text(diff)}"
        )
        passed = _above(diff, config.identifiability_margin)
        outcomes.append(Outcome(name, testable, passed, shown, _below_zero(diff)))
    return _claim(
        "SSAE identifies the concepts better than aff (MCC vs full-rank coding)",
        key,
        outcomes,
        f"interval of SSAE - aff above {config.identifiability_margin:g}",
    )


def _entanglement(config: ClaimsConfig, llm: Mapping, key: str) -> Verdict:
    outcomes = []
    for name in [n for n in config.multi_concept_sets if n in llm["entangled"]]:
        plain, mixed = llm["sets"].get(name, {}), llm["entangled"][name]
        drops = {}
        for method in ("ssae", "aff"):
            before, after = (
                _usable_mean(plain.get(method), "state_mcc"),
                _usable_mean(mixed.get(method), "state_mcc"),
            )
            if method == "ssae" and not (
                _admissible(plain.get(method)) and _admissible(mixed.get(method))
            ):
                before = after = None
            drops[method] = None if before is None or after is None else before - after
        testable = (
            drops["aff"] is not None
            and drops["ssae"] is not None
            and drops["aff"] >= config.entangle_aff_drop_min
        )
        ok = testable and drops["ssae"] <= config.entangle_ssae_drop_max
        shown = f"{name} drop aff {_fmt(drops['aff'])}, SSAE {_fmt(drops['ssae'])}"
        outcomes.append(Outcome(name, testable, ok, shown))
    return _claim(
        "robustness to entanglement",
        key,
        outcomes,
        f"testable where aff drops >= {config.entangle_aff_drop_min}; "
        f"SSAE drop <= {config.entangle_ssae_drop_max}",
    )


def _overcompleteness(config: ClaimsConfig, llm: Mapping, key: str) -> Verdict:
    outcomes = []
    for name, sizes in llm["overcomplete"].items():
        ordered = sorted(sizes, key=lambda m: int(m[1:]))
        values = [_usable_mean(sizes[m].get("ssae"), "state_mcc") for m in ordered]
        pairs = zip(ordered, values, strict=True)
        shown = f"{name} " + ", ".join(f"{m} {_fmt(v)}" for m, v in pairs)
        testable = None not in (values[0], values[-1])
        ok = testable and values[0] - values[-1] <= config.overcomplete_drop_max
        outcomes.append(Outcome(name, testable, ok, shown))
    return _claim(
        "robustness to an overcomplete m (SSAE MCC vs full-rank coding)",
        key,
        outcomes,
        f"drop from m = n to the largest m <= {config.overcomplete_drop_max}",
    )


def _flip_rate(summary: Mapping, method: str) -> float | None:
    probe = (summary.get(method) or {}).get("probe")
    return None if probe is None else _mean(probe["common"], "flip_rate")


def _steering(
    config: ClaimsConfig, steering: Mapping, key: str, part: str, controls: Sequence[str]
) -> Verdict:
    outcomes = []
    for name, summary in steering[part].items():
        if "probe_common_set" not in summary or name in controls:
            continue
        differences = summary.get("probe_differences") or {}
        versus, sensitive = differences.get("ssae-aff"), differences.get("md-identity")
        steers = _above(sensitive, 0.0)
        testable = "ssae" in summary and steers and (versus or {}).get("low") is not None
        ssae, aff, md = (_flip_rate(summary, m) for m in ("ssae", "aff", "md"))
        shown = (
            f"{name} SSAE {_fmt(ssae)}, aff {_fmt(aff)}, MD {_fmt(md)}; SSAE - aff "
            f"{interval_text(versus)}"
            + ("" if steers else f"; MD - unsteered {interval_text(sensitive)}: cannot tell")
            + ("" if "ssae" in summary else "; no admissible SSAE model")
        )
        passed = _above(versus, config.steering_margin)
        outcomes.append(Outcome(name, testable, passed, shown, _below_zero(versus)))
    where = "in distribution" if part == "in_distribution" else "out of distribution"
    return _claim(
        f"better steering than aff {where} (probe flip rate)",
        key,
        outcomes,
        f"interval of SSAE - aff above {config.steering_margin:g}",
    )


def decide_claims(
    config: ClaimsConfig,
    identifiability: Mapping,
    steering: Mapping,
    controls: Sequence[str] = (),
) -> list[Verdict]:
    """Every claim at every layer, from metrics/identifiability.json and metrics/steering.json;
    the sets of ``controls`` are left out of the steering claims (the identifiability claims read
    ``config.multi_concept_sets`` only)."""
    verdicts = []
    for key, llm in identifiability["layers"].items():
        verdicts += [
            _consistency(config, llm, key),
            _identifiability(config, llm, key),
            _entanglement(config, llm, key),
            _overcompleteness(config, llm, key),
        ]
        for part in ("in_distribution", "out_of_distribution"):
            verdicts.append(_steering(config, steering["layers"][key], key, part, controls))
    return verdicts


def sensitivity_claims(config: ClaimsConfig, identifiability: Mapping, key: str) -> list[Verdict]:
    """Claims 1 and 2 with the cells selected at the second tolerance (their scores are in
    metrics/identifiability.json under ``sensitivity``); the other claims need runs or
    evaluations of those cells that the study does not make."""
    llm = identifiability["layers"][key]
    return [
        _consistency(config, llm, key, "sensitivity"),
        _identifiability(config, llm, key, "sensitivity"),
    ]
