"""Synthetic shift data with known ground truth: synth(n, k) and its entangled variant.

z ~ N(0, I_D); d_c has a support of size uniform in 1..k at random positions with values
Uniform(-1, 1) (or Uniform(0, 1) for the paper's non-negative variant); z~ = z + A d_c with a dense
Gaussian A (D x n). The entangled variant applies a fixed dense invertible D x D map to z and z~.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssae_core.errors import InputError, require_finite, require_memory
from ssae_core.io import EmbeddingTable, safe_output, stamped, write_table_file

SYNTH_COMMAND = "synth"

VALUE_DISTRIBUTIONS = ("uniform", "nonneg", "gaussian")


@dataclass
class SynthConfig:
    """One synthetic data set (mirrors an entry of params.yaml ``synthetic.settings``)."""

    num_concepts: int
    """n: number of concepts (columns of A); range: [1, dim]."""
    max_changes: int
    """k: each pair changes between 1 and k concepts; range: [1, concepts]."""
    dim: int = 64
    """D: embedding width; range: [concepts, inf)."""
    num_pairs: int = 5000
    """Number of pairs; range: [10, inf)."""
    test_fraction: float = 0.2
    """Share of the pairs in the test split; range: (0, 1)."""
    values: str = "uniform"
    """Distribution of the non-zero shift values: uniform (-1, 1), nonneg (0, 1) or gaussian."""
    noise: float = 0.0
    """Std of isotropic Gaussian noise added to z~, relative to the mean shift norm; range:
    [0, inf)."""
    seed: int = 0
    """Seed of A, the shifts and the split; range: [0, inf)."""

    def __post_init__(self) -> None:
        if self.num_concepts < 1:
            raise InputError(f"synthetic: num_concepts={self.num_concepts} must be >= 1")
        if not 1 <= self.max_changes <= self.num_concepts:
            raise InputError(
                f"synthetic: max_changes={self.max_changes} must be in 1..num_concepts "
                f"({self.num_concepts})"
            )
        if self.dim < self.num_concepts:
            raise InputError(f"synthetic: dim={self.dim} must be >= num_concepts (A is injective)")
        if self.values not in VALUE_DISTRIBUTIONS:
            raise InputError(
                f"synthetic: values={self.values!r}; use one of {', '.join(VALUE_DISTRIBUTIONS)}"
            )
        if self.num_pairs < 10 or not 0 < self.test_fraction < 1:
            raise InputError("synthetic: need num_pairs >= 10 and 0 < test_fraction < 1")
        require_finite("synthetic: ", noise=self.noise)
        if self.noise < 0:
            raise InputError(f"synthetic: noise={self.noise} must be >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"synthetic: seed={self.seed!r} must be an integer >= 0")
        require_memory(
            8
            * (
                self.num_pairs * (4 * self.dim + 2 * self.num_concepts)
                + self.dim * self.num_concepts
            ),
            f"synthetic data of {self.num_pairs} pairs x dim {self.dim}",
            "lower --pairs or --dim",
        )

    @property
    def name(self) -> str:
        return f"synth_{self.num_concepts}_{self.max_changes}"


def sample_shifts(cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Sparse concept shifts d_c: [num_pairs, n]."""
    n = cfg.num_concepts
    shifts = np.zeros((cfg.num_pairs, n), dtype=np.float64)
    sizes = rng.integers(1, cfg.max_changes + 1, size=cfg.num_pairs)
    for i, size in enumerate(sizes):
        support = rng.choice(n, size=size, replace=False)
        if cfg.values == "uniform":
            vals = rng.uniform(-1.0, 1.0, size)
        elif cfg.values == "nonneg":
            vals = rng.uniform(0.0, 1.0, size)
        else:
            vals = rng.standard_normal(size)
        shifts[i, support] = vals
    return shifts


def random_invertible(
    dim: int, rng: np.random.Generator, max_condition: float = 10.0
) -> np.ndarray:
    """A dense, well-conditioned invertible D x D matrix U diag(s) V^T, s in [1, max_condition]."""
    u, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    v, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    singular = np.exp(rng.uniform(0.0, np.log(max_condition), dim))
    return (u * singular) @ v.T


def make_synthetic(cfg: SynthConfig) -> EmbeddingTable:
    """A synthetic embedding table with the ground-truth shift in ``shift``."""
    rng = np.random.default_rng(cfg.seed)
    mixing_DN = rng.standard_normal((cfg.dim, cfg.num_concepts))
    d_c = sample_shifts(cfg, rng)
    z = rng.standard_normal((cfg.num_pairs, cfg.dim))
    delta = d_c @ mixing_DN.T
    if cfg.noise > 0:
        scale = float(np.linalg.norm(delta, axis=1).mean()) / np.sqrt(cfg.dim)
        delta = delta + cfg.noise * scale * rng.standard_normal(delta.shape)
    split = np.where(rng.random(cfg.num_pairs) < cfg.test_fraction, "test", "train").astype(object)
    return EmbeddingTable(
        pair_id=np.arange(cfg.num_pairs, dtype=np.int64),
        split=split,
        z=z.astype(np.float32),
        z_tilde=(z + delta).astype(np.float32),
        shift=d_c.astype(np.float32),
        concepts=[f"c{i}" for i in range(cfg.num_concepts)],
        metadata={"source": "synthetic", "config": _config_json(cfg)},
    )


def entangle(table: EmbeddingTable, seed: int, max_condition: float = 10.0) -> EmbeddingTable:
    """Apply one seeded dense invertible D x D map to z and z~ (the robustness experiment)."""
    require_memory(
        8 * (4 * table.dim**2 + 3 * len(table) * table.dim),
        f"entangling width {table.dim}",
        "lower the embedding width (--dim)",
    )
    mix = random_invertible(table.dim, np.random.default_rng(seed), max_condition)
    out = table.select(np.ones(len(table), dtype=bool))
    out.z = (table.z.astype(np.float64) @ mix.T).astype(np.float32)
    out.z_tilde = (table.z_tilde.astype(np.float64) @ mix.T).astype(np.float32)
    out.metadata = {**table.metadata, "entangled": f"seed={seed},max_condition={max_condition}"}
    return out


def write_synthetic(
    cfg: SynthConfig, out: str | Path, *, entangled: bool = False, option: str = "out"
) -> EmbeddingTable:
    """``ssae synth``: write synthetic data (entangled: mixed with a map seeded ``cfg.seed + 1``)
    to the Parquet file ``out``, which must be new or an earlier output of ``ssae synth``
    (``option``: how messages name it)."""
    with safe_output(out, SYNTH_COMMAND, kind="file", option=option) as tmp:
        table = make_synthetic(cfg)
        if entangled:
            table = entangle(table, seed=cfg.seed + 1)
        write_table_file(stamped(table.to_arrow(), SYNTH_COMMAND), tmp)
    return table


def _config_json(cfg: SynthConfig) -> str:
    import json
    from dataclasses import asdict

    return json.dumps(asdict(cfg))
