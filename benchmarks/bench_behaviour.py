"""Benchmark: the behaviour stage's three costly parts, the old way and the new way, in the same
invocation with the same loaded model.

    python benchmarks/bench_behaviour.py [--lm models/lm] [--mc data/truthfulqa/mc.parquet]
                                         [--questions 0] [--conditions 4] [--layer 15]
                                         [--strength 0.5] [--threads 2]

The conditions are the unsteered model and ``--conditions`` - 1 random unit vectors at block
``--layer`` times ``--strength`` x the typical residual norm there (as the stage's strengths).

- mc1: the choices of the first ``--questions`` held-out MC1 questions (0: all), scored one
  choice per row (``share_contexts=False``, before) and packed, each question's context once
  (the default, after) by :func:`~ssae_core.evaluation.behaviour.logprobs.target_logprobs`;
- generate: greedy continuations of the training prompts, one condition after another
  (:func:`~ssae_core.evaluation.behaviour.language.continue_prompts`, before) and every condition
  as rows of one call (:func:`~ssae_core.evaluation.behaviour.language.continue_conditions`);
- perplexity: those continuations scored under the unsteered model, one per row and packed by
  prompt (repeated continuations once).

Per part it prints seconds and tokens per second before and after (real tokens x conditions for
scoring, new tokens for generation), the speed-up, and how far the results agree: the largest
score difference, the questions whose MC1 verdict differs, the continuations that differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ssae_core.evaluation.behaviour import language, logprobs, mc1  # noqa: E402
from ssae_core.lm import loading as lm  # noqa: E402
from ssae_core.lm.steer import SteeringVector, typical_norm  # noqa: E402
from ssae_core.lm.tokens import pad_token_id  # noqa: E402

TEMPLATE = "Q: {question}\nA: {answer}"


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    """``run()``'s result and its wall time in seconds."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def compare(name: str, work: float, before: float, after: float) -> dict:
    """Seconds, rates (``work`` units per second) and speed-up of one part."""
    return {
        "part": name,
        "before_s": round(before, 2),
        "after_s": round(after, 2),
        "before_per_s": round(work / before, 1),
        "after_per_s": round(work / after, 1),
        "speedup": round(before / after, 2),
    }


def bench_mc1(model, tokenizer, questions, vectors, batch_size: int) -> dict:
    """MC1 choice scoring, one choice per row vs packed by question."""
    texts = mc1.choice_texts(tokenizer, questions, TEMPLATE)
    tokens = sum(len(t.context_ids) + len(t.target_ids) for t in texts) * len(vectors)
    options = {"pad_id": pad_token_id(tokenizer), "batch_size": batch_size}
    logprobs.target_logprobs(model, texts[:8], vectors, **options)  # warm-up
    plain, before = timed(
        lambda: logprobs.target_logprobs(model, texts, vectors, share_contexts=False, **options)
    )
    packed, after = timed(lambda: logprobs.target_logprobs(model, texts, vectors, **options))
    verdicts = [
        int((mc1.mc1_correct(a, questions) != mc1.mc1_correct(b, questions)).sum())
        for a, b in zip(plain, packed, strict=True)
    ]
    return compare("mc1 scoring (tokens/s)", tokens, before, after) | {
        "questions": len(questions),
        "choices": len(texts),
        "max_abs_score_difference": float(np.abs(plain - packed).max()),
        "questions_whose_verdict_differs": sum(verdicts),
    }


def bench_generate(model, tokenizer, prompts, vectors, batch_size: int, new: int) -> tuple:
    """Continuations one condition at a time vs every condition as rows of one call."""
    settings = {"max_new_tokens": new, "batch_size": batch_size}
    single, before = timed(
        lambda: [
            language.continue_prompts(model, tokenizer, prompts, v, **settings) for v in vectors
        ]
    )
    rows, after = timed(
        lambda: language.continue_conditions(model, tokenizer, prompts, vectors, **settings)
    )
    differ = sum(
        a != b for x, y in zip(single, rows, strict=True) for a, b in zip(x, y, strict=True)
    )
    work = new * len(prompts) * len(vectors)
    result = compare("generation (new tokens/s, upper bound)", work, before, after)
    return rows, result | {"continuations": work // new, "continuations_that_differ": differ}


def bench_perplexity(model, tokenizer, prompts, texts: Sequence[Sequence[str]], batch_size) -> dict:
    """The continuations under the unsteered model, one per row vs packed by prompt."""
    scored = [
        t for outputs in texts for t in language.continuation_texts(tokenizer, prompts, outputs)
    ]
    tokens = sum(len(t.context_ids) + len(t.target_ids) for t in scored)
    options = {"pad_id": pad_token_id(tokenizer), "batch_size": batch_size}
    plain, before = timed(
        lambda: logprobs.target_logprobs(model, scored, share_contexts=False, **options)
    )
    packed, after = timed(lambda: logprobs.target_logprobs(model, scored, **options))
    return compare("perplexity scoring (tokens/s)", tokens, before, after) | {
        "texts": len(scored),
        "max_abs_score_difference": float(np.abs(plain - packed).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", default=str(ROOT / "models" / "lm"))
    parser.add_argument("--mc", default=str(ROOT / "data" / "truthfulqa" / "mc.parquet"))
    parser.add_argument("--questions", type=int, default=0, help="range: [0, 817]; 0: all")
    parser.add_argument("--conditions", type=int, default=4, help="range: [2, 64]")
    parser.add_argument("--layer", type=int, default=15, help="range: [0, 29]")
    parser.add_argument("--strength", type=float, default=0.5, help="range: [0, 4]")
    parser.add_argument("--new-tokens", type=int, default=16, help="range: [1, 256]")
    parser.add_argument("--batch-size", type=int, default=16, help="range: [1, 1024]")
    parser.add_argument("--threads", type=int, default=2, help="range: [1, 256]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = lm.resolve_model(args.lm, verbose=False)
    model = lm.load_model(source, device="cpu", dtype="float32")
    tokenizer = lm.load_tokenizer(source)
    questions = mc1.load_mc_questions(args.mc)[: args.questions or None]
    prompts = list(language.NEUTRAL_PROMPTS)
    norm = typical_norm(model, tokenizer, args.layer, prompts)
    width = model.config.hidden_size
    rng = np.random.default_rng(0)
    vectors = [None] + [
        SteeringVector({args.layer: args.strength * norm * u / np.linalg.norm(u)})
        for u in rng.standard_normal((args.conditions - 1, width))
    ]
    parts = [bench_mc1(model, tokenizer, questions, vectors, args.batch_size)]
    texts, generation = bench_generate(
        model, tokenizer, prompts, vectors, args.batch_size, args.new_tokens
    )
    parts += [generation, bench_perplexity(model, tokenizer, prompts, texts, args.batch_size)]
    settings = {"model": source.name, "threads": torch.get_num_threads(), "layer": args.layer}
    print(json.dumps(settings | {"conditions": len(vectors), "parts": parts}, indent=2))


if __name__ == "__main__":
    main()
