"""GPU check: bf16 extraction with a hub-sized model and a stacked training run on CUDA.

    bash benchmarks/gpu_check.sh [--shape 8b] [--pairs data/pairs/truthfulqa.parquet]
    python benchmarks/gpu_check.py --device cpu --shape tiny --texts 16   # the tests' smoke run

Extraction: the texts of a pair table (``--pairs``; sentences made up here if it is missing) are
tokenised and embedded by the pipeline's own code (:func:`ssae_core.lm.tokens.tokenize`,
:func:`ssae_core.lm.embed.embed_token_ids_at`, layers ``--layers``) with ``--model`` (a hub id
or a local folder), or, when none is given, with random weights in the shape of a hub model
(``--shape 8b``: Llama-3.1-8B; the lent machines cannot reach the hub) and the embedded SmolLM2
tokenizer. It prints texts/s, tokens/s, the FLOP rate (2 x the decoder body's parameters x
real tokens) as a fraction of the GPU's bf16 peak (nominal, from the data sheet, and measured on
a large matmul), and the agreement of the bf16 states with float32 states of the same weights
(the model upcast in place) on the first ``--agreement-texts`` texts.

Training: ``ssae_core.train.train`` of SSAE (all seeds stacked) on planted sparse shifts as wide
as the model, on ``--device``: pairs/s; then a short run of the same configuration on the CPU and
on the device, from the same initial weights and shuffles: the largest weight difference and the
smallest cosine between their decoder rows.

Everything is printed and written to ``--json`` (default: $OUT/gpu_check.json when $OUT is set).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_extract import make_texts, matmul_peak  # noqa: E402

from ssae_core.lm import loading  # noqa: E402
from ssae_core.lm.embed import embed_token_ids_at  # noqa: E402
from ssae_core.lm.layers import check_layer, layer_name, num_layers, parse_layers, text_config  # noqa: E402
from ssae_core.lm.tokens import pad_token_id, tokenize  # noqa: E402
from ssae_core.train import TrainConfig, train  # noqa: E402

SHAPES = {  # decoder shapes of public Llama models (config.json of each), and a test size
    "8b": {  # meta-llama/Llama-3.1-8B
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "1b": {  # meta-llama/Llama-3.2-1B
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
}
NOMINAL_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}
"""Dense bf16 tensor-core peaks of the data sheets (SXM parts), by a name in the device's name."""


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def random_llama(shape: str, tokenizer: object, device: torch.device) -> torch.nn.Module:
    """A Llama of ``SHAPES[shape]`` with random weights, built in bfloat16 on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=4096,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        **SHAPES[shape],
    )
    with default_dtype(torch.bfloat16), torch.device(device):
        model = LlamaForCausalLM(config)
    return model.eval()


def pair_texts(path: Path | None, limit: int) -> tuple[list[str], str]:
    """The distinct texts of a pair table (x then x_tilde), at most ``limit``; or made-up ones."""
    if path is not None and path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["x", "x_tilde"])
        texts = dict.fromkeys(table.column("x").to_pylist() + table.column("x_tilde").to_pylist())
        return list(texts)[:limit], str(path)
    return make_texts(limit), "made-up sentences (benchmarks/bench_extract.py)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def nominal_peak(device: torch.device) -> float | None:
    """The data sheet's dense bf16 FLOP/s of this GPU, where its name is known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in NOMINAL_BF16_TFLOPS.items() if key in name), None)


def check_extraction(args: argparse.Namespace, device: torch.device) -> dict:
    """Throughput of bf16 extraction and its agreement with float32 (see the module docstring)."""
    source = loading.resolve_model(args.model or args.tokenizer)
    tokenizer = loading.load_tokenizer(source)
    start = time.perf_counter()
    if args.model is None:
        model, name = random_llama(args.shape, tokenizer, device), f"random Llama ({args.shape})"
    else:
        model = loading.load_model(source, device=device, dtype=torch.bfloat16)
        name = source.name
    build_s = time.perf_counter() - start
    layers = parse_layers(args.layers)
    for layer in layers:
        check_layer(layer, num_layers(model.config), name)
    names = [layer_name(layer) for layer in layers]
    hidden = int(text_config(model.config).hidden_size)
    texts, origin = pair_texts(args.pairs, args.texts)
    ids = tokenize(tokenizer, texts)
    tokens = sum(len(i) for i in ids)
    body = model.base_model
    params = sum(p.numel() for p in body.parameters()) - body.get_input_embeddings().weight.numel()
    embed = {"batch_size": args.batch_size, "pad_id": pad_token_id(tokenizer)}

    embed_token_ids_at(model, ids[: args.batch_size], layers, **embed)  # warm-up
    _sync(device)
    start = time.perf_counter()
    bf16_LND = embed_token_ids_at(model, ids, layers, **embed)
    _sync(device)
    seconds = time.perf_counter() - start
    flops = 2 * params * tokens / seconds
    measured = matmul_peak(torch.bfloat16, device, args.matmul_size, repeats=5)
    nominal = nominal_peak(device)

    agree = ids[: args.agreement_texts]
    model.float()  # the same (bf16-rounded) weights, computed in float32
    fp32_LND = embed_token_ids_at(model, agree, layers, **embed)
    cos_LN = _row_cosines(bf16_LND[:, : len(agree)], fp32_LND)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "model": name,
        "decoder_parameters": params,
        "hidden_size": hidden,
        "build_or_load_s": round(build_s, 1),
        "pairs_source": origin,
        "texts": len(texts),
        "tokens": tokens,
        "layers": names,
        "texts_per_s": round(len(texts) / seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "tflops": round(flops / 1e12, 2),
        "fraction_of_nominal_bf16_peak": None if nominal is None else round(flops / nominal, 3),
        "measured_matmul_peak_tflops": round(measured / 1e12, 1),
        "fraction_of_measured_peak": round(flops / measured, 3),
        "agreement_texts": len(agree),
        "bf16_vs_fp32_min_cosine": {n: float(cos_LN[k].min()) for k, n in enumerate(names)},
        "bf16_vs_fp32_median_cosine": {n: float(np.median(cos_LN[k])) for k, n in enumerate(names)},
    }


def planted_shifts(num: int, dim: int, concepts: int, seed: int = 0) -> np.ndarray:
    """Shifts that change 1 to 3 of ``concepts`` planted directions each: [num, dim] float32."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((num, concepts), dtype=np.float32)
    for row in range(num):
        picked = rng.choice(concepts, size=int(rng.integers(1, 4)), replace=False)
        codes[row, picked] = rng.uniform(-1, 1, size=len(picked))
    return codes @ rng.standard_normal((concepts, dim)).astype(np.float32)


def check_training(args: argparse.Namespace, device: torch.device, dim: int) -> dict:
    """pairs/s of a stacked SSAE run on ``device``, and its agreement with the CPU."""
    delta = planted_shifts(args.train_pairs, dim, args.latent_dim)

    def config(steps: int, where: torch.device) -> TrainConfig:
        return TrainConfig(
            method="ssae", latent_dim=args.latent_dim, seeds=tuple(range(args.seeds)),
            sparsity=0.5, epochs=1, min_steps=steps, patience=0, batch_size=args.train_batch,
            threads=0, device=str(where),
        )  # fmt: skip

    train(delta, config(2, device), progress=False)  # warm-up (kernels, allocator)
    _sync(device)
    start = time.perf_counter()
    result = train(delta, config(args.train_steps, device), progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    steps = len(result.history) // args.seeds  # one history row per member and epoch
    steps_per_epoch = -(-args.train_steps // max(steps, 1))
    pairs = steps * steps_per_epoch * args.train_batch

    short = min(args.train_steps, args.agreement_steps)
    here = train(delta, config(short, device), progress=False).models
    cpu = train(delta, config(short, torch.device("cpu")), progress=False).models
    w_here = np.stack([m.net.W_dec_SMD.detach().numpy()[0] for m in here])
    w_cpu = np.stack([m.net.W_dec_SMD.detach().numpy()[0] for m in cpu])
    return {
        "train_device": str(device),
        "train_dim": dim,
        "train_latent_dim": args.latent_dim,
        "train_members": args.seeds,
        "train_batch": args.train_batch,
        "train_steps": steps * steps_per_epoch,
        "train_seconds": round(seconds, 2),
        "train_pairs_per_s": round(pairs / seconds, 1),
        "train_member_pairs_per_s": round(args.seeds * pairs / seconds, 1),
        "agreement_steps": short,
        "cpu_vs_device_max_abs_decoder": float(np.abs(w_here - w_cpu).max()),
        "cpu_vs_device_min_decoder_row_cosine": float(_row_cosines(w_here, w_cpu).min()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="hub id or folder (default: random --shape)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    p.add_argument("--tokenizer", default="embedded", help="whose tokenizer the random weights use")
    p.add_argument("--pairs", type=Path, default=ROOT / "data/pairs/truthfulqa.parquet")
    p.add_argument("--texts", type=int, default=2048, help="distinct texts to embed")
    p.add_argument("--layers", type=lambda s: s.split(","), default=["16", "final"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--agreement-texts", type=int, default=256)
    p.add_argument("--matmul-size", type=int, default=8192)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (smoke run)")
    p.add_argument("--train-pairs", type=int, default=200_000)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--train-batch", type=int, default=1024)
    p.add_argument("--train-steps", type=int, default=500)
    p.add_argument("--agreement-steps", type=int, default=50)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(0)
    device = loading.resolve_device(args.device)
    result = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    extraction = check_extraction(args, device)
    result |= extraction | check_training(args, device, extraction["hidden_size"])
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}", flush=True)
    out = args.json or (Path(os.environ["OUT"]) / "gpu_check.json" if "OUT" in os.environ else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
