"""The page and the summary of an inspection (:func:`ssae_core.evaluation.inspection.inspect_run`).

:func:`render_html` writes one self-contained static HTML page (inline CSS, no script, no image
or font loaded from anywhere: it opens with the network off); :func:`render_markdown` one table
row per latent; :func:`write_inspection` writes both, with the result as JSON, into an output
folder of ``ssae inspect`` (through :func:`ssae_core.io.safe_output`):

    OUT/index.html      the page
    OUT/summary.md      the summary table
    OUT/inspection.json the result the two are rendered from
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ssae_core.io import safe_output
from ssae_core.record import STATUS_MEANINGS, UNCONSTRAINED, USABLE

INSPECT_COMMAND = "inspect"
PAGE_FILE = "index.html"
SUMMARY_FILE = "summary.md"
RESULT_FILE = "inspection.json"
SUMMARY_PAIRS = 3  # pairs per latent in the Markdown summary
BACKWARDS = "read backwards (x\u0303 \u2192 x)"
"""The mark of a reading that goes x_tilde -> x of the pair table, wherever a pair is shown."""
UNKNOWN_STATUS = "unknown"
PAGE_WIDTH_PX = 1280
"""The page fits a window this wide: every table wraps its texts and scrolls inside its box."""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  color: #1f2328; background: #f6f8fa; line-height: 1.45; }
main { max-width: PAGE_WIDTHpx; margin: 0 auto; padding: 20px 28px 60px; box-sizing: border-box; }
h1 { font-size: 1.6em; margin: 0.2em 0; } h2 { font-size: 1.25em; margin: 1.4em 0 0.4em; }
h3 { font-size: 1.02em; margin: 1.1em 0 0.3em; color: #333; }
.meta { color: #555; margin: 0.2em 0 0.8em; }
.box { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 12px 16px;
  margin: 12px 0; }
.help { font-size: 0.92em; color: #333; } .help li { margin: 2px 0; }
.warn { border-color: #d4a72c; background: #fff8e5; }
.ok { border-color: #4ac26b; background: #f0fff4; }
.scroll { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; background: #fff; margin: 4px 0 8px; font-size: 0.92em;
  max-width: 100%; }
table.fixed { table-layout: fixed; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; word-wrap: break-word; }
th { background: #eef1f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pair { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.95em; }
.arrow { color: #888; padding: 0 4px; }
.tag { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 0.85em;
  background: #eef1f4; color: #333; }
.back { background: #e8e0ff; color: #3b2a7a; }
.good { background: #dafbe1; color: #116329; } .fair { background: #fff1c2; color: #7d4e00; }
.poor { background: #ffe2e0; color: #a40e26; }
section.latent { background: #fff; border: 1px solid #d0d7de; border-radius: 8px;
  padding: 4px 18px 14px; margin: 18px 0; }
section.latent > details > summary { cursor: pointer; font-size: 1.15em; font-weight: 600;
  padding: 8px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(420px, 100%), 1fr));
  gap: 4px 24px; }
.grid > div { min-width: 0; }
.cont td.base { background: #f3f6f9; }
.cont th.base { background: #dde3ea; }
.muted { color: #777; } .small { font-size: 0.85em; } .nowrap { white-space: nowrap; }
""".replace("PAGE_WIDTH", str(PAGE_WIDTH_PX))


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def run_status(result: dict) -> tuple[str, bool]:
    """The run's status in words (each status with its count of members, e.g. ``not converged
    (3 of 3 members)``) and whether every member is usable (or an unconstrained aff member):
    only then does the page colour its badges as successes."""
    statuses = [s or UNKNOWN_STATUS for s in result["run"].get("statuses") or [UNKNOWN_STATUS]]
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    text = ", ".join(f"{s} ({n} of {len(statuses)} members)" for s, n in counts.items())
    return text, set(counts) <= {USABLE, UNCONSTRAINED}


def _status_meaning(result: dict) -> str:
    """One line on what the run's statuses mean."""
    statuses = dict.fromkeys(s or UNKNOWN_STATUS for s in result["run"].get("statuses") or [None])
    meanings = {**STATUS_MEANINGS, UNKNOWN_STATUS: "no training record (an older version)"}
    return "; ".join(f"{s}: {meanings.get(s, s)}" for s in statuses)


def _status_box(result: dict) -> str:
    text, ok = run_status(result)
    caution = (
        ""
        if ok
        else " The badges below are left grey: stable latents of members that are not usable are "
        "no sign of success."
    )
    return (
        f'<div class="box status {"ok" if ok else "warn"}"><b>Run status: {_e(text)}</b>. '
        f"{_e(_status_meaning(result))}.{caution}</div>"
    )


def _tag_class(value: float | None, ok: bool) -> str:
    """The classes of a stability badge: coloured by the value only in a usable run."""
    if value is None or not ok:
        return "tag"
    return "tag " + ("good" if value >= 0.95 else "fair" if value >= 0.8 else "poor")


def _stability_tag(stability: dict, result: dict) -> str:
    mean = stability["mean"]
    if mean is None:
        return '<span class="tag">one member: no cross-seed comparison</span>'
    status, ok = run_status(result)
    named = "" if ok else f" &middot; run {_e(status)}"
    return (
        f'<span class="{_tag_class(mean, ok)}">stability {_num(mean)}'
        f" (min {_num(stability['min'])}){named}</span>"
    )


def _concept_text(entry: dict) -> str:
    best = entry["best_concept"]
    if best is None:
        return "no labels"
    how = "corr" if best["by"] == "correlation" else "cos with mean shift"
    return f"{best['concept']} ({how} {_num(best['score'])})"


def _pair_html(pair: dict) -> str:
    """One reading of a pair: its texts (or its id) and, read backwards, the mark saying so."""
    way = f' <span class="tag back">{_e(BACKWARDS)}</span>' if pair["reversed"] else ""
    if pair["from"] is None:
        return f'<span class="muted">pair {pair["pair_id"]}</span>{way}'
    return (
        f'<span class="pair">{_e(pair["from"])}</span><span class="arrow">&rarr;</span>'
        f'<span class="pair">{_e(pair["to"])}</span>{way}'
    )


def _table(rows: str, classes: str = "") -> str:
    """A table inside a box that scrolls sideways where the table is wider than the page."""
    cls = f' class="{classes}"' if classes else ""
    return f'<div class="scroll"><table{cls}>{rows}</table></div>'


def _header(result: dict) -> str:
    run, data, paths = result["run"], result["data"], result.get("paths") or {}
    seeds = ", ".join(str(s) for s in run["seeds"])
    title = paths.get("run") or "a trained run"
    budget = "" if run["sparsity"] is None else f", L1 budget {run['sparsity']:g}"
    lines = [
        f"<h1>Latents of {_e(title)}</h1>",
        _status_box(result),
        f'<p class="meta">{_e(run["method"])}{_e(budget)}, {run["latent_dim"]} latents, '
        f"width {run['dim']}, seeds {_e(seeds)}: the latents shown are those of seed "
        f"<b>{_e(run['reference_seed'])}</b> (the member that agrees best with the others). "
        f"Embeddings: {_e(paths.get('embeddings') or run['embeddings'] or '?')} "
        f"({_e(_model_and_layer(data, run))}), "
        f"{data['n_train_pairs']} training and {data['n_held_out_pairs']} held-out pairs"
        f"{'' if data['texts'] else '; no pair texts were given, pairs are shown by id'}.</p>",
    ]
    return "\n".join(lines)


def _model_and_layer(data: dict, run: dict) -> str:
    model = data["model"] or run["model"]
    layer = f"layer {data['layer']}" if data["layer"] else "no LM layer recorded"
    return f"model {model}, {layer}" if model else layer


def _changes(pair: dict) -> str:
    """The labelled concepts a reading changes, e.g. ``gender +1, language +1``."""
    if pair.get("changes") is None:
        return ""
    return ", ".join(f"{name} {value:+g}" for name, value in pair["changes"].items()) or "none"


def _help(result: dict) -> str:
    settings = result["settings"]
    multiples = ", ".join(f"{m:g}" for m in settings["strengths"])
    norm = (result.get("unsteered") or {}).get("norm")
    return f"""<div class="box help"><b>How to read this page.</b><ul>
<li><b>Stability</b>: |cosine| between this latent's steering vector and its one-to-one match
among the latents of every other seed (mean, and the worst seed). Near 1: every seed found the
same direction. Latents are listed from the most to the least stable.</li>
<li><b>Run status</b> (top of the page): each member's training status; the stability badges
are coloured (green, amber, red) only when every member is usable.</li>
<li><b>Pairs that raise it</b>: every pair is read both ways (x &rarr; x&#771; and
x&#771; &rarr; x); listed are the pairs with the largest code, for training and held-out pairs,
each pair once, in the reading whose code is the larger: its texts, its <i>code</i> (the
latent's value for that shift) and its labelled change are all of that reading, and a reading
that goes x&#771; &rarr; x of the pair table is marked <i>{_e(BACKWARDS)}</i>. <i>other
way</i>: the code of the same pair read the other way. The encoder is affine up to the codes
(normalisation, linear map, BatchNorm with running statistics), so the two codes of a pair sum
to the same number for every pair (the sum and its spread over the pairs are shown per latent):
the most negative readings are exactly the listed pairs read the other way, in the same order,
and are not listed a second time.</li>
<li><b>Concepts</b> (where the pairs are labelled): the correlation of the latent's training codes
with each concept's shift (for a concept every pair changes the same way: the cosine with the mean
shift) and the cosine with each concept's mean-difference (MD) vector. Each latent is oriented so
that + points along its best concept.</li>
<li><b>Steering</b>: greedy continuations of neutral prompts with strength &times; norm &times;
the unit vector added at layer {_e(result["data"]["layer"] or "?")} (positions
{_e(settings["positions"])}), strengths {_e(multiples)}; norm ({_num(norm, 1)}) is the typical
residual norm at that layer, the unit of <code>ssae steer --strength</code>; alpha (shown per
latent) is the fitted size of the training shifts along the vector.
<i>share {_e(settings["language"])}</i>: continuations
identified as that language; perplexity: under the unsteered model (low is not proof of fluency:
repetitive text scores low).</li></ul></div>"""


def _duplicates_box(result: dict) -> str:
    threshold = result["settings"]["duplicate_threshold"]
    if not result["duplicates"]:
        largest = result["largest_other_cosine"]
        extra = "" if largest is None else f" (largest |cos| between two of them: {_num(largest)})"
        return (
            f'<div class="box">No two latents of this seed look like the same direction: every '
            f"|cos| between their decoder rows is at most {threshold:g}{extra}.</div>"
        )
    items = []
    for group in result["duplicates"]:
        pairs = "; ".join(
            f"{a} and {b}: |cos| {_num(c['abs_cosine'])}"
            for c in group["pairs"]
            for a, b in [c["latents"]]
        )
        latents = ", ".join(str(k) for k in group["latents"])
        items.append(f"<li>latents <b>{latents}</b> ({pairs})</li>")
    return (
        f'<div class="box warn"><b>These latents look like the same direction</b> (|cos| between '
        f"decoder rows above {threshold:g}; the steering evaluation merges them):<ul>"
        + "".join(items)
        + "</ul></div>"
    )


def _duplicates_of(result: dict, latent: int) -> list[int]:
    for group in result["duplicates"]:
        if latent in group["latents"]:
            return [k for k in group["latents"] if k != latent]
    return []


def _first_pair(entry: dict) -> str:
    pairs = entry["top_pairs"]["train"]
    if not pairs:
        return '<span class="muted">none</span>'
    return f"{_pair_html(pairs[0])} ({_num(pairs[0]['code'], signed=True)})"


def _overview(result: dict) -> str:
    rows = []
    ok = run_status(result)[1]
    for rank, entry in enumerate(result["latents"], 1):
        k = entry["latent"]
        dup = ", ".join(str(d) for d in _duplicates_of(result, k)) or "&ndash;"
        best = entry["best_concept"]
        md = next(
            (c["md_cosine"] for c in entry["concepts"] if best and c["concept"] == best["concept"]),
            None,
        )
        stab = entry["stability"]
        rows.append(
            f'<tr><td class="num">{rank}</td>'
            f'<td class="num"><a href="#latent-{k}">latent {k}</a></td>'
            f'<td class="num"><span class="{_tag_class(stab["mean"], ok)}">'
            f"{_num(stab['mean'])}</span> ({_num(stab['min'])})</td>"
            f"<td>{_e(_concept_text(entry))}</td><td>{_e(entry['matched_concept'] or '–')}</td>"
            f'<td class="num">{_num(md, signed=True)}</td>'
            f'<td class="num">{_num(entry["alpha"], 4)}</td><td>{dup}</td>'
            f"<td>{_first_pair(entry)}</td></tr>"
        )
    head = (
        "<tr><th>#</th><th>latent</th><th>stability mean (min)</th><th>best concept</th>"
        "<th>one-to-one match</th><th>cos with its MD vector</th><th>alpha</th>"
        "<th>same direction as</th><th>training pair that raises it most (code)</th></tr>"
    )
    return f"<h2>All latents, most stable first</h2>{_table(head + ''.join(rows))}"


def _pairs_table(title: str, pairs: Sequence[dict]) -> str:
    if not pairs:
        return f'<div><h3>{_e(title)}</h3><p class="muted">no pair raises it</p></div>'
    labelled = any(p.get("changes") is not None for p in pairs)
    rows = "".join(
        f'<tr><td class="num">{_num(p["code"], signed=True)}</td>'
        f'<td class="num">{_num(p.get("other_way"), signed=True)}</td><td>{_pair_html(p)}</td>'
        + (f'<td class="small">{_e(_changes(p))}</td>' if labelled else "")
        + f'<td class="small muted">{_e(p["split"])} #{p["pair_id"]}</td></tr>'
        for p in pairs
    )
    labels = '<th style="width: 22%">labelled change</th>' if labelled else ""
    head = (
        '<tr><th class="num" style="width: 11%">code</th>'
        '<th class="num" style="width: 11%">other way</th><th>from &rarr; to</th>'
        f'{labels}<th style="width: 14%">pair</th></tr>'
    )
    return f"<div><h3>{_e(title)}</h3>{_table(head + rows, 'fixed')}</div>"


def _concepts_table(entry: dict) -> str:
    if not entry["concepts"]:
        return '<p class="muted">The pairs carry no concept labels.</p>'
    best = (entry["best_concept"] or {}).get("concept")
    rows = "".join(
        f"<tr><td>{'<b>' if c['concept'] == best else ''}{_e(c['concept'])}"
        f"{'</b>' if c['concept'] == best else ''}</td>"
        f'<td class="num">{_num(c["score"], signed=True)}</td>'
        f"<td>{'correlation' if c['by'] == 'correlation' else 'cos with mean shift'}</td>"
        f'<td class="num">{_num(c["md_cosine"], signed=True)}</td>'
        f"<td>{'yes' if entry['matched_concept'] == c['concept'] else ''}</td></tr>"
        for c in entry["concepts"]
    )
    head = (
        "<tr><th>concept</th><th>score</th><th>scored by</th><th>cos with MD vector</th>"
        "<th>one-to-one match</th></tr>"
    )
    return f"<h3>Labelled concepts (training pairs)</h3>{_table(head + rows)}"


def _cell(text: str, condition: dict, *classes: str) -> str:
    """A cell of the steering table; the unsteered column is shaded."""
    names = [*classes, *(["base"] if condition["strength"] == 0 else [])]
    return f'<td class="{" ".join(names)}">{text}</td>' if names else f"<td>{text}</td>"


def _multiple_heading(condition: dict) -> str:
    if condition["strength"] == 0:
        return '<th class="base">unsteered</th>'
    return (
        f"<th>strength {condition['strength']:g}"
        f'<br><span class="small muted">adds {_num(condition["scale"], 3, True)} '
        "&times; unit vector</span></th>"
    )


def _steering_table(entry: dict, result: dict) -> str:
    sweep = entry.get("steering")
    if sweep is None:
        return ""
    prompts = result["unsteered"]["prompts"]
    rows = "".join(
        f'<tr><td class="small">{_e(prompt)}&hellip;</td>'
        + "".join(_cell(_e(c["continuations"][i]), c) for c in sweep)
        + "</tr>"
        for i, prompt in enumerate(prompts)
    )
    measures = {
        f"share {_e(result['settings']['language'])}": lambda c: _num(c["language_share"], 2),
        "perplexity": lambda c: _num(c["perplexity"], 1),
        "language per prompt": lambda c: _e(" ".join(code or "–" for code in c["languages"])),
    }
    footer = "".join(
        f"<tr><th>{name}</th>" + "".join(_cell(show(c), c, "num") for c in sweep) + "</tr>"
        for name, show in measures.items()
    )
    head = "".join(_multiple_heading(c) for c in sweep)
    return f"<h3>Steering the language model (alpha {_num(entry['alpha'], 4)})</h3>" + _table(
        f"<tr><th>prompt</th>{head}</tr>{rows}{footer}", "cont fixed"
    )


def _latent_section(entry: dict, result: dict, open_: bool) -> str:
    k = entry["latent"]
    stab = entry["stability"]
    matches = ", ".join(
        f"seed {m['seed']}: latent {m['latent']} ({_num(m['abs_cosine'])})" for m in stab["matches"]
    )
    flipped = (
        " The decoder row was flipped so that + points along the best concept."
        if entry["orientation"] < 0
        else ""
    )
    dup = _duplicates_of(result, k)
    facts = [
        f"Best concept: <b>{_e(_concept_text(entry))}</b>; one-to-one match: "
        f"{_e(entry['matched_concept'] or 'none')}.{flipped}",
        f"Matched latents of the other seeds (|cos|): {_e(matches) or 'none (one member)'}.",
        f"alpha {_num(entry['alpha'], 4)}, fitted on {_e(entry['alpha_by'])}; std of the "
        f"training codes {_num(entry['code_std_train'])}.",
        _two_way_fact(entry),
    ]
    if dup:
        facts.append(f"<b>Same direction as latent(s) {', '.join(map(str, dup))}.</b>")
    parts = entry["top_pairs"]
    grid = "".join(
        _pairs_table(f"{where} pairs that raise it most", parts[part])
        for part, where in (("train", "Training"), ("held_out", "Held-out"))
    )
    summary = (
        f"latent {k} &nbsp; {_stability_tag(stab, result)} &nbsp; "
        f'<span class="tag">{_e(_concept_text(entry))}</span>'
    )
    return (
        f'<section class="latent" id="latent-{k}"><details{" open" if open_ else ""}>'
        f"<summary>{summary}</summary>"
        + "".join(f"<p>{fact}</p>" for fact in facts)
        + _steering_table(entry, result)
        + _concepts_table(entry)
        + f'<div class="grid">{grid}</div></details></section>'
    )


def _two_way_fact(entry: dict) -> str:
    """The sum of the two codes of a pair, the same for every pair: why no - table is listed."""
    total = entry.get("two_way_sum") or {}
    if total.get("mean") is None:
        return "No pair to read both ways."
    return (
        f"The two readings of a pair have codes summing to {_num(total['mean'], signed=True)} "
        f"for every pair (spread {total['spread']:.1e}): the most negative readings are "
        "the pairs below read the other way."
    )


OPEN_SECTIONS = 12  # latent sections shown unfolded; the rest open on a click


def render_html(result: dict) -> str:
    """The inspection page: self-contained (inline CSS, no scripts, no external resources)."""
    title = (result.get("paths") or {}).get("run") or "run"
    sections = "".join(
        _latent_section(entry, result, i < OPEN_SECTIONS)
        for i, entry in enumerate(result["latents"])
    )
    note = ""
    if result["unsteered"] is None:
        note = (
            '<div class="box">No language model was run, so there are no steered '
            "continuations (give one with --lm; synthetic embeddings have none to steer).</div>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ssae inspect: {_e(title)}</title><style>{STYLE}</style></head><body><main>"
        + _header(result)
        + _help(result)
        + _duplicates_box(result)
        + note
        + _overview(result)
        + "<h2>Each latent</h2>"
        + sections
        + "</main></body></html>\n"
    )


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_pair(pair: dict) -> str:
    """One reading as the summary shows it: texts (or id), code, and the backwards mark."""
    texts = f"pair {pair['pair_id']}" if pair["from"] is None else f"{pair['from']} → {pair['to']}"
    way = f", {BACKWARDS}" if pair["reversed"] else ""
    return f"{texts} ({_num(pair['code'], signed=True)}, #{pair['pair_id']}{way})"


def _md_pairs(pairs: Sequence[dict]) -> str:
    return _md("; ".join(_md_pair(p) for p in pairs[:SUMMARY_PAIRS])) or "–"


def render_markdown(result: dict) -> str:
    """One table row per latent, most stable first: stability, best concept, top pairs."""
    run, data = result["run"], result["data"]
    title = (result.get("paths") or {}).get("run") or "a trained run"
    status, _ = run_status(result)
    lines = [
        f"# Latents of {_md(title)}",
        "",
        f"**Run status: {_md(status)}**. {_md(_status_meaning(result))}.",
        "",
        f"{run['method']}, {run['latent_dim']} latents, seeds {run['seeds']} (latents of seed "
        f"{run['reference_seed']}), layer {data['layer'] or '?'}, {data['n_train_pairs']} "
        f"training / {data['n_held_out_pairs']} held-out pairs. Stability: |cos| of each "
        "latent's vector with its one-to-one match in every other seed (mean, min). Pairs: "
        "the training pairs that raise the code most, each once, in the reading whose code is "
        "the larger (the other reading is its mirror).",
        "",
    ]
    for group in result["duplicates"]:
        lines.append(f"Latents {group['latents']} look like the same direction.")
    lines += [
        "| latent | stability mean (min) | best concept (score) | alpha | top pairs (code) |",
        "|---|---|---|---|---|",
    ]
    for entry in result["latents"]:
        stab, pairs = entry["stability"], entry["top_pairs"]["train"]
        lines.append(
            f"| {entry['latent']} | {_num(stab['mean'])} ({_num(stab['min'])}) | "
            f"{_md(_concept_text(entry))} | {_num(entry['alpha'], 4)} | "
            f"{_md_pairs(pairs)} |"
        )
    return "\n".join(lines) + "\n"


def write_inspection(
    result: dict, out: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = ()
) -> Path:
    """Write the page, the summary and the result into the folder ``out`` (a new folder, or an
    earlier ``ssae inspect`` output; nothing else is replaced)."""
    with safe_output(out, INSPECT_COMMAND, kind="folder", inputs=inputs) as tmp:
        (tmp / PAGE_FILE).write_text(render_html(result), encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(render_markdown(result), encoding="utf-8")
        (tmp / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return Path(out)
