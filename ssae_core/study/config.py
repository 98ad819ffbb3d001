"""The ``study`` and ``entangle`` sections of params.yaml: how the LLM study trains.

Every SSAE run of the study trains at least ``optim.steps`` optimiser steps and then until its
Lagrangian settles (``optim.settle_tol``), or until ``optim.max_steps``; aff trains
``optim.steps``. Each member records the steps it used and its status (:mod:`ssae_core.record`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from ssae_core.config import load_config
from ssae_core.errors import InputError
from ssae_core.evaluation.probes import ProbeConfig
from ssae_core.study.claims import ClaimsConfig
from ssae_core.synthetic import SynthConfig
from ssae_core.train import TrainConfig


def _positive_list(name: str, values: Sequence[float]) -> None:
    if not values or any(v <= 0 for v in values):
        raise InputError(f"{name}={list(values)!r}: give a list of positive numbers")


@dataclass(frozen=True)
class GridConfig:
    """The SSAE grid: every budget x every learning rate, all seeds (one stacked run per lr)."""

    budget_ratio: tuple[float, ...] = (0.25, 0.5, 0.75)
    """L1 budgets as fractions of the L1 that aff reaches on the same data and latent size."""
    lr: tuple[float, ...] = (1e-3, 3e-3)
    """Learning rates of the grid."""

    def __post_init__(self) -> None:
        _positive_list("budget_ratio", self.budget_ratio)
        _positive_list("lr", self.lr)


@dataclass(frozen=True)
class OvercompleteConfig:
    """SSAE with m = factor x n on one set (the paper's appendix B.3)."""

    set: str = "cat"
    """The pair set of the sweep; must be one of ``study.sets``."""
    factors: tuple[int, ...] = (1, 2, 4)
    """Latent sizes as multiples of the set's number of concepts."""
    seeds: tuple[int, ...] | None = None
    """Seeds of the sweep; null: ``study.seeds``."""

    def __post_init__(self) -> None:
        if not self.factors or any(f < 1 for f in self.factors):
            raise InputError(f"factors={list(self.factors)!r}: give integers >= 1")


def check_workers(value: object, name: str) -> None:
    """A count of worker processes: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r}: give an integer >= 1")


@dataclass(frozen=True)
class AblationConfig:
    """params.yaml ``study.ablation``: the outlier ablation of the report."""

    sets: tuple[str, ...] = ("lang", "gender", "binary", "corr")
    """The sets ablated (each of study.sets); every layer of embed.layers."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of the aff and SSAE runs of each option."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise InputError("study.ablation.seeds: give one seed or more")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation settings shared by every run of the study."""

    steps: int = 400
    """Optimiser steps of aff, and the least an SSAE run trains (rounded up to whole epochs)."""
    max_steps: int = 1600
    """The most steps an SSAE run trains before it counts as not converged."""
    settle_tol: float = 0.02
    """SSAE stops once every member's multiplier and L1 settled within this fraction (see
    ssae_core.train.TrainConfig.settle_tol)."""

    batch_size: int = 256
    """Shifts per batch."""
    dual_lr_ratio: float = 1.0
    """Multiplier learning rate = ratio x lr."""
    threads: int = 1
    """torch threads while training (0: torch's default)."""
    normalize: str = "global"
    """Input normalisation: global, layer or none."""
    val_fraction: float = 0.1
    """Share of the training shifts held out for the held-out loss."""
    lr_decay: float = 0.0
    """Fraction of the final steps over which the learning rates fall linearly to 0."""
    dual_optimizer: str = "adam"
    """Multiplier optimiser: adam or sgd (see ssae_core.train.TrainConfig)."""
    device: str = "cpu"
    """Where every run trains: cpu, cuda, cuda:N or auto (see ssae_core.train.TrainConfig)."""


@dataclass(frozen=True)
class StudyConfig:
    """params.yaml ``study``: training of the LLM study (every set, both methods, the grid)."""

    sets: tuple[str, ...] = ("lang", "gender", "binary", "corr", "cat", "truthfulqa")
    """The pair sets of the study."""
    entangled_sets: tuple[str, ...] = ("binary", "corr", "cat")
    """The sets of ``sets`` also trained and scored entangled (the robustness variant; claim 3
    reads the multi-concept sets)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds of every run, trained stacked."""
    latent_factor: int = 1
    """m = latent_factor x (number of concepts of the set): the overcompleteness of every run."""
    latent_dims: dict[str, int] = field(default_factory=dict)
    """m of sets whose pairs name no concepts (unlabelled pair sets of your own): {set: m}."""
    budget_ratio: float = 0.5
    """The budget ratio of the entangled and overcompleteness runs (the grid has its own list)."""
    usable_tolerance: float = 0.05
    """An SSAE member is usable only if its multiplier is positive and its L1 over its training
    shifts is at most budget x (1 + this); any other member is marked wherever it appears, and a
    cell with one is never selected."""
    sensitivity_tolerance: float = 0.15
    """The second tolerance at which the report repeats the grid selection and the claims."""
    controls: tuple[str, ...] = ("lang", "gender", "truthfulqa")
    """Sets whose every pair changes one concept: the true code's L1 equals aff's, so sparsity
    cannot help. They use ``control_budget_ratio``, a slack member is admissible there, and they
    are left out of the SSAE-vs-aff claims (the report's controls table)."""
    control_budget_ratio: tuple[float, ...] = (0.9, 1.0, 1.1)
    """The budget ratios of the control sets' grid."""
    outlier_factor: float = 10.0
    """A text or shift is an outlier when its norm exceeds this many times the median of its
    set's training split (per layer); the report counts them per set, layer and split."""
    drop_outliers: bool = False
    """Drop the pairs whose shift is an outlier, from every split (training and evaluation
    alike; see ssae_core.outliers)."""
    lr: float = 0.003
    """Learning rate of aff and of the entangled and overcompleteness runs."""
    grid: GridConfig = field(default_factory=GridConfig)
    """The SSAE selection grid."""
    overcomplete: OvercompleteConfig = field(default_factory=OvercompleteConfig)
    """The overcompleteness sweep."""
    reverse_fraction: float = 0.5
    """Fraction of pairs read backwards (z <-> z~, shift negated; see ``study.sets.load_set``)."""
    reverse_seed: int = 0
    """Seed of the choice of reversed pairs."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimisation settings shared by every run."""
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    """The held-out probes that measure what steering changes."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """The outlier ablation of the report (ssae_core.study.ablation)."""
    workers: int = 1
    """Processes of the stages whose work splits into independent parts (ablation: its (set,
    layer) pairs; steering: its layers), one thread each; 1: all in the stage's own process.
    range: [1, inf)."""

    def __post_init__(self) -> None:
        check_workers(self.workers, "study.workers")
        if self.latent_factor < 1:
            raise InputError(f"latent_factor={self.latent_factor}: must be >= 1")
        if self.overcomplete.set not in self.sets:
            raise InputError(f"overcomplete.set={self.overcomplete.set!r}: not in study.sets")
        outside = [name for name in self.entangled_sets if name not in self.sets]
        if outside or not self.entangled_sets:
            raise InputError(
                f"entangled_sets={list(self.entangled_sets)}: give one or more sets of study.sets"
                + (f" ({', '.join(outside)} is not one)" if outside else "")
            )
        _positive_list("control_budget_ratio", self.control_budget_ratio)
        if self.outlier_factor <= 1 or not 0 < self.sensitivity_tolerance < 1:
            raise InputError(
                f"outlier_factor={self.outlier_factor}, sensitivity_tolerance="
                f"{self.sensitivity_tolerance}: the factor must be > 1 and the tolerance in (0, 1)"
            )
        if self.budget_ratio <= 0 or not 0 < self.usable_tolerance < 1:
            raise InputError(
                f"budget_ratio={self.budget_ratio}, usable_tolerance={self.usable_tolerance}: "
                "the ratio must be > 0 and the tolerance in (0, 1)"
            )
        self.train_config("aff", lr=self.lr)  # validates optim

    def latent_dim(self, name: str, concepts: Sequence[str] | None, factor: int = 1) -> int:
        """m of set ``name``: ``latent_dims[name]``, else factor x its number of concepts."""
        if name in self.latent_dims:
            return factor * self.latent_dims[name]
        if not concepts:
            raise InputError(
                f"study.latent_dims: set {name!r} names no concepts; give its number of latents "
                f"(study.latent_dims: {{{name}: M}})"
            )
        return factor * len(concepts)

    def is_control(self, name: str) -> bool:
        return name in self.controls

    def grid_ratios(self, name: str) -> tuple[float, ...]:
        """The budget ratios of set ``name``'s grid."""
        return self.control_budget_ratio if self.is_control(name) else self.grid.budget_ratio

    @property
    def overcomplete_seeds(self) -> tuple[int, ...]:
        return self.overcomplete.seeds or self.seeds

    def train_config(
        self,
        method: str,
        *,
        lr: float,
        sparsity: float | Sequence[float] = 1.0,
        ratios: Sequence[float] = (),
    ) -> TrainConfig:
        """The :class:`TrainConfig` of one run of the study (``ratios``: the budget ratios the
        budgets of ``sparsity`` were made from, recorded in every member)."""
        optim = self.optim
        values = {
            "method": method,
            "seeds": self.seeds,
            "sparsity": tuple(sparsity) if isinstance(sparsity, Sequence) else sparsity,
            "budget_ratios": tuple(ratios),
            "epochs": 1,
            "min_steps": optim.steps,
            "max_steps": optim.max_steps if method == "ssae" else optim.steps,
            "settle_tol": optim.settle_tol,
            "drop_outliers": 0.0,  # the study drops outliers from every split (study.sets)
            "patience": 0,
            "lr": lr,
            "dual_lr": lr * optim.dual_lr_ratio,
            "batch_size": optim.batch_size,
            "threads": optim.threads,
            "normalize": optim.normalize,
            "val_fraction": optim.val_fraction,
            "lr_decay": optim.lr_decay,
            "dual_optimizer": optim.dual_optimizer,
            "device": optim.device,
        }
        return load_config(TrainConfig, values, "params.yaml:study.optim")


@dataclass(frozen=True)
class EntangleConfig:
    """params.yaml ``entangle``: the dense invertible map of the robustness variant."""

    seed: int = 1
    """Seed of the map."""
    max_condition: float = 10.0
    """Largest condition number of the map (>= 1; 1 is a rotation)."""

    def __post_init__(self) -> None:
        if self.max_condition < 1:
            raise InputError(f"max_condition={self.max_condition}: must be >= 1")


@dataclass(frozen=True)
class SyntheticRunsConfig:
    """The keys of params.yaml ``train`` that are not :class:`TrainConfig`'s: how the pipeline
    runs the synthetic training (every other key of the section is a TrainConfig field)."""

    latent_factors: tuple[int, ...] = (1, 2)
    """Train m = factor x latent_dim for each factor."""
    require_active: bool = True
    """An SSAE run whose multiplier ends at 0 is an error."""
    workers: int = 1
    """Runs trained at the same time, each in a worker process (``threads`` torch threads
    each); 1: one after another in this process. The runs are the same either way."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Everything else: the training of each run."""

    def __post_init__(self) -> None:
        if not self.latent_factors or any(f < 1 for f in self.latent_factors):
            raise InputError(f"latent_factors={list(self.latent_factors)}: give integers >= 1")
        check_workers(self.workers, "workers")


def load_synthetic_runs(values: Mapping | None, method: str) -> SyntheticRunsConfig:
    """params.yaml ``train`` for one method: the pipeline's keys and a :class:`TrainConfig`."""
    where = "params.yaml:train"
    own = {f.name for f in fields(SyntheticRunsConfig)} - {"train"}
    values = dict(values or {})
    runs = {key: values.pop(key) for key in own if key in values}
    train = load_config(TrainConfig, {**values, "method": method}, where)
    return load_config(SyntheticRunsConfig, {**runs, "train": train}, where)


@dataclass(frozen=True)
class SyntheticSetting:
    """One entry of params.yaml ``synthetic.settings``: synth(n, k)."""

    num_concepts: int
    """n: number of concepts."""
    max_changes: int
    """k: each pair changes between 1 and k concepts."""


@dataclass(frozen=True)
class SyntheticDataConfig:
    """The keys of params.yaml ``synthetic`` that are not :class:`SynthConfig`'s."""

    settings: dict[str, SyntheticSetting]
    """name -> (n, k) of every synthetic table."""
    entangle_seed: int = 1
    """Seed of the dense invertible D x D map of the ``*_ent`` variants."""


def load_synthetic_data(
    values: Mapping | None,
) -> tuple[SyntheticDataConfig, dict[str, SynthConfig]]:
    """params.yaml ``synthetic``: the pipeline's keys and each setting's :class:`SynthConfig`."""
    where = "params.yaml:synthetic"
    values = dict(values or {})
    own = {key: values.pop(key) for key in ("settings", "entangle_seed") if key in values}
    settings = own.get("settings")
    if not isinstance(settings, Mapping) or not settings:
        raise InputError(f"{where}.settings: give a mapping name -> {{num_concepts, max_changes}}")
    own["settings"] = {
        str(name): load_config(SyntheticSetting, entry, f"{where}.settings.{name}")
        for name, entry in settings.items()
    }
    data = load_config(SyntheticDataConfig, own, where)
    tables = {
        name: load_config(
            SynthConfig,
            {**values, "num_concepts": s.num_concepts, "max_changes": s.max_changes},
            f"{where}.settings.{name}",
        )
        for name, s in data.settings.items()
    }
    return data, tables


ENTANGLED_SUFFIX = "_ent"


def synthetic_latent_sizes(
    data: SyntheticDataConfig, runs: SyntheticRunsConfig
) -> dict[str, list[int]]:
    """The latent sizes trained on every synthetic table and its entangled variant."""
    sizes = {}
    for name, setting in data.settings.items():
        base = runs.train.latent_dim or setting.num_concepts
        for table in (name, f"{name}{ENTANGLED_SUFFIX}"):
            sizes[table] = [factor * base for factor in runs.latent_factors]
    return sizes


@dataclass(frozen=True)
class ReportConfig:
    """params.yaml ``report``: what the headline metrics show and how the claims are decided."""

    headline_layer: str = "final"
    """The layer whose numbers metrics/summary.json shows (``final`` or a block index)."""
    headline_sets: tuple[str, ...] | None = None
    """The sets metrics/summary.json shows; null: every set of the study."""
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)
    """Thresholds that decide the paper's claims."""
