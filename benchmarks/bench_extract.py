"""Benchmark: batched extraction vs. a naive one-text-at-a-time loop, in the same invocation.

    python benchmarks/bench_extract.py [--model embedded] [--texts 256] [--batch-size 32]
                                       [--layers 15,final]

Three ways to embed the same distinct texts, tokenised as the library tokenises them (the BOS
token the extraction prepends, ``embed.bos: auto``), at the same layers (default: the pipeline's
``embed.layers``), with the same loaded model:

- naive: what a first script does: ``model(input_ids, output_hidden_states=True)`` per text
  (full forward with the LM head and every hidden state), take each layer's last-token state
  (block L: ``hidden_states[L + 1]``; final: ``hidden_states[-1]``, the final-norm output);
- one-by-one: ssae_core's forward path (no LM head, every layer read in one pass), batch size 1;
- batched: ssae_core's forward path, texts grouped by length, left-padded, ``--batch-size``.

It prints texts/s of each, the speed-up of batched over naive, the worst per-row cosine between
the library's states and the naive reference over every layer (the two compute the same thing,
so it should be >= 0.99999), and the fraction of the machine's matmul peak reached: useful FLOPs
= 2 x (parameters used per token: the decoder body, not the embedding lookup) x (real tokens, BOS
included), against the best rate of a large square matmul in the model's dtype, measured here.
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

from ssae_core.config import read_section  # noqa: E402
from ssae_core.lm import embed  # noqa: E402
from ssae_core.lm import loading as lm  # noqa: E402
from ssae_core.lm.layers import layer_name, num_layers, resolve_layer  # noqa: E402

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "they",
    "this",
    "which",
    "king",
    "queen",
    "doctor",
    "nurse",
    "teacher",
    "house",
    "garden",
    "river",
    "mountain",
    "city",
    "country",
    "small",
    "large",
    "red",
    "blue",
    "green",
    "old",
    "new",
    "first",
    "last",
    "good",
    "bad",
    "French",
    "English",
    "water",
    "music",
    "history",
    "science",
    "language",
    "question",
    "answer",
    "people",
    "family",
    "children",
    "morning",
    "evening",
    "because",
    "however",
    "although",
    "therefore",
    "while",
    "during",
]


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Distinct sentences of 3 to 40 words (so batches must pad), deterministic."""
    rng = np.random.default_rng(seed)
    texts: dict[str, None] = {}
    while len(texts) < n:
        length = int(rng.integers(3, 41))
        words = rng.choice(WORDS, size=length)
        texts[" ".join(words).capitalize() + "."] = None
    return list(texts)


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int, repeats: int) -> float:
    """Best FLOP/s of a ``size`` x ``size`` matmul (the machine's practical peak)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def timed(fn, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the embedded SmolLM2)")
    parser.add_argument("--texts", type=int, default=256, help="distinct texts (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--layers",
        default=None,
        help="comma-separated layers read in one pass (default: params.yaml embed.layers)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's; use fewer "
        "than the cores when other processes are busy: spinning threads then stall each other)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    source = lm.resolve_model(args.model)
    resolve_s = time.perf_counter() - start
    device = lm.resolve_device(args.device)
    dtype = lm.resolve_dtype(args.dtype, device)
    start = time.perf_counter()
    model = lm.load_model(source, device=device, dtype=dtype)
    tokenizer = lm.load_tokenizer(source)
    load_s = time.perf_counter() - start

    texts = make_texts(args.texts)
    ids = embed.tokenize(tokenizer, texts)  # the library's: BOS prepended where it adds one
    wanted = (
        args.layers.split(",")
        if args.layers
        else read_section(ROOT / "params.yaml", "embed")["layers"]
    )
    layers = [resolve_layer(x, num_layers(model.config)) for x in wanted]
    tokens = sum(len(i) for i in ids)
    body = model.base_model
    embedding_params = body.get_input_embeddings().weight.numel()
    params = sum(p.numel() for p in body.parameters()) - embedding_params
    pad_id = embed.pad_token_id(tokenizer)

    # warm-up (allocator, kernels) on a few texts of each path
    embed.embed_token_ids_at(model, ids[:4], layers, batch_size=args.batch_size, pad_id=pad_id)

    def naive() -> np.ndarray:
        indices = [-1 if layer is None else layer + 1 for layer in layers]
        rows = []
        with torch.inference_mode():
            for token_ids in ids:
                inputs = torch.tensor([token_ids], device=device)
                hidden = model(input_ids=inputs, output_hidden_states=True).hidden_states
                rows.append(np.stack([hidden[i][0, -1].float().cpu().numpy() for i in indices]))
        return np.stack(rows, axis=1)  # [L, N, d]

    def one_by_one() -> np.ndarray:
        return embed.embed_token_ids_at(model, ids, layers, batch_size=1, pad_id=pad_id)

    def batched() -> np.ndarray:
        return embed.embed_token_ids_at(
            model, ids, layers, batch_size=args.batch_size, pad_id=pad_id
        )

    naive_out, naive_s = timed(naive, device)
    single_out, single_s = timed(one_by_one, device)
    batched_out, batched_s = timed(batched, device)
    cosine = min(
        _min_cosine(out[k], naive_out[k])
        for out in (batched_out, single_out)
        for k in range(len(layers))
    )
    peak = matmul_peak(dtype, device, args.matmul_size, repeats=5)
    flops = 2 * params * tokens

    result = {
        "model": source.name,
        "device": str(device),
        "dtype": lm.dtype_name(dtype),
        "threads": torch.get_num_threads(),
        "texts": len(texts),
        "tokens": tokens,
        "bos_prepended": all(i[0] == tokenizer.bos_token_id for i in ids),
        "layers": [layer_name(layer) for layer in layers],
        "batch_size": args.batch_size,
        "resolve_s": round(resolve_s, 2),
        "load_s": round(load_s, 2),
        "naive_texts_per_s": round(len(texts) / naive_s, 1),
        "one_by_one_texts_per_s": round(len(texts) / single_s, 1),
        "batched_texts_per_s": round(len(texts) / batched_s, 1),
        "speedup_batched_vs_naive": round(naive_s / batched_s, 2),
        "min_cosine_vs_naive": cosine,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "batched_gflops": round(flops / batched_s / 1e9, 1),
        "batched_fraction_of_peak": round(flops / batched_s / peak, 3),
        "naive_fraction_of_peak": round(flops / naive_s / peak, 3),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
