"""Benchmark: TruthfulQA MC1 scoring under steering at one block, in the same invocation.

    python benchmarks/bench_mc1.py [--lm models/lm] [--mc data/truthfulqa/mc.parquet]
                                   [--questions 40] [--conditions 4] [--layer 15] [--threads 2]

The held-out MC1 choices of the first ``--questions`` questions (template ``Q: {question}\\nA:
{answer}``) are scored unsteered and under ``--conditions`` - 1 random vectors at block
``--layer``, two ways, with the same loaded model:

- full: one steered forward pass of the whole model per condition, one text per row
  (``shortcut=False, share_contexts=False``);
- shared: blocks 0..L once per batch and only the blocks after L per condition, one text per
  row (``share_contexts=False``);
- packed: the library's default, also the choices of one question in one row, the question
  once (:func:`ssae_core.evaluation.behaviour.logprobs.target_logprobs`).

It prints the scored tokens per second of each (real tokens of the unpacked texts x conditions /
seconds: the same work measured three ways), the speed-ups, the largest score difference (they
compute the same thing), and the fraction of
the machine's matmul peak the full way reaches: useful FLOPs = 2 x (decoder-body parameters) x
(real tokens) x conditions, against the best rate of a large square float32 matmul measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench_extract import matmul_peak  # noqa: E402

from ssae_core.evaluation.behaviour import logprobs, mc1  # noqa: E402
from ssae_core.lm import loading as lm  # noqa: E402
from ssae_core.lm.layers import decoder_blocks  # noqa: E402
from ssae_core.lm.steer import SteeringVector  # noqa: E402
from ssae_core.lm.tokens import pad_token_id  # noqa: E402

TEMPLATE = "Q: {question}\nA: {answer}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", default=str(ROOT / "models" / "lm"))
    parser.add_argument("--mc", default=str(ROOT / "data" / "truthfulqa" / "mc.parquet"))
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--conditions", type=int, default=4)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = lm.resolve_model(args.lm, verbose=False)
    model = lm.load_model(source, device="cpu", dtype="float32")
    tokenizer = lm.load_tokenizer(source)
    questions = mc1.load_mc_questions(args.mc)[: args.questions]
    texts = mc1.choice_texts(tokenizer, questions, TEMPLATE)
    tokens = sum(len(t.context_ids) + len(t.target_ids) for t in texts)
    width = model.config.hidden_size
    rng = np.random.default_rng(0)
    vectors = [None] + [
        SteeringVector({args.layer: 100.0 * rng.standard_normal(width) / np.sqrt(width)})
        for _ in range(args.conditions - 1)
    ]
    options = {"pad_id": pad_token_id(tokenizer), "batch_size": args.batch_size}
    logprobs.target_logprobs(model, texts[:8], vectors, **options)  # warm-up
    timings, scores = {}, {}
    ways = {"full": (False, False), "shared": (True, False), "packed": (True, True)}
    for name, (shortcut, packed) in ways.items():
        start = time.perf_counter()
        scores[name] = logprobs.target_logprobs(
            model, texts, vectors, shortcut=shortcut, share_contexts=packed, **options
        )
        timings[name] = time.perf_counter() - start
    body = sum(p.numel() for p in decoder_blocks(model).parameters())
    peak = matmul_peak(torch.float32, torch.device("cpu"), 2048, repeats=5)
    flops = 2 * body * tokens * len(vectors)
    result = {
        "model": source.name,
        "threads": torch.get_num_threads(),
        "questions": len(questions),
        "choices": len(texts),
        "tokens": tokens,
        "conditions": len(vectors),
        "layer": args.layer,
        **{f"{name}_s": round(seconds, 2) for name, seconds in timings.items()},
        **{
            f"{name}_tokens_per_s": round(tokens * len(vectors) / seconds, 1)
            for name, seconds in timings.items()
        },
        "speedup_shared_over_full": round(timings["full"] / timings["shared"], 2),
        "speedup_packed_over_full": round(timings["full"] / timings["packed"], 2),
        "max_abs_score_difference": max(
            float(np.abs(scores["full"] - scores[name]).max()) for name in ("shared", "packed")
        ),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "full_fraction_of_peak": round(flops / timings["full"] / peak, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
