"""Where to steer: the MD language vector added at every position, the prompt's only, the
generated ones only, or every position but BOS, at several strengths.

    python benchmarks/steer_positions.py [--lm models/lm] [--embeddings data/embeddings/lang]
                                         [--layer 15] [--strengths 0.8,1.2,1.6,2.4]

For each setting it prints, over the 16 training prompts (``NEUTRAL_PROMPTS``, 16 greedy
tokens): the share py3langid calls French, the share that is fluent (the behaviour stage's rule:
>= 40% distinct tokens, perplexity under the unsteered model <= 5 x the largest unsteered one),
the share both, the median perplexity, and two continuations. Strength is in units of the
typical residual norm at the layer (:func:`ssae_core.lm.steer.typical_norm`). "no BOS" runs one
prompt at a time (no padding) with a hook that skips position 0 of the prompt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ssae_core.evaluation.behaviour import fluency  # noqa: E402
from ssae_core.evaluation.behaviour import language as lang  # noqa: E402
from ssae_core.evaluation.behaviour.vectors import concept_vectors  # noqa: E402
from ssae_core.io import load_embeddings  # noqa: E402
from ssae_core.lm import loading as lm  # noqa: E402
from ssae_core.lm.layers import decoder_blocks, layer_folder  # noqa: E402
from ssae_core.lm.steer import steer, typical_norm  # noqa: E402
from ssae_core.lm.tokens import complete  # noqa: E402

PROMPTS = list(lang.NEUTRAL_PROMPTS)


def skip_bos_hook(delta: torch.Tensor):
    """Add ``delta`` to a block's output except at position 0 of the prompt's pass."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        add = delta.to(hidden.dtype).expand_as(hidden).clone()
        if hidden.shape[1] > 1:
            add[:, 0] = 0
        steered = hidden + add
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", default=str(ROOT / "models" / "lm"))
    parser.add_argument("--embeddings", default=str(ROOT / "data" / "embeddings" / "lang"))
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--strengths", default="0.8,1.2,1.6,2.4")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = lm.resolve_model(args.lm, verbose=False)
    model = lm.load_model(source, device="cpu", dtype="float32")
    tokenizer = lm.load_tokenizer(source)
    table = load_embeddings(layer_folder(Path(args.embeddings), args.layer)).subset("train")
    unit = concept_vectors(table, {}, lang.LANGUAGE)["md"][0]
    norm = typical_norm(model, tokenizer, args.layer, PROMPTS)
    identifier = lang.language_identifier()

    def scores(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logprob, count = lang._continuation_logprobs(model, tokenizer, PROMPTS, [texts], 16, False)
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        distinct = np.array([fluency.distinct_share(i) for i in ids])
        french = np.array([c == "fr" for c in lang.identify_languages(texts, identifier)])
        return french, distinct, fluency.text_perplexities(logprob[0], count[0])

    base = complete(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=16)
    _, _, base_ppl = scores(base)
    rule = fluency.fluency_rule(base_ppl, min_distinct=0.4, perplexity_factor=5.0)
    print(f"layer {args.layer}: typical norm {norm:.1f}, fluency bound {rule.max_perplexity:.1f}")

    def show(name: str, texts: list[str]) -> None:
        french, distinct, ppl = scores(texts)
        fluent = rule.fluent(distinct, ppl)
        print(
            f"{name:28s} French {french.mean():.3f}  fluent {fluent.mean():.3f}  "
            f"both {(french & fluent).mean():.3f}  median perplexity {np.median(ppl):.1f}  "
            f"| {texts[1]!r} | {texts[3]!r}",
            flush=True,
        )

    show("unsteered", base)
    for strength in (float(s) for s in args.strengths.split(",")):
        vector = unit.scaled(strength * norm)
        for positions in ("all", "prompt", "generated"):
            with steer(model, vector, positions=positions):
                texts = complete(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=16)
            show(f"{strength:g} {positions}", texts)
        delta = vector.layer_activations[args.layer]
        handle = decoder_blocks(model)[args.layer].register_forward_hook(skip_bos_hook(delta))
        try:
            texts = complete(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=1)
        finally:
            handle.remove()
        show(f"{strength:g} all but BOS (one by one)", texts)
        with steer(model, vector):
            texts = complete(model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=1)
        show(f"{strength:g} all (one by one)", texts)


if __name__ == "__main__":
    main()
