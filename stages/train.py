"""Stage `train_synthetic`: one stacked run (all seeds) per latent size m = factor x n
(train.latent_factors) of one synthetic table and method; params.yaml `train`."""

from __future__ import annotations

from pathlib import Path

from ssae_core.study.config import load_synthetic_runs
from ssae_core.study.synthetic_training import train_synthetic
from stages.common import load_params, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.train", __doc__)
    parser.add_argument("embeddings", type=Path, help="the synthetic embedding table")
    parser.add_argument("out_dir", type=Path, help="the run folder to write (OUT/mM/)")
    parser.add_argument("method", choices=("ssae", "aff"))
    args = parser.parse_args()
    runs = load_synthetic_runs(load_params("train"), args.method)
    train_synthetic(args.embeddings, args.out_dir, runs)


if __name__ == "__main__":
    run_stage(main)
