"""How long must SSAE train for its budget to bind? Trains aff and the SSAE grid of the study on
one or more pair sets (the pipeline's embeddings, read as the study reads them) for several step
counts and prints, per cell, the L1 over the training shifts relative to its budget and the
multiplier, with the statuses of ssae_core.record. Used to size study.optim; run from the project
root after
`dvc repro extract_embeddings`:

    python benchmarks/budget_convergence.py --sets lang binary --steps 400 1200 --layer final
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ssae_core.config import load_config, read_section
from ssae_core.lm.layers import parse_layer
from ssae_core.record import USABLE
from ssae_core.runs import resolve_latent_dim
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig
from ssae_core.study.layout import StudyLayout
from ssae_core.study.sets import load_set
from ssae_core.study.usability import usability
from ssae_core.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root")
    parser.add_argument("--params", type=Path, default=None, help="default: ROOT/params.yaml")
    parser.add_argument("--sets", nargs="+", default=["lang", "binary"])
    parser.add_argument("--layer", default="final", help="a layer of embed.layers (default final)")
    parser.add_argument("--steps", nargs="+", type=int, default=[400, 1200])
    parser.add_argument("--dual-lr-ratio", nargs="+", type=float, default=None)
    parser.add_argument("--lr-decay", nargs="+", type=float, default=None)
    parser.add_argument("--dual-optimizer", nargs="+", default=None, choices=("adam", "sgd"))
    parser.add_argument("--lr", nargs="+", type=float, default=None, help="default: study.grid.lr")
    args = parser.parse_args()
    study = load_config(
        StudyConfig, read_section(args.params or args.root / "params.yaml", "study"), "study"
    )
    layout = StudyLayout(args.root).at(parse_layer(args.layer))
    ratios_of_dual = args.dual_lr_ratio or [study.optim.dual_lr_ratio]
    for name in args.sets:
        rows = load_set(study, layout, name).subset("train")
        latent = resolve_latent_dim(study.train_config("aff", lr=study.lr), rows)
        for steps in args.steps:
            base = replace(study, optim=replace(study.optim, steps=steps))
            aff_cfg = replace(base.train_config("aff", lr=study.lr), latent_dim=latent)
            aff = train(rows.delta, aff_cfg, progress=False).models
            budgets = Budgets.from_aff(aff, study.grid.budget_ratio)
            settings = [
                (dual, decay, kind)
                for dual in ratios_of_dual
                for decay in args.lr_decay or [study.optim.lr_decay]
                for kind in args.dual_optimizer or [study.optim.dual_optimizer]
            ]
            for dual, decay, kind in settings:
                optim = replace(base.optim, dual_lr_ratio=dual, lr_decay=decay, dual_optimizer=kind)
                tuned = replace(base, optim=optim)
                for lr in args.lr or study.grid.lr:
                    cfg = tuned.train_config(
                        "ssae", lr=lr, sparsity=list(budgets.budgets), ratios=budgets.ratios
                    )
                    started = time.perf_counter()
                    models = train(
                        rows.delta, replace(cfg, latent_dim=latent), progress=False
                    ).models
                    seconds = time.perf_counter() - started
                    for ratio in budgets.ratios:
                        members = [m for m in models if m.record.budget_ratio == ratio]
                        rel = [m.record.l1 / m.record.budget for m in members]
                        mult = [m.record.multiplier for m in members]
                        ok = sum(usability(m, study.usable_tolerance) == USABLE for m in members)
                        print(
                            f"{name:10s} steps {steps:5d} dual {kind} {dual:g} decay {decay:.2f} "
                            f"lr {lr:g} r {ratio:4.2f}: "
                            f"L1/budget {np.mean(rel):5.2f} [{min(rel):.2f}, {max(rel):.2f}] "
                            f"multiplier {np.mean(mult):.3f}  usable {ok}/{len(members)}  "
                            f"({seconds:.0f} s per lr; aff L1 {budgets.aff_l1:.3f})",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
