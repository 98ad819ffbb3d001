"""Does the prompting baseline undersell prompting? The behaviour stage puts its instruction on the
line before a plain English opening; this asks the Instruct model through its chat template
instead ("Answer in French. PROMPT" as the user turn) and lets it answer from scratch, greedy,
for every held-out prompt of the language behaviour, and records the detector's language and the
share of distinct tokens (the stage's degeneracy measure; its perplexity bound is not applied:
the answer is not a continuation of the plain prompt). It then scores TruthfulQA MC1 on the
held-out questions with the question as the chat's user turn (with and without "Answer
truthfully.") and each choice as the assistant's answer, as the stage scores choices (summed
log-probability), with a 95% bootstrap interval over questions. Run from the project root after
`dvc repro prepare_model download_truthfulqa`:

    python benchmarks/chat_prompting.py     # -> benchmarks/results/chat_prompting.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ssae_core.evaluation.behaviour.fluency import distinct_share  # noqa: E402
from ssae_core.evaluation.behaviour.language import (  # noqa: E402
    HELD_OUT_PROMPTS,
    identify_languages,
    language_identifier,
)
from ssae_core.evaluation.behaviour.logprobs import ScoredText, target_logprobs  # noqa: E402
from ssae_core.evaluation.behaviour.mc1 import load_mc_questions, mc1_correct  # noqa: E402
from ssae_core.lm import loading as lm  # noqa: E402
from ssae_core.lm.tokens import pad_token_id  # noqa: E402
from ssae_core.metrics import bootstrap_interval  # noqa: E402


def _chat_context(tokenizer, content: str) -> list[int]:
    turn = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_mc1(model, tokenizer, questions, instruction: str | None) -> dict:
    """MC1 accuracy with each question as the chat's user turn and each choice as the answer."""
    items = []
    for item in questions:
        content = item.question if instruction is None else f"{instruction} {item.question}"
        context = _chat_context(tokenizer, content)
        for choice in item.choices:
            items.append(
                ScoredText(context, tokenizer(choice, add_special_tokens=False)["input_ids"])
            )
    scores = target_logprobs(model, items, [None], pad_id=pad_token_id(tokenizer), batch_size=32)
    correct = mc1_correct(scores[0], questions).astype(float)
    found = bootstrap_interval(correct, np.arange(len(correct)))
    return {
        "instruction": instruction,
        "accuracy": round(float(correct.mean()), 3),
        "interval": [round(found.low, 3), round(found.high, 3)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default=str(ROOT / "models" / "lm"))
    parser.add_argument("--instruction", default="Answer in French.")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--min-distinct", type=float, default=0.4, help="as behaviour.min_distinct")
    parser.add_argument("--mc", default=str(ROOT / "data" / "truthfulqa" / "mc.parquet"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chat_prompting.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = lm.resolve_model(args.lm, verbose=False)
    model = lm.load_model(source, device="cpu", dtype="float32")
    tokenizer = lm.load_tokenizer(source)
    rows = []
    for prompt in HELD_OUT_PROMPTS:
        turn = [{"role": "user", "content": f"{args.instruction} {prompt}"}]
        text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        rows.append(
            {
                "prompt": prompt,
                "answer": tokenizer.decode(new, skip_special_tokens=True),
                "distinct": round(distinct_share(new), 3),
            }
        )
    for row, code in zip(
        rows, identify_languages([r["answer"] for r in rows], language_identifier()), strict=True
    ):
        row["language"] = code
    french = [r["language"] == "fr" for r in rows]
    fluent = [r["distinct"] >= args.min_distinct for r in rows]
    questions = load_mc_questions(args.mc)
    mc1 = [chat_mc1(model, tokenizer, questions, i) for i in (None, "Answer truthfully.")]
    result = {
        "model": source.name,
        "mc1_questions": len(questions),
        "mc1_chat": mc1,
        "instruction": args.instruction,
        "prompts": len(rows),
        "french_share": round(sum(french) / len(rows), 3),
        "french_and_distinct_share": round(
            sum(f and d for f, d in zip(french, fluent, strict=True)) / len(rows), 3
        ),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
