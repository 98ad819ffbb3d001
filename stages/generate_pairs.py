"""Stage generate_pairs: write one semi-synthetic pair table to data/pairs/NAME.parquet.

Usage: ``python -m stages.generate_pairs NAME`` with NAME one of lang, gender, binary, corr, cat.
Reads the params.yaml section ``pairs`` (seed, test_fraction, cat.num_pairs, cat.max_changes).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ssae_core.datasets.semisynthetic import DATASETS, PairsConfig, build_pairs
from ssae_core.io import write_parquet
from stages.common import ROOT, load_params, run_stage

OUT_DIR = ROOT / "data" / "pairs"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write one semi-synthetic pair table.")
    parser.add_argument("name", help=f"the pair set: {', '.join(DATASETS)}")
    parser.add_argument(
        "--out", type=Path, default=None, help="output file (default: data/pairs/NAME.parquet)"
    )
    args = parser.parse_args()
    config = PairsConfig.from_mapping(load_params("pairs"), "params.yaml:pairs")
    pairs = build_pairs(args.name, config)
    out = args.out or OUT_DIR / f"{args.name}.parquet"
    write_parquet(pairs.to_table(), out)
    counts = Counter(pairs.split)
    print(
        f"{args.name}: {counts['train']} train / {counts['test']} test pairs "
        f"({len(pairs.entities('train'))} / {len(pairs.entities('test'))} {pairs.split_by}s) "
        f"-> {out}"
    )


if __name__ == "__main__":
    run_stage(main)
