"""Stacked training of S seeds vs S separate runs, measured in the same invocation.

    python benchmarks/bench_stacked.py [--members 5 20] [--epochs 15] [--method ssae]

Both sides train the same members for the same number of steps (no early stopping), so the
weights agree (tests/test_train.py checks that); only the wall time differs.
"""

from __future__ import annotations

import argparse
import time

from ssae_core.synthetic import SynthConfig, make_synthetic
from ssae_core.train import TrainConfig, train


def timed(delta, cfg: TrainConfig) -> float:
    started = time.perf_counter()
    train(delta, cfg, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--method", default="ssae", choices=("ssae", "aff"))
    parser.add_argument("--concepts", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="alternate stacked/separate this many times; report the best of each",
    )
    args = parser.parse_args()
    data = make_synthetic(SynthConfig(num_concepts=args.concepts, max_changes=7, dim=args.dim))
    delta = data.subset("train").delta
    base = {
        "method": args.method,
        "latent_dim": args.concepts,
        "epochs": args.epochs,
        "min_steps": 0,
        "patience": 0,
    }
    timed(delta, TrainConfig(seeds=(0,), **{**base, "epochs": 1}))  # warm-up
    print(
        f"training threads: {TrainConfig().threads}; {len(delta)} shifts, D={args.dim}, "
        f"m={args.concepts}, {args.epochs} epochs, method {args.method}"
    )
    for num in args.members:
        seeds = tuple(range(num))
        stacked, separate = float("inf"), float("inf")
        for _ in range(args.repeats):  # interleaved, so load from elsewhere hits both sides
            stacked = min(stacked, timed(delta, TrainConfig(seeds=seeds, **base)))
            separate = min(
                separate, sum(timed(delta, TrainConfig(seeds=(s,), **base)) for s in seeds)
            )
        print(
            f"S={num:>3}: stacked {stacked:7.2f} s   separate {separate:7.2f} s   "
            f"speed-up {separate / stacked:5.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
