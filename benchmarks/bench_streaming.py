"""Out-of-core training: peak memory and speed of `ssae train` streaming shards from disk, and the
streaming path's speed against the in-memory path on a table that fits both, in the same run.

    python benchmarks/bench_streaming.py [--workdir DIR] [--pairs 1000000] [--dim 576]
        [--compare-pairs 100000] [--epochs 1] [--compare-epochs 3]

It writes synthetic pairs (z ~ N(0, I), z_tilde = z + A d_c with sparse d_c, as `ssae synth`) in
shards of --shard-rows rows (the `ssae embed` default) into a temporary folder under --workdir
(default: the system's temp folder; removed afterwards unless --keep), then runs `ssae train` as a
subprocess, as a user would, and reads its peak resident memory from the operating system
(wait4's ru_maxrss: the child's own high-water mark). pairs/s counts training pairs x epochs:
"training" over the run's train_seconds (run.json: the preparing pass and the epochs), "end to
end" over the whole command (start-up and, in memory, loading the table included), and "per CPU
second" over the command's user + system CPU time (what a machine shared with other work
measures most steadily).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def write_shards(folder: Path, pairs: int, dim: int, shard_rows: int, concepts: int) -> None:
    """Synthetic pairs, shard by shard (never more than one shard in memory)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    mixing_DN = rng.standard_normal((dim, concepts)).astype(np.float32)
    for k, start in enumerate(range(0, pairs, shard_rows)):
        rows = min(shard_rows, pairs - start)
        shift = np.where(rng.random((rows, concepts)) < 2 / concepts, 1.0, 0.0)
        shift *= rng.uniform(-1, 1, (rows, concepts))
        z = rng.standard_normal((rows, dim), dtype=np.float32)
        z_tilde = z + (shift @ mixing_DN.T).astype(np.float32)
        split = np.where(rng.random(rows) < 0.1, "test", "train")
        table = pa.table(
            {
                "pair_id": pa.array(np.arange(start, start + rows), pa.int64()),
                "split": pa.array(split, pa.string()),
                "z": pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), dim),
                "z_tilde": pa.FixedSizeListArray.from_arrays(pa.array(z_tilde.reshape(-1)), dim),
            }
        )
        pq.write_table(table, folder / f"shard-{k:05d}.parquet")


def linked_subset(source: Path, folder: Path, shards: int) -> None:
    """A table of the first ``shards`` shards of ``source`` (hard links: no copy on disk)."""
    folder.mkdir()
    for path in sorted(source.glob("shard-*.parquet"))[:shards]:
        os.link(path, folder / path.name)


def run_train(table: Path, out: Path, loading: str, args: argparse.Namespace, epochs: int) -> dict:
    """`ssae train` in a subprocess: its peak RSS, wall time and what run.json records."""
    command = [
        sys.executable, "-m", "ssae_core.cli", "train", str(table), "--out", str(out),
        "--loading", loading, "--latent-dim", str(args.concepts), "--seeds", args.seeds,
        "--epochs", str(epochs), "--min-steps", "0", "--patience", "0", "--allow-inactive",
        "--batch-size", str(args.batch_size), "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ssae train failed:\n{stdout}{stderr}")
    run = json.loads((out / "run.json").read_text())
    member = json.loads((out / run["members"][0] / "config.json").read_text())
    trained = member["num_train_shifts"] * run["epochs_run"]
    return {
        "loading": loading,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "wall_s": wall,
        "train_s": run["train_seconds"],
        "pairs_per_s_training": trained / run["train_seconds"],
        "pairs_per_s_end_to_end": trained / wall,
        "pairs_per_cpu_s": trained / (usage.ru_utime + usage.ru_stime),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "train_pairs": member["num_train_shifts"],
        "epochs": run["epochs_run"],
    }


def show(label: str, result: dict) -> None:
    print(
        f"{label}: {result['loading']:6s} peak RSS {result['peak_rss_gib']:.2f} GiB, "
        f"{result['pairs_per_s_training']:,.0f} pairs/s training, "
        f"{result['pairs_per_s_end_to_end']:,.0f} pairs/s end to end, "
        f"{result['pairs_per_cpu_s']:,.0f} pairs per CPU second "
        f"({result['train_pairs']:,} training pairs x {result['epochs']} epoch(s), "
        f"train {result['train_s']:.1f} s, wall {result['wall_s']:.1f} s, "
        f"CPU {result['cpu_s']:.1f} s)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the shards and runs")
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--shard-rows", type=int, default=2048)
    parser.add_argument("--compare-pairs", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the large run")
    parser.add_argument("--compare-epochs", type=int, default=3)
    parser.add_argument("--concepts", type=int, default=8, help="n, and the latent size m")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="compare runs per path (best)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssae-bench-stream-", dir=args.workdir))
    try:
        started = time.perf_counter()
        write_shards(work / "large", args.pairs, args.dim, args.shard_rows, args.concepts)
        shards = -(-args.compare_pairs // args.shard_rows)
        linked_subset(work / "large", work / "small", shards)
        compare = min(args.pairs, shards * args.shard_rows)
        arrays = args.pairs * args.dim * 4 * 2 / 2**30
        print(
            f"wrote {args.pairs:,} pairs of width {args.dim} (z and z_tilde: {arrays:.2f} GiB as "
            f"float32) in shards of {args.shard_rows} rows in {time.perf_counter() - started:.0f}"
            f" s; m={args.concepts}, seeds {args.seeds}, batch {args.batch_size}"
        )
        large = run_train(work / "large", work / "run-large", "stream", args, args.epochs)
        show(f"{args.pairs:,} pairs", large)
        results = {"stream": [], "memory": []}
        for k in range(args.repeats):  # interleaved, so load from elsewhere hits both paths
            for loading in ("memory", "stream"):
                out = work / f"run-{loading}-{k}"
                results[loading].append(
                    run_train(work / "small", out, loading, args, args.compare_epochs)
                )
                show(f"{compare:,} pairs", results[loading][-1])
        for measure in ("pairs_per_s_training", "pairs_per_s_end_to_end", "pairs_per_cpu_s"):
            best = {k: max(r[measure] for r in v) for k, v in results.items()}
            print(
                f"streaming / in memory ({measure.removeprefix('pairs_')}, best of "
                f"{args.repeats}): {best['stream'] / best['memory']:.2f}"
            )
        print(
            f"peak RSS {args.pairs:,} pairs streaming: {large['peak_rss_gib']:.2f} GiB "
            f"(target < 1.5); z and z_tilde alone: {arrays:.2f} GiB"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
