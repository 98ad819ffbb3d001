"""Training of stacked shift autoencoders: SSAE (constrained, cooper) and aff (unconstrained, Adam).

SSAE solves   min E ||x - x_hat||^2 / x_rms^2   s.t.   E ||h||_1 / x_rms <= eps
with a Lagrangian (one multiplier per member) and extra-gradient Adam on both players. Both terms
are scale-free, so the same eps and learning rates transfer across embedding widths.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cooper
import numpy as np
import torch

from ssae_core import __version__
from ssae_core.errors import InputError
from ssae_core.model import NORMALIZATIONS, Normalizer, ShiftAutoencoder, StackedSSAE
from ssae_core.progress import show_progress

METHODS = ("ssae", "aff")
VAL_SPLIT_SEED = 12345
CHECKPOINT_SECONDS = 30.0  # how often an interrupted run can lose work, at most
FEASIBILITY_TOL = 0.05  # a plateau counts only once every L1 is within 5% of its budget


@dataclass
class TrainConfig:
    """Hyperparameters of one stacked training run (mirrors params.yaml ``train``)."""

    method: str = "ssae"
    """ssae (sparsity-constrained, the paper's method) or aff (the unconstrained baseline)."""
    latent_dim: int = 0
    """Number of latents m; 0 means: the number of concepts recorded in the data."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """One member per seed; all train together as one stacked model."""
    sparsity: float | tuple[float, ...] = 0.75
    """Budget eps on mean ||h||_1 / x_rms; a list stacks one member per (value, seed)."""
    normalize: str = "global"
    """Input normalisation: global (affine, default), layer (per sample, the paper's) or none."""
    epochs: int = 60
    """Maximum number of passes over the training shifts (raised if needed to reach min_steps)."""
    min_steps: int = 2500
    """At least this many optimiser steps before the plateau rule may stop training: small tables
    give few steps per epoch, and the multiplier moves about dual_lr per step."""
    patience: int = 8
    """Stop when the held-out loss has not improved by min_delta for this many epochs while every
    member satisfies its budget (0: never stop early)."""
    min_delta: float = 1e-3
    """Relative improvement of the held-out loss that resets the patience counter."""
    batch_size: int = 256
    lr: float = 3e-3
    """Primal learning rate (ExtraAdam for ssae, Adam for aff)."""
    dual_lr: float = 1e-3
    """Learning rate of the multiplier (ExtraAdam, ascent); keep it <= lr / 3."""
    val_fraction: float = 0.1
    """Fraction of the training shifts held out for the plateau criterion and the held-out loss."""
    threads: int = 1
    """torch intra-op threads while training (0: torch's default). The model's tensors are small:
    a second thread rarely helps and stalls badly when other processes share the cores."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method={self.method!r} is unknown; use one of {', '.join(METHODS)}")
        if self.normalize not in NORMALIZATIONS:
            raise InputError(
                f"normalize={self.normalize!r} is unknown; use one of {', '.join(NORMALIZATIONS)}"
            )
        if self.latent_dim < 0:
            raise InputError(f"latent_dim={self.latent_dim}: must be at least 1 (or 0 for auto)")
        if not self.seeds:
            raise InputError("seeds: give at least one seed, e.g. 0,1,2")
        if len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds={list(self.seeds)}: seeds must be distinct")
        if any(eps <= 0 for eps in self.sparsities):
            raise InputError(f"sparsity={self.sparsity}: the L1 budget must be positive")
        if self.threads < 0:
            raise InputError(f"threads={self.threads}: must be >= 0 (0: torch's default)")
        if self.min_steps < 0:
            raise InputError(f"min_steps={self.min_steps}: must be >= 0")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.lr <= 0 or self.dual_lr <= 0:
            raise InputError(f"lr={self.lr}, dual_lr={self.dual_lr}: learning rates must be > 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction={self.val_fraction}: must be in [0, 1)")

    @property
    def sparsities(self) -> tuple[float, ...]:
        return self.sparsity if isinstance(self.sparsity, tuple) else (self.sparsity,)

    def members(self) -> list[tuple[int, float]]:
        """(seed, eps) of every stacked member, sparsity-major."""
        return [(seed, eps) for eps in self.sparsities for seed in self.seeds]


@dataclass
class TrainResult:
    models: list[ShiftAutoencoder]  # one per member, in TrainConfig.members() order
    history: list[dict] = field(default_factory=list)  # one row per (epoch, member)
    stopped_epoch: int = 0


# --------------------------------------------------------------------------- the CMP


class SparseShiftProblem(cooper.ConstrainedMinimizationProblem):
    """Reconstruction loss subject to one L1-budget inequality per stacked member."""

    def __init__(self, num_members: int, budgets: torch.Tensor, x_rms: float) -> None:
        super().__init__()
        self.budgets, self.x_rms = budgets, x_rms
        self.observed: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.sparsity = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.Lagrangian,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=num_members),
        )

    def compute_cmp_state(self, net: StackedSSAE, x_SBD: torch.Tensor) -> cooper.CMPState:
        loss_S, l1_S = member_losses(net, x_SBD)
        self.observed.append((loss_S.detach(), l1_S.detach()))
        return cooper.CMPState(
            loss=loss_S.sum(),
            observed_constraints={
                self.sparsity: cooper.ConstraintState(violation=l1_S - self.budgets)
            },
        )

    @property
    def multipliers_S(self) -> torch.Tensor:
        return self.sparsity.multiplier.weight.detach().clone()


def member_losses(net: StackedSSAE, x_SBD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member reconstruction loss E||x - x_hat||^2 / x_rms^2 and L1 E||h||_1 / x_rms: [S]."""
    codes_SBM, sq_error_SB = net.codes_and_sq_error(x_SBD)
    loss_S = sq_error_SB.mean(-1) / net.x_rms**2
    l1_S = codes_SBM.abs().sum(-1).mean(-1) / net.x_rms
    return loss_S, l1_S


# --------------------------------------------------------------------------- batching


def _holdout_mask(num: int, fraction: float) -> np.ndarray:
    """True for held-out rows: a fixed subset, the same for every member and run."""
    held = np.zeros(num, dtype=bool)
    num_held = round(num * fraction)
    if num_held and num - num_held >= 2:
        held[np.random.default_rng(VAL_SPLIT_SEED).permutation(num)[:num_held]] = True
    return held


def _epoch_batches(
    generators: list[torch.Generator], num: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Index batches [S, B]: every member shuffles with its own generator, as a separate run would.

    A last batch smaller than half a batch is dropped (BatchNorm statistics need a real batch).
    """
    perms_SN = torch.stack([torch.randperm(num, generator=g) for g in generators])
    size = min(batch_size, num)
    for start in range(0, num, size):
        stop = min(start + size, num)
        if stop - start < max(2, size // 2) and start > 0:
            break
        yield perms_SN[:, start:stop]


# --------------------------------------------------------------------------- checkpoints


@dataclass
class _Checkpoint:
    path: Path | None

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        return torch.load(self.path, weights_only=False)

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _rng_state(generators: list[torch.Generator]) -> list[torch.Tensor]:
    return [g.get_state() for g in generators]


# --------------------------------------------------------------------------- training


def _make_optimizers(
    cfg: TrainConfig, net: StackedSSAE, budgets: torch.Tensor
) -> tuple[object, SparseShiftProblem | None]:
    if cfg.method == "aff":
        return torch.optim.Adam(net.parameters(), lr=cfg.lr), None
    cmp = SparseShiftProblem(net.num_members, budgets, net.x_rms)
    opt = cooper.optim.ExtrapolationConstrainedOptimizer(
        cmp=cmp,
        primal_optimizers=cooper.optim.ExtraAdam(net.parameters(), lr=cfg.lr),
        dual_optimizers=cooper.optim.ExtraAdam(
            cmp.dual_parameters(), lr=cfg.dual_lr, maximize=True
        ),
    )
    return opt, cmp


def _step(
    net: StackedSSAE, opt: object, cmp: SparseShiftProblem | None, x_SBD: torch.Tensor
) -> torch.Tensor:
    """One optimiser step; returns [2, S]: loss and L1 of the batch before the step."""
    if cmp is not None:
        cmp.observed.clear()
        opt.roll(compute_cmp_state_kwargs={"net": net, "x_SBD": x_SBD})
        loss_S, l1_S = cmp.observed[0]  # the extrapolation pass, at the pre-step weights
    else:
        opt.zero_grad()
        loss_S, l1_S = member_losses(net, x_SBD)
        loss_S.sum().backward()
        opt.step()
        loss_S, l1_S = loss_S.detach(), l1_S.detach()
    net.normalize_decoder_()
    return torch.stack([loss_S, l1_S])


@torch.no_grad()
def _evaluate(net: StackedSSAE, x_SND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = net.training
    net.eval()
    loss_S, l1_S = member_losses(net, x_SND)
    net.train(was_training)
    return loss_S, l1_S


def train(
    delta_ND: np.ndarray,
    cfg: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    provenance: dict | None = None,
) -> TrainResult:
    """Train every member of ``cfg`` on raw shifts ``delta_ND`` as one stacked model.

    ``checkpoint``: a file written at the end of an epoch, at most every CHECKPOINT_SECONDS; a run
    interrupted and started again with the same arguments resumes from the last one (it is deleted
    at the end), so an interruption loses at most that much work.
    """
    with torch_threads(cfg.threads):
        return _train(
            delta_ND, cfg, checkpoint=checkpoint, progress=progress, provenance=provenance
        )


def _train(
    delta_ND: np.ndarray,
    cfg: TrainConfig,
    *,
    checkpoint: str | Path | None,
    progress: bool,
    provenance: dict | None,
) -> TrainResult:
    delta_ND = np.asarray(delta_ND, dtype=np.float32)
    if delta_ND.ndim != 2 or delta_ND.shape[0] < 4:
        raise InputError(f"training needs at least 4 shifts of shape [N, D]; got {delta_ND.shape}")
    if cfg.latent_dim < 1:
        raise InputError(f"latent_dim={cfg.latent_dim}: must be at least 1")
    held = _holdout_mask(len(delta_ND), cfg.val_fraction)
    normalizer = Normalizer.fit(delta_ND[~held], cfg.normalize)
    x_ND, _ = normalizer(torch.from_numpy(delta_ND))
    x_train, x_val = x_ND[torch.from_numpy(~held)], x_ND[torch.from_numpy(held)]
    x_rms = float(x_train.pow(2).sum(-1).mean().sqrt())
    members = cfg.members()
    seeds = [seed for seed, _ in members]
    budgets = torch.tensor([eps for _, eps in members], dtype=torch.float32)

    torch.manual_seed(0)  # nothing random should depend on it; fixed for safety
    net = StackedSSAE(x_ND.shape[1], cfg.latent_dim, seeds, x_rms)
    opt, cmp = _make_optimizers(cfg, net, budgets)
    generators = [torch.Generator().manual_seed(10_000 + seed) for seed in seeds]
    ckpt = _Checkpoint(Path(checkpoint) if checkpoint else None)
    history: list[dict] = []
    best, stale, start_epoch = math.inf, 0, 0
    if (state := ckpt.load()) is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if cmp is not None:
            cmp.load_state_dict(state["cmp"])
        for g, s in zip(generators, state["rng"], strict=True):
            g.set_state(s)
        history, best, stale, start_epoch = (
            state["history"],
            state["best"],
            state["stale"],
            state["epoch"],
        )

    val_SND = x_val.expand(len(members), -1, -1) if len(x_val) else None
    steps_per_epoch = sum(
        1 for _ in _epoch_batches([torch.Generator()], len(x_train), cfg.batch_size)
    )
    max_epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    bar = show_progress(
        range(start_epoch, max_epochs),
        desc=f"train {cfg.method} x{len(members)}",
        disable=not progress,
        initial=start_epoch,
        total=max_epochs,
    )
    epoch = start_epoch
    last_save = time.monotonic()
    for epoch in bar:
        net.train()
        sums = torch.zeros(2, len(members))
        steps = 0
        for idx_SB in _epoch_batches(generators, len(x_train), cfg.batch_size):
            sums += _step(net, opt, cmp, x_train[idx_SB])
            steps += 1
        train_loss, train_l1 = (sums / max(steps, 1)).unbind(0)
        val_loss, val_l1 = (
            _evaluate(net, val_SND) if val_SND is not None else (train_loss, train_l1)
        )
        multipliers = cmp.multipliers_S if cmp is not None else torch.zeros(len(members))
        for k, (seed, eps) in enumerate(members):
            history.append(
                {
                    "epoch": epoch + 1,
                    "member": k,
                    "seed": seed,
                    "sparsity": eps,
                    "train_loss": float(train_loss[k]),
                    "l1": float(train_l1[k]),
                    "budget": eps if cfg.method == "ssae" else float("nan"),
                    "multiplier": float(multipliers[k]),
                    "val_loss": float(val_loss[k]),
                    "val_l1": float(val_l1[k]),
                }
            )
        total = float(val_loss.sum())
        feasible = cmp is None or bool((val_l1 <= budgets * (1 + FEASIBILITY_TOL)).all())
        if total < best * (1 - cfg.min_delta):
            best, stale = total, 0
        elif feasible:
            stale += 1
        bar.set_postfix(val_loss=f"{total / len(members):.4f}", l1=f"{float(val_l1.mean()):.3f}")
        if time.monotonic() - last_save >= CHECKPOINT_SECONDS:
            last_save = time.monotonic()
            ckpt.save(
                {
                    "net": net.state_dict(),
                    "opt": opt.state_dict(),
                    "cmp": cmp.state_dict() if cmp is not None else None,
                    "rng": _rng_state(generators),
                    "history": history,
                    "best": best,
                    "stale": stale,
                    "epoch": epoch + 1,
                }
            )
        past_min_steps = (epoch + 1) * steps_per_epoch >= cfg.min_steps
        if cfg.patience and stale >= cfg.patience and past_min_steps:
            break
    bar.close()
    ckpt.remove()

    final = {row["member"]: row for row in history[-len(members) :]}
    models = []
    for k, (seed, eps) in enumerate(members):
        config = {
            "method": cfg.method,
            "dim": int(x_ND.shape[1]),
            "latent_dim": cfg.latent_dim,
            "seed": seed,
            "sparsity": eps if cfg.method == "ssae" else None,
            "x_rms": x_rms,
            "normalization": normalizer.to_dict(),
            "hyperparameters": {
                "epochs": cfg.epochs,
                "min_steps": cfg.min_steps,
                "epochs_run": final[k]["epoch"],
                "patience": cfg.patience,
                "batch_size": cfg.batch_size,
                "lr": cfg.lr,
                "dual_lr": cfg.dual_lr if cfg.method == "ssae" else None,
                "val_fraction": cfg.val_fraction,
            },
            "final": {
                key: final[k][key]
                for key in ("train_loss", "val_loss", "l1", "val_l1", "multiplier")
            },
            "num_train_shifts": len(x_train),
            "provenance": provenance or {},
            "package_version": __version__,
        }
        models.append(ShiftAutoencoder(net.member(k), normalizer, config))
    return TrainResult(models, history, stopped_epoch=epoch + 1)


def check_constraint_active(result: TrainResult, *, where: str = "training") -> list[str]:
    """Warnings for SSAE members whose multiplier ended at 0 (they are effectively aff runs)."""
    warnings = []
    for model in result.models:
        if model.config["method"] == "ssae" and model.config["final"]["multiplier"] <= 0:
            warnings.append(
                f"{where}: seed {model.config['seed']} ended with multiplier 0 (L1 "
                f"{model.config['final']['l1']:.3f} <= budget {model.config['sparsity']}): the "
                "constraint did nothing; lower train.sparsity (about 0.75 x the aff L1)"
            )
    return warnings


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count."""
    if not num:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(old)
