"""The ``behaviour`` section of params.yaml: what is steered, how hard, on how much data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ssae_core.config import check_multipliers, check_ranges, load_config
from ssae_core.errors import InputError
from ssae_core.evaluation.behaviour.language import (
    HELD_OUT_PROMPTS,
    NEUTRAL_PROMPTS,
    check_language,
)
from ssae_core.evaluation.behaviour.protocol import PROMPT_FORMATS
from ssae_core.lm.layers import Layer, layer_name, parse_layers
from ssae_core.lm.steer import POSITIONS


@dataclass
class BehaviourConfig:
    """The ``behaviour`` section of params.yaml: what is steered, how hard, on how much data."""

    layers: list[int | str] | None = None
    """The layers of embed.layers at which the LM is steered (e.g. [15, final]); null: every one."""
    strengths: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 1.25])
    """Strengths swept on the training prompts/questions, in units of the typical residual norm
    at the layer (:func:`~ssae_core.lm.steer.typical_norm`); 0 (unsteered) is always a
    candidate operating point."""
    seeds: list[int] | None = None
    """Seeds of the run members that steer (a subsample of the run); null: every member."""
    questions: int | None = None
    """Held-out TruthfulQA questions scored: a seeded subsample of split 'test'; null: all."""
    train_questions: int | None = 24
    """Training questions the MC1 operating points are chosen on (seeded subsample); null: all."""
    prompts: int | None = None
    """Training prompts (operating points, fluency bound): the first N of NEUTRAL_PROMPTS."""
    test_prompts: int | None = None
    """Held-out prompts scored: the first N of HELD_OUT_PROMPTS; null: all of them."""
    max_new_tokens: int = 16
    """Greedy tokens generated per prompt."""
    positions: str = "all"
    """Generation positions steered: all, prompt or generated (see ssae_core.lm.steer)."""
    language: str = "fr"
    """ISO 639-1 code of the language the lang vector should produce (py3langid's codes)."""
    language_instruction: str = "Answer in French."
    """The prompting baseline of the language behaviour (put before each prompt)."""
    truth_instruction: str = "Answer truthfully."
    """The prompting baseline of MC1 (put before each question)."""
    prompt_format: str = "auto"
    """How the prompting conditions ask: ``chat`` (the instruction and the item as the user's
    turn of the model's chat template, next to a ``chat`` condition without the instruction),
    ``plain`` (the instruction on the line before the item), ``auto`` (chat when the tokenizer
    has a chat template)."""
    min_distinct: float = 0.4
    """Fluent: at least this share of a continuation's tokens are distinct ..."""
    perplexity_factor: float = 5.0
    """... and its perplexity (unsteered model) is at most this x the largest of the unsteered
    continuations of the training prompts."""
    batch_size: int = 16
    """Scored texts per forward pass (texts sharing a context share a row), or prompts per
    generate call (every condition's rows of those prompts run in the same call)."""
    subsample_seed: int = 0
    """Seed of the question subsamples."""
    resamples: int = 1000
    """Bootstrap resamples (of held-out prompts or questions) per interval."""
    level: float = 0.95
    """Coverage of the intervals."""
    samples: int = 3
    """Continuations kept in the results per condition (first member), to read."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    threads: int = 1
    """torch intra-op threads on CPU (0: torch's default); 1 is fastest on a busy 2-core CPU."""

    def __post_init__(self) -> None:
        check_multipliers(self.strengths, "strengths")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) < len(self.seeds)):
            raise InputError(f"seeds {self.seeds!r}: give distinct seeds, or null for all")
        check_ranges(
            {
                "questions": (self.questions, 1, None),
                "train_questions": (self.train_questions, 1, None),
                "prompts": (self.prompts, 1, len(NEUTRAL_PROMPTS)),
                "test_prompts": (self.test_prompts, 1, len(HELD_OUT_PROMPTS)),
                "min_distinct": (self.min_distinct, 0, 1),
                "perplexity_factor": (self.perplexity_factor, 1, None),
                "resamples": (self.resamples, 1, None),
                "level": (self.level, 0.5, 0.999),
                "max_new_tokens": (self.max_new_tokens, 1, None),
                "batch_size": (self.batch_size, 1, None),
                "samples": (self.samples, 0, None),
                "threads": (self.threads, 0, None),
            }
        )
        if self.prompt_format not in PROMPT_FORMATS:
            raise InputError(
                f"prompt_format {self.prompt_format!r}: use one of {', '.join(PROMPT_FORMATS)}"
            )
        if self.positions not in POSITIONS:
            raise InputError(f"positions {self.positions!r}: use one of {', '.join(POSITIONS)}")
        check_language(self.language, "language")
        for name in ("language_instruction", "truth_instruction"):
            if not str(getattr(self, name)).strip():
                raise InputError(f"{name}: empty; give a sentence such as 'Answer in French.'")


def load_behaviour_config(values: object, where: str = "params.yaml:behaviour") -> BehaviourConfig:
    """Validated :class:`BehaviourConfig`; a bad value raises a one-line InputError naming it."""
    return load_config(BehaviourConfig, values, where)  # type: ignore[arg-type]


def behaviour_layers(config: BehaviourConfig, study_layers: Sequence[Layer]) -> list[Layer]:
    """The layers of ``study_layers`` that ``config.layers`` names (all of them when null)."""
    if config.layers is None:
        return list(study_layers)
    wanted = parse_layers(list(config.layers))
    missing = [layer_name(x) for x in wanted if x not in study_layers]
    if missing:
        shown = ", ".join(layer_name(x) for x in study_layers)
        raise InputError(
            f"behaviour.layers: {', '.join(missing)} not in embed.layers ({shown}); "
            "name layers the study reads, or null for all"
        )
    return wanted
