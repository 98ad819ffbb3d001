"""Stage `train`: one stacked run (all seeds) per latent size, for one data set and one method.

    python -m stages.train EMBEDDINGS OUT_DIR METHOD

Reads params.yaml `train`; writes OUT_DIR/m{M}/ (a run folder, see ssae_core.runs) for each
latent size M = factor x (number of concepts), factor in train.latent_factors.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ssae_core.config import from_mapping
from ssae_core.errors import InputError
from ssae_core.io import atomic_dir, load_embeddings
from ssae_core.runs import resolve_latent_dim, train_run
from ssae_core.train import TrainConfig
from stages.common import load_params, run_stage


def main() -> None:
    embeddings, out_dir, method = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    params = dict(load_params("train"))
    factors = params.pop("latent_factors", [1])
    require_active = params.pop("require_active", True)
    if not factors or any(not isinstance(f, int) or f < 1 for f in factors):
        raise InputError(f"params.yaml:train.latent_factors={factors}: give integers >= 1")
    cfg = from_mapping(TrainConfig, {**params, "method": method}, "params.yaml:train")
    table = load_embeddings(embeddings)
    table.metadata["path"] = embeddings
    with atomic_dir(out_dir) as tmp:
        for factor in factors:
            latent = factor * resolve_latent_dim(cfg, table)
            train_run(
                table,
                tmp / f"m{latent}",
                replace(cfg, latent_dim=latent),
                require_active=require_active,
                checkpoint=out_dir.parent / f".{out_dir.name}-m{latent}.checkpoint",
            )


if __name__ == "__main__":
    run_stage(main)
