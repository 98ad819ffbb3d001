"""Benchmark: extraction on N Ray actors of one thread each vs N bare processes of one thread
each (and vs one local process), in the same run.

    python benchmarks/bench_ray.py [--set truthfulqa] [--pairs 400] [--batch-size 32]
                                   [--actors 2] [--shard-rows 50]
                                   [--out benchmarks/results/bench_ray.json]

The same pair table (the first ``--pairs`` pairs of a pair set built by the project's generators:
TruthfulQA from its local copy, the default, or a semi-synthetic set), the same model (the
embedded SmolLM2-135M, resolved as ``model: embedded`` is) and the same settings (the pipeline's
``embed.layers``, float32 on CPU) go through ``extract_embeddings`` twice, into fresh folders:

- local: this process, ``torch.set_num_threads(1)``;
- bare: N processes started together, each ``python -c`` running ``extract_embeddings`` with
  ``num_shards=N`` and its own ``shard_index`` into one folder (what ``ssae embed --num-shards N
  --shard-index I`` does by hand), one torch thread each; the time includes starting Python,
  importing torch and loading the model in each, and ends when the last one exits;
- ray: a local Ray instance of N CPUs (started first and timed apart, as a running cluster would
  be), N actors with ``actor_threads=1``; the time includes starting the actors and loading the
  model in each.

All three use ``--shard-rows`` (so that the bare processes have several shards to share). It
prints texts/s of each (distinct texts / wall time of the call), Ray against the bare processes
(``ray_vs_bare``: bare wall time / Ray wall time, 1.0 = no overhead), the speed-ups over one
process, the worst per-row cosine and the largest absolute difference between the outputs, and
writes them as JSON to ``--out`` (benchmarks/results/*.json are committed records).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
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


BARE_PROCESS = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from ssae_core.lm import embed
embed.extract_embeddings({pairs!r}, {out!r}, model=None, progress=False, num_shards={n},
                         shard_index={i}, **{options!r})
"""


def bare_processes(pairs: Path, out: Path, count: int, options: dict) -> float:
    """Wall time of ``count`` processes that each extract their part of the shards into ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    procs = []
    for i in range(count):
        code = BARE_PROCESS.format(
            root=str(ROOT), pairs=str(pairs), out=str(out), n=count, i=i, options=options
        )
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env))
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"a bare extraction process failed: exit codes {codes}")
    return elapsed


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
    parser.add_argument("--actors", type=int, default=2, help="Ray actors = bare processes")
    parser.add_argument("--shard-rows", type=int, default=50, help="pairs per shard")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench_ray.json")
    args = parser.parse_args()

    import ray

    torch.set_num_threads(1)
    source = loading.resolve_model(None, verbose=True)  # the embedded model, converted once
    layers = read_section(ROOT / "params.yaml", "embed")["layers"]
    options = {
        "layers": layers, "batch_size": args.batch_size, "device": "cpu",
        "shard_rows": args.shard_rows,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.parquet"
        table = pair_table(args.set, args.pairs)
        write_parquet(table, pairs)
        texts = len(set(table.column("x").to_pylist()) | set(table.column("x_tilde").to_pylist()))
        loading.load_model(source)  # warm the page cache so that neither run pays the first read
        local_s, local = timed_extraction(pairs, Path(tmp) / "local", **options)
        bare_s = bare_processes(pairs, Path(tmp) / "bare", args.actors, options)
        start = time.perf_counter()
        ray.init(
            num_cpus=args.actors, include_dashboard=False, logging_level=logging.ERROR,
            log_to_driver=False,
        )  # fmt: skip
        init_s = time.perf_counter() - start
        ray_s, distributed = timed_extraction(
            pairs, Path(tmp) / "ray", engine="ray", num_actors=args.actors, actor_threads=1,
            **options,
        )  # fmt: skip
        ray.shutdown()
        worst, largest = compare(local, distributed)
        bare_worst, bare_largest = compare(local, Path(tmp) / "bare")
    result = {
        "set": args.set,
        "pairs": table.num_rows,
        "distinct_texts": texts,
        "batch_size": args.batch_size,
        "layers": layers,
        "model": source.name,
        "shard_rows": args.shard_rows,
        "actors": args.actors,
        "local_1_thread_s": round(local_s, 2),
        "bare_processes_s": round(bare_s, 2),
        "ray_actors_s": round(ray_s, 2),
        "ray_init_s": round(init_s, 2),
        "local_texts_per_s": round(texts / local_s, 2),
        "bare_texts_per_s": round(texts / bare_s, 2),
        "ray_texts_per_s": round(texts / ray_s, 2),
        "ray_vs_bare": round(bare_s / ray_s, 3),
        "bare_speedup": round(local_s / bare_s, 3),
        "ray_speedup": round(local_s / ray_s, 3),
        "ray_speedup_with_init": round(local_s / (ray_s + init_s), 3),
        "worst_row_cosine": worst,
        "max_abs_diff": largest,
        "bare_worst_row_cosine": bare_worst,
        "bare_max_abs_diff": bare_largest,
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
