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


def _interval(difference: float, half_width: float = 0.05) -> dict:
    return {
        "difference": difference,
        "low": difference - half_width,
        "high": difference + half_width,
    }


def _scores(udr: float, state: float, versus: float | None = None) -> dict:
    out = {"decoder_mcc": {"udr": udr}, "state_mcc": {"mean": state, "rank": 2}}
    return out | ({} if versus is None else {"versus_aff": _interval(versus)})


def _probe(flip: float) -> dict:
    return {"probe": {"common": {"flip_rate": {"mean": flip}}, "all_concepts": {}}}


def _metrics(ssae_udr=0.95, ssae_state=0.8, aff_state=0.6, aff_drop=0.0, flips=(0.9, 0.5)):
    sets = {
        n: {
            "ssae": _scores(ssae_udr, ssae_state, ssae_state - aff_state),
            "aff": _scores(1.0, aff_state),
        }
        for n in SETS
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
            "probe_differences": {
                "ssae-aff": _interval(flips[0] - flips[1]),
                "md-identity": _interval(0.8),
            },
        }
        for n in (*SETS, "lang")
    }
    steering["lang"]["probe_differences"]["ssae-aff"] = _interval(-0.5)  # a control: never counts
    llm = {"sets": sets, "entangled": entangled, "overcomplete": overcomplete}
    return {
        "identifiability": {"layers": {"final": llm}},
        "steering": {"layers": {"final": {"in_distribution": steering, "out_of_distribution": {}}}},
        "behaviour": {"layers": {}},
    }


def _decided(metrics: dict, config: ClaimsConfig | None = None) -> dict:
    found = decide_claims(
        config or ClaimsConfig(), metrics["identifiability"], metrics["steering"], ("lang",)
    )
    return {v.claim.split(" (")[0]: v for v in found}


def _verdicts(metrics: dict, config: ClaimsConfig | None = None) -> dict[str, str]:
    return {claim: v.verdict for claim, v in _decided(metrics, config).items()}


def test_claims_follow_the_intervals_and_thresholds():
    verdicts = _verdicts(_metrics())
    assert verdicts["cross-seed consistency"] == REPRODUCED
    assert verdicts["SSAE identifies the concepts better than aff"] == REPRODUCED
    assert verdicts["robustness to entanglement"] == NOT_TESTABLE  # the map costs aff nothing
    assert verdicts["robustness to an overcomplete m"] == NOT_REPRODUCED  # 0.8 -> 0.7
    assert verdicts["better steering than aff in distribution"] == REPRODUCED  # lang left out
    assert verdicts["better steering than aff out of distribution"] == NOT_TESTABLE
    worse = _verdicts(_metrics(ssae_udr=0.5, ssae_state=0.6, aff_drop=0.2, flips=(0.5, 0.9)))
    assert worse["cross-seed consistency"] == NOT_REPRODUCED
    assert worse["SSAE identifies the concepts better than aff"] == NOT_REPRODUCED
    assert worse["robustness to entanglement"] == REPRODUCED  # aff loses 0.2, SSAE 0.01
    assert worse["better steering than aff in distribution"] == NOT_REPRODUCED
    loose = _verdicts(_metrics(), ClaimsConfig(overcomplete_drop_max=0.2))
    assert loose["robustness to an overcomplete m"] == REPRODUCED


def test_a_difference_whose_interval_holds_zero_is_no_win():
    metrics = _metrics(ssae_state=0.62)  # SSAE - aff = +0.02, interval [-0.03, +0.07]
    assert _verdicts(metrics)["SSAE identifies the concepts better than aff"] == NOT_REPRODUCED


def test_where_ssae_is_worse_the_conclusion_says_so_with_its_numbers():
    from ssae_core.study.report import conclusion

    decided = _decided(_metrics(flips=(0.5, 0.9)))  # SSAE - aff flip rate -0.4 [-0.45, -0.35]
    steering = decided["better steering than aff in distribution"]
    assert steering.losses and all(
        "SSAE - aff -0.400 [-0.450, -0.350]" in x for x in steering.losses
    )
    assert not decided["SSAE identifies the concepts better than aff"].losses  # a win
    text = conclusion(list(decided.values()), {"usable": 3}, "tiny")
    assert "Where SSAE is worse than aff (the whole 95% interval of SSAE - aff below 0)" in text
    assert "lang" not in text  # a control set never counts
    assert "worse" not in conclusion(list(_decided(_metrics()).values()), {}, "tiny")


def test_a_set_without_an_admissible_ssae_model_is_not_testable():
    metrics = _metrics()
    sets = metrics["identifiability"]["layers"]["final"]["sets"]
    sets["cat"]["ssae"] = {"status": "no usable cell", "usable": False}
    decided = _decided(metrics)
    assert decided["cross-seed consistency"].verdict == REPRODUCED  # on the 2 testable sets
    assert (
        decided["cross-seed consistency"].testable,
        decided["cross-seed consistency"].total,
    ) == (2, 3)
    for name in SETS:
        sets[name]["ssae"] = {"status": "no usable cell", "usable": False}
    assert _verdicts(metrics)["SSAE identifies the concepts better than aff"] == NOT_TESTABLE


def test_steering_that_no_vector_can_show_is_not_testable():
    metrics = _metrics()
    steering = metrics["steering"]["layers"]["final"]["in_distribution"]
    for name in SETS:  # even MD cannot be told from no steering (binary -> gender, say)
        steering[name]["probe_differences"]["md-identity"] = _interval(0.0)
    decided = _decided(metrics)["better steering than aff in distribution"]
    assert (decided.verdict, decided.testable, decided.total) == (NOT_TESTABLE, 0, 3)


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


def test_unusable_overcomplete_or_entangled_runs_are_not_tested():
    metrics = _metrics()
    llm = metrics["identifiability"]["layers"]["final"]
    llm["overcomplete"]["cat"]["m270"]["ssae"] = _scores(0.9, 0.8)  # no drop: reproduced ...
    assert _verdicts(metrics)["robustness to an overcomplete m"] == REPRODUCED
    llm["overcomplete"]["cat"]["m135"]["ssae"]["usable"] = False  # m = n unusable: no test
    assert _verdicts(metrics)["robustness to an overcomplete m"] == NOT_TESTABLE
    tested = _metrics(aff_drop=0.2)  # the map costs aff 0.2: testable, SSAE loses 0.01
    assert _verdicts(tested)["robustness to entanglement"] == REPRODUCED
    for name in SETS:
        tested["identifiability"]["layers"]["final"]["entangled"][name]["ssae"]["usable"] = False
    assert _verdicts(tested)["robustness to entanglement"] == NOT_TESTABLE


def _ablation(ssae_mcc: dict[str, float]) -> dict:
    scores = {
        option: {
            "n_train": 100,
            "n_test": 30,
            "budget_ratio": 0.5,
            "aff": {"mcc": 0.4, "flip_rate": 0.2},
            "ssae": {"mcc": value, "flip_rate": None},
            "statuses": ["usable"],
        }
        for option, value in ssae_mcc.items()
    }
    return {"chosen": "global+drop", "seeds": [0], "layers": {"15": {"corr": scores}}}


def test_the_ablation_names_the_best_treatment_and_whether_the_study_uses_it():
    from ssae_core.study.report import ablation_section

    lines = ablation_section(_ablation({"global": 0.1, "layer": 0.6, "global+drop": 0.4}))
    text = "\n".join(lines)
    assert "| 15 | corr | global+drop (study) | 0.400 | 0.400 | 0.200 | – | 100 |" in text
    assert text.endswith("Best mean SSAE MCC: layer; the study uses global+drop.")
    lines = ablation_section(_ablation({"global": 0.1, "layer": 0.2, "global+drop": 0.4}))
    assert lines[-1] == "Best mean SSAE MCC: global+drop; the study uses it."
