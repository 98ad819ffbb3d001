"""Where every file of the pipeline lives: one :class:`StudyLayout`, its root passed in.

Paths are built from the root the caller gives (the stages pass the project root); metrics files
record them relative to the root (:meth:`StudyLayout.relative`), so results do not depend on where
the checkout sits::

    data/pairs/SET.parquet                       pair tables
    data/truthfulqa/mc.parquet                   TruthfulQA multiple-choice table
    data/embeddings/SET/shard-*.parquet          LM embeddings
    data/entangled/SET.parquet                   the same, mixed by a dense invertible map
    data/synthetic/NAME.parquet                  synthetic tables (and NAME_ent.parquet)
    models/lm/                                   the prepared language model
    models/synthetic/NAME/METHOD/mM/             synthetic runs, one per latent size M
    models/study/SET/grid/lr-LR/eps-EPS_seed-S/  SSAE grid, one stacked run per learning rate
    models/study/SET/aff/seed-S/                 the aff baseline
    models/study_entangled/SET/{ssae,aff}/       the same on the entangled table
    models/study_overcomplete/SET/mM/            SSAE with M = factor x (number of concepts)
    metrics/NAME.json, metrics/REPORT.md         metrics and the report
    metrics/plots/NAME.csv                       plot tables
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    def embeddings(self, name: str) -> Path:
        return self.root / "data" / "embeddings" / name

    def entangled(self, name: str) -> Path:
        return self.root / "data" / "entangled" / f"{name}.parquet"

    def synthetic(self, name: str) -> Path:
        return self.root / "data" / "synthetic" / f"{name}.parquet"

    # models
    @property
    def lm(self) -> Path:
        return self.root / "models" / "lm"

    @property
    def synthetic_models(self) -> Path:
        return self.root / "models" / "synthetic"

    def study_models(self, name: str) -> Path:
        return self.root / "models" / "study" / name

    def grid_run(self, name: str, lr: float) -> Path:
        return self.study_models(name) / "grid" / lr_folder(lr)

    def aff_run(self, name: str) -> Path:
        return self.study_models(name) / "aff"

    def entangled_models(self, name: str) -> Path:
        return self.root / "models" / "study_entangled" / name

    def overcomplete_models(self, name: str) -> Path:
        return self.root / "models" / "study_overcomplete" / name

    # metrics
    def metrics(self, name: str) -> Path:
        return self.root / "metrics" / f"{name}.json"

    def plot(self, name: str) -> Path:
        return self.root / "metrics" / "plots" / f"{name}.csv"

    @property
    def report(self) -> Path:
        return self.root / "metrics" / "REPORT.md"

    @staticmethod
    def latent_folder(latent_dim: int) -> str:
        """The folder of one latent size inside a synthetic or overcompleteness run: ``m10``."""
        return f"m{latent_dim}"
