"""Stage `synthetic`: write synth(n, k) and its entangled variant as embedding tables.

python -m stages.synthetic NAME      (NAME is a key of params.yaml synthetic.settings)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ssae_core.config import from_mapping
from ssae_core.errors import InputError
from ssae_core.io import save_embeddings
from ssae_core.synthetic import SynthConfig, entangle, make_synthetic
from stages.common import load_params, run_stage

OUT_DIR = Path("data/synthetic")


def main() -> None:
    name = sys.argv[1]
    params = load_params("synthetic")
    settings = params.get("settings", {})
    if name not in settings:
        raise InputError(f"params.yaml:synthetic.settings has no '{name}'; known: {list(settings)}")
    shared = {k: v for k, v in params.items() if k not in ("settings", "entangle_seed")}
    cfg = from_mapping(SynthConfig, {**shared, **settings[name]}, f"params.yaml:synthetic.{name}")
    table = make_synthetic(cfg)
    save_embeddings(table, OUT_DIR / f"{name}.parquet")
    save_embeddings(
        entangle(table, seed=int(params.get("entangle_seed", 1))), OUT_DIR / f"{name}_ent.parquet"
    )
    print(f"{name}: {len(table)} pairs, d={table.dim}, n={cfg.num_concepts}, k={cfg.max_changes}")


if __name__ == "__main__":
    run_stage(main)
