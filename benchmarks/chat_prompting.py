"""How should the prompting baseline ask? The Instruct model is asked "Answer in French." in the
two prompt formats of the behaviour stage (``behaviour.prompt_format``): ``plain``, the instruction
on the line before the English opening, and ``chat``, the instruction and the opening as the user's
turn of the chat template. For every held-out prompt of the language behaviour it records the
greedy answer (the stage's generation: ``language.continue_prompts``), the detector's language,
the share of distinct tokens and the perplexity under the unsteered model given three contexts:
the prompt without the instruction in its format (what the stage scores), the instructed prompt,
and the plain prompt, with how many answers each keeps within the stage's bound (why the stage
reads a chat answer given the user's turn without the instruction). It then scores TruthfulQA
MC1 on the held-out questions in the chat format, with and without "Answer truthfully.", as the
stage does (``mc1.choice_texts(chat=True)``), with a 95% bootstrap interval over questions. Run
from the project root after `dvc repro prepare_model download_truthfulqa`:

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

from ssae_core.evaluation.behaviour import language, mc1  # noqa: E402
from ssae_core.evaluation.behaviour.fluency import distinct_share, text_perplexities  # noqa: E402
from ssae_core.evaluation.behaviour.logprobs import target_logprobs  # noqa: E402
from ssae_core.evaluation.behaviour.protocol import condition_prompts  # noqa: E402
from ssae_core.lm import loading as lm  # noqa: E402
from ssae_core.lm.tokens import pad_token_id  # noqa: E402
from ssae_core.metrics import bootstrap_interval  # noqa: E402

MC_TEMPLATE = "Q: {question}\nA: {answer}"  # unused by the chat format, required by the call


def chat_mc1(model, tokenizer, questions, instruction: str | None) -> dict:
    """MC1 accuracy with each question as the chat's user turn and each choice as the answer."""
    items = mc1.choice_texts(tokenizer, questions, MC_TEMPLATE, instruction, chat=True)
    scores = target_logprobs(model, items, [None], pad_id=pad_token_id(tokenizer), batch_size=32)
    correct = mc1.mc1_correct(scores[0], questions).astype(float)
    found = bootstrap_interval(correct, np.arange(len(correct)))
    return {
        "instruction": instruction,
        "accuracy": round(float(correct.mean()), 3),
        "interval": [round(found.low, 3), round(found.high, 3)],
    }


def _perplexities(model, tokenizer, contexts, template, answers) -> list[float]:
    """Perplexity of each answer under the unsteered model given its context (read with
    ``template``), as the stage computes it."""
    logprob, count = language._continuation_logprobs(
        model, tokenizer, contexts, [answers], 8, False, [template]
    )
    return [round(float(p), 2) for p in text_perplexities(logprob[0], count[0])]


def ask(model, tokenizer, prompts, instruction: str, chat: bool, max_new_tokens: int) -> list:
    """The stage's prompting condition in one format: answers, languages, distinct-token shares
    and perplexities given three contexts: the prompt without the instruction in the format (what
    the stage scores), the instructed prompt the answer was written after, and the plain prompt."""
    given, template = condition_prompts(prompts, instruction, chat=chat)
    answers = language.continue_prompts(
        model, tokenizer, given, max_new_tokens=max_new_tokens, batch_size=8, template=template
    )
    contexts = {
        "without_instruction": (prompts, template),
        "instructed": (given, template),
        "plain_prompt": (prompts, None),
    }
    found = {
        name: _perplexities(model, tokenizer, texts, read_with, answers)
        for name, (texts, read_with) in contexts.items()
    }
    ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    codes = language.identify_languages(answers, language.language_identifier())
    return [
        {
            "prompt": prompt,
            "answer": answer,
            "language": code,
            "distinct": round(distinct_share(row), 3),
            "perplexity": {name: values[i] for name, values in found.items()},
        }
        for i, (prompt, answer, code, row) in enumerate(
            zip(prompts, answers, codes, ids, strict=True)
        )
    ]


def _bound(path: Path) -> float | None:
    """The perplexity bound of the stage's last run (metrics/behaviour.json), if there is one."""
    if not path.exists():
        return None
    layers = json.loads(path.read_text())["layers"]
    return next(iter(layers.values()))["language"]["fluency"]["max_perplexity"]


def _context_summary(rows: list, bound: float | None) -> dict:
    """Per perplexity context: the median and range over answers, and how many are within the
    stage's bound."""
    out = {}
    for name in rows[0]["perplexity"]:
        values = [r["perplexity"][name] for r in rows]
        out[name] = {
            "median": round(float(np.median(values)), 2),
            "range": [min(values), max(values)],
            "within_bound": None if bound is None else sum(v <= bound for v in values),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default=str(ROOT / "models" / "lm"))
    parser.add_argument("--instruction", default="Answer in French.")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--min-distinct", type=float, default=0.4, help="as behaviour.min_distinct")
    parser.add_argument("--mc", default=str(ROOT / "data" / "truthfulqa" / "mc.parquet"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--behaviour",
        type=Path,
        default=ROOT / "metrics" / "behaviour.json",
        help="the stage's results, for its perplexity bound",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/chat_prompting.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = lm.resolve_model(args.lm, verbose=False)
    model = lm.load_model(source, device="cpu", dtype="float32")
    tokenizer = lm.load_tokenizer(source)
    bound = _bound(args.behaviour)
    formats = {}
    for name, chat in (("plain", False), ("chat", True)):
        rows = ask(
            model, tokenizer, language.HELD_OUT_PROMPTS, args.instruction, chat, args.max_new_tokens
        )
        french = [r["language"] == "fr" for r in rows]
        distinct = [r["distinct"] >= args.min_distinct for r in rows]
        formats[name] = {
            "french_share": round(float(np.mean(french)), 3),
            "french_and_distinct_share": round(
                float(np.mean([f and d for f, d in zip(french, distinct, strict=True)])), 3
            ),
            "perplexity": _context_summary(rows, bound),
            "rows": rows,
        }
    questions = mc1.load_mc_questions(args.mc)
    result = {
        "model": source.name,
        "instruction": args.instruction,
        "prompts": len(language.HELD_OUT_PROMPTS),
        "perplexity_bound": bound,
        "mc1_questions": len(questions),
        "mc1_chat": [
            chat_mc1(model, tokenizer, questions, i) for i in (None, "Answer truthfully.")
        ],
        "formats": formats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    summary = {k: v for k, v in result.items() if k != "formats"}
    summary["formats"] = {
        k: {m: x for m, x in v.items() if m != "rows"} for k, v in formats.items()
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
