"""metrics/REPORT.md: Markdown tables of the pipeline's metrics files (stages/report.py).

Every number comes from the JSON files the stages write; the only numbers in this module are the
authors' reference values (:data:`PAPER_REFERENCE`), always printed under that name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ssae_core.errors import InputError
from ssae_core.lm.layers import Layer, layer_name
from ssae_core.runs import RUN_FILE
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import METHODS, StudyLayout, lr_folder

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


def llm_section(llm: Mapping) -> list[str]:
    header = ["set", "method", "cell", "decoder UDR (mean ± std)", "codes UDR (mean ± std)"]
    header += ["MCC vs shifts", "multiplier", "L1 (val)"]
    lines = [
        "## Identifiability on LLM embeddings",
        "",
        "Cross-seed MCC of decoder rows (the paper's Table 2) and of held-out codes: UDR = median "
        "of the pairwise values, with their mean ± std; MCC against the known concept shifts "
        "where they vary (mean ± std over seeds). SSAE is the cell chosen without labels "
        "(next section).",
        "",
    ]

    def rows(part: Mapping) -> list[list[str]]:
        out = []
        for name, methods in part.items():
            for method in ("ssae", "aff"):
                s = methods[method]
                if s.get("status"):
                    out.append([name, method, s["status"], *["–"] * 5])
                    continue
                cell = _cell_label(s)
                out.append(
                    [
                        name,
                        method,
                        cell,
                        _udr(s),
                        _udr(s, "codes_mcc"),
                        pm(s.get("mcc")),
                        pm(s.get("multiplier")),
                        pm(s.get("l1")),
                    ]
                )
        return out

    lines += table(header, rows(llm["sets"]))
    lines += [
        "",
        "### Entangled embeddings (Table 3)",
        "",
        "The same sets after a dense invertible map of z and z~ (params `entangle`); SSAE at "
        "`study.budget_ratio` x aff's L1, `study.lr`.",
        "",
    ]
    lines += table(header, rows(llm["entangled"]))
    for name, runs in llm["overcomplete"].items():
        lines += [
            "",
            f"### Overcompleteness on {name} (appendix B.3)",
            "",
            *table(
                ["m", "method", "cell", "decoder UDR", "codes UDR", "MCC vs shifts", "multiplier"],
                [
                    [
                        m[1:],
                        method,
                        _cell_label(s),
                        _udr(s),
                        _udr(s, "codes_mcc"),
                        pm(s.get("mcc")),
                        pm(s["multiplier"]),
                    ]
                    for m, both in runs.items()
                    for method, s in both.items()
                ],
            ),
        ]
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
        "Every SSAE cell (budget ratio r x learning rate, all seeds; budget = r x the held-out L1 "
        "of aff on the same data); selected without labels: "
        f"{next(iter(udr['sets'].values()))['rule']}. **bold** = selected. A cell is unusable "
        "when a member's multiplier ended at 0 or its held-out L1 is off its budget; unusable "
        "cells are never selected. MCC vs shifts is shown, never used.",
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


def _per_seed(entry: dict, digits: int = 3) -> str:
    return ", ".join(num(v, digits) for v in entry["values"]) if len(entry["values"]) > 1 else ""


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "/").replace("\n", "⏎").strip() + "`"


def _vector_lines(section: dict) -> list[str]:
    lines = []
    for method, report in section["methods"].items():
        seeds = f"seeds {report['seeds']}" if report["seeds"] is not None else "one vector"
        match = ""
        if report["latent"] is not None:
            match = f"; matched latents {report['latent']}, match scores {report['match_score']}"
        if report.get("cosine_to_md") is not None:
            match += f"; cosine with the md vector {pm(report['cosine_to_md'], 2)}"
        lines.append(f"- {method} ({seeds}): fitted alpha {pm(report['alpha_fit'], 2)}{match}")
    return lines


def _truthfulqa_lines(tqa: dict) -> list[str]:
    lines = [
        "### TruthfulQA MC1 (truthfulness vector)",
        "",
        f"{tqa['n_questions']} of the {tqa.get('n_test_questions', tqa['n_questions'])} held-out "
        f"questions (subsample seed {tqa.get('subsample_seed', '–')}), {tqa['n_choices']} "
        "choices; each choice is scored by the summed log-probability of its answer tokens after "
        f"the prompt `{tqa['template']!r}`, the best-scoring choice is the answer. Chance: "
        f"{num(tqa['chance_accuracy'])}. Unsteered accuracy: {num(tqa['unsteered']['accuracy'])}."
        f" Mean embedding norm: {num(tqa.get('embedding_norm'), 1)}.",
        "",
        *_vector_lines(tqa),
        "",
        "| method | multiplier | MC1 accuracy | per seed | unsteered | change |",
        "|---|---|---|---|---|---|",
    ]
    for method, report in tqa["methods"].items():
        for entry in report["sweep"]:
            lines.append(
                f"| {method} | {entry['alpha_multiplier']:g} | {pm(entry['accuracy'])} | "
                f"{_per_seed(entry['accuracy'])} | {num(tqa['unsteered']['accuracy'])} | "
                f"{pm(entry['change'])} |"
            )
    return lines


def _language_lines(lang: dict) -> list[str]:
    code = lang["language"]
    base = lang["unsteered"]
    lines = [
        f"### Language (language vector: English -> {code})",
        "",
        f"{lang['n_prompts']} neutral English prompts, greedy continuations of "
        f"{lang['max_new_tokens']} new tokens (steered positions: {lang['positions']}). "
        f"'{code} share': continuations that py3langid identifies as `{code}`. Perplexity: of "
        "the continuations given their prompts, under the unsteered model (lower is more "
        "predictable; repetitive text also scores low, see the samples). Unsteered: "
        f"{code} share {num(base['language_fraction'])}, perplexity "
        f"{num(base['perplexity'], 1)}. Mean embedding norm: "
        f"{num(lang.get('embedding_norm'), 1)}.",
        "",
        *_vector_lines(lang),
        "",
        f"| method | multiplier | {code} share | per seed | unsteered | perplexity | per seed | "
        "unsteered | empty outputs | languages found |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, report in lang["methods"].items():
        for entry in report["sweep"]:
            found = ", ".join(f"{k or 'none'} {v}" for k, v in list(entry["languages"].items())[:4])
            lines.append(
                f"| {method} | {entry['alpha_multiplier']:g} | {pm(entry['language_fraction'])} "
                f"| {_per_seed(entry['language_fraction'])} | {num(base['language_fraction'])} | "
                f"{pm(entry['perplexity'], 1)} | {_per_seed(entry['perplexity'], 1)} | "
                f"{num(base['perplexity'], 1)} | {sum(entry['n_empty'])} | {found} |"
            )
    return lines + _sample_lines(lang)


def _sample_lines(lang: dict) -> list[str]:
    base = lang["unsteered"]
    if not base["samples"]:
        return []
    lines = [
        "",
        f"Continuations of {_cell(lang['prompts'][0])} (first seed of each method):",
        "",
        "| method | multiplier | continuation |",
        "|---|---|---|",
        f"| unsteered | 0 | {_cell(base['samples'][0])} |",
    ]
    for method, report in lang["methods"].items():
        for entry in report["sweep"]:
            if entry["alpha_multiplier"] != 0 and entry["samples"]:
                lines.append(
                    f"| {method} | {entry['alpha_multiplier']:g} | {_cell(entry['samples'][0])} |"
                )
    return lines


def behaviour_section(results: dict) -> list[str]:
    """The behavioural evaluation: what was measured, on what data, and the tables."""
    tqa = results["truthfulqa"]
    return [
        "## Behavioural steering of the language model",
        "",
        "The LM itself is steered: `multiplier × alpha_fit × v` is added to its residual stream "
        f"at the layer the embeddings were read at ({tqa['layer']}; `final` = the final-norm "
        "output), at every position. v is a unit vector for the concept: SSAE and aff, the "
        "decoder row matched to the concept on the training pairs (one per seed); MD, the mean "
        "training shift (one deterministic vector). alpha_fit is the least-squares size of the "
        "concept's training shifts along v, so every method is compared at the same multiple of "
        "its own fitted shift. Multiplier 0 is the unsteered model. Values: mean ± std over "
        "seeds (population std), with the per-seed values beside them.",
        "",
        *_truthfulqa_lines(tqa),
        "",
        *_language_lines(results["language"]),
    ]


# --------------------------------------------------------------------------- the report

REPORT_INPUTS = ("identifiability", "udr", "steering", "behaviour")


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
            for method in sorted(METHODS):
                times[f"{key}: entangled aff + SSAE, all sets"] += _run_seconds(
                    at.entangled_models(name) / method
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
    study: StudyConfig, model_name: str, metrics: Mapping[str, dict], timings: Mapping[str, float]
) -> str:
    """metrics/REPORT.md: every table of the study, from the metrics files."""
    lines = [
        "# SSAE study report",
        "",
        "Generated by `dvc repro report` (stages/report.py) from the metrics files; do not edit.",
        f"Language model: `{model_name}`; embeddings: params `embed`. LLM study: "
        f"seeds {list(study.seeds)}, m = {study.latent_factor} x (number of concepts), "
        f"{study.optim.steps} steps per run, grid budget ratios "
        f"{list(study.grid.budget_ratio)} x lr {list(study.grid.lr)}.",
        "",
        *synthetic_section(metrics["identifiability"]["synthetic"]),
    ]
    for key in metrics["udr"]["layers"]:
        lines += [
            "",
            f"# Layer {key}",
            "",
            *llm_section(metrics["identifiability"]["layers"][key]),
            "",
            *selection_section(metrics["udr"]["layers"][key]),
            "",
            *steering_section(metrics["steering"]["layers"][key]),
        ]
        if key in metrics["behaviour"]["layers"]:
            lines += ["", *behaviour_section(metrics["behaviour"]["layers"][key])]
    lines += ["", *timing_section(timings)]
    return "\n".join(lines) + "\n"
