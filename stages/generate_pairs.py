"""Stage `generate_pairs`: write one semi-synthetic pair table to data/pairs/NAME.parquet
(params.yaml `pairs`: seed, test_fraction, cat.num_pairs, cat.max_changes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ssae_core.datasets.semisynthetic import DATASETS, PairsConfig, build_pairs
from ssae_core.io import write_parquet
from stages.common import LAYOUT, load_section, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.generate_pairs", __doc__)
    parser.add_argument("name", choices=DATASETS, help="the pair set")
    parser.add_argument("--out", type=Path, help="output file (default: data/pairs/NAME.parquet)")
    args = parser.parse_args()
    pairs = build_pairs(args.name, load_section(PairsConfig, "pairs"))
    out = args.out or LAYOUT.pairs(args.name)
    write_parquet(pairs.to_table(), out)
    counts = Counter(pairs.split)
    print(
        f"{args.name}: {counts['train']} train / {counts['test']} test pairs "
        f"({len(pairs.entities('train'))} / {len(pairs.entities('test'))} {pairs.split_by}s) "
        f"-> {out}"
    )


if __name__ == "__main__":
    run_stage(main)
