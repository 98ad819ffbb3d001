"""The Sparse Shift Autoencoder as one stacked module: S members (seeds or settings) in lockstep.

Shapes in names: S members, B batch, D embedding width, M latents. Every member sees its own batch
(``x_SBD``); parameters are ``[S, ...]`` and all products are batched matmuls, so the sum of the S
member losses gives each member exactly the gradient of a separate run.

Per member (DESIGN section 1):
    u = (x - b_dec) @ W_enc                         affine encoder
    h = c * (gamma * (u - mean_B u) / std_B u + b_enc)   BatchNorm on the codes (running stats
                                                          in eval), c = x_rms / sqrt(M)
The code scale c is a constant, so gamma (initialised at 1) and b_enc are learnt in units of c:
an Adam step of size lr then changes the code scale by a fraction lr, whatever the embedding width
(with gamma in raw units, the codes of a wide model shrink too slowly for the budget to bind).
    x_hat = h @ W_dec + b_dec                       decoder rows (one per latent) at unit L2 norm
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ssae_core.errors import InputError
from ssae_core.io import pair_ids, read_json
from ssae_core.record import RECORD_KEY, MemberRecord
from ssae_core.tensor_files import load_tensors, save_tensors

NORMALIZATIONS = ("global", "layer", "none")
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BN_MOMENTUM = 0.1
BN_EPS = 1e-5


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class Normalizer:
    """Input normalisation of the shifts; its statistics travel with the model.

    ``global``: subtract the training mean shift, divide by one scalar (RMS norm of the centred
    training shifts / sqrt(D)). ``layer``: per-sample layer norm without parameters (the paper's).
    ``none``: identity.
    """

    mode: str
    mean: np.ndarray  # [D]; zeros unless mode == "global"
    scale: float  # 1.0 unless mode == "global"

    @classmethod
    def fit(cls, delta_ND: np.ndarray, mode: str) -> Normalizer:
        if mode not in NORMALIZATIONS:
            raise InputError(
                f"normalize={mode!r} is unknown; use one of {', '.join(NORMALIZATIONS)}"
            )
        dim = delta_ND.shape[1]
        if mode != "global":
            return cls(mode, np.zeros(dim, np.float32), 1.0)
        mean = delta_ND.mean(axis=0, dtype=np.float64)
        centred = delta_ND - mean
        rms = math.sqrt(float((centred.astype(np.float64) ** 2).sum(axis=1).mean()) / dim)
        return cls(mode, mean.astype(np.float32), rms if rms > 0 else 1.0)

    @classmethod
    def from_moments(
        cls, mode: str, mean_D: np.ndarray, sq_deviation: float, count: int
    ) -> Normalizer:
        """The normaliser :meth:`fit` gives, from streamed statistics of the shifts: their mean
        (float64) and the sum over shifts of ||delta - mean||^2 (float64), over ``count`` shifts."""
        if mode not in NORMALIZATIONS:
            raise InputError(
                f"normalize={mode!r} is unknown; use one of {', '.join(NORMALIZATIONS)}"
            )
        dim = len(mean_D)
        if mode != "global":
            return cls(mode, np.zeros(dim, np.float32), 1.0)
        rms = math.sqrt(sq_deviation / count / dim)
        return cls(mode, np.asarray(mean_D, np.float64).astype(np.float32), rms if rms > 0 else 1.0)

    def __call__(self, delta_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised shifts and each sample's scale (to multiply codes back into raw units)."""
        if self.mode == "layer":
            mu = delta_BD.mean(dim=-1, keepdim=True)
            std = delta_BD.var(dim=-1, keepdim=True, unbiased=False).sqrt().clamp_min(1e-12)
            return (delta_BD - mu) / std, std.squeeze(-1)
        mean = torch.as_tensor(self.mean, dtype=delta_BD.dtype, device=delta_BD.device)
        x = (delta_BD - mean) / self.scale
        return x, torch.full(x.shape[:-1], self.scale, dtype=x.dtype, device=x.device)

    def apply_(self, delta_BD: torch.Tensor) -> torch.Tensor:
        """The normalised shifts of :meth:`__call__` (the same values), computed in the memory
        of ``delta_BD`` where the mode allows it (global, none), so that a large buffer of
        shifts is not copied."""
        if self.mode == "layer":
            return self(delta_BD)[0]
        mean = torch.as_tensor(self.mean, dtype=delta_BD.dtype, device=delta_BD.device)
        return delta_BD.sub_(mean).div_(self.scale)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "scale": self.scale}


def check_shifts(delta_ND: np.ndarray, pair_id: np.ndarray, normalize: str, path: object) -> None:
    """Refuse shifts that ``normalize`` cannot handle: with ``layer``, each shift is divided by
    the spread of its own entries, so a shift whose entries are all equal (up to float32
    rounding; z_tilde == z, say) has no direction; the error names those pairs."""
    if normalize != "layer":
        return
    flat = delta_ND.std(axis=1) <= 1e-6 * np.abs(delta_ND).max(axis=1)  # float32 rounding only
    if flat.any():
        raise InputError(
            f"{path}: {int(flat.sum())} shift(s) have all entries equal "
            f"({pair_ids(pair_id, flat)}, e.g. z_tilde == z), which --normalize layer "
            "cannot scale; drop those pairs or use --normalize global"
        )


# --------------------------------------------------------------------------- the stacked module


class Output(NamedTuple):
    codes_SBM: torch.Tensor
    recon_SBD: torch.Tensor


class StackedSSAE(nn.Module):
    """S independent shift autoencoders sharing shapes, trained as one module."""

    def __init__(self, dim: int, latent_dim: int, seeds: list[int], x_rms: float) -> None:
        super().__init__()
        if latent_dim < 1:
            raise InputError(f"latent_dim={latent_dim}: must be at least 1")
        if not seeds:
            raise InputError("seeds: give at least one seed")
        self.dim, self.latent_dim, self.seeds, self.x_rms = dim, latent_dim, list(seeds), x_rms
        weights = [_init_member(dim, latent_dim, seed) for seed in self.seeds]
        num = len(self.seeds)
        self.W_enc_SDM = nn.Parameter(torch.stack([w for w, _ in weights]))
        self.W_dec_SMD = nn.Parameter(torch.stack([w for _, w in weights]))
        self.b_dec_SD = nn.Parameter(torch.zeros(num, dim))
        self.b_enc_SM = nn.Parameter(torch.zeros(num, latent_dim))
        self.gamma_SM = nn.Parameter(torch.ones(num, latent_dim))
        self.code_scale = x_rms / math.sqrt(latent_dim)
        self.register_buffer("running_mean_SM", torch.zeros(num, latent_dim))
        self.register_buffer("running_var_SM", torch.ones(num, latent_dim))
        self._projection_hook = self.W_dec_SMD.register_hook(self._remove_parallel_grad)

    @property
    def num_members(self) -> int:
        return len(self.seeds)

    def _remove_parallel_grad(self, grad_SMD: torch.Tensor) -> torch.Tensor:
        """Drop each decoder row's gradient component along that row (a tensor hook, so it acts
        in both extra-gradient passes; reads the current weights, never a stale storage)."""
        w = self.W_dec_SMD.detach()
        w_unit = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return grad_SMD - (grad_SMD * w_unit).sum(-1, keepdim=True) * w_unit

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Set every decoder row (one per latent) to unit L2 norm."""
        self.W_dec_SMD.data = self.W_dec_SMD.data / self.W_dec_SMD.data.norm(
            dim=-1, keepdim=True
        ).clamp_min(1e-12)

    def encode(self, x_SBD: torch.Tensor) -> torch.Tensor:
        return self._batch_norm(torch.bmm(x_SBD - self.b_dec_SD[:, None, :], self.W_enc_SDM))

    def _batch_norm(self, u_SBM: torch.Tensor) -> torch.Tensor:
        """Batch statistics (updating the running ones) in training, running ones in eval."""
        if self.training:
            mean_SM = u_SBM.mean(dim=1)
            var_SM = u_SBM.var(dim=1, unbiased=False)
            with torch.no_grad():
                n = u_SBM.shape[1]
                unbiased = var_SM * (n / max(n - 1, 1))
                self.running_mean_SM.lerp_(mean_SM, BN_MOMENTUM)
                self.running_var_SM.lerp_(unbiased, BN_MOMENTUM)
        else:
            mean_SM, var_SM = self.running_mean_SM, self.running_var_SM
        scale_SM = self.code_scale * self.gamma_SM / (var_SM + BN_EPS).sqrt()
        shift_SM = self.code_scale * self.b_enc_SM
        return (u_SBM - mean_SM[:, None, :]) * scale_SM[:, None, :] + shift_SM[:, None, :]

    def decode(self, codes_SBM: torch.Tensor) -> torch.Tensor:
        return torch.bmm(codes_SBM, self.W_dec_SMD) + self.b_dec_SD[:, None, :]

    def forward(self, x_SBD: torch.Tensor) -> Output:
        codes = self.encode(x_SBD)
        return Output(codes, self.decode(codes))

    def codes_and_sq_error(self, x_SBD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [S, B, M] and squared reconstruction errors ||x - x_hat||^2 [S, B].

        Equal to ``forward`` followed by the residual. Two forms compute it, chosen by shape
        (:func:`uses_gram_form`): the expanded one (:meth:`_expanded_sq_error`) never builds an
        [S, B, D] tensor that needs gradients, at the cost of the M x M Gram matrix of the
        decoder, so it pays when M is small next to the batch; the direct one decodes.
        """
        num, batch, dim = x_SBD.shape
        if uses_gram_form(self.latent_dim, batch, dim, num):
            return self._expanded_sq_error(x_SBD)
        return self._direct_sq_error(x_SBD)

    def _direct_sq_error(self, x_SBD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode (b_dec's offset as its own product: no gradient w.r.t. the batch), decode and
        take the residual."""
        offset_S1M = torch.bmm(self.b_dec_SD[:, None, :], self.W_enc_SDM)
        codes_SBM = self._batch_norm(torch.bmm(x_SBD, self.W_enc_SDM) - offset_S1M)
        residual_SBD = torch.baddbmm(self.b_dec_SD[:, None, :], codes_SBM, self.W_dec_SMD) - x_SBD
        return codes_SBM, residual_SBD.square().sum(-1)

    def _expanded_sq_error(self, x_SBD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """With x_hat = h W_dec + b the error expands to
        ||x||^2 + h G h^T + ||b||^2 - 2 h (W_dec x) - 2 x.b + 2 h (W_dec b), G = W_dec W_dec^T,
        so one batched product of x with [W_enc | W_dec^T | b] carries every D-wide term and
        training is bound by that product, not by memory traffic."""
        m = self.latent_dim
        b_dec_SD1 = self.b_dec_SD[:, :, None]
        proj_SBK = torch.bmm(
            x_SBD, torch.cat([self.W_enc_SDM, self.W_dec_SMD.transpose(1, 2), b_dec_SD1], dim=2)
        )
        x_enc_SBM, x_dec_SBM = proj_SBK[..., :m], proj_SBK[..., m : 2 * m]
        x_b_SB = proj_SBK[..., -1]
        offset_S1M = torch.bmm(self.b_dec_SD[:, None, :], self.W_enc_SDM)
        codes_SBM = self._batch_norm(x_enc_SBM - offset_S1M)
        gram_SMM = torch.bmm(self.W_dec_SMD, self.W_dec_SMD.transpose(1, 2))
        dec_b_SM = torch.bmm(self.W_dec_SMD, b_dec_SD1)[..., 0]
        with torch.no_grad():
            x_sq_SB = torch.linalg.vector_norm(x_SBD, dim=-1).square()
        sq_SB = (
            x_sq_SB
            + (torch.bmm(codes_SBM, gram_SMM) * codes_SBM).sum(-1)
            + self.b_dec_SD.square().sum(-1)[:, None]
            - 2 * (codes_SBM * (x_dec_SBM - dec_b_SM[:, None, :])).sum(-1)
            - 2 * x_b_SB
        )
        return codes_SBM, sq_SB.clamp_min(0.0)

    def member(self, index: int) -> StackedSSAE:
        """A stand-alone copy of one member (a stack of one)."""
        single = StackedSSAE(self.dim, self.latent_dim, [self.seeds[index]], self.x_rms)
        with torch.no_grad():
            for mine, theirs in zip(
                self.state_dict().values(), single.state_dict().values(), strict=True
            ):
                theirs.copy_(mine[index : index + 1])
        return single


GRAM_LATENTS_PER_ROW = 0.5
GRAM_MIN_ELEMENTS = 2**19
"""The expanded squared error is used while M <= GRAM_LATENTS_PER_ROW x B and the batch holds at
least GRAM_MIN_ELEMENTS numbers (S x B x D). Measured on 2 CPU cores by
benchmarks/bench_sq_error.py: its Gram matrix costs M^2 D per member, the direct form's residual
S B D of memory traffic, which is cheap while it fits in cache (D = 64: the direct form is
1.2-1.5x faster; D = 576, B = 64, M <= 2: the expanded one is 2x faster; cat's M = 135: the
direct one is 1.8x faster)."""


def uses_gram_form(latent_dim: int, batch: int, dim: int, members: int) -> bool:
    """Whether :meth:`StackedSSAE.codes_and_sq_error` takes the expanded (Gram) form for M
    latents, a batch of B rows of width D and S members."""
    return latent_dim <= GRAM_LATENTS_PER_ROW * batch and members * batch * dim >= GRAM_MIN_ELEMENTS


def _init_member(dim: int, latent_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder like nn.Linear's default; decoder = row-normalised transpose of the encoder."""
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(dim)
    w_enc_DM = torch.empty(dim, latent_dim).uniform_(-bound, bound, generator=gen)
    w_dec_MD = w_enc_DM.T.clone()
    w_dec_MD /= w_dec_MD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return w_enc_DM, w_dec_MD


# --------------------------------------------------------------------------- one trained model


@dataclass
class ShiftAutoencoder:
    """One trained member with its normalisation: what is saved, loaded and used downstream."""

    net: StackedSSAE  # a stack of one
    normalizer: Normalizer
    config: dict

    @property
    def record(self) -> MemberRecord:
        """The typed training record of this member (budget, L1 measures, status, steps)."""
        return MemberRecord.from_dict(
            self.config.get(RECORD_KEY), f"model of seed {self.config['seed']}"
        )

    @property
    def steering_vectors(self) -> np.ndarray:
        """Decoder rows mapped back to raw embedding units, unit-normalised: [M, D]."""
        w = self.net.W_dec_SMD.detach()[0].numpy().astype(np.float64) * self.normalizer.scale
        return (w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)).astype(np.float32)

    @torch.no_grad()
    def encode(self, delta_ND: np.ndarray, *, rescale: bool = False) -> np.ndarray:
        """Codes [N, M] of raw shifts; ``rescale`` multiplies them by each sample's norm scale."""
        self.net.eval()
        x_ND, scale_N = self.normalizer(torch.as_tensor(delta_ND, dtype=torch.float32))
        codes = self.net.encode(x_ND[None])[0]
        if rescale:
            codes = codes * scale_N[:, None]
        return codes.numpy()

    @torch.no_grad()
    def reconstruct(self, delta_ND: np.ndarray) -> np.ndarray:
        """The model's reconstruction of raw shifts, in raw units (global/none normalisation)."""
        self.net.eval()
        x_ND, scale_N = self.normalizer(torch.as_tensor(delta_ND, dtype=torch.float32))
        recon = self.net(x_ND[None]).recon_SBD[0] * scale_N[:, None]
        if self.normalizer.mode == "global":
            recon = recon + torch.as_tensor(self.normalizer.mean)
        return recon.numpy()

    def save(self, folder: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (which must exist)."""
        folder = Path(folder)
        tensors = {k: v[0].contiguous() for k, v in self.net.state_dict().items()}
        tensors["norm_mean_D"] = torch.as_tensor(self.normalizer.mean)
        save_tensors(tensors, folder / MODEL_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> ShiftAutoencoder:
        """Read a model folder written by :meth:`save`; anything that does not fit is an
        :class:`InputError` naming the file."""
        folder = Path(folder)
        if not (folder / MODEL_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise InputError(
                f"{folder}: not a model folder (needs {MODEL_FILE} and {CONFIG_FILE}); "
                "give a folder written by `ssae train`"
            )
        config = _checked_config(read_json(folder / CONFIG_FILE), folder / CONFIG_FILE)
        tensors, _ = load_tensors(folder / MODEL_FILE, fix="re-run ssae train")
        dim, latent_dim = config["dim"], config["latent_dim"]
        norm = config["normalization"]
        mean = tensors.pop("norm_mean_D", None)
        expected = {**member_shapes(dim, latent_dim), "norm_mean_D": (dim,)}
        found = {name: tuple(t.shape) for name, t in tensors.items()}
        found["norm_mean_D"] = None if mean is None else tuple(mean.shape)
        names = sorted(expected.keys() | found.keys())
        wrong = [name for name in names if expected.get(name) != found.get(name)]
        if wrong:
            raise InputError(
                f"{folder / MODEL_FILE}: tensor {wrong[0]} is missing, extra or of the wrong "
                f"shape for {CONFIG_FILE} (dim {dim}, latent_dim {latent_dim}); the two files do "
                "not belong together: re-run ssae train"
            )
        if not all(torch.isfinite(t).all() for t in (*tensors.values(), mean)):
            raise InputError(f"{folder / MODEL_FILE}: holds NaN or inf weights; re-run ssae train")
        normalizer = Normalizer(norm["mode"], mean.numpy(), norm["scale"])
        net = StackedSSAE(dim, latent_dim, [config["seed"]], config["x_rms"])
        net.load_state_dict({k: v[None] for k, v in tensors.items()})
        net.eval()
        return cls(net, normalizer, config)


def member_shapes(dim: int, latent_dim: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of one member (a stack of one, without the member axis)."""
    with torch.device("meta"):
        net = StackedSSAE(dim, latent_dim, [0], 1.0)
    return {name: tuple(t.shape[1:]) for name, t in net.state_dict().items()}


CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "dim": (int,),
    "latent_dim": (int,),
    "seed": (int,),
    "x_rms": (int, float),
    "normalization": (dict,),
}


def _checked_config(config: object, path: Path) -> dict:
    """A model's config.json, with the keys loading needs present and of the right type."""
    if not isinstance(config, dict):
        raise InputError(f"{path}: must hold a JSON object; re-run ssae train")
    for key, types in CONFIG_TYPES.items():
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            raise InputError(f"{path}: key {key!r} is missing or not a {types[0].__name__}")
    norm = config["normalization"]
    scale = norm.get("scale")
    if norm.get("mode") not in NORMALIZATIONS or not isinstance(scale, int | float):
        raise InputError(
            f"{path}: 'normalization' needs a mode ({', '.join(NORMALIZATIONS)}) and a scale"
        )
    if (
        config["dim"] < 1
        or config["latent_dim"] < 1
        or not (math.isfinite(config["x_rms"]) and math.isfinite(scale) and scale > 0)
    ):
        raise InputError(
            f"{path}: dim and latent_dim must be >= 1, x_rms and normalization.scale finite"
        )
    return config
