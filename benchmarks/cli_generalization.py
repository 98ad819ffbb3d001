"""Do the CLI defaults generalise? Train SSAE and aff with only --latent-dim and --seeds given on
synthetic shapes unlike the pipeline's (other D, n, k, value distributions, additive noise) and
print the held-out MCC against the true shifts.

    python benchmarks/cli_generalization.py [--seeds 0,1,2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ssae_core.cli import main as ssae
from ssae_core.io import load_embeddings
from ssae_core.metrics import mcc
from ssae_core.runs import load_run

CASES = [
    # (concepts n, max changes k, dim, values, noise, pairs, seed)
    (6, 3, 40, "gaussian", 0.05, 5000, 7),
    (5, 2, 128, "uniform", 0.0, 4000, 11),
    (8, 4, 32, "nonneg", 0.02, 6000, 12),
    (2, 1, 16, "uniform", 0.0, 2000, 13),
    (12, 5, 96, "uniform", 0.05, 8000, 14),
    (7, 7, 50, "gaussian", 0.0, 6000, 15),
]


def run_case(case: tuple, seeds: str, workdir: Path, extra: list[str]) -> dict:
    n, k, dim, values, noise, pairs, seed = case
    data = workdir / f"synth_{n}_{k}_{dim}.parquet"
    ssae(
        [
            "synth",
            str(data),
            "--concepts",
            str(n),
            "--max-changes",
            str(k),
            "--dim",
            str(dim),
            "--values",
            values,
            "--noise",
            str(noise),
            "--pairs",
            str(pairs),
            "--seed",
            str(seed),
        ]
    )
    test = load_embeddings(data).subset("test")
    row = {"n": n, "k": k, "dim": dim, "values": values, "noise": noise, "pairs": pairs}
    for method in ("ssae", "aff"):
        out = workdir / f"run_{method}_{n}_{k}_{dim}"
        started = time.perf_counter()
        ssae(
            [
                "train",
                str(data),
                "--out",
                str(out),
                "--latent-dim",
                str(n),
                "--seeds",
                seeds,
                "--method",
                method,
                "--quiet",
                *extra,
            ]
        )
        scores = [mcc(m.encode(test.delta), test.shift) for m in load_run(out)]
        row[method] = {
            "mcc": [round(s, 4) for s in scores],
            "mean": round(float(np.mean(scores)), 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--extra", default="", help="more `ssae train` options, e.g. '--sparsity 0.8'"
    )
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            row = run_case(case, args.seeds, Path(tmp), args.extra.split())
            rows.append(row)
            print(
                f"n={row['n']:>2} k={row['k']} D={row['dim']:>3} {row['values']:>8} "
                f"noise={row['noise']:.2f}  SSAE {row['ssae']['mean']:.4f} {row['ssae']['mcc']}  "
                f"aff {row['aff']['mean']:.4f}",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
