"""Out-of-core training whatever the table's layout: peak memory, speed and learnt decoders of
`ssae train` streaming the same pairs stored as users store them, against the in-memory path.

    python benchmarks/bench_streaming.py [--workdir DIR] [--pairs 1000000] [--dim 576]
        [--epochs 1] [--small-groups 10000] [--shard-rows 2048] [--memory-pairs 200000]

It writes synthetic pairs (z ~ N(0, I), z_tilde = z + A d_c with sparse d_c, as `ssae synth`) under
--workdir (default: the system's temp folder; removed afterwards unless --keep) in three layouts
of the same rows:

- one-group: one file, one row group (what pandas and pyarrow write for up to 1Mi rows);
- small-groups: one file of --small-groups rows per row group;
- many-files: files of --shard-rows rows (what `ssae embed` writes);

then runs `ssae train` as a subprocess, as a user would: streaming on each layout (default
memory budget: streaming is chosen because the table is larger than it), and in memory on the
first --memory-pairs pairs (the many-files shards that hold them, hard-linked): training in
memory takes several times the table's z and z_tilde (it prints how many).

It also trains in memory on one --shard-rows file: that peak is the fixed overhead (interpreter,
torch, the model), the part of every peak that does not depend on the table; each run's peak
above it is what ``train.memory_budget`` bounds, and the in-memory run's, divided by its z and
z_tilde, is what loading in memory takes per GiB of table (``runs.IN_MEMORY_FACTOR``).

For each run it reads the peak resident memory from the operating system (VmHWM), pairs/s over
the run's train_seconds (run.json: the preparing pass and the epochs) against the in-memory
run's (and pairs per CPU second, which a busy machine disturbs less), and the agreement of its
decoders with the in-memory run's (MCC between the decoder rows of the same seed, mean over
seeds) and with the true mixing matrix A of the data (MCC of the decoder rows against A's
columns). Goal: peak <= 1.5 GiB and >= 0.8x the in-memory
pairs/s in every layout.
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def mixing(dim: int, concepts: int) -> np.ndarray:
    """The true mixing matrix A [D, n] of the synthetic pairs."""
    return np.random.default_rng(0).standard_normal((dim, concepts)).astype(np.float32)


def synthetic_parts(pairs: int, dim: int, part_rows: int, concepts: int) -> Iterator[pa.Table]:
    """Synthetic pairs, ``part_rows`` at a time (the same rows whatever ``part_rows`` divides)."""
    rng = np.random.default_rng(1)
    mixing_DN = mixing(dim, concepts)
    for start in range(0, pairs, part_rows):
        rows = min(part_rows, pairs - start)
        shift = np.where(rng.random((rows, concepts)) < 2 / concepts, 1.0, 0.0)
        shift *= rng.uniform(-1, 1, (rows, concepts))
        z = rng.standard_normal((rows, dim), dtype=np.float32)
        z_tilde = z + (shift @ mixing_DN.T).astype(np.float32)
        split = np.where(rng.random(rows) < 0.1, "test", "train")
        yield pa.table(
            {
                "pair_id": pa.array(np.arange(start, start + rows), pa.int64()),
                "split": pa.array(split, pa.string()),
                "z": pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), dim),
                "z_tilde": pa.FixedSizeListArray.from_arrays(pa.array(z_tilde.reshape(-1)), dim),
            }
        )


def write_layouts(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The same pairs as one row group, as small row groups in one file, and as many files."""
    part = args.shard_rows
    many = work / "many-files"
    many.mkdir(parents=True)
    parts = synthetic_parts(args.pairs, args.dim, part, args.concepts)
    for k, table in enumerate(parts):
        pq.write_table(table, many / f"shard-{k:05d}.parquet")
    whole = pa.concat_tables(pq.read_table(p) for p in sorted(many.glob("*.parquet")))
    one = work / "one-group.parquet"
    pq.write_table(whole, one, row_group_size=len(whole))
    small = work / "small-groups.parquet"
    pq.write_table(whole, small, row_group_size=args.small_groups)
    del whole
    subset = work / "memory-subset"
    subset.mkdir()
    for path in sorted(many.glob("*.parquet"))[: -(-args.memory_pairs // part)]:
        os.link(path, subset / path.name)
    tiny = work / "overhead"
    tiny.mkdir()
    os.link(many / "shard-00000.parquet", tiny / "shard-00000.parquet")
    return {
        "one-group": one, "small-groups": small, "many-files": many, "subset": subset,
        "overhead": tiny,
    }  # fmt: skip


def decoder_agreement(run: Path, reference: Path | np.ndarray) -> float:
    """Mean over seeds of the MCC between the decoder rows of ``run`` and those of the same seed
    of ``reference`` (a run folder), or the rows of ``reference`` (an array [n, D])."""
    from ssae_core.metrics import vector_mcc
    from ssae_core.runs import load_run

    members = load_run(run)
    others = load_run(reference) if isinstance(reference, Path) else [None] * len(members)
    scores = []
    for a, b in zip(members, others, strict=True):
        rows = reference if b is None else b.steering_vectors
        scores.append(vector_mcc(a.steering_vectors, rows))
    return float(np.mean(scores))


PEAKED = """
import runpy, sys
sys.argv = ["ssae", *sys.argv[1:]]
try:
    runpy.run_module("ssae_core.cli", run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\nPEAK_KIB {peak}\\n")
"""
"""`ssae ARGS`, then the process's own peak resident memory (VmHWM: that of the program after
exec; wait4's ru_maxrss would also count what the parent held when it forked)."""


def run_train(table: Path, out: Path, loading: str, args: argparse.Namespace) -> dict:
    """`ssae train` in a subprocess: its peak RSS, wall time and what run.json records."""
    command = [
        sys.executable, "-c", PEAKED, "train", str(table), "--out", str(out),
        "--loading", loading, "--latent-dim", str(args.concepts), "--seeds", args.seeds,
        "--epochs", str(args.epochs), "--min-steps", "0", "--patience", "0", "--allow-inactive",
        "--batch-size", str(args.batch_size), "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ssae train failed:\n{stdout}{stderr}")
    peak_kib = int(stderr.split("PEAK_KIB")[-1].split()[0])
    run = json.loads((out / "run.json").read_text())
    member = json.loads((out / run["members"][0] / "config.json").read_text())
    trained = member["record"]["num_train_shifts"] * run["epochs_run"]
    return {
        "loading": loading,
        "peak_rss_gib": peak_kib / 2**20,
        "wall_s": wall,
        "train_s": run["train_seconds"],
        "pairs_per_s_training": trained / run["train_seconds"],
        "pairs_per_s_end_to_end": trained / wall,
        "pairs_per_cpu_s": trained / (usage.ru_utime + usage.ru_stime),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "train_pairs": member["record"]["num_train_shifts"],
        "rows": table_rows(table),
        "epochs": run["epochs_run"],
    }


def table_rows(table: Path) -> int:
    """Rows of a Parquet file or folder, from the footers."""
    files = sorted(table.glob("*.parquet")) if table.is_dir() else [table]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def show(label: str, result: dict) -> None:
    print(
        f"{label:13s} {result['loading']:6s} peak RSS {result['peak_rss_gib']:.2f} GiB, "
        f"{result['pairs_per_s_training']:,.0f} pairs/s training "
        f"({result['train_pairs']:,} training pairs x {result['epochs']} epoch(s), "
        f"train {result['train_s']:.1f} s, wall {result['wall_s']:.1f} s, "
        f"CPU {result['cpu_s']:.1f} s)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the tables and runs")
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--shard-rows", type=int, default=2048, help="rows per file (many-files)")
    parser.add_argument("--small-groups", type=int, default=10_000, help="rows per row group")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--memory-pairs", type=int, default=200_000, help="pairs of the in-memory reference run"
    )
    parser.add_argument("--concepts", type=int, default=8, help="n, and the latent size m")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/bench_streaming.json"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssae-bench-stream-", dir=args.workdir))
    try:
        started = time.perf_counter()
        layouts = write_layouts(work, args)
        arrays = args.pairs * args.dim * 4 * 2 / 2**30
        print(
            f"wrote {args.pairs:,} pairs of width {args.dim} (z and z_tilde: {arrays:.2f} GiB as "
            f"float32) in 3 layouts in {time.perf_counter() - started:.0f} s; m={args.concepts}, "
            f"seeds {args.seeds}, batch {args.batch_size}"
        )
        truth = mixing(args.dim, args.concepts).T
        overhead = run_train(layouts.pop("overhead"), work / "run-overhead", "memory", args)
        show("overhead", overhead)
        memory = run_train(layouts.pop("subset"), work / "run-memory", "memory", args)
        show("in memory", memory)
        memory["gib_per_table_gib"] = (memory["peak_rss_gib"] - overhead["peak_rss_gib"]) / (
            memory["rows"] * args.dim * 8 / 2**30
        )
        print(
            f"fixed overhead {overhead['peak_rss_gib']:.2f} GiB (in memory on "
            f"{overhead['rows']:,} pairs); in memory: "
            f"{memory['gib_per_table_gib']:.2f} GiB per GiB of z and z_tilde above it"
        )
        rows = []
        for name, table in layouts.items():
            result = run_train(table, work / f"run-{name}", "auto", args)
            show(name, result)
            rows.append(
                {
                    "layout": name,
                    "peak_rss_gib": round(result["peak_rss_gib"], 3),
                    "above_overhead_gib": round(
                        result["peak_rss_gib"] - overhead["peak_rss_gib"], 3
                    ),
                    "pairs_per_s": round(result["pairs_per_s_training"]),
                    "vs_memory": round(
                        result["pairs_per_s_training"] / memory["pairs_per_s_training"], 3
                    ),
                    "cpu_vs_memory": round(
                        result["pairs_per_cpu_s"] / memory["pairs_per_cpu_s"], 3
                    ),
                    "decoder_mcc_vs_memory": round(
                        decoder_agreement(work / f"run-{name}", work / "run-memory"), 4
                    ),
                    "decoder_mcc_vs_truth": round(
                        decoder_agreement(work / f"run-{name}", truth), 4
                    ),
                    "loading": result["loading"],
                    "train_pairs": result["train_pairs"],
                }
            )
        print(
            "\n| layout | training pairs | peak RSS (GiB) | above overhead (GiB) | pairs/s | "
            "vs in memory | pairs/CPU-s vs in memory | decoder MCC vs in memory | "
            "decoder MCC vs true A |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['layout']} | {row['train_pairs']:,} | {row['peak_rss_gib']:.2f} | "
                f"{row['above_overhead_gib']:.2f} | "
                f"{row['pairs_per_s']:,} | {row['vs_memory']:.2f}x | {row['cpu_vs_memory']:.2f}x | "
                f"{row['decoder_mcc_vs_memory']:.4f} | {row['decoder_mcc_vs_truth']:.4f} |"
            )
        print(
            f"| in memory | {memory['train_pairs']:,} | {memory['peak_rss_gib']:.2f} | "
            f"{memory['peak_rss_gib'] - overhead['peak_rss_gib']:.2f} | "
            f"{memory['pairs_per_s_training']:,.0f} | 1.00x | 1.00x | 1 | "
            f"{decoder_agreement(work / 'run-memory', truth):.4f} |"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "pairs": args.pairs, "dim": args.dim, "epochs": args.epochs,
            "seeds": args.seeds, "overhead": overhead, "memory": memory, "layouts": rows,
        }  # fmt: skip
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.out}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
