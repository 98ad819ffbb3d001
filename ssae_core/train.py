"""Training of stacked shift autoencoders: SSAE (constrained, cooper) and aff (unconstrained, Adam).

SSAE solves   min E ||x - x_hat||^2 / x_rms^2   s.t.   E ||h||_1 / x_rms <= eps
with a Lagrangian (one multiplier per member) and extra-gradient Adam on both players. Both terms
are scale-free, so the same eps and learning rates transfer across embedding widths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cooper
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ssae_core import __version__, outliers
from ssae_core.devices import resolve_device
from ssae_core.errors import InputError, require_finite, require_memory
from ssae_core.io import atomic_file, block_rows
from ssae_core.model import NORMALIZATIONS, Normalizer, ShiftAutoencoder, StackedSSAE
from ssae_core.progress import show_message, show_progress
from ssae_core.record import (
    INFEASIBLE,
    NOT_CONVERGED,
    RECORD_KEY,
    SLACK,
    MemberRecord,
    member_status,
)
from ssae_core.streaming import ShardSource, StreamedShifts, buffer_rows
from ssae_core.tensor_files import tensor_digest

METHODS = ("ssae", "aff")
DUAL_OPTIMIZERS = ("adam", "sgd")
LOADINGS = ("auto", "memory", "stream")
VAL_SPLIT_SEED = 12345
GENERATOR_OFFSET = 10_000  # member k shuffles with torch.Generator().manual_seed(offset + seed)
MAX_SEED = 2**32 - 1
CHECKPOINT_SECONDS = 30.0  # how often an interrupted run can lose work, at most
FEASIBILITY_TOL = 0.05  # a plateau counts only once every L1 is within 5% of its budget
EVAL_CHUNK = 8192  # shifts evaluated at once after training (the one L1 measure, BN statistics)
MIN_SETTLE_EPOCHS = 4  # the settle window is never shorter (two halves of two epochs)


@dataclass
class TrainConfig:
    """Hyperparameters of one stacked training run (mirrors params.yaml ``train``)."""

    method: str = "ssae"
    """ssae (sparsity-constrained, the paper's method) or aff (the unconstrained baseline)."""
    latent_dim: int = 0
    """Number of latents m; 0 means: the number of concepts recorded in the data; range:
    [0, inf)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """One member per seed; all train together as one stacked model; range: [0, 4294967295]
    each."""
    sparsity: float | tuple[float, ...] = 0.75
    """Budget eps on mean ||h||_1 / x_rms; a list stacks one member per (value, seed); range:
    (0, inf) each."""
    normalize: str = "global"
    """Input normalisation: global (affine, default), layer (per sample, the paper's) or none."""
    epochs: int = 60
    """Maximum number of passes over the training shifts (raised if needed to reach min_steps);
    range: [1, inf)."""
    min_steps: int = 2500
    """At least this many optimiser steps before the plateau rule may stop training: small tables
    give few steps per epoch, and the multiplier moves about dual_lr per step; range: [0, inf)."""
    max_steps: int = 0
    """At most this many optimiser steps (rounded up to whole epochs); 0: ``epochs`` alone caps
    training; range: [0, inf)."""
    patience: int = 8
    """Stop when the held-out loss has not improved by min_delta for this many epochs while every
    member satisfies its budget (0: never stop on the held-out loss); range: [0, inf)."""
    settle_tol: float = 0.02
    """SSAE: the Lagrangian has settled when, over the last settle_window of the epochs, the
    multiplier and the L1 of every member changed by at most this fraction (mean of the window's
    second half against its first); training then stops (once past min_steps), and a member still
    above its budget is infeasible rather than not converged. 0: never stop on it; range:
    [0, inf)."""
    settle_window: float = 0.25
    """Fraction of the epochs run (at least 4 epochs) over which settling is judged; range:
    (0, 1]."""
    budget_tolerance: float = 0.05
    """A member is on its budget (status usable) while its L1 is at most budget x (1 + this);
    range: [0, inf)."""
    drop_outliers: float = 10.0
    """Drop pairs whose shift norm exceeds this many times the median training shift norm, from
    training and held-out shifts alike, in memory or streamed (the threshold and the count are
    recorded in every member; 0: keep every pair). A few
    massive-activation pairs can otherwise own the fit (DESIGN section 10); range: [0, inf),
    and a factor in (0, 1] (most pairs) is refused."""
    budget_ratios: tuple[float, ...] = ()
    """Recorded only: the ratio of an aff L1 each budget of ``sparsity`` was made from."""
    min_delta: float = 1e-3
    """Relative improvement of the held-out loss that resets the patience counter; range:
    [0, inf)."""
    batch_size: int = 256
    """Shifts per optimiser step (BatchNorm on the codes needs two); range: [2, inf)."""
    lr: float = 3e-3
    """Primal learning rate (ExtraAdam for ssae, Adam for aff); range: (0, inf)."""
    dual_lr: float = 1e-3
    """Learning rate of the multiplier (ExtraAdam, ascent); keep it <= lr / 3; range: (0, inf)."""
    val_fraction: float = 0.1
    """Fraction of the training shifts held out for the plateau criterion and the held-out loss;
    range: [0, 1)."""
    threads: int = 1
    """torch intra-op threads while training (0: torch's default). The model's tensors are small:
    a second thread rarely helps and stalls badly when other processes share the cores; range:
    [0, CPUs]."""
    device: str = "cpu"
    """Where the stacked model trains: cpu, cuda, cuda:N or auto (CUDA when torch sees one).
    Batches are drawn by the same CPU generators on every device, so a CUDA run sees the same
    shuffles as a CPU run and differs from it only by floating-point rounding."""
    dual_optimizer: str = "adam"
    """Multiplier optimiser: adam (ExtraAdam; the multiplier moves by about dual_lr per step
    whatever the size of the violation) or sgd (ExtraSGD; it moves by dual_lr x the violation,
    so it settles as the constraint is met)."""
    lr_decay: float = 0.0
    """Fraction of the final optimiser steps (of the epoch cap) over which the primal and the
    multiplier learning rates fall linearly to 0, so that the Lagrangian settles onto the budget
    instead of oscillating around it (0: constant learning rates); range: [0, 1)."""
    loading: str = "auto"
    """How a table on disk is read: memory (load it whole), stream (read its shards in shuffled
    buffers, so memory does not grow with the number of pairs; held-out pairs chosen by pair id)
    or auto (stream when training in memory would exceed memory_budget)."""
    memory_budget: float = 1.0
    """GiB of memory that training may take above a fixed overhead (the interpreter, torch, the
    model; the README gives the figure ``benchmarks/bench_streaming.py`` prints). loading=auto
    streams a table when training it in memory would take more
    (:func:`ssae_core.runs.choose_loading`); streaming takes about three buffers (``buffer_mb``)
    above the overhead whatever the table's size or layout, so the budget holds while
    ``buffer_mb`` is at most a third of it (the defaults: 256 MiB and 1 GiB); range: [0, inf)."""
    buffer_mb: float = 256.0
    """Streaming only: MiB of shifts per shuffle buffer (two are in memory at a time); the
    held-out shifts take at most one buffer too; range: (0, inf)."""

    def __post_init__(self) -> None:
        if self.loading not in LOADINGS:
            raise InputError(f"loading={self.loading!r}: use one of {', '.join(LOADINGS)}")
        require_finite("", memory_budget=self.memory_budget, buffer_mb=self.buffer_mb)
        if self.memory_budget < 0 or self.buffer_mb <= 0:
            raise InputError(
                f"memory_budget={self.memory_budget}, buffer_mb={self.buffer_mb}: must be >= 0 "
                "and > 0"
            )
        if self.dual_optimizer not in DUAL_OPTIMIZERS:
            raise InputError(
                f"dual_optimizer={self.dual_optimizer!r}: use one of {', '.join(DUAL_OPTIMIZERS)}"
            )
        if not 0 <= self.lr_decay < 1:
            raise InputError(f"lr_decay={self.lr_decay}: must be in [0, 1)")
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
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
                raise InputError(f"seeds: {seed!r} is not an integer in 0..{MAX_SEED}")
        if not self.sparsities or len(set(self.sparsities)) != len(self.sparsities):
            raise InputError(f"sparsity={self.sparsity}: give one budget or distinct budgets")
        for eps in self.sparsities:
            require_finite("", sparsity=eps)
        require_finite("", lr=self.lr, dual_lr=self.dual_lr, min_delta=self.min_delta)
        require_finite("", val_fraction=self.val_fraction)
        if any(eps <= 0 for eps in self.sparsities):
            raise InputError(f"sparsity={self.sparsity}: the L1 budget must be positive")
        max_threads = os.cpu_count() or 1
        if not 0 <= self.threads <= max_threads:
            raise InputError(
                f"threads={self.threads}: must be in 0..{max_threads} (this machine's CPUs; "
                "0: torch's default)"
            )
        self._check_stopping_and_outliers()
        for name in ("min_steps", "patience", "max_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"{name}={getattr(self, name)}: must be >= 0")
        if self.epochs < 1:
            raise InputError(f"epochs={self.epochs}: must be at least 1")
        if self.batch_size < 2:
            raise InputError(
                f"batch_size={self.batch_size}: must be at least 2 (BatchNorm on the codes needs "
                "two shifts per batch)"
            )
        if self.lr <= 0 or self.dual_lr <= 0:
            raise InputError(f"lr={self.lr}, dual_lr={self.dual_lr}: learning rates must be > 0")
        if self.min_delta < 0:
            raise InputError(f"min_delta={self.min_delta}: must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction={self.val_fraction}: must be in [0, 1)")

    def _check_stopping_and_outliers(self) -> None:
        """The settle rule, the budget tolerance, the outlier factor and the recorded ratios."""
        require_finite(
            "",
            settle_tol=self.settle_tol,
            settle_window=self.settle_window,
            budget_tolerance=self.budget_tolerance,
            drop_outliers=self.drop_outliers,
        )
        if self.settle_tol < 0 or not 0 < self.settle_window <= 1:
            raise InputError(
                f"settle_tol={self.settle_tol}, settle_window={self.settle_window}: the tolerance "
                "must be >= 0 and the window in (0, 1]"
            )
        if self.budget_tolerance < 0 or not (self.drop_outliers == 0 or self.drop_outliers > 1):
            raise InputError(
                f"budget_tolerance={self.budget_tolerance}, drop_outliers={self.drop_outliers}: "
                "the tolerance must be >= 0 and drop_outliers 0 (off) or above 1 (a multiple of "
                "the median shift norm, e.g. 10)"
            )
        if self.budget_ratios and len(self.budget_ratios) != len(self.sparsities):
            raise InputError(
                f"budget_ratios={list(self.budget_ratios)}: give one ratio per budget of sparsity"
            )

    @property
    def sparsities(self) -> tuple[float, ...]:
        return self.sparsity if isinstance(self.sparsity, tuple) else (self.sparsity,)

    def members(self) -> list[tuple[int, float]]:
        """(seed, eps) of every stacked member, sparsity-major."""
        return [(seed, eps) for eps in self.sparsities for seed in self.seeds]

    def ratio_of(self, eps: float) -> float | None:
        """The recorded budget ratio of budget ``eps`` (by its position in ``sparsity``)."""
        if not self.budget_ratios:
            return None
        return self.budget_ratios[self.sparsities.index(eps)]


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
            multiplier=cooper.multipliers.DenseMultiplier(
                num_constraints=num_members, device=budgets.device
            ),
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


def _holdout_mask(num: int, fraction: float, groups: np.ndarray | None = None) -> np.ndarray:
    """True for held-out rows: a fixed subset, the same for every member and run. With
    ``groups`` (an entity per row: the word or question a pair was made from), whole groups are
    held out, in a seeded order, until at least ``fraction`` of the rows are: no held-out row
    shares its entity with a training row."""
    held = np.zeros(num, dtype=bool)
    num_held = round(num * fraction)
    if not num_held or num - num_held < 2:
        return held
    rng = np.random.default_rng(VAL_SPLIT_SEED)
    if groups is None:
        held[rng.permutation(num)[:num_held]] = True
        return held
    names, group_N = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    sizes = np.bincount(group_N, minlength=len(names))
    order = rng.permutation(len(names))
    taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), num_held)) + 1]
    held = np.isin(group_N, taken)
    return held if num - held.sum() >= 2 else np.zeros(num, dtype=bool)


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
#
# A checkpoint is one safetensors file: every tensor of the run's state (model, optimiser moments,
# multipliers, shuffling generators) as a tensor, and everything else (the nesting of the state
# dicts, history, epoch, best loss, the run's fingerprint, the tensors' content hash) as JSON in the
# header metadata under CHECKPOINT_KEY. Nothing is ever unpickled; a damaged one is not resumed.

CHECKPOINT_KEY = "ssae.checkpoint"
CHECKPOINT_FORMAT = 1


def run_fingerprint(data: np.ndarray | StreamedShifts, cfg: TrainConfig) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the configuration (every field: even the thread
    count can change float results), the training shifts' bytes (in memory: the array; streamed:
    the pair ids and shifts of every block, hashed by the preparing pass), and the package
    version."""
    config = json.dumps(asdict(cfg), sort_keys=True)
    if isinstance(data, StreamedShifts):
        data_sha256 = f"stream:{data.data_sha256}"
    else:
        digest = hashlib.sha256(str(data.shape).encode())
        digest.update(memoryview(np.ascontiguousarray(data, dtype="<f4")).cast("B"))
        data_sha256 = digest.hexdigest()
    return {
        "format": str(CHECKPOINT_FORMAT),
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "data_sha256": data_sha256,
        "version": __version__,
    }


def _pack(obj: object, tensors: dict[str, torch.Tensor]) -> object:
    """A JSON-ready copy of nested state (dicts, lists, tuples, numbers, strings, tensors); each
    tensor is moved into ``tensors`` and referenced by its name there."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone().contiguous()
        return {"tensor": name}
    if isinstance(obj, dict):
        return {"dict": [[_pack(k, tensors), _pack(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [_pack(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_pack(v, tensors) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"float": repr(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"checkpoint: cannot store a {type(obj).__name__}")


def _unpack(obj: object, tensors: dict[str, torch.Tensor]) -> object:
    """The inverse of :func:`_pack`."""
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    ((kind, value),) = obj.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "dict":
        return {_unpack(k, tensors): _unpack(v, tensors) for k, v in value}
    if kind == "tuple":
        return tuple(_unpack(v, tensors) for v in value)
    if kind == "float":
        return float(value)
    raise ValueError(f"checkpoint: unknown entry {kind!r}")


@dataclass
class _Checkpoint:
    """The resumable state of one run at ``path``. Only a checkpoint of the same fingerprint is
    resumed; a file there that is not an ssae checkpoint is never parsed beyond the safetensors
    header, replaced or removed (this run then saves no checkpoint)."""

    path: Path | None
    fingerprint: dict[str, str]
    owned: bool = True

    def _read(self) -> tuple[str, dict[str, torch.Tensor]] | None:
        """Our JSON document and the tensors, or None where ``path`` is not an ssae checkpoint."""
        if self.path.is_symlink() or not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                document = (handle.metadata() or {}).get(CHECKPOINT_KEY)
                if document is None:
                    return None
                return document, {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except Exception:  # safetensors raises its own error types for anything it cannot parse
            return None

    def load(self) -> dict | None:
        """The saved state of this very run, else None (and one line on stderr saying why)."""
        if self.path is None or not os.path.lexists(self.path):
            return None
        found = self._read()
        if found is None:
            self.owned = False
            show_message(
                f"{self.path}: not an ssae checkpoint; ignored, and this run saves none "
                "(remove it to make the run resumable)"
            )
            return None
        document, tensors = found
        try:
            saved = json.loads(document)
            if saved.get("tensors_sha256") not in (None, tensor_digest(tensors)):
                reason = "is damaged (its tensors fail their content hash)"
            elif saved["fingerprint"] == self.fingerprint:
                return _unpack(saved["state"], tensors)
            else:
                reason = "was written with other settings or data"
        except (ValueError, KeyError, TypeError):
            reason = "is unreadable"
        show_message(f"{self.path}: checkpoint {reason}; starting fresh")
        return None

    def save(self, state: dict) -> None:
        if self.path is None or not self.owned:
            return
        tensors: dict[str, torch.Tensor] = {}
        document = {"fingerprint": self.fingerprint, "state": _pack(state, tensors)}
        document["tensors_sha256"] = tensor_digest(tensors)
        with atomic_file(self.path) as tmp:
            save_file(tensors, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(document)})

    def remove(self) -> None:
        if self.path is not None and self.owned:
            self.path.unlink(missing_ok=True)


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
        dual_optimizers=_dual_optimizer(cfg, cmp),
    )
    return opt, cmp


def _dual_optimizer(cfg: TrainConfig, cmp: SparseShiftProblem) -> torch.optim.Optimizer:
    if cfg.dual_optimizer == "sgd":
        return cooper.optim.ExtraSGD(cmp.dual_parameters(), lr=cfg.dual_lr, maximize=True)
    return cooper.optim.ExtraAdam(cmp.dual_parameters(), lr=cfg.dual_lr, maximize=True)


def decay_factor(step: int, total: int, fraction: float) -> float:
    """The learning-rate multiplier at optimiser step ``step`` (0-based) of ``total``: 1, then
    linearly down to 0 over the last ``fraction`` of the steps."""
    start = total * (1 - fraction)
    if fraction <= 0 or step < start:
        return 1.0
    return max(0.0, (total - step) / (total - start))


def _set_learning_rates(opt: object, cfg: TrainConfig, factor: float) -> None:
    if isinstance(opt, torch.optim.Optimizer):  # aff
        pairs = [(opt, cfg.lr)]
    else:
        pairs = [(o, cfg.lr) for o in opt.primal_optimizers]
        pairs += [(o, cfg.dual_lr) for o in opt.dual_optimizers]
    for optimizer, lr in pairs:
        for group in optimizer.param_groups:
            group["lr"] = lr * factor


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


def _held_out_values(
    net: StackedSSAE, x_val: torch.Tensor, chunk: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out loss and L1 of every member [S]: at once, or (``chunk`` rows at a time, for a
    large streamed held-out set) as the row-weighted mean of the chunks."""
    num, device = net.num_members, net.W_dec_SMD.device
    if chunk is None or len(x_val) <= chunk:
        return _evaluate(net, x_val.to(device).expand(num, -1, -1))
    totals = torch.zeros(2, num, dtype=torch.float64, device=device)
    for start in range(0, len(x_val), chunk):
        part = x_val[start : start + chunk].to(device)
        loss_S, l1_S = _evaluate(net, part.expand(num, -1, -1))
        totals += torch.stack([loss_S, l1_S]).double() * len(part)
    loss_S, l1_S = (totals / len(x_val)).float().unbind(0)
    return loss_S, l1_S


def batch_count(num: int, batch_size: int) -> int:
    """How many batches :func:`_epoch_batches` gives for ``num`` rows (a last batch smaller than
    half a batch is dropped)."""
    size = min(batch_size, num)
    full, rest = divmod(num, size)
    return full + int(rest >= max(2, size // 2))


def train(
    delta_ND: np.ndarray | ShardSource,
    cfg: TrainConfig,
    *,
    groups: np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    provenance: dict | None = None,
) -> TrainResult:
    """Train every member of ``cfg`` on raw shifts ``delta_ND`` as one stacked model; given a
    :class:`ssae_core.streaming.ShardSource`, the shifts are streamed from its files instead
    (see :mod:`ssae_core.streaming`: memory does not grow with the number of pairs).

    ``groups``: the entity of each row of ``delta_ND`` (in memory only): the held-out rows
    (``cfg.val_fraction``) are then whole entities, so the held-out L1 is measured on words
    or questions training never saw.

    ``checkpoint``: a file written at the end of an epoch, at most every CHECKPOINT_SECONDS; a run
    interrupted and started again with the same configuration and shifts resumes from the last one
    (it is deleted at the end), so an interruption loses at most that much work. A checkpoint of
    other settings or data is not resumed (one line on stderr says so). A run whose loss, L1 or
    multiplier stops being finite raises :class:`InputError`.
    """
    with torch_threads(cfg.threads):
        try:
            return _train(
                delta_ND,
                cfg,
                groups=groups,
                checkpoint=checkpoint,
                progress=progress,
                provenance=provenance,
            )
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError | torch.OutOfMemoryError) and (
                "can't allocate memory" not in str(exc)
            ):
                raise
            raise InputError(
                f"training ran out of memory (latent_dim={cfg.latent_dim}, "
                f"{len(cfg.members())} member(s)); lower --latent-dim or --batch-size, or train "
                "fewer seeds at once"
            ) from None


def training_bytes(dim: int, latent_dim: int, num_members: int, batch: int, num_val: int) -> int:
    """A generous estimate of the memory a stacked run needs: parameters with their gradients,
    Adam moments and extra-gradient copies; one step's activations; the held-out evaluation."""
    d, m, s = dim, latent_dim, num_members
    params = s * (2 * d * m + d + 5 * m)
    step = s * (batch * (d + 4 * m + 2) + 2 * m * m)
    held = s * num_val * (3 * m + 2)
    return 4 * (8 * params + 4 * step + held)


def _checked_shifts(delta_ND: np.ndarray) -> np.ndarray:
    delta_ND = np.asarray(delta_ND, dtype=np.float32)
    if delta_ND.ndim != 2 or delta_ND.shape[0] < 4 or delta_ND.shape[1] < 1:
        raise InputError(f"training needs at least 4 shifts of shape [N, D]; got {delta_ND.shape}")
    finite = np.isfinite(delta_ND).all(axis=1)
    if not finite.all():
        raise InputError(
            f"{int((~finite).sum())} training shift(s) are NaN or inf (first row "
            f"{int(np.argmax(~finite))}); drop them"
        )
    if not delta_ND.any():
        raise InputError(
            f"all {len(delta_ND)} training shifts are zero (z_tilde == z in every pair): nothing "
            "to learn; check that the pairs hold different texts"
        )
    return delta_ND


def _non_finite(
    epoch: int, members: list[tuple[int, float]], values: dict[str, torch.Tensor]
) -> str | None:
    """Which value of which member is NaN or inf, as the start of an error message."""
    for name, value_S in values.items():
        bad = (~torch.isfinite(value_S)).nonzero()
        if len(bad):
            k = int(bad[0, 0])
            seed, eps = members[k]
            return (
                f"training diverged in epoch {epoch}: the {name} of seed {seed} (sparsity {eps:g})"
                f" is {float(value_S[k])}"
            )
    return None


@dataclass
class _Shifts:
    """The normalised training and held-out shifts of one run, in memory. Training reads any
    data through what this class offers (:class:`ssae_core.streaming.StreamedShifts` offers the
    same for shifts streamed from disk)."""

    normalizer: Normalizer
    x_train: torch.Tensor
    x_val: torch.Tensor
    x_rms: float
    outlier_threshold: float | None = None  # raw shift norm above which pairs were dropped
    num_outliers: int = 0  # training pairs dropped as outliers
    eval_rows: int | None = None  # the held-out shifts are evaluated at once

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    def buffer_sizes(self) -> list[int]:
        return [len(self.x_train)]

    def buffers(self, epoch: int) -> Iterator[torch.Tensor]:
        """Every epoch is one buffer: all training shifts."""
        yield self.x_train


Shifts = _Shifts | StreamedShifts


def _prepare_stream(source: ShardSource, cfg: TrainConfig) -> StreamedShifts:
    """The streaming pass over ``source`` (checks, statistics, held-out shifts), after the same
    memory check as in memory (for one batch and one chunk of held-out shifts)."""
    if cfg.latent_dim < 1:
        raise InputError(f"latent_dim={cfg.latent_dim}: must be at least 1")
    resolve_device(cfg.device)  # a device torch cannot see fails before the streaming pass
    shifts = source.prepare(
        cfg.normalize,
        cfg.val_fraction,
        buffer_rows(cfg.buffer_mb, _source_dim(source), cfg.batch_size),
        cfg.batch_size,
        cfg.drop_outliers,
    )
    num_members = len(cfg.members())
    batch = min(cfg.batch_size, shifts.num_train)
    require_memory(
        training_bytes(shifts.dim, cfg.latent_dim, num_members, batch, shifts.eval_rows)
        + 3 * 4 * shifts.rows_per_buffer * shifts.dim,
        f"training latent_dim={cfg.latent_dim} x {num_members} member(s) on shifts of width "
        f"{shifts.dim}",
        "lower --latent-dim, --batch-size or --buffer-mb, or train fewer seeds at once",
    )
    _check_x_rms(shifts.x_rms, cfg.normalize)
    return shifts


def _source_dim(source: ShardSource) -> int:
    """The embedding width of ``source``, from the first block with rows."""
    block = next(b for b in source.blocks if b.rows)
    return int(next(block_rows(block)).z.shape[1])


def _check_x_rms(x_rms: float, normalize: str) -> None:
    if not math.isfinite(x_rms) or x_rms <= 0:
        raise InputError(
            f"the normalised training shifts have RMS norm {x_rms} (normalize={normalize}): "
            + (
                "they are all equal, so nothing varies to learn; check the pairs"
                if math.isfinite(x_rms)
                else "too large for float32; use --normalize global"
            )
        )


def _prepare(delta_ND: np.ndarray, cfg: TrainConfig, groups: np.ndarray | None) -> _Shifts:
    """Check the shifts and the memory the run needs; hold out (whole ``groups`` where given)
    and normalise."""
    if cfg.latent_dim < 1:
        raise InputError(f"latent_dim={cfg.latent_dim}: must be at least 1")
    if groups is not None and len(groups) != len(delta_ND):
        raise InputError(
            f"groups: {len(groups)} entries for {len(delta_ND)} shifts; give one a row"
        )
    num_members, dim = len(cfg.members()), delta_ND.shape[1]
    held = _holdout_mask(len(delta_ND), cfg.val_fraction, groups)
    batch = min(cfg.batch_size, int((~held).sum()))
    require_memory(
        training_bytes(dim, cfg.latent_dim, num_members, batch, int(held.sum())),
        f"training latent_dim={cfg.latent_dim} x {num_members} member(s) on shifts of width {dim}",
        "lower --latent-dim or --batch-size, or train fewer seeds at once",
    )
    limit, dropped = None, 0
    if cfg.drop_outliers:
        limit = outliers.threshold(delta_ND[~held], cfg.drop_outliers)
        flagged = outliers.above(delta_ND, limit)
        dropped = int((flagged & ~held).sum())
        if (~flagged & ~held).sum() < 4:
            raise InputError(
                f"drop_outliers={cfg.drop_outliers} leaves fewer than 4 training shifts; raise it"
            )
        delta_ND, held = delta_ND[~flagged], held[~flagged]
    normalizer = Normalizer.fit(delta_ND[~held], cfg.normalize)
    x_ND, _ = normalizer(torch.from_numpy(delta_ND))
    x_train, x_val = x_ND[torch.from_numpy(~held)], x_ND[torch.from_numpy(held)]
    x_rms = float(x_train.pow(2).sum(-1).mean().sqrt())
    _check_x_rms(x_rms, cfg.normalize)
    device = resolve_device(cfg.device)  # held there once: every epoch reads the same shifts
    return _Shifts(normalizer, x_train.to(device), x_val.to(device), x_rms, limit, dropped)


@dataclass
class _Run:
    """What changes while a stacked run trains: exactly what a checkpoint holds."""

    net: StackedSSAE
    opt: object
    cmp: SparseShiftProblem | None
    generators: list[torch.Generator]  # on the CPU whatever the device: the same shuffles
    history: list[dict] = field(default_factory=list)
    best: float = math.inf
    stale: int = 0
    epoch: int = 0

    @property
    def device(self) -> torch.device:
        return self.net.W_dec_SMD.device

    @classmethod
    def start(cls, cfg: TrainConfig, dim: int, x_rms: float) -> _Run:
        """The stacked model (initialised on the CPU, then moved to ``cfg.device``), its
        optimiser(s) and the members' shuffling generators."""
        seeds = [seed for seed, _ in cfg.members()]
        torch.manual_seed(0)  # nothing random should depend on it; fixed for safety
        device = resolve_device(cfg.device)
        net = StackedSSAE(dim, cfg.latent_dim, seeds, x_rms).to(device)
        opt, cmp = _make_optimizers(cfg, net, _budgets(cfg).to(device))
        generators = [torch.Generator().manual_seed(GENERATOR_OFFSET + seed) for seed in seeds]
        return cls(net, opt, cmp, generators)

    def state(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "cmp": self.cmp.state_dict() if self.cmp is not None else None,
            "rng": [g.get_state() for g in self.generators],
            "history": self.history,
            "best": self.best,
            "stale": self.stale,
            "epoch": self.epoch,
        }

    def restore(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        if self.cmp is not None:
            self.cmp.load_state_dict(state["cmp"])
        for g, saved in zip(self.generators, state["rng"], strict=True):
            g.set_state(saved)
        self.history, self.best = state["history"], state["best"]
        self.stale, self.epoch = state["stale"], state["epoch"]


def _budgets(cfg: TrainConfig) -> torch.Tensor:
    return torch.tensor([eps for _, eps in cfg.members()], dtype=torch.float32)


def _resumed(cfg: TrainConfig, shifts: Shifts, ckpt: _Checkpoint) -> _Run:
    """A fresh run, or the checkpointed one where it belongs to this very run."""
    dim = shifts.dim
    run = _Run.start(cfg, dim, shifts.x_rms)
    if (state := ckpt.load()) is not None:
        try:
            run.restore(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError):
            show_message(f"{ckpt.path}: checkpoint does not fit this run; starting fresh")
            run = _Run.start(cfg, dim, shifts.x_rms)
    return run


def _epoch(
    run: _Run, cfg: TrainConfig, shifts: Shifts, first_step: int, total_steps: int
) -> dict[str, torch.Tensor]:
    """One pass over the training shifts (buffer by buffer: each member shuffles each buffer
    with its own generator); the epoch's per-member values, by name."""
    num, device = run.net.num_members, run.device
    run.net.train()
    sums = torch.zeros(2, num, device=device)
    steps = 0
    for buffer in shifts.buffers(run.epoch):
        buffer = buffer.to(device)
        for idx_SB in _epoch_batches(run.generators, len(buffer), cfg.batch_size):
            if cfg.lr_decay:
                factor = decay_factor(first_step + steps, total_steps, cfg.lr_decay)
                _set_learning_rates(run.opt, cfg, factor)
            sums += _step(run.net, run.opt, run.cmp, buffer[idx_SB.to(device)])
            steps += 1
        del buffer  # a streamed buffer is freed before the next one is read
    train_loss, train_l1 = (sums / max(steps, 1)).unbind(0)
    if len(shifts.x_val):
        val_loss, val_l1 = _held_out_values(run.net, shifts.x_val, shifts.eval_rows)
    else:
        val_loss, val_l1 = train_loss, train_l1
    values = {
        "training loss": train_loss,
        "L1": train_l1,
        "held-out loss": val_loss,
        "held-out L1": val_l1,
        "multiplier": run.cmp.multipliers_S if run.cmp is not None else torch.zeros(num),
    }
    return {name: value.cpu() for name, value in values.items()}  # one sync per epoch


def _record(run: _Run, cfg: TrainConfig, values: dict[str, torch.Tensor]) -> None:
    """Append the epoch to the history and update the plateau counter."""
    for k, (seed, eps) in enumerate(cfg.members()):
        run.history.append(
            {
                "epoch": run.epoch,
                "member": k,
                "seed": seed,
                "sparsity": eps,
                "train_loss": float(values["training loss"][k]),
                "l1": float(values["L1"][k]),
                "budget": eps if cfg.method == "ssae" else float("nan"),
                "multiplier": float(values["multiplier"][k]),
                "val_loss": float(values["held-out loss"][k]),
                "val_l1": float(values["held-out L1"][k]),
            }
        )
    total = float(values["held-out loss"].sum())
    within = values["held-out L1"] <= _budgets(cfg) * (1 + FEASIBILITY_TOL)
    feasible = run.cmp is None or bool(within.all())
    if total < run.best * (1 - cfg.min_delta):
        run.best, run.stale = total, 0
    elif feasible:
        run.stale += 1


def _diverged(cfg: TrainConfig, epoch: int, values: dict[str, torch.Tensor]) -> str | None:
    """The error message for an epoch whose values are not all finite, else None."""
    problem = _non_finite(epoch, cfg.members(), values)
    if problem is None:
        return None
    fix = f"lower --lr ({cfg.lr:g})"
    if cfg.method == "ssae":
        fix += f" or --dual-lr ({cfg.dual_lr:g})"
    if cfg.normalize != "global":
        fix += ", or use --normalize global"
    return f"{problem}; {fix}"


def _train(
    delta_ND: np.ndarray | ShardSource,
    cfg: TrainConfig,
    *,
    groups: np.ndarray | None,
    checkpoint: str | Path | None,
    progress: bool,
    provenance: dict | None,
) -> TrainResult:
    if isinstance(delta_ND, ShardSource):
        shifts: Shifts = _prepare_stream(delta_ND, cfg)
        data: np.ndarray | StreamedShifts = shifts
    else:
        data = delta_ND = _checked_shifts(delta_ND)
        shifts = _prepare(delta_ND, cfg, groups)
    ckpt = _Checkpoint(
        Path(checkpoint) if checkpoint else None,
        run_fingerprint(data, cfg) if checkpoint else {},
    )
    run = _resumed(cfg, shifts, ckpt)
    steps_per_epoch = sum(batch_count(n, cfg.batch_size) for n in shifts.buffer_sizes())
    max_epochs = epoch_cap(cfg, steps_per_epoch)
    bar = show_progress(
        total=max_epochs,
        initial=run.epoch,
        desc=f"train {cfg.method} x{len(cfg.members())}",
        unit="epoch",
        disable=not progress,
    )
    last_save = time.monotonic()
    while run.epoch < max_epochs:
        values = _epoch(run, cfg, shifts, run.epoch * steps_per_epoch, max_epochs * steps_per_epoch)
        run.epoch += 1
        if (problem := _diverged(cfg, run.epoch, values)) is not None:
            ckpt.remove()
            raise InputError(problem)
        _record(run, cfg, values)
        bar.update()
        bar.set_postfix(
            val_loss=f"{float(values['held-out loss'].mean()):.4f}",
            l1=f"{float(values['held-out L1'].mean()):.3f}",
        )
        if time.monotonic() - last_save >= CHECKPOINT_SECONDS:
            last_save = time.monotonic()
            ckpt.save(run.state())
        past_min_steps = run.epoch * steps_per_epoch >= cfg.min_steps
        if past_min_steps and (
            (cfg.patience and run.stale >= cfg.patience)
            or (cfg.method == "ssae" and cfg.settle_tol and all(settled(run.history, cfg)))
        ):
            break
    bar.close()
    models = _members(run, cfg, shifts, provenance, run.epoch * steps_per_epoch)
    ckpt.remove()
    return TrainResult(models, run.history, stopped_epoch=run.epoch)


def epoch_cap(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The most epochs a run trains: ``epochs``, raised to reach ``min_steps``; with
    ``max_steps``, the epochs that hold that many steps (but never below ``min_steps``)."""
    floor = math.ceil(cfg.min_steps / steps_per_epoch)
    if cfg.max_steps:
        return max(floor, math.ceil(cfg.max_steps / steps_per_epoch))
    return max(cfg.epochs, floor)


def settled(history: list[dict], cfg: TrainConfig) -> list[bool]:
    """Per member: whether its multiplier and L1 stopped moving over the last ``settle_window``
    of the epochs (at least MIN_SETTLE_EPOCHS): the mean over the window's second half is within
    ``settle_tol`` of the mean over its first half, relative to the larger of the two (the
    multiplier's change also passes below one dual step, ``dual_lr``). False for every member
    while fewer epochs than the window have run."""
    num = len(cfg.members())
    epochs = len(history) // num
    window = max(MIN_SETTLE_EPOCHS, math.ceil(cfg.settle_window * epochs))
    if epochs < window or cfg.settle_tol <= 0:
        return [False] * num
    rows = np.array(
        [
            [(r["multiplier"], r["l1"]) for r in history[e * num : (e + 1) * num]]
            for e in range(epochs - window, epochs)
        ]
    )  # [window, members, 2]
    half = window // 2
    first, second = rows[:half].mean(axis=0), rows[-half:].mean(axis=0)
    change = np.abs(second - first)
    scale = np.maximum(np.abs(first), np.abs(second))
    ok = change <= cfg.settle_tol * scale
    ok[:, 0] |= change[:, 0] <= cfg.dual_lr
    return [bool(a and b) for a, b in ok]


def _training_chunks(shifts: Shifts, device: torch.device) -> Iterator[torch.Tensor]:
    """Every training shift once (normalised), in chunks of at most EVAL_CHUNK rows."""
    for buffer in shifts.buffers(0):
        for start in range(0, len(buffer), EVAL_CHUNK):
            yield buffer[start : start + EVAL_CHUNK].to(device)


@torch.no_grad()
def recalibrate_batch_norm(net: StackedSSAE, chunks: Iterator[torch.Tensor]) -> None:
    """Set the BatchNorm running statistics of every member to the exact mean and (unbiased)
    variance of its pre-norm codes over ``chunks`` (all training shifts): eval mode then codes
    the training shifts as one big batch would, not as the last few batches did."""
    num, m = net.num_members, net.latent_dim
    total = torch.zeros(num, m, dtype=torch.float64, device=net.W_enc_SDM.device)
    sq, count = torch.zeros_like(total), 0
    for x_BD in chunks:
        u_SBM = torch.bmm(x_BD.expand(num, -1, -1) - net.b_dec_SD[:, None, :], net.W_enc_SDM)
        total += u_SBM.double().sum(1)
        sq += u_SBM.double().square().sum(1)
        count += len(x_BD)
    mean = total / count
    var = (sq / count - mean.square()).clamp_min(0) * (count / max(count - 1, 1))
    net.running_mean_SM.copy_(mean.float())
    net.running_var_SM.copy_(var.float())


@torch.no_grad()
def eval_means(
    net: StackedSSAE, chunks: Iterator[torch.Tensor]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eval-mode reconstruction loss, L1 and the L1's standard error of every member over every
    row of ``chunks`` (arrays [S]; nan without rows)."""
    was_training = net.training
    net.eval()
    sums = torch.zeros(3, net.num_members, dtype=torch.float64, device=net.W_enc_SDM.device)
    count = 0
    for x_BD in chunks:
        codes_SBM, sq_SB = net.codes_and_sq_error(x_BD.expand(net.num_members, -1, -1))
        l1_SB = codes_SBM.abs().sum(-1).double() / net.x_rms
        sums += torch.stack(
            [sq_SB.double().sum(1) / net.x_rms**2, l1_SB.sum(1), l1_SB.square().sum(1)]
        )
        count += x_BD.shape[0]
    net.train(was_training)
    if not count:
        nan = np.full(net.num_members, np.nan)
        return nan, nan, nan
    loss, l1, l1_sq = (sums / count).cpu().numpy()
    var = np.clip(l1_sq - l1**2, 0, None) * count / max(count - 1, 1)
    return loss, l1, np.sqrt(var / count)


def _members(
    run: _Run, cfg: TrainConfig, shifts: Shifts, provenance: dict | None, steps: int
) -> list[ShiftAutoencoder]:
    """One stand-alone model per member, with its config.json content and its
    :class:`~ssae_core.record.MemberRecord` (the one L1 measure: eval mode over every training
    shift, after the BatchNorm statistics are recomputed on them)."""
    members = cfg.members()
    device = run.device
    recalibrate_batch_norm(run.net, _training_chunks(shifts, device))
    train_loss, l1, _ = eval_means(run.net, _training_chunks(shifts, device))
    val_chunks = (
        shifts.x_val[k : k + EVAL_CHUNK].to(device) for k in range(0, len(shifts.x_val), EVAL_CHUNK)
    )
    val_loss, val_l1, val_se = eval_means(run.net, val_chunks)
    last = {row["member"]: row for row in run.history[-len(members) :]}
    calm = settled(run.history, cfg)
    models = []
    for k, (seed, eps) in enumerate(members):
        budget = eps if cfg.method == "ssae" else None
        multiplier = last[k]["multiplier"]
        record = MemberRecord(
            method=cfg.method,
            seed=seed,
            budget=budget,
            budget_ratio=cfg.ratio_of(eps) if budget is not None else None,
            steps=steps,
            epochs=run.epoch,
            l1=float(l1[k]),
            constraint_l1=last[k]["l1"],
            val_l1=float(val_l1[k]),
            val_l1_se=float(val_se[k]),
            train_loss=float(train_loss[k]),
            val_loss=float(val_loss[k]),
            multiplier=multiplier,
            settled=calm[k],
            status=member_status(float(l1[k]), budget, multiplier, calm[k], cfg.budget_tolerance),
            num_train_shifts=shifts.num_train,
            outlier_threshold=_finite_or_none(shifts.outlier_threshold),
            num_outliers=shifts.num_outliers,
        )
        config = {
            "method": cfg.method,
            "dim": shifts.dim,
            "latent_dim": cfg.latent_dim,
            "seed": seed,
            "sparsity": budget,
            "x_rms": shifts.x_rms,
            "normalization": shifts.normalizer.to_dict(),
            "hyperparameters": {
                "epochs": cfg.epochs,
                "min_steps": cfg.min_steps,
                "max_steps": cfg.max_steps,
                "patience": cfg.patience,
                "batch_size": cfg.batch_size,
                "lr": cfg.lr,
                "dual_lr": cfg.dual_lr if cfg.method == "ssae" else None,
                "val_fraction": cfg.val_fraction,
                "lr_decay": cfg.lr_decay,
                "dual_optimizer": cfg.dual_optimizer if cfg.method == "ssae" else None,
                "settle_tol": cfg.settle_tol,
                "settle_window": cfg.settle_window,
                "drop_outliers": cfg.drop_outliers,
            },
            RECORD_KEY: record.to_dict(),
            "provenance": provenance or {},
            "package_version": __version__,
        }
        models.append(ShiftAutoencoder(run.net.member(k), shifts.normalizer, config))
    return models


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def status_warnings(result: TrainResult, *, where: str = "training") -> list[str]:
    """One line per SSAE member that is not usable: slack (its budget never bound), infeasible
    or not converged (its L1 ended above its budget), with what to change."""
    fixes = {
        SLACK: "the constraint did nothing: lower the budget (--sparsity, or train.sparsity in "
        "params.yaml; about 0.75 x the aff L1)",
        INFEASIBLE: "the budget cannot be met at this reconstruction: raise --sparsity",
        NOT_CONVERGED: "still moving at the step limit: raise --max-steps (or --epochs)",
    }
    lines = []
    for model in result.models:
        record = model.record
        if record.status in fixes:
            lines.append(
                f"{where}: seed {record.seed} is {record.status} (L1 {record.l1:.3f}, budget "
                f"{record.budget:g}, multiplier {record.multiplier:.3f}): {fixes[record.status]}"
            )
    return lines


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
