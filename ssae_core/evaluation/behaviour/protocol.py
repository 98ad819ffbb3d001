"""The protocol both behaviours share: sweep strengths on TRAINING items, choose each method's
operating point there, evaluate the chosen points on HELD-OUT items next to the unsteered model,
the prompting baseline and prompting combined with each vector.

A strength is in units of the typical residual norm at the steered layer
(:func:`~ssae_core.lm.steer.typical_norm`): strength s adds ``s x norm x v`` (v the method's unit
vector, oriented along +concept), so strength 1 adds a vector as long as a typical hidden state.
Strength 0 is the unsteered model, always a candidate operating point (a method whose every
strength scores worse than not steering is reported at 0).

Each behaviour's scores are one value per condition and item in [0, 1] (``accuracy`` for MC1;
``concept``, ``fluency`` and ``detected`` for language); :func:`summarise` takes means over items
and members and percentile bootstrap intervals over items
(:func:`ssae_core.metrics.bootstrap_interval`).

How a condition's prompt is written (:func:`condition_prompts`): the plain item (an English
opening, or the MC template's question), or through the model's chat template with the item as the
user's turn (``prompt_format: chat``). The prompting baseline adds the instruction: on the line
before the item in the plain format, at the start of the user's turn in the chat format (an
Instruct model follows an instruction there, and ignores it on the line before an opening it is
asked to continue: measured in ``benchmarks/chat_prompting.py``). In the chat format a reference
condition, ``chat``, asks without the instruction, so the instruction's effect is read apart from
the format's.

Paired comparisons (:func:`compare`): the difference of two conditions' per-item scores on the
same held-out items, with a paired bootstrap interval over items; a difference is called only
when its whole interval lies on one side of 0.

Shapes in names: C conditions, N items (prompts or questions), S members.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.fluency import operating_point
from ssae_core.evaluation.behaviour.vectors import ConceptVector
from ssae_core.lm.steer import SteeringVector
from ssae_core.lm.tokens import CHAT_TEMPLATE
from ssae_core.metrics import bootstrap_interval, rounded

PROMPTING = "prompting"
UNSTEERED = "unsteered"
SSAE = "ssae"
CHAT = "chat"
"""The unsteered model asked through its chat template without the instruction."""
PLAIN = "plain"
PROMPT_FORMATS = ("auto", PLAIN, CHAT)
INSTRUCTION_SEPARATOR = "\n"
"""Between the instruction and the item in the plain format."""


class Condition(NamedTuple):
    """One steered evaluation: a method's member at one strength, with or without the
    instruction in the prompt."""

    name: str
    """``unsteered``, ``prompting``, the method, or ``prompting + METHOD``."""
    method: str | None
    member: int
    strength: float
    instructed: bool
    vector: SteeringVector | None
    chat: bool = False
    """Asked through the chat template (the item as the user's turn)."""


def prompt_format(setting: str, tokenizer: Any) -> str:
    """``plain`` or ``chat`` for a ``prompt_format`` setting: ``auto`` is ``chat`` when the
    tokenizer has a chat template (an Instruct model), else ``plain``."""
    if setting not in PROMPT_FORMATS:
        raise InputError(f"prompt_format {setting!r}: use one of {', '.join(PROMPT_FORMATS)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if setting == CHAT and not has_chat:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise InputError(
            f"behaviour.prompt_format chat: tokenizer {name} has no chat template; "
            "use plain or auto"
        )
    return setting if setting != "auto" else (CHAT if has_chat else PLAIN)


def with_instruction(texts: Sequence[str], instruction: str, *, chat: bool = False) -> list[str]:
    """The prompting baseline's words: the instruction, then each text, on the line before it
    (``Answer in French.\\nThe weather today is``) or, for a chat's user turn, after a space."""
    if not instruction.strip():
        raise InputError("instruction: empty; give a sentence such as 'Answer in French.'")
    separator = " " if chat else INSTRUCTION_SEPARATOR
    return [instruction.strip() + separator + text for text in texts]


def prompt_template(chat: bool) -> str | None:
    """The template :func:`~ssae_core.lm.tokens.tokenize` reads a condition's prompts with."""
    return CHAT_TEMPLATE if chat else None


def condition_prompts(
    texts: Sequence[str], instruction: str | None, *, chat: bool
) -> tuple[list[str], str | None]:
    """The texts a condition's prompts are made of (the instruction added when one is given) and
    the template :func:`~ssae_core.lm.tokens.tokenize` reads them with (``chat`` or None)."""
    given = list(texts) if instruction is None else with_instruction(texts, instruction, chat=chat)
    return given, prompt_template(chat)


def prompt_groups(conditions: Sequence[Condition]) -> dict[tuple[bool, bool], list[int]]:
    """The indices of ``conditions`` by how their prompts are written: ``(instructed, chat)``."""
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, c in enumerate(conditions):
        groups.setdefault((c.instructed, c.chat), []).append(i)
    return groups


def at_strength(vector: ConceptVector, strength: float, norm: float) -> SteeringVector | None:
    """``strength x norm x unit`` at the vector's layer; None at strength 0 (unsteered)."""
    if strength == 0:
        return None
    return vector.scaled(strength * norm, strength=repr(strength))


def sweep(
    vectors: Mapping[str, Sequence[ConceptVector]], strengths: Sequence[float], norm: float
) -> list[Condition]:
    """Every method's member at every non-zero strength (no instruction)."""
    return [
        Condition(method, method, i, float(s), False, at_strength(v, s, norm))
        for s in strengths
        if s != 0
        for method, members in vectors.items()
        for i, v in enumerate(members)
    ]


def held_out(
    vectors: Mapping[str, Sequence[ConceptVector]],
    chosen: Mapping[str, float],
    norm: float,
    *,
    chat: bool = False,
) -> list[Condition]:
    """Unsteered, (``chat``: the unsteered chat without instruction), prompting, each method at
    its chosen strength, prompting + each method; the prompting conditions in the chat format
    when ``chat``, the others plain (the format the operating points were chosen in)."""
    out = [Condition(UNSTEERED, None, 0, 0.0, False, None)]
    if chat:
        out.append(Condition(CHAT, None, 0, 0.0, False, None, chat=True))
    out.append(Condition(PROMPTING, None, 0, 0.0, True, None, chat=chat))
    for instructed in (False, True):
        for method, members in vectors.items():
            name = f"{PROMPTING} + {method}" if instructed else method
            s = chosen[method]
            out += [
                Condition(
                    name, method, i, s, instructed, at_strength(v, s, norm), instructed and chat
                )
                for i, v in enumerate(members)
            ]
    return out


def choose_points(
    conditions: Sequence[Condition],
    measures: Mapping[str, np.ndarray],
    unsteered: Mapping[str, np.ndarray],
    score: Callable[[Mapping[str, float]], float],
) -> tuple[dict[str, float], list[dict]]:
    """Each method's operating point and the sweep rows it was chosen from. ``measures``:
    ``{measure: [C, N]}`` of ``conditions`` (a :func:`sweep`), ``unsteered``: ``{measure: [N]}``
    (strength 0); a row holds the means over items and members of every measure and
    ``score(means)``; the point is the strength of the best score (ties: the weakest)."""
    rows, chosen = [], {}
    for method in dict.fromkeys(c.method for c in conditions if c.method is not None):
        strengths = sorted({0.0, *(c.strength for c in conditions if c.method == method)})
        by_strength = {}
        for s in strengths:
            picked = [i for i, c in enumerate(conditions) if c.method == method and c.strength == s]
            means = {
                k: float(np.mean(v[picked]) if picked else np.mean(unsteered[k]))
                for k, v in measures.items()
            }
            by_strength[s] = score(means)
            rows.append(
                {"method": method, "strength": s, **{k: rounded(v) for k, v in means.items()}}
                | {"score": rounded(by_strength[s])}
            )
        chosen[method] = operating_point(by_strength)
    return chosen, rows


def _interval(values_N: np.ndarray, *, resamples: int, seed: int, level: float) -> list:
    """``[low, high]``: percentile bootstrap interval of the mean over items."""
    found = bootstrap_interval(
        values_N, np.arange(len(values_N)), resamples=resamples, seed=seed, level=level
    )
    return [rounded(found.low), rounded(found.high)]


def summarise(
    conditions: Sequence[Condition],
    measures: Mapping[str, np.ndarray],
    *,
    resamples: int,
    seed: int,
    level: float,
) -> dict[str, dict]:
    """Per condition name: its strength, members, and per measure the mean over items and
    members with a bootstrap interval over items (of the per-item mean over members) and the
    per-member means."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(c.name for c in conditions):
        rows = [i for i, c in enumerate(conditions) if c.name == name]
        entry: dict = {"strength": conditions[rows[0]].strength, "members": len(rows)}
        for measure, values_CN in measures.items():
            per_item_N = _per_item(conditions, values_CN, name)
            entry[measure] = {
                "mean": rounded(float(per_item_N.mean())),
                "interval": _interval(per_item_N, resamples=resamples, seed=seed, level=level),
                "per_member": [rounded(float(np.mean(values_CN[r]))) for r in rows],
            }
        out[name] = entry
    return out


def comparison_pairs(names: Sequence[str], methods: Sequence[str]) -> list[tuple[str, str]]:
    """``(a, b)`` pairs of held-out condition names to compare, where both were scored:
    prompting against the unsteered model and against the chat without the instruction (the
    instruction's own effect), every method against the unsteered model, SSAE against every other
    method and against prompting, and prompting + each method against prompting alone."""
    pairs = [(PROMPTING, UNSTEERED), (PROMPTING, CHAT), *((m, UNSTEERED) for m in methods)]
    if SSAE in methods:
        pairs += [(SSAE, other) for other in (*methods, PROMPTING) if other != SSAE]
    pairs += [(f"{PROMPTING} + {m}", PROMPTING) for m in methods]
    present = set(names)
    return [(a, b) for a, b in pairs if a in present and b in present]


def _per_item(conditions: Sequence[Condition], values_CN: np.ndarray, name: str) -> np.ndarray:
    """The condition's per-item mean over its members, [N]."""
    rows = [i for i, c in enumerate(conditions) if c.name == name]
    return np.asarray(values_CN, dtype=np.float64)[rows].mean(axis=0)


def compare(
    conditions: Sequence[Condition],
    values_CN: np.ndarray,
    methods: Sequence[str],
    *,
    resamples: int,
    seed: int,
    level: float,
) -> list[dict]:
    """For every pair of :func:`comparison_pairs`: the mean over items of ``a - b`` (each the
    per-item mean over members of one measure), its paired bootstrap interval over items, and
    ``better`` / ``worse`` (``a`` than ``b``, the whole interval above / below 0) or ``no
    difference``."""
    names = list(dict.fromkeys(c.name for c in conditions))
    out = []
    for a, b in comparison_pairs(names, methods):
        diff_N = _per_item(conditions, values_CN, a) - _per_item(conditions, values_CN, b)
        low, high = _interval(diff_N, resamples=resamples, seed=seed, level=level)
        verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
        out.append(
            {
                "a": a,
                "b": b,
                "difference": rounded(float(diff_N.mean())),
                "interval": [low, high],
                "verdict": verdict,
            }
        )
    return out
