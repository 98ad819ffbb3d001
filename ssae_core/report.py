"""Markdown tables of the pipeline's metrics files, for metrics/REPORT.md (stages/report.py).

Every number comes from the JSON files the stages write; the only numbers in this module are the
authors' reference values (:data:`PAPER_REFERENCE`), always printed under that name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
                cell = f"lr {s['lr']:g}, eps {s['sparsity']:g}" if "lr" in s else ""
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
        "`study.sparsity`, `study.lr`.",
        "",
    ]
    lines += table(header, rows(llm["entangled"]))
    for name, runs in llm["overcomplete"].items():
        lines += [
            "",
            f"### Overcompleteness on {name} (appendix B.3)",
            "",
            *table(
                ["m", "decoder UDR", "codes UDR", "MCC vs shifts", "multiplier"],
                [
                    [m[1:], _udr(s), _udr(s, "codes_mcc"), pm(s.get("mcc")), pm(s["multiplier"])]
                    for m, s in runs.items()
                ],
            ),
        ]
    return lines


def selection_section(udr: Mapping) -> list[str]:
    lines = [
        "## Model selection (UDR grid)",
        "",
        "Every SSAE cell (budget eps x learning rate, all seeds); selected without labels: "
        f"{next(iter(udr['sets'].values()))['rule']}. **bold** = selected; inactive = some "
        "member's multiplier ended at 0 (the budget never bound). MCC vs shifts is shown, never "
        "used.",
        "",
    ]
    rows = []
    for name, entry in udr["sets"].items():
        chosen = (entry["selected"]["lr"], entry["selected"]["sparsity"])
        for cell in entry["cells"]:
            bold = "**" if (cell["lr"], cell["sparsity"]) == chosen else ""
            rows.append(
                [
                    f"{bold}{name}{bold}",
                    f"{cell['lr']:g}",
                    f"{cell['sparsity']:g}",
                    num(cell["decoder_mcc"]["udr"]),
                    num(cell["codes_mcc"]["udr"]),
                    pm(cell.get("mcc")),
                    pm(cell["l1"]),
                    "yes" if cell["active"] else "inactive",
                ]
            )
    header = ["set", "lr", "eps", "decoder UDR", "codes UDR", "MCC vs shifts", "L1", "active"]
    return lines + table(header, rows)


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
                s = summary[method]
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
