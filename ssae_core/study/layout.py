"""Where every file of the pipeline lives: one :class:`StudyLayout`, its root passed in.

Paths are built from the root the caller gives (the stages pass the project root); metrics files
record them relative to the root (:meth:`StudyLayout.relative`), so results do not depend on where
the checkout sits::

    data/pairs/SET.parquet                       pair tables
    data/truthfulqa/mc.parquet                   TruthfulQA multiple-choice table
    data/embeddings/SET/layer-L/shard-*.parquet  LM embeddings of each layer L (block or final)
    data/entangled/layer-L/SET.parquet           the same, mixed by a dense invertible map
    data/synthetic/NAME.parquet                  synthetic tables (and NAME_ent.parquet)
    models/lm/                                   the prepared language model
    models/synthetic/NAME/METHOD/mM/             synthetic runs, one per latent size M
    models/study/layer-L/SET/aff/seed-S/         the aff baseline (trained first: it sets budgets)
    models/study/layer-L/SET/grid/lr-LR/...      SSAE grid, one stacked run per learning rate
    models/study/layer-L/SET/budgets.json        the budgets (ratios of aff's held-out L1)
    models/study_entangled/layer-L/SET/          aff and SSAE on the entangled table
    models/study_overcomplete/layer-L/SET/mM/    aff and SSAE with M = factor x n
    metrics/NAME.json, metrics/REPORT.md         metrics and the report
    metrics/plots/NAME.csv                       plot tables
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssae_core.lm.layers import Layer, layer_folder, layer_name

METHODS = ("ssae", "aff")


def lr_folder(lr: float) -> str:
    """The grid folder of one learning rate: ``lr-0.003``."""
    return f"lr-{lr:g}"


@dataclass(frozen=True)
class StudyLayout:
    """Every path of the pipeline under ``root``."""

    root: Path

    def relative(self, path: Path) -> str:
        """``path`` as metrics files record it: relative to the root, with forward slashes."""
        return Path(path).relative_to(self.root).as_posix()

    # data
    def pairs(self, name: str) -> Path:
        return self.root / "data" / "pairs" / f"{name}.parquet"

    @property
    def mc_table(self) -> Path:
        return self.root / "data" / "truthfulqa" / "mc.parquet"

    def extraction(self, name: str) -> Path:
        """The extraction folder of a set: one ``layer-L`` table per layer."""
        return self.root / "data" / "embeddings" / name

    def embeddings(self, name: str, layer: Layer) -> Path:
        return layer_folder(self.extraction(name), layer)

    def entangled(self, name: str, layer: Layer) -> Path:
        return layer_folder(self.root / "data" / "entangled", layer) / f"{name}.parquet"

    def synthetic(self, name: str) -> Path:
        return self.root / "data" / "synthetic" / f"{name}.parquet"

    # models
    @property
    def lm(self) -> Path:
        return self.root / "models" / "lm"

    @property
    def synthetic_models(self) -> Path:
        return self.root / "models" / "synthetic"

    def study_models(self, name: str, layer: Layer) -> Path:
        return layer_folder(self.root / "models" / "study", layer) / name

    def grid_run(self, name: str, layer: Layer, lr: float) -> Path:
        return self.study_models(name, layer) / "grid" / lr_folder(lr)

    def aff_run(self, name: str, layer: Layer) -> Path:
        return self.study_models(name, layer) / "aff"

    def entangled_models(self, name: str, layer: Layer) -> Path:
        return layer_folder(self.root / "models" / "study_entangled", layer) / name

    def overcomplete_models(self, name: str, layer: Layer) -> Path:
        return layer_folder(self.root / "models" / "study_overcomplete", layer) / name

    # metrics
    def metrics(self, name: str) -> Path:
        return self.root / "metrics" / f"{name}.json"

    def plot(self, name: str) -> Path:
        return self.root / "metrics" / "plots" / f"{name}.csv"

    def figure(self, name: str) -> Path:
        return self.root / "metrics" / "figures" / f"{name}.png"

    @property
    def report(self) -> Path:
        return self.root / "metrics" / "REPORT.md"

    @staticmethod
    def latent_folder(latent_dim: int) -> str:
        """The folder of one latent size inside a synthetic or overcompleteness run: ``m10``."""
        return f"m{latent_dim}"

    def at(self, layer: Layer) -> LayerLayout:
        """The paths of one layer's part of the study."""
        return LayerLayout(self, layer)


@dataclass(frozen=True)
class LayerLayout:
    """:class:`StudyLayout` with the layer fixed: ``at.embeddings(name)``, ``at.grid_run(name,
    lr)``...; paths that do not depend on the layer come from the base layout."""

    base: StudyLayout
    layer: Layer

    @property
    def root(self) -> Path:
        return self.base.root

    @property
    def key(self) -> str:
        """How metrics files name this layer: ``15`` or ``final``."""
        return layer_name(self.layer)

    def __getattr__(self, name: str) -> object:
        """Everything that does not depend on the layer (pairs, metrics, lm...): the base's.
        (Not ``base`` itself: a copy rebuilt in a worker process has no fields yet.)"""
        if name.startswith("__") or name in ("base", "layer"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def embeddings(self, name: str) -> Path:
        return self.base.embeddings(name, self.layer)

    def entangled(self, name: str) -> Path:
        return self.base.entangled(name, self.layer)

    def study_models(self, name: str) -> Path:
        return self.base.study_models(name, self.layer)

    def grid_run(self, name: str, lr: float) -> Path:
        return self.base.grid_run(name, self.layer, lr)

    def aff_run(self, name: str) -> Path:
        return self.base.aff_run(name, self.layer)

    def entangled_models(self, name: str) -> Path:
        return self.base.entangled_models(name, self.layer)

    def overcomplete_models(self, name: str) -> Path:
        return self.base.overcomplete_models(name, self.layer)
