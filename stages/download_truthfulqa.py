"""Stage download_truthfulqa: TruthfulQA MC data -> pair table and normalised MC table.

Reads params.yaml section ``truthfulqa``. The source is ``truthfulqa.source`` if set, else the
environment variable SSAE_TRUTHFULQA, else the pinned, checksummed Hugging Face download (see
ssae_core/datasets/truthfulqa.py). Writes, each atomically:

- data/pairs/truthfulqa.parquet   the pair table (x = question + incorrect, x~ = + correct)
- data/truthfulqa/mc.parquet      question, shuffled choices and labels, per-question split
"""

from __future__ import annotations

import os
from collections import Counter

import ssae_core.datasets.truthfulqa as truthfulqa
from ssae_core.io import write_parquet
from stages.common import ROOT, load_params, run_stage

PAIRS_OUT = ROOT / "data" / "pairs" / "truthfulqa.parquet"
MC_OUT = ROOT / "data" / "truthfulqa" / "mc.parquet"


def main() -> None:
    config = truthfulqa.config_from_params(load_params("truthfulqa"))
    pairs, mc = truthfulqa.build(config, base_dir=ROOT)
    write_parquet(mc, MC_OUT)
    write_parquet(pairs, PAIRS_OUT)
    meta = {k.decode(): v.decode() for k, v in (pairs.schema.metadata or {}).items()}
    pair_counts = Counter(pairs.column("split").to_pylist())
    question_counts = Counter(mc.column("split").to_pylist())
    print(
        f"truthfulqa: {meta.get('source')} ({meta.get('source_named_by')}); "
        f"{config.answers} pairs train {pair_counts['train']} / test {pair_counts['test']}, "
        f"questions train {question_counts['train']} / test {question_counts['test']} "
        f"-> {os.path.relpath(PAIRS_OUT, ROOT)}, {os.path.relpath(MC_OUT, ROOT)}"
    )


if __name__ == "__main__":
    run_stage(main)
