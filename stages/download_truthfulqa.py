"""Stage `download_truthfulqa`: TruthfulQA MC data (params.yaml `truthfulqa`; sources in
ssae_core/datasets/truthfulqa.py) -> data/pairs/truthfulqa.parquet (x = question + incorrect,
x~ = + correct) and data/truthfulqa/mc.parquet (shuffled choices, per-question split)."""

from __future__ import annotations

from collections import Counter

from ssae_core.datasets import truthfulqa
from ssae_core.io import write_parquet
from stages.common import LAYOUT, ROOT, load_section, run_stage


def main() -> None:
    config = load_section(truthfulqa.TruthfulQAConfig, "truthfulqa")
    pairs, mc = truthfulqa.build(config, base_dir=ROOT)
    write_parquet(mc, LAYOUT.mc_table)
    write_parquet(pairs, LAYOUT.pairs("truthfulqa"))
    meta = {k.decode(): v.decode() for k, v in (pairs.schema.metadata or {}).items()}
    pair_counts = Counter(pairs.column("split").to_pylist())
    question_counts = Counter(mc.column("split").to_pylist())
    print(
        f"truthfulqa: {meta.get('source')} ({meta.get('source_named_by')}); "
        f"{config.answers} pairs train {pair_counts['train']} / test {pair_counts['test']}, "
        f"questions train {question_counts['train']} / test {question_counts['test']}"
    )


if __name__ == "__main__":
    run_stage(main)
