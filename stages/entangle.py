"""Stage `entangle`: the robustness variant of an LLM embedding set.

    python -m stages.entangle NAME

Applies one seeded, well-conditioned dense invertible D x D map (params.yaml ``entangle``) to z and
z~ of data/embeddings/NAME and writes data/entangled/NAME.parquet.
"""

from __future__ import annotations

import sys

from ssae_core.io import load_embeddings, save_embeddings
from ssae_core.synthetic import entangle
from stages.common import ROOT, load_params, run_stage


def main() -> None:
    name = sys.argv[1]
    params = load_params("entangle")
    table = load_embeddings(ROOT / "data" / "embeddings" / name)
    mixed = entangle(table, seed=int(params["seed"]), max_condition=float(params["max_condition"]))
    save_embeddings(mixed, ROOT / "data" / "entangled" / f"{name}.parquet")
    print(f"entangle: {name}: {len(mixed)} pairs, d={mixed.dim}")


if __name__ == "__main__":
    run_stage(main)
