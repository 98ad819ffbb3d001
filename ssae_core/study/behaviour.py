"""The study's behaviour loop: steering the prepared LM with the truthfulness and language
vectors of the selected runs (:mod:`ssae_core.evaluation.behaviour`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.config import BehaviourConfig
from ssae_core.evaluation.behaviour.evaluate import check_same_model, evaluate_behaviour
from ssae_core.evaluation.behaviour.mc1 import load_mc_questions
from ssae_core.evaluation.steering_accuracy import SteeringModel
from ssae_core.lm import loading as lm
from ssae_core.lm.layers import Layer
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.study.selection import selected_runs
from ssae_core.study.sets import load_set

BEHAVIOUR_SETS = ("truthfulqa", "lang")


def score_behaviour(
    study: StudyConfig,
    layout: StudyLayout,
    config: BehaviourConfig,
    layers: Sequence[Layer],
    *,
    runs: Mapping[str, Mapping[str, Mapping[str, Sequence[SteeringModel]]]] | None = None,
    progress: bool = True,
) -> dict:
    """Behavioural steering of the prepared LM (models/lm) at every layer of ``layers``, with the
    truthfulness and language vectors of the study's selected runs at that layer:
    ``{layer: results}``. ``runs`` (``{layer: {set: {method: members}}}``) replaces them."""
    if not layout.lm.is_dir():
        raise InputError(f"{layout.lm}: no prepared model; run `dvc repro prepare_model` first")
    source = lm.resolve_model(str(layout.lm), verbose=progress)
    if not layout.mc_table.is_file():
        raise InputError(f"{layout.mc_table}: missing; run `dvc repro download_truthfulqa` first")
    questions = load_mc_questions(layout.mc_table)
    train_questions = load_mc_questions(layout.mc_table, split="train")
    model = lm.load_model(source, device=config.device, dtype=config.dtype)
    tokenizer = lm.load_tokenizer(source)
    out = {}
    for layer in layers:
        at = layout.at(layer)
        tables = {}
        for name in BEHAVIOUR_SETS:
            if not at.embeddings(name).exists():
                raise InputError(
                    f"{at.embeddings(name)}: missing; run `dvc repro extract_embeddings@{name}`"
                )
            tables[name] = load_set(study, at, name)
            check_same_model(tables[name], source.name, str(at.embeddings(name)))
        chosen = (runs or {}).get(at.key) or {n: selected_runs(at, n) for n in BEHAVIOUR_SETS}
        results = evaluate_behaviour(
            model,
            tokenizer,
            config,
            truthfulqa=tables["truthfulqa"],
            mc_questions=questions,
            mc_train_questions=train_questions,
            language=tables["lang"],
            runs=chosen,
            progress=progress,
        )
        out[at.key] = {**results, "model": source.name}
    return out
