"""The claims section and the headline metrics, decided from planted metrics dicts."""

from __future__ import annotations

import pytest

from ssae_core.errors import InputError
from ssae_core.study.claims import (
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    ClaimsConfig,
    decide_claims,
)
from ssae_core.study.config import ReportConfig
from ssae_core.study.summary import MAX_KEYS, headline_metrics

SETS = ("binary", "corr", "cat")


def _scores(udr: float, state: float) -> dict:
    return {"decoder_mcc": {"udr": udr}, "state_mcc": {"mean": state, "rank": 2}}


def _probe(flip: float) -> dict:
    return {"probe": {"common": {"flip_rate": {"mean": flip}}, "all_concepts": {}}}


def _metrics(ssae_udr=0.95, ssae_state=0.8, aff_state=0.6, aff_drop=0.0, flips=(0.9, 0.5)):
    sets = {
        n: {"ssae": _scores(ssae_udr, ssae_state), "aff": _scores(1.0, aff_state)} for n in SETS
    }
    entangled = {
        n: {"ssae": _scores(ssae_udr, ssae_state - 0.01), "aff": _scores(1.0, aff_state - aff_drop)}
        for n in SETS
    }
    overcomplete = {
        "cat": {"m135": {"ssae": _scores(0.9, 0.8)}, "m270": {"ssae": _scores(0.9, 0.7)}}
    }
    steering = {
        n: {
            "ssae": _probe(flips[0]),
            "aff": _probe(flips[1]),
            "md": _probe(1.0),
            "probe_common_set": {},
        }
        for n in SETS
    }
    llm = {"sets": sets, "entangled": entangled, "overcomplete": overcomplete}
    return {
        "identifiability": {"layers": {"final": llm}},
        "steering": {"layers": {"final": {"in_distribution": steering, "out_of_distribution": {}}}},
        "behaviour": {"layers": {}},
    }


def _verdicts(metrics: dict, config: ClaimsConfig | None = None) -> dict[str, str]:
    found = decide_claims(config or ClaimsConfig(), metrics["identifiability"], metrics["steering"])
    return {v.claim.split(" (")[0]: v.verdict for v in found}


def test_claims_follow_the_numbers_and_thresholds():
    verdicts = _verdicts(_metrics())
    assert verdicts["cross-seed consistency"] == REPRODUCED
    assert verdicts["SSAE identifies the concepts better than aff"] == REPRODUCED
    assert verdicts["robustness to entanglement"] == NOT_TESTABLE  # the map costs aff nothing
    assert verdicts["robustness to an overcomplete m"] == NOT_REPRODUCED  # 0.8 -> 0.7
    assert verdicts["better steering than aff in distribution"] == REPRODUCED
    assert verdicts["better steering than aff out of distribution"] == NOT_TESTABLE
    worse = _verdicts(_metrics(ssae_udr=0.5, ssae_state=0.6, aff_drop=0.2, flips=(0.5, 0.9)))
    assert worse["cross-seed consistency"] == NOT_REPRODUCED
    assert worse["SSAE identifies the concepts better than aff"] == NOT_REPRODUCED
    assert worse["robustness to entanglement"] == REPRODUCED  # aff loses 0.2, SSAE 0.01
    assert worse["better steering than aff in distribution"] == NOT_REPRODUCED
    loose = _verdicts(_metrics(), ClaimsConfig(overcomplete_drop_max=0.2))
    assert loose["robustness to an overcomplete m"] == REPRODUCED


def test_a_set_without_usable_ssae_counts_against_the_claims():
    metrics = _metrics()
    metrics["identifiability"]["layers"]["final"]["sets"]["cat"]["ssae"] = {
        "status": "no usable cell",
        "usable": False,
    }
    verdicts = _verdicts(metrics)
    assert verdicts["cross-seed consistency"] == NOT_REPRODUCED
    assert verdicts["SSAE identifies the concepts better than aff"] == NOT_REPRODUCED


def test_headline_metrics_are_few_and_name_the_layer():
    summary = headline_metrics(ReportConfig(), _metrics())
    assert summary["layer"] == "final"
    assert summary["binary"] == {
        "ssae_udr": 0.95,
        "aff_udr": 1.0,
        "ssae_flip": 0.9,
        "aff_flip": 0.5,
        "md_flip": 1.0,
    }
    assert sum(len(v) for v in summary.values() if isinstance(v, dict)) <= MAX_KEYS
    with pytest.raises(InputError, match="headline_layer"):
        headline_metrics(ReportConfig(headline_layer="7"), _metrics())


def test_unusable_overcomplete_or_entangled_runs_never_count_for_ssae():
    metrics = _metrics()
    llm = metrics["identifiability"]["layers"]["final"]
    llm["overcomplete"]["cat"]["m270"]["ssae"] = _scores(0.9, 0.8)  # no drop: reproduced ...
    assert _verdicts(metrics)["robustness to an overcomplete m"] == REPRODUCED
    llm["overcomplete"]["cat"]["m135"]["ssae"]["usable"] = False  # ... unless m = n is unusable
    assert _verdicts(metrics)["robustness to an overcomplete m"] == NOT_REPRODUCED
    tested = _metrics(aff_drop=0.2)  # the map costs aff 0.2: testable, SSAE loses 0.01
    assert _verdicts(tested)["robustness to entanglement"] == REPRODUCED
    tested["identifiability"]["layers"]["final"]["entangled"]["cat"]["ssae"]["usable"] = False
    assert _verdicts(tested)["robustness to entanglement"] == NOT_REPRODUCED
