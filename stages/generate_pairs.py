"""Stage `generate_pairs`: write every semi-synthetic pair table to data/pairs/NAME.parquet
(params.yaml `pairs`: seed, test_fraction, cat.num_pairs, cat.max_changes)."""

from __future__ import annotations

from collections import Counter

from ssae_core.datasets.semisynthetic import DATASETS, PairsConfig, build_pairs
from ssae_core.io import write_parquet
from stages.common import LAYOUT, load_section, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.generate_pairs", __doc__)
    parser.add_argument("names", nargs="*", help=f"sets of {', '.join(DATASETS)} (default: all)")
    names = parser.parse_args().names or list(DATASETS)
    for name in set(names) - set(DATASETS):
        parser.error(f"argument names: invalid choice: {name!r} (choose from {DATASETS})")
    config = load_section(PairsConfig, "pairs")
    for name in names:
        pairs = build_pairs(name, config)
        write_parquet(pairs.to_table(), LAYOUT.pairs(name))
        counts = Counter(pairs.split)
        print(
            f"{name}: {counts['train']} train / {counts['test']} test pairs "
            f"({len(pairs.entities('train'))} / {len(pairs.entities('test'))} {pairs.split_by}s)"
            f" -> {LAYOUT.relative(LAYOUT.pairs(name))}"
        )


if __name__ == "__main__":
    run_stage(main)
