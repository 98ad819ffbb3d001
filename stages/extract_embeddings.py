"""Stage `extract_embeddings`: data/pairs/NAME.parquet -> data/embeddings/NAME/ (shards; with
`embed.layers`, one table per layer in data/embeddings/NAME/layer-L/), with the model of models/lm
and params.yaml `embed`. An interrupted run resumes from its completed shards (the output is
`persist: true` in dvc.yaml so that DVC keeps them)."""

from __future__ import annotations

import dataclasses

from ssae_core.errors import InputError
from ssae_core.lm.embed import EmbedConfig, extract_embeddings
from ssae_core.lm.loading import SOURCE_FILE
from stages.common import LAYOUT, load_section, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.extract_embeddings", __doc__)
    parser.add_argument("name", help="a pair table in data/pairs")
    name = parser.parse_args().name
    config = load_section(EmbedConfig, "embed")
    if not (LAYOUT.lm / SOURCE_FILE).is_file():
        raise InputError(f"{LAYOUT.lm}: no prepared model; run `dvc repro prepare_model` first")
    out = extract_embeddings(
        LAYOUT.pairs(name),
        LAYOUT.embeddings(name),
        model=str(LAYOUT.lm),
        **dataclasses.asdict(config),
    )
    print(f"extract_embeddings: {name} -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run_stage(main)
