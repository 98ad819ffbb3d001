"""Stage extract_embeddings NAME: data/pairs/NAME.parquet -> data/embeddings/NAME/ (shards).

Reads params.yaml section ``embed`` (see :class:`ssae_core.embed.EmbedParams`) and the model folder
written by the prepare_model stage (models/lm). An interrupted run resumes from its completed
shards (declare the output ``persist: true`` in dvc.yaml so that DVC keeps them).
"""

from __future__ import annotations

import dataclasses
import sys

from ssae_core.config import from_mapping
from ssae_core.embed import EmbedParams, extract_embeddings
from ssae_core.errors import InputError
from ssae_core.lm import SOURCE_FILE
from stages.common import ROOT, load_params, run_stage
from stages.prepare_model import MODEL_OUT


def main() -> None:
    if len(sys.argv) != 2:
        raise InputError(
            "usage: python -m stages.extract_embeddings NAME (a pair table in data/pairs)"
        )
    name = sys.argv[1]
    params = from_mapping(EmbedParams, load_params("embed"), "params.yaml:embed")
    if not (MODEL_OUT / SOURCE_FILE).is_file():
        raise InputError(f"{MODEL_OUT}: no prepared model; run `dvc repro prepare_model` first")
    out = extract_embeddings(
        ROOT / "data" / "pairs" / f"{name}.parquet",
        ROOT / "data" / "embeddings" / name,
        model=str(MODEL_OUT),
        **dataclasses.asdict(params),
    )
    print(f"extract_embeddings: {name} -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    run_stage(main)
