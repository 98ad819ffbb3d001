"""How strong must the entangling map be to matter? Trains aff and SSAE (the study's settings, at
study.budget_ratio) on one pair set's embeddings mixed by dense invertible maps of growing
condition number and prints held-out MCC against the true shifts and decoder UDR for each. Used
to size entangle.max_condition; run from the project root after `dvc repro extract_embeddings`:

    python benchmarks/entangle_strength.py --set binary --conditions 1 10 100 1000
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ssae_core.config import load_config, read_section
from ssae_core.evaluation.identifiability import score_run
from ssae_core.runs import resolve_latent_dim
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.study.sets import load_set
from ssae_core.synthetic import entangle
from ssae_core.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root")
    parser.add_argument("--params", type=Path, default=None, help="default: ROOT/params.yaml")
    parser.add_argument("--set", default="binary")
    parser.add_argument("--conditions", nargs="+", type=float, default=[1, 10, 100, 1000])
    parser.add_argument("--seed", type=int, default=1, help="seed of the map")
    args = parser.parse_args()
    params = args.params or args.root / "params.yaml"
    study = load_config(StudyConfig, read_section(params, "study"), "study")
    table = load_set(study, StudyLayout(args.root), args.set)
    latent = resolve_latent_dim(study.train_config("aff", lr=study.lr), table)
    for condition in args.conditions:
        mixed = entangle(table, seed=args.seed, max_condition=condition)
        train_rows, test = mixed.subset("train"), mixed.subset("test")
        aff_cfg = replace(study.train_config("aff", lr=study.lr), latent_dim=latent)
        aff = train(train_rows.delta, aff_cfg, progress=False).models
        budget = Budgets.from_aff(aff, [study.budget_ratio]).budgets[0]
        ssae_cfg = study.train_config("ssae", lr=study.lr, sparsity=budget)
        ssae = train(train_rows.delta, replace(ssae_cfg, latent_dim=latent), progress=False).models
        for method, models in (("aff", aff), ("ssae", ssae)):
            scores = score_run(models, test)
            mcc = scores.get("mcc", {}).get("mean")
            print(
                f"{args.set} condition {condition:8g} {method:4s}: MCC vs shifts "
                f"{'-' if mcc is None else f'{mcc:.3f}'}, decoder UDR "
                f"{scores['decoder_mcc']['udr']:.3f}, L1 {scores['l1']['mean']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
