"""Stage `extract_embeddings`: data/pairs/NAME.parquet -> data/embeddings/NAME/layer-L/ (one table
of shards per layer of params.yaml `embed.layers`, from one forward pass), with the model of
models/lm, in this process or on Ray actors (`embed.engine`). An interrupted run resumes from its
completed shards (the output is `persist: true` in dvc.yaml so that DVC keeps them)."""

from __future__ import annotations

import dataclasses

from ssae_core.errors import InputError
from ssae_core.lm.embed import EmbedConfig, extract_embeddings
from ssae_core.lm.layers import layer_name
from ssae_core.lm.loading import SOURCE_FILE
from stages.common import LAYOUT, load_section, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.extract_embeddings", __doc__)
    parser.add_argument("name", help="a pair table in data/pairs")
    name = parser.parse_args().name
    config = load_section(EmbedConfig, "embed")
    if not (LAYOUT.lm / SOURCE_FILE).is_file():
        raise InputError(f"{LAYOUT.lm}: no prepared model; run `dvc repro prepare_model` first")
    layers = [layer_name(x) for x in config.layer_list]
    settings = {**dataclasses.asdict(config), "layer": None, "layers": layers}
    out = extract_embeddings(
        LAYOUT.pairs(name), LAYOUT.extraction(name), model=str(LAYOUT.lm), **settings
    )
    print(f"extract_embeddings: {name} -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run_stage(main)
