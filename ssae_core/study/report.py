"""metrics/REPORT.md: Markdown tables of the pipeline's metrics files (stages/report.py).

Every number comes from the JSON files the stages write; the only numbers in this module are the
authors' reference values (:data:`PAPER_REFERENCE`), always printed under that name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.lm.layers import Layer, layer_name
from ssae_core.record import STATUSES
from ssae_core.runs import RUN_FILE
from ssae_core.study.ablation import OPTIONS, ablation_rows, mean_by_option
from ssae_core.study.claims import (
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    Verdict,
    decide_claims,
    interval_text,
    sensitivity_claims,
)
from ssae_core.study.config import ReportConfig, StudyConfig
from ssae_core.study.layout import METHODS, StudyLayout, lr_folder
from ssae_core.study.usability import admissible_entry

# In-distribution / OOD steering cosine reported by the authors' figure script (Llama-3.1-8B;
# per-pair reconstruction with whole-matrix normalisation, not our fixed-vector score):
# evaluation -> (SSAE, aff, MD); None where the paper gives no value.
PAPER_REFERENCE: dict[str, tuple[float | None, float | None, float | None]] = {
    "lang": (0.462, 0.426, 0.418),
    "gender": (0.652, 0.607, 0.491),
    "binary": (0.773, 0.582, None),
    "corr": (0.690, 0.442, None),
    "cat": (0.758, 0.610, None),
    "truthfulqa": (0.734, 0.596, 0.179),
    "binary->gender": (0.745, 0.530, 0.491),
    "corr->lang": (0.713, 0.483, 0.418),
}
STEER_METHODS = ("ssae", "aff", "md")


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pm(entry: Mapping | None, digits: int = 3) -> str:
    """``mean ± std`` of a summary dict (its ``std`` or ``std_seeds``); the mean alone when there
    is no spread to show (no std, or a single value); a dash when there is no mean."""
    if not entry or entry.get("mean") is None:
        return "–"
    std = entry.get("std", entry.get("std_seeds"))
    if std is None or len(entry.get("values", (0, 0))) == 1:
        return num(entry["mean"], digits)
    return f"{num(entry['mean'], digits)} ± {num(std, digits)}"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _udr(scores: Mapping | None, key: str = "decoder_mcc") -> str:
    if not scores:
        return "–"
    part = scores[key]
    return f"{part['udr']:.3f} ({part['mean']:.3f} ± {part['std']:.3f})"


# --------------------------------------------------------------------------- synthetic


def synthetic_section(results: Mapping, threshold: float = 0.99) -> list[str]:
    rows = []
    for data, methods in results.items():
        ssae, aff = methods.get("ssae", {}), methods.get("aff", {})
        for latent in sorted(set(ssae) | set(aff), key=lambda s: int(s[1:])):
            s, a = ssae.get(latent), aff.get(latent)
            mark = " ✓" if s and "mcc" in s and s["mcc"]["mean"] >= threshold else ""
            rows.append(
                [
                    data,
                    latent[1:],
                    pm(s and s.get("mcc"), 4) + mark,
                    pm(a and a.get("mcc"), 4),
                    num(s and s["decoder_mcc"]["udr"], 4),
                    num(a and a["decoder_mcc"]["udr"], 4),
                    pm(s and s.get("multiplier"), 3),
                ]
            )
    seeds = next(iter(next(iter(results.values())).values()))
    seeds = next(iter(seeds.values()))["seeds"]
    return [
        "## Identifiability on synthetic data",
        "",
        "MCC of held-out codes against the true concept shifts (mean ± std over seeds "
        f"{seeds}); decoder UDR = median pairwise MCC of decoder rows across seeds. ✓: SSAE MCC "
        f">= {threshold}.",
        "",
        *table(
            [
                "data",
                "m",
                "SSAE MCC",
                "aff MCC",
                "SSAE dec. UDR",
                "aff dec. UDR",
                "SSAE multiplier",
            ],
            rows,
        ),
    ]


# --------------------------------------------------------------------------- LLM study


def _state_mcc(scores: Mapping) -> str:
    """MCC against the full-rank coding of the labels, with its rank."""
    part = scores.get("state_mcc")
    if not part:
        return "–"
    return f"{pm(part)} (rank {part['rank']})"


LLM_HEADER = (
    "set",
    "method",
    "cell",
    "decoder UDR (mean ± std)",
    "codes UDR (mean ± std)",
    "MCC vs shifts",
    "MCC vs full-rank coding",
    "multiplier",
    "L1 (training shifts)",
    "held-out L1 (SE)",
    "steps",
)


def _llm_rows(part: Mapping) -> list[list[str]]:
    out = []
    for name, methods in part.items():
        for method in ("ssae", "aff"):
            s = methods[method]
            if s.get("status"):
                out.append([name, method, f"**{s['status']}**", *["–"] * 8])
                continue
            out.append(
                [
                    name,
                    method,
                    _cell_label(s),
                    _udr(s),
                    _udr(s, "codes_mcc"),
                    pm(s.get("mcc")),
                    _state_mcc(s),
                    pm(s.get("multiplier")),
                    pm(s.get("l1")),
                    _held_out(s),
                    num(s.get("steps", {}).get("mean"), 0),
                ]
            )
    return out


def _held_out(scores: Mapping) -> str:
    """The held-out L1 (mean over seeds) with the mean standard error of its members."""
    val, se = scores.get("val_l1"), scores.get("val_l1_se")
    if not val or val.get("mean") is None:
        return "–"
    return (
        f"{val['mean']:.3f} ({se['mean']:.3f})"
        if se and se.get("mean") is not None
        else num(val["mean"])
    )


def _entangled_drop_rows(llm: Mapping) -> list[list[str]]:
    """What the entangling map costs each method: plain minus entangled MCC (full-rank)."""
    rows = []
    for name, mixed in llm["entangled"].items():
        for method in ("ssae", "aff"):
            before = (llm["sets"][name][method].get("state_mcc") or {}).get("mean")
            after = (mixed[method].get("state_mcc") or {}).get("mean")
            drop = None if before is None or after is None else before - after
            rows.append([name, method, num(before), num(after), num(drop)])
    return rows


def llm_section(llm: Mapping) -> list[str]:
    lines = [
        "## Identifiability on LLM embeddings",
        "",
        "Cross-seed MCC of decoder rows (the paper's Table 2) and of held-out codes: UDR = median "
        "of the pairwise values, with their mean ± std; MCC of held-out codes against the known "
        "concept shifts where they vary, and against the full-rank coding of the labels (one "
        "column per value of each labelled variable but a reference value: on cat 27 independent "
        "columns instead of 135 linearly dependent contrasts), mean ± std over seeds. SSAE is the "
        "cell chosen without labels (see the selection grid); a set with no usable cell has no "
        "SSAE row.",
        "",
        *table(LLM_HEADER, _llm_rows(llm["sets"])),
        "",
        "### Entangled embeddings (Table 3)",
        "",
        "The sets of `study.entangled_sets` after a dense invertible map of z and z~ (params "
        "`entangle`: its condition number is `max_condition`); SSAE at `study.budget_ratio` "
        "x aff's L1 on the entangled data. What the map costs each method (MCC vs the "
        "full-rank coding, plain minus entangled) is in the second table: the claim of "
        "robustness is testable only if it costs aff something.",
        "",
        *table(LLM_HEADER, _llm_rows(llm["entangled"])),
        "",
        *table(["set", "method", "MCC plain", "MCC entangled", "drop"], _entangled_drop_rows(llm)),
    ]
    header = ["m", "method", "cell", "decoder UDR", "codes UDR", "MCC vs shifts"]
    header += ["MCC vs full-rank coding", "multiplier"]
    for name, runs in llm["overcomplete"].items():
        rows = [
            [
                m[1:],
                method,
                _cell_label(s),
                _udr(s),
                _udr(s, "codes_mcc"),
                pm(s.get("mcc")),
                _state_mcc(s),
                pm(s["multiplier"]),
            ]
            for m, both in runs.items()
            for method, s in both.items()
        ]
        lines += ["", f"### Overcompleteness on {name} (appendix B.3)", "", *table(header, rows)]
    return lines


def _cell_label(scores: Mapping) -> str:
    """``lr 0.003, r 0.5`` (and why the run is unusable) for an SSAE run; empty for aff."""
    if "budget_ratio" not in scores:
        return ""
    label = f"r {scores['budget_ratio']:g}"
    if "lr" in scores:
        label = f"lr {scores['lr']:g}, {label}"
    if not scores["usable"]:
        reasons = sorted({u for u in scores.get("usability", []) if u != "usable"})
        label += f" **unusable** ({'; '.join(reasons) or 'see the grid'})"
    return label


def selection_section(udr: Mapping) -> list[str]:
    lines = [
        "## Model selection (UDR grid)",
        "",
        "Every SSAE cell (budget ratio r x learning rate, all seeds; budget = r x aff's L1 over "
        "the training shifts of the same data); selected without labels: "
        f"{next(iter(udr['sets'].values()))['rule']}. **bold** = selected. A cell with a member "
        "that is not admissible (see *How every SSAE member ended*) is never selected. L1 is "
        "over the training shifts (eval mode), as the budget; MCC vs shifts is shown, never "
        "used.",
        "",
    ]
    rows = []
    for name, entry in udr["sets"].items():
        chosen = entry["selected"]
        key = None if chosen is None else (chosen["lr"], chosen["budget_ratio"])
        for cell in entry["cells"]:
            bold = "**" if (cell["lr"], cell["budget_ratio"]) == key else ""
            rows.append(
                [
                    f"{bold}{name}{bold}",
                    f"{cell['lr']:g}",
                    f"{cell['budget_ratio']:g}",
                    num(cell["sparsity"]),
                    num(cell["decoder_mcc"]["udr"]),
                    num(cell["codes_mcc"]["udr"]),
                    pm(cell.get("mcc")),
                    pm(cell["l1"]),
                    pm(cell["multiplier"]),
                    "yes" if cell["usable"] else "; ".join(sorted(set(cell["usability"]))),
                ]
            )
        if chosen is None:
            rows.append([f"**{name}**", "–", "–", "–", "no usable cell", *["–"] * 5])
    header = ["set", "lr", "r", "budget", "decoder UDR", "codes UDR", "MCC vs shifts", "L1"]
    return lines + table([*header, "multiplier", "usable"], rows)


# --------------------------------------------------------------------------- steering


def _reference(key: str, method: str) -> str:
    ref = PAPER_REFERENCE.get(key)
    return num(ref[STEER_METHODS.index(method)]) if ref else "–"


def steering_section(steering: Mapping) -> list[str]:
    lines = [
        "## Steering accuracy",
        "",
        "Mean cos(z + alpha v, z~) over single-concept held-out pairs with a FIXED vector per "
        "concept (learnt on training pairs; alpha fitted on training pairs, the same rule for "
        "every method), averaged over concepts; ± = std over seeds (MD is deterministic). "
        "identity = cos(z, z~); gain = steered - identity. *Reconstruction* is the paper-parity "
        "variant (each test pair's own reconstruction added: it sees the test shift). *paper* = "
        "the authors' values (Llama-3.1-8B, per-pair reconstruction): a reference, not the same "
        "score.",
        "",
    ]
    header = ["evaluation", "method", "identity", "steered", "gain", "reconstruction"]
    header += ["concepts scored", "paper"]
    for part, title in (("in_distribution", "In distribution"), ("out_of_distribution", "OOD")):
        rows = []
        for key, summary in steering[part].items():
            for method in STEER_METHODS:
                s = summary.get(method)
                if s is None:
                    rows.append([key, method, "no usable cell", *["–"] * 5])
                    continue
                scored = sorted(set(s["n_scored"]))
                rows.append(
                    [
                        key,
                        method,
                        num(s["identity"]["mean"]),
                        pm(s["steered"]),
                        pm(s["gain"]),
                        pm(s.get("reconstruction")),
                        f"{'/'.join(map(str, scored))} of {s['n_concepts']}",
                        _reference(key, method),
                    ]
                )
        lines += ["", f"### {title}", "", *table(header, rows)]
    return lines


def _interval(entry: Mapping | None) -> str:
    if not entry or entry.get("low") is None:
        return ""
    return f" [{num(entry['low'])}, {num(entry['high'])}]"


def _probe_row(label: str, method: str, scores: Mapping | None, n_unmatched: str) -> list[str]:
    common, every = (scores or {}).get("common", {}), (scores or {}).get("all_concepts", {})
    return [
        label,
        method,
        pm(common.get("flip_rate")) + _interval(common.get("flip_rate_interval")),
        pm(every.get("flip_rate")) + _interval(every.get("flip_rate_interval")),
        n_unmatched,
        pm(common.get("selectivity")),
        pm(common.get("random_flip_rate")),
        pm(common.get("random_selectivity")),
        pm(common.get("cosine_gain")) + _interval(common.get("cosine_gain_interval")),
    ]


PROBE_HEADER = (
    "evaluation",
    "method",
    "flip rate, common concepts [95% CI]",
    "flip rate, all concepts (unmatched = 0)",
    "unmatched",
    "selectivity (0 = only its variable moves)",
    "random vector: flip rate",
    "random vector: selectivity",
    "cosine gain, common [95% CI]",
)


def probe_section(steering: Mapping) -> list[str]:
    """Steering measured by what it changes: held-out probes of every labelled variable."""
    lines = [
        "## Steering measured by what it changes (held-out probes)",
        "",
        "A logistic probe per labelled variable, trained on the training texts' embeddings only, "
        "reads the state of each text. Each method's fixed concept vector (the same vector and "
        "fitted alpha as the cosine score) is added to the held-out source embeddings: flip rate "
        "= share of test pairs whose probe prediction becomes the target state; selectivity = "
        "mean change of every other variable's probe probability of its current state. Methods "
        "are compared on the same concepts: *common* = the concepts every member of every method "
        "could score (their number below); *all concepts* counts a concept a method could not "
        "match as a failure. Random vector: a random unit vector at the method's alpha (a floor; "
        "a large random step also disturbs other variables). identity = the unsteered z; test-set "
        "MD = the mean shift of the test pairs themselves at its best multiple of alpha (a "
        "ceiling for fixed vectors, not a method). Intervals: bootstrap over test entities "
        "(words, professions, phrases, questions); ± = std over seeds.",
        "",
    ]
    for part, title in (("in_distribution", "In distribution"), ("out_of_distribution", "OOD")):
        rows, notes = [], []
        for key, summary in steering[part].items():
            if "probe_common_set" not in summary:
                continue
            common = summary["probe_common_set"]
            accuracy = ", ".join(f"{v} {num(a)}" for v, a in summary["probe_accuracy"].items())
            notes.append(
                f"{key}: {common['n_concepts']} common of {common['n_with_test_pairs']} concepts "
                f"with test pairs; probe test accuracy {accuracy}"
            )
            for method in STEER_METHODS:
                entry = summary.get(method)
                if entry is None:
                    rows.append([key, method, "no usable cell", *["–"] * 6])
                    continue
                unmatched = entry["probe"]["all_concepts"].get("n_unmatched")
                shown = "/".join(map(str, sorted(set(unmatched)))) if unmatched else "0"
                rows.append(_probe_row(key, method, entry["probe"], shown))
            for ref in ("identity", "test_md"):
                scores = summary["probe_references"][ref]
                rows.append(_probe_row(key, f"*{ref.replace('_', '-')}*", scores, "–"))
        if rows:
            lines += ["", f"### {title}", "", *table(PROBE_HEADER, rows), ""]
            lines += [f"- {note}" for note in notes]
    return lines


def claims_section(verdicts: Sequence[Verdict], sensitivity: Sequence[Verdict]) -> list[str]:
    """The paper's claims, decided from the metrics (thresholds: params.yaml report.claims)."""

    def rows(found: Sequence[Verdict]) -> list[list[str]]:
        return [
            [v.claim, v.layer, f"**{v.verdict}**", f"{v.testable} of {v.total}", v.evidence,
             v.threshold]
            for v in found
        ]  # fmt: skip

    header = ["claim", "layer", "verdict", "testable sets", "numbers", "threshold"]
    return [
        "## The paper's claims, as measured here",
        "",
        "Each claim decided at every layer from the metrics files, against the thresholds in "
        "params.yaml (`report.claims`), set by set. Differences SSAE - aff are shown with their "
        "95% paired bootstrap interval over test entities; SSAE wins a set only where the whole "
        "interval lies above the margin. A set is not testable where SSAE has no admissible "
        "model, or (steering) where even the MD vector cannot be told from no steering; a claim "
        "with no testable set is not testable. The control sets are left out "
        "(see *Controls*).",
        "",
        *table(header, rows(verdicts)),
        "",
        "**Sensitivity.** Claims 1 and 2 again, with the grid cells selected at the second "
        "tolerance (`study.sensitivity_tolerance`); the other claims would need runs or "
        "evaluations of those cells that the study does not make.",
        "",
        *table(header, rows(sensitivity)),
    ]


def conclusion(verdicts: Sequence[Verdict], statuses: Mapping[str, int], model_name: str) -> str:
    """The report's opening paragraph, generated from the verdicts and the members' statuses."""
    counts = {
        v: sum(x.verdict == v for x in verdicts) for v in (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE)
    }
    lost = sorted(
        {
            f"{v.claim.split(' (')[0]} at layer {v.layer}"
            for v in verdicts
            if v.verdict == NOT_REPRODUCED
        }
    )
    won = sorted(
        {
            f"{v.claim.split(' (')[0]} at layer {v.layer}"
            for v in verdicts
            if v.verdict == REPRODUCED
        }
    )
    total = sum(statuses.values())
    status_text = ", ".join(f"{n} {k}" for k, n in statuses.items() if n)
    text = (
        f"**Conclusion.** On `{model_name}`, of {len(verdicts)} claim x layer checks "
        f"{counts[REPRODUCED]} are reproduced, {counts[NOT_REPRODUCED]} not reproduced and "
        f"{counts[NOT_TESTABLE]} not testable. "
    )
    if won:
        text += f"Reproduced: {'; '.join(won)}. "
    if lost:
        text += f"Where SSAE does not do what the paper claims: {'; '.join(lost)}. "
    worse = sorted(
        {f"{v.claim.split(' (')[0]} at layer {v.layer}: {x}" for v in verdicts for x in v.losses}
    )
    if worse:
        text += (
            "Where SSAE is worse than aff (the whole 95% interval of SSAE - aff below 0): "
            f"{'; '.join(worse)}. "
        )
    if total:
        text += f"Of {total} SSAE members trained for the grids: {status_text}."
    return text


def status_counts(udr: Mapping) -> dict[str, int]:
    """How many SSAE grid members (every layer, set and cell) ended in each status."""
    counts = dict.fromkeys(STATUSES, 0)
    for layer in udr["layers"].values():
        for entry in layer["sets"].values():
            for cell in entry["cells"]:
                for status in cell["usability"]:
                    counts[status] = counts.get(status, 0) + 1
    return counts


def status_section(udr: Mapping) -> list[str]:
    """Every grid member's status and the steps it used, per layer and set."""
    rows = []
    for key, layer in udr["layers"].items():
        for name, entry in layer["sets"].items():
            found = dict.fromkeys(STATUSES, 0)
            steps = []
            for cell in entry["cells"]:
                for status in cell["usability"]:
                    found[status] = found.get(status, 0) + 1
                steps.append(cell["steps"]["mean"])
            rows.append(
                [key, name + (" (control)" if entry.get("control") else ""),
                 *[str(found[s]) for s in STATUSES], f"{min(steps):.0f}-{max(steps):.0f}"]
            )  # fmt: skip
    counts = status_counts(udr)
    total = sum(counts.values()) or 1
    share = ", ".join(f"{k} {n} ({n / total:.0%})" for k, n in counts.items())
    return [
        "## How every SSAE member ended",
        "",
        "Status of every member of every grid cell (ssae_core/record.py): *usable* (multiplier > 0 "
        "and its L1 over its training shifts at most its budget x (1 + tolerance)), *slack* "
        "(multiplier 0: the budget never bound; admissible on a control set), *infeasible* "
        "(above its budget although the Lagrangian settled) and *not converged* (above it and "
        "still moving at the step limit); with the mean steps per cell. "
        f"All grids: {share}.",
        "",
        *table(["layer", "set", *STATUSES, "steps (cells)"], rows),
    ]


def outlier_section(identifiability: Mapping) -> list[str]:
    """Texts and shifts above the outlier factor x the training median, per set, layer, split."""
    rows = []
    for key, llm in identifiability["layers"].items():
        for name, found in llm.get("outliers", {}).items():
            for kind in ("texts", "shifts"):
                entry = found[kind]
                splits = [k for k in entry if k not in ("median_norm", "max_ratio")]
                ratio = entry["max_ratio"]
                rows.append(
                    [key, name, kind, num(entry["median_norm"], 1),
                     "–" if ratio is None else f"{ratio:.1f}x",
                     ", ".join(f"{k} {entry[k]}" for k in splits)]
                )  # fmt: skip
    some = next(
        (f for llm in identifiability["layers"].values() for f in llm.get("outliers", {}).values()),
        None,
    )
    if some is None:
        return []
    what = "dropped from every split" if some["dropped"] else "kept (study.drop_outliers: false)"
    return [
        "## Outliers",
        "",
        f"Texts (z and z~) and shifts whose norm exceeds {some['factor']:g} x the median of the "
        f"set's training split at that layer (`study.outlier_factor`), per split; the largest "
        f"ratio to the median. Outlier pairs are {what}.",
        "",
        *table(["layer", "set", "kind", "median norm", "largest / median", "outliers"], rows),
    ]


def _ablation_row(row: Mapping, chosen: str) -> list[str]:
    option = row["option"] + (" (study)" if row["option"] == chosen else "")
    scores = (num(row[key]) for key in ABLATION_SCORES)
    return [row["layer"], row["set"], option, *scores, str(row["n_train"])]


def ablation_section(ablation: Mapping) -> list[str]:
    """The outlier treatments compared (stage ablation), with the option the study uses and
    the option with the best mean SSAE MCC."""
    rows = ablation_rows(ablation["layers"])
    if not rows:
        return []
    means = {key: mean_by_option(rows, key) for key in ABLATION_SCORES}
    known = {o: v for o, v in means["ssae_mcc"].items() if v is not None}
    best = max(known, key=known.__getitem__)
    chosen = ablation["chosen"]
    verdict = "the study uses it" if best == chosen else f"the study uses {chosen}"
    header = ["layer", "set", "option", *ABLATION_SCORES.values(), "train pairs"]
    mean_rows = [
        [label, *(num(means[k][o]) for o in OPTIONS)] for k, label in ABLATION_SCORES.items()
    ]
    return [
        "## Outlier treatments (ablation)",
        "",
        "aff and SSAE (the set's middle grid ratio, seeds "
        f"{ablation['seeds']}) trained under each treatment on the same embeddings: `global` "
        "(one normalisation for all shifts), `layer` (each shift divided by its own RMS, as the "
        "authors' code does), `global+drop` (global, outlier pairs dropped from every split). "
        "Held-out MCC against the full-rank coding of the labels and the probe flip rate (common "
        "concept set) of each, on that option's test split (params `study.ablation`; the study's "
        "own treatment: `study.optim.normalize`, `study.drop_outliers`).",
        "",
        *table(header, [_ablation_row(r, chosen) for r in rows]),
        "",
        *table(["mean over sets and layers", *OPTIONS], mean_rows),
        "",
        f"Best mean SSAE MCC: {best}; {verdict}.",
    ]


ABLATION_SCORES = {
    "aff_mcc": "aff MCC",
    "ssae_mcc": "SSAE MCC",
    "aff_flip_rate": "aff flip rate",
    "ssae_flip_rate": "SSAE flip rate",
}


def control_section(identifiability: Mapping, steering: Mapping) -> list[str]:
    """The control sets: is SSAE within its interval of aff?"""
    rows = []
    for key, llm in identifiability["layers"].items():
        for name, methods in llm["sets"].items():
            if not methods.get("control"):
                continue
            ssae = methods["ssae"]
            versus = ssae.get("versus_aff")
            probe = (
                (steering["layers"][key]["in_distribution"].get(name) or {})
                .get("probe_differences", {})
                .get("ssae-aff")
            )
            inside = [
                "yes" if d["low"] <= 0 <= d["high"] else "no"
                for d in (versus, probe) if d and d.get("low") is not None
            ]  # fmt: skip
            rows.append(
                [key, name, ssae.get("status") or _cell_label(ssae), interval_text(versus),
                 interval_text(probe), " / ".join(inside) or "–"]
            )  # fmt: skip
    if not rows:
        return []
    return [
        "## Controls: one concept per pair",
        "",
        "In these sets every pair changes the one concept, so the true code is non-zero on every "
        "pair and its L1 equals aff's: a sparsity budget cannot help, and SSAE should equal aff "
        "(budget ratios around 1, `study.control_budget_ratio`; a slack member is admissible). "
        "Differences SSAE - aff with their paired 95% intervals; *within* = the interval holds 0.",
        "",
        *table(
            [
                "layer",
                "set",
                "SSAE cell",
                "MCC SSAE - aff",
                "flip rate SSAE - aff",
                "within (MCC / flip)",
            ],
            rows,
        ),
    ]


def layer_choice_section(identifiability: Mapping, steering: Mapping) -> list[str]:
    """Per set, the layer chosen without labels (highest decoder UDR of the selected SSAE cell)
    against the layer with the best SSAE probe flip rate."""
    rows = []
    names = next(iter(identifiability["layers"].values()))["sets"]
    for name in names:
        udrs, flips = {}, {}
        for key, llm in identifiability["layers"].items():
            entry = llm["sets"][name]["ssae"]
            if admissible_entry(entry):
                udrs[key] = entry["decoder_mcc"]["udr"]
            summary = steering["layers"][key]["in_distribution"].get(name) or {}
            flip = ((summary.get("ssae") or {}).get("probe") or {}).get("common", {})
            if flip.get("flip_rate", {}).get("mean") is not None:
                flips[key] = flip["flip_rate"]["mean"]
        by_udr = max(udrs, key=udrs.get) if udrs else None
        by_flip = max(flips, key=flips.get) if flips else None
        match = "–" if None in (by_udr, by_flip) else ("yes" if by_udr == by_flip else "no")
        rows.append(
            [name, by_udr or "–", ", ".join(f"{k} {v:.3f}" for k, v in udrs.items()) or "–",
             by_flip or "–", ", ".join(f"{k} {v:.3f}" for k, v in flips.items()) or "–", match]
        )  # fmt: skip
    return [
        "## The layer, chosen without labels",
        "",
        "Per set, the layer whose selected SSAE cell has the highest decoder UDR (no labels), "
        "against the layer where SSAE's probe flip rate (labels) is best: the paper's promise is "
        "steering vectors without supervision.",
        "",
        *table(
            ["set", "by UDR", "UDR per layer", "by flip rate", "flip rate per layer", "same"], rows
        ),
    ]


def overview_section(identifiability: Mapping, steering: Mapping) -> list[str]:
    """One table: every layer x set x method, identifiability next to steering."""
    rows = []
    for key, llm in identifiability["layers"].items():
        in_dist = steering["layers"][key]["in_distribution"]
        for name, methods in llm["sets"].items():
            for method in STEER_METHODS:
                scores = methods.get(method, {}) if method != "md" else {}
                probe = (in_dist.get(name, {}).get(method) or {}).get("probe") or {}
                status = scores.get("status")
                rows.append(
                    [
                        key,
                        name,
                        method,
                        status or _udr(scores),
                        _state_mcc(scores),
                        pm((probe.get("common") or {}).get("flip_rate")),
                        pm((probe.get("common") or {}).get("selectivity")),
                        pm((probe.get("common") or {}).get("cosine_gain")),
                    ]
                )
    header = ["layer", "set", "method", "decoder UDR", "MCC vs full-rank coding"]
    header += ["flip rate (common)", "selectivity", "cosine gain (common)"]
    return [
        "## Overview: every layer, set and method",
        "",
        "Identifiability (held-out, selected SSAE cell vs aff; MD has no codes) next to steering "
        "measured by held-out probes on the same concepts. Details per layer below.",
        "",
        *table(header, rows),
    ]


def timing_section(timings: Mapping[str, float]) -> list[str]:
    total = sum(timings.values())
    rows = [[name, f"{sec:.1f}", f"{100 * sec / total:.0f}%"] for name, sec in timings.items()]
    rows.append(["**all study training**", f"**{total:.1f}**", "100%"])
    return [
        "## Training time of the LLM study",
        "",
        "Wall time of each stacked training run (run.json `train_seconds`; process start-up and "
        "data loading not included), summed per kind of run.",
        "",
        *table(["runs", "seconds", "share"], rows),
    ]


# --------------------------------------------------------------------------- behaviour


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "/").replace("\n", "⏎").strip() + "`"


def _ci(entry: Mapping) -> str:
    """``mean [low, high]`` of a held-out measure with its bootstrap interval."""
    low, high = entry["interval"]
    return f"{num(entry['mean'])} [{num(low)}, {num(high)}]"


def _vector_lines(section: dict) -> list[str]:
    lines = []
    for method, report in section["vectors"].items():
        seeds = f"seeds {report['seeds']}" if report["seeds"] is not None else "one vector"
        match = ""
        if report["latent"] is not None:
            match = f"; matched latents {report['latent']}, match scores {report['match_score']}"
        if report.get("cosine_to_md") is not None:
            match += f"; cosine with the md vector {pm(report['cosine_to_md'], 2)}"
        point = section["operating_points"][method]
        lines.append(
            f"- {method} ({seeds}): operating point {point:g} (chosen on training data); "
            f"fitted alpha {pm(report['alpha_fit'], 2)}{match}"
        )
    return lines


def _sweep_lines(section: dict, cell: Callable[[Mapping], str], what: str) -> list[str]:
    """The training sweep the operating points were chosen from: one row per method, one
    column per strength (0 = unsteered)."""
    sweep = section["train_sweep"]
    strengths = sorted({row["strength"] for row in sweep})
    rows = [
        [
            method,
            *(
                cell(r)
                for s in strengths
                for r in sweep
                if r["method"] == method and r["strength"] == s
            ),
        ]
        for method in dict.fromkeys(r["method"] for r in sweep)
    ]
    return [
        f"Training sweep ({what}; the operating point of each method is its best column):",
        "",
        *table(["method", *(f"{s:g}" for s in strengths)], rows),
    ]


def _prompting_text(section: Mapping, item: str) -> str:
    """How the prompting conditions asked (``prompt_format``; results without one are plain)."""
    told = f"`{section['instruction']}`"
    if section.get("prompt_format", "plain") != "chat":
        return f"Prompting: {told} on the line before the {item}."
    return (
        f"Prompting: the {item} is the user's turn of the model's chat template, with {told} "
        f"before it; `chat` asks the same without the instruction (the format's own effect); "
        f"the vector rows without prompting read the plain {item}, as on the training sweep."
    )


def _comparison_lines(section: Mapping, measure: str, item: str) -> list[str]:
    """The paired differences of the held-out conditions (absent in older results)."""
    found = section.get("comparisons")
    if not found:
        return []
    rows = [
        [
            f"{c['a']} - {c['b']}",
            f"{num(c['difference'])} [{num(c['interval'][0])}, {num(c['interval'][1])}]",
            c["verdict"] if c["verdict"] == "no difference" else f"**{c['a']} {c['verdict']}**",
        ]
        for c in found
    ]
    return [
        "",
        f"Paired differences of {measure} on the same held-out {item}s (95% bootstrap over "
        f"{item}s; a side is named only when the whole interval excludes 0):",
        "",
        *table(["a - b", "difference [interval]", "verdict"], rows),
    ]


def _truthfulqa_lines(tqa: dict) -> list[str]:
    rows = [
        [name, f"{entry['strength']:g}", _ci(entry["accuracy"])]
        for name, entry in tqa["test"].items()
    ]
    return [
        "### TruthfulQA MC1 (truthfulness vector)",
        "",
        f"{tqa['n_questions']} of the {tqa.get('n_test_questions', tqa['n_questions'])} held-out "
        f"questions ({tqa['n_choices']} choices; chance {num(tqa['chance_accuracy'])}); each "
        "choice is scored by the summed log-probability of its answer tokens after the prompt "
        f"`{tqa['template']!r}`, the best-scoring choice is the answer. Operating points: the "
        f"most accurate strength on {tqa['n_train_questions']} training questions. "
        f"{_prompting_text(tqa, 'question')} In the chat, each choice as written is the "
        "assistant's answer. Intervals: 95% bootstrap over questions.",
        "",
        *_vector_lines(tqa),
        "",
        *table(["condition", "strength", "MC1 accuracy [interval]"], rows),
        *_comparison_lines(tqa, "MC1 accuracy", "question"),
        "",
        *_sweep_lines(tqa, lambda r: num(r["accuracy"]), "MC1 accuracy"),
    ]


def _language_lines(lang: dict) -> list[str]:
    code, rule = lang["language"], lang["fluency"]
    rows = [
        [
            name,
            f"{entry['strength']:g}",
            _ci(entry["concept"]),
            _ci(entry["fluency"]),
            num(entry["score"]),
            _ci(entry["detected"]),
        ]
        for name, entry in lang["test"].items()
    ]
    header = ["condition", "strength", f"fluent {code} [interval]", "fluent [interval]"]
    header += ["harmonic mean", f"{code} by detector alone"]
    return [
        f"### Language (language vector: English -> {code})",
        "",
        f"{len(lang['test_prompts'])} held-out neutral English prompts, greedy continuations of "
        f"{lang['max_new_tokens']} new tokens (steered positions: {lang['positions']}). A "
        f"continuation counts as `{code}` only if py3langid says so AND it is fluent: at least "
        f"{rule['min_distinct']:g} of its tokens distinct and a perplexity under the unsteered "
        "model, given the prompt without the instruction in the condition's format, of at most "
        f"{num(rule['max_perplexity'], 1)} ({rule['perplexity_factor']:g} x the largest "
        "unsteered one on the training prompts). Operating points: the strength with the best "
        f"harmonic mean of the two shares on {len(lang['train_prompts'])} training prompts. "
        f"{_prompting_text(lang, 'prompt')} Intervals: 95% bootstrap over prompts.",
        "",
        *_vector_lines(lang),
        "",
        *table(header, rows),
        *_comparison_lines(lang, f"the fluent-{code} share", "prompt"),
        "",
        *_sweep_lines(
            lang,
            lambda r: f"{num(r['concept'], 2)} / {num(r['fluency'], 2)} ({num(r['detected'], 2)})",
            f"fluent {code} / fluent ({code} by detector alone)",
        ),
        "",
        "Held-out samples (first seed of each method):",
        "",
        *table(
            ["condition", "prompt", "continuation"],
            [
                [name, _cell(prompt), _cell(text)]
                for name, entry in lang["test"].items()
                for prompt, text in zip(lang["test_prompts"], entry["samples"], strict=False)
            ],
        ),
    ]


BEHAVIOUR_FINDINGS = "**Behaviour.**"
_BEHAVIOURS = (("truthfulqa", "accuracy", "MC1 accuracy"), ("language", "concept", "fluent share"))


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + num(value)


def _findings(section: Mapping, measure: str, label: str) -> str:
    """One behaviour at one layer: the best condition, SSAE and prompting, and the paired
    differences whose interval excludes 0 (the others listed as no difference)."""
    test = section["test"]
    best = max(test, key=lambda name: test[name][measure]["mean"])
    shown = dict.fromkeys([best, "ssae", "prompting"])
    parts = [
        f"{'best ' if name == best else ''}{name} {_ci(test[name][measure])}"
        for name in shown
        if name in test
    ]
    called, tied = [], []
    for c in section.get("comparisons", []):
        if c["verdict"] == "no difference":
            tied.append(f"{c['a']} vs {c['b']}")
        else:
            low, high = c["interval"]
            called.append(
                f"{c['a']} {c['verdict']} than {c['b']} "
                f"({_signed(c['difference'])} [{_signed(low)}, {_signed(high)}])"
            )
    text = f"{label}: {', '.join(parts)}"
    if called:
        text += "; " + "; ".join(called)
    if tied:
        text += "; no difference: " + ", ".join(tied)
    return text


def behaviour_findings(layers: Mapping[str, Mapping]) -> str:
    """One paragraph over every steered layer and behaviour (held-out scores, paired
    differences): what the behaviour stage found, for the top of the report and the README."""
    found = [
        f"At layer {key}, {_findings(results[name], measure, label)}"
        for key, results in layers.items()
        for name, measure, label in _BEHAVIOURS
        if name in results
    ]
    if not found:
        return f"{BEHAVIOUR_FINDINGS} The behaviour stage steered no layer."
    return (
        f"{BEHAVIOUR_FINDINGS} The LM steered with each method's vector at its operating point "
        "(chosen on training data), scored on held-out questions / prompts with 95% bootstrap "
        "intervals; a side is named only when the paired interval excludes 0 (MC1 accuracy on "
        "TruthfulQA; fluent share = share of continuations both fluent and in the target "
        "language). " + ". ".join(found) + "."
    )


def behaviour_section(results: dict) -> list[str]:
    """The behavioural evaluation: what was measured, on what data, and the tables."""
    tqa = results["truthfulqa"]
    return [
        "## Behavioural steering of the language model",
        "",
        "The LM itself is steered: `strength × norm × v` is added to its residual stream at the "
        f"layer the embeddings were read at ({tqa['layer']}; `final` = the final-norm output), "
        f"at every position; norm = {num(tqa['norm'], 1)}, the median norm of the unsteered "
        "hidden states there (BOS left out), so strength 1 adds a vector as long as a typical "
        "hidden state and every method adds the same length. v is a unit vector for the "
        "concept: SSAE and aff, the decoder row matched to the concept on the training pairs; "
        "MD, the mean training shift. Each method's strength is chosen on training data only, "
        "then scored on held-out data next to the unsteered model, the prompting baseline and "
        "prompting + the vector (strength 0: steering did not beat the unsteered model).",
        "",
        *_truthfulqa_lines(tqa),
        "",
        *_language_lines(results["language"]),
    ]


# --------------------------------------------------------------------------- the report

REPORT_INPUTS = ("identifiability", "udr", "steering", "behaviour", "ablation")


def _run_seconds(run_dir: Path) -> float:
    return float(json.loads((run_dir / RUN_FILE).read_text())["train_seconds"])


def training_times(
    study: StudyConfig, layout: StudyLayout, layers: Sequence[Layer]
) -> dict[str, float]:
    """Seconds of every study run, summed per layer and kind (grid per set, aff, entangled,
    overcomplete): every run.json under the study's model folders."""
    times: dict[str, float] = defaultdict(float)
    for layer in layers:
        at, key = layout.at(layer), f"layer {layer_name(layer)}"
        for name in sorted(study.sets):
            for lr in sorted(study.grid.lr, key=lr_folder):
                times[f"{key}: SSAE grid, {name}"] += _run_seconds(at.grid_run(name, lr))
            times[f"{key}: aff, all sets"] += _run_seconds(at.aff_run(name))
        for name in sorted(study.entangled_sets):
            for method in sorted(METHODS):
                times[f"{key}: entangled aff + SSAE, {', '.join(study.entangled_sets)}"] += (
                    _run_seconds(at.entangled_models(name) / method)
                )
        for run_json in sorted(
            at.overcomplete_models(study.overcomplete.set).glob("*/*/" + RUN_FILE)
        ):
            times[f"{key}: overcompleteness sweep"] += _run_seconds(run_json.parent)
    return dict(times)


def load_metrics(layout: StudyLayout) -> dict[str, dict]:
    """The metrics files the report is built from."""
    metrics = {}
    for name in REPORT_INPUTS:
        path = layout.metrics(name)
        if not path.exists():
            raise InputError(f"{path}: missing; run `dvc repro` (the stage that writes it) first")
        metrics[name] = json.loads(path.read_text())
    return metrics


def build_report(
    study: StudyConfig,
    config: ReportConfig,
    model_name: str,
    metrics: Mapping[str, dict],
    timings: Mapping[str, float],
    figures: Sequence[tuple[str, str]] = (),
) -> str:
    """metrics/REPORT.md: every table of the study, from the metrics files; ``figures``: the
    (title, path relative to the report) of every rendered plot."""
    identifiability, steering = metrics["identifiability"], metrics["steering"]
    verdicts = decide_claims(config.claims, identifiability, steering, study.controls)
    sensitivity = [
        v for key in identifiability["layers"]
        for v in sensitivity_claims(config.claims, identifiability, key)
    ]  # fmt: skip
    lines = [
        "# SSAE study report",
        "",
        conclusion(verdicts, status_counts(metrics["udr"]), model_name),
        "",
        behaviour_findings(metrics["behaviour"]["layers"]),
        "",
        "Generated by `dvc repro report` (stages/report.py) from the metrics files; do not edit.",
        f"Language model: `{model_name}`; layers {', '.join(identifiability['layers'])} "
        "(params `embed`). LLM study: "
        f"seeds {list(study.seeds)}, m = {study.latent_factor} x (number of concepts), "
        f"aff {study.optim.steps} steps, SSAE {study.optim.steps}-{study.optim.max_steps} "
        "steps (until its Lagrangian settles); SSAE budgets = ratio x aff's L1 over the training "
        f"shifts of the same data and m, grid ratios {list(study.grid.budget_ratio)} "
        f"(controls {list(study.control_budget_ratio)}) x lr {list(study.grid.lr)}; an SSAE "
        "member is usable only if its multiplier is positive and its L1 over its training "
        f"shifts is at most its budget + {study.usable_tolerance:.0%}.",
        "",
        *claims_section(verdicts, sensitivity),
        "",
        *overview_section(identifiability, steering),
        "",
        "Below: the control sets, how every SSAE member ended, the outliers and the treatment "
        "ablation, the layer chosen without labels, the synthetic check; then every table per "
        "layer (identifiability, grid selection, probes, steering, behaviour), training times "
        "and the figures.",
        "",
        *control_section(identifiability, steering),
        "",
        *status_section(metrics["udr"]),
        "",
        *outlier_section(identifiability),
        "",
        *ablation_section(metrics["ablation"]),
        "",
        *layer_choice_section(identifiability, steering),
        "",
        *synthetic_section(identifiability["synthetic"]),
    ]
    for key in metrics["udr"]["layers"]:
        lines += [
            "",
            f"# Layer {key}",
            "",
            *llm_section(identifiability["layers"][key]),
            "",
            *selection_section(metrics["udr"]["layers"][key]),
            "",
            *probe_section(steering["layers"][key]),
            "",
            *steering_section(steering["layers"][key]),
        ]
        if key in metrics["behaviour"]["layers"]:
            lines += ["", *behaviour_section(metrics["behaviour"]["layers"][key])]
    lines += ["", *timing_section(timings)]
    if figures:
        lines += ["", "## Figures", "", "The plots dvc.yaml declares, rendered offline.", ""]
        lines += [f"![{title}]({path})\n" for title, path in figures]
    return "\n".join(lines).rstrip("\n") + "\n"
