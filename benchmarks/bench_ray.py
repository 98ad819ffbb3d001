"""Benchmark: extraction on 2 Ray actors of one thread each vs one local process of one thread.

    python benchmarks/bench_ray.py [--set truthfulqa] [--pairs 400] [--batch-size 32]
                                   [--out benchmarks/results/bench_ray.json]

The same pair table (the first ``--pairs`` pairs of a pair set built by the project's generators:
TruthfulQA from its local copy, the default, or a semi-synthetic set), the same model (the
embedded SmolLM2-135M, resolved as ``model: embedded`` is) and the same settings (the pipeline's
``embed.layers``, float32 on CPU) go through ``extract_embeddings`` twice, into fresh folders:

- local: this process, ``torch.set_num_threads(1)``;
- ray: a local Ray instance of 2 CPUs (started first and timed apart, as a running cluster would
  be), 2 actors with ``actor_threads=1``; the time includes starting the actors and loading the
  model in each.

It prints texts/s of each (distinct texts / wall time of the call), the speed-up, the worst
per-row cosine and the largest absolute difference between the two outputs, and writes them as
JSON to ``--out`` (benchmarks/results/ is not committed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ssae_core.config import load_config, read_section  # noqa: E402
from ssae_core.datasets import semisynthetic, truthfulqa  # noqa: E402
from ssae_core.io import load_embeddings, write_parquet  # noqa: E402
from ssae_core.lm import embed, loading  # noqa: E402


def pair_table(name: str, count: int):
    """The first ``count`` pairs of set ``name``, as the pipeline would build it."""
    if name == "truthfulqa":
        section = read_section(ROOT / "params.yaml", "truthfulqa")
        config = load_config(truthfulqa.TruthfulQAConfig, section, "params.yaml:truthfulqa")
        table, _ = truthfulqa.build(config, base_dir=ROOT)
    else:
        table = semisynthetic.make_pairs(name)
    return table.slice(0, min(count, table.num_rows))


def timed_extraction(pairs: Path, out: Path, **options) -> tuple[float, Path]:
    start = time.perf_counter()
    folder = embed.extract_embeddings(pairs, out, model=None, progress=False, **options)
    return time.perf_counter() - start, folder


def compare(local: Path, distributed: Path) -> tuple[float, float]:
    """Worst per-row cosine and largest |difference| over every layer, z and z_tilde."""
    worst, largest = 1.0, 0.0
    for layer, folder in embed.layer_tables(local).items():
        a_table = load_embeddings(folder)
        b_table = load_embeddings(embed.layer_tables(distributed)[layer])
        for column in ("z", "z_tilde"):
            a, b = getattr(a_table, column), getattr(b_table, column)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            worst = min(worst, float(cosine.min()))
            largest = max(largest, float(np.abs(a - b).max()))
    return worst, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="truthfulqa", help="truthfulqa or a semi-synthetic set")
    parser.add_argument("--pairs", type=int, default=400, help="first N pairs (default 400)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_ray.json")
    args = parser.parse_args()

    import ray

    torch.set_num_threads(1)
    source = loading.resolve_model(None, verbose=True)  # the embedded model, converted once
    layers = read_section(ROOT / "params.yaml", "embed")["layers"]
    options = {"layers": layers, "batch_size": args.batch_size, "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.parquet"
        table = pair_table(args.set, args.pairs)
        write_parquet(table, pairs)
        texts = len(set(table.column("x").to_pylist()) | set(table.column("x_tilde").to_pylist()))
        loading.load_model(source)  # warm the page cache so that neither run pays the first read
        local_s, local = timed_extraction(pairs, Path(tmp) / "local", **options)
        start = time.perf_counter()
        ray.init(
            num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False
        )
        init_s = time.perf_counter() - start
        ray_s, distributed = timed_extraction(
            pairs, Path(tmp) / "ray", engine="ray", num_actors=2, actor_threads=1,
            **options,
        )  # fmt: skip
        ray.shutdown()
        worst, largest = compare(local, distributed)
    result = {
        "set": args.set,
        "pairs": table.num_rows,
        "distinct_texts": texts,
        "batch_size": args.batch_size,
        "layers": layers,
        "model": source.name,
        "local_1_thread_s": round(local_s, 2),
        "ray_2_actors_s": round(ray_s, 2),
        "ray_init_s": round(init_s, 2),
        "local_texts_per_s": round(texts / local_s, 2),
        "ray_texts_per_s": round(texts / ray_s, 2),
        "speedup": round(local_s / ray_s, 3),
        "speedup_with_ray_init": round(local_s / (ray_s + init_s), 3),
        "worst_row_cosine": worst,
        "max_abs_diff": largest,
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
