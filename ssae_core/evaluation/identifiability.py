"""Identifiability of a trained run: MCC against known shifts, cross-seed MCC, UDR."""

from __future__ import annotations

import numpy as np

from ssae_core.io import EmbeddingTable
from ssae_core.metrics import mcc, pairwise, summary, udr, vector_mcc
from ssae_core.model import ShiftAutoencoder


def score_run(models: list[ShiftAutoencoder], test: EmbeddingTable) -> dict:
    """Identifiability scores of the members of one run on held-out pairs.

    - ``mcc``: codes vs the true concept shifts, per seed (only if the table has ``shift`` that
      varies); for layer normalisation also ``mcc_rescaled`` (codes x per-sample std).
    - ``decoder_mcc`` / ``codes_mcc``: pairwise MCC across seeds of decoder rows (the paper's
      Table 2) and of held-out codes, each with its ``udr`` (median of the pairwise values).
    """
    delta = test.delta
    codes = [m.encode(delta) for m in models]
    out: dict = {"seeds": [m.config["seed"] for m in models], "num_test_pairs": len(test)}
    if test.shift is not None and np.ptp(test.shift, axis=0).max() > 0:
        out["mcc"] = summary([mcc(c, test.shift) for c in codes])
        if models[0].normalizer.mode == "layer":
            rescaled = [m.encode(delta, rescale=True) for m in models]
            out["mcc_rescaled"] = summary([mcc(c, test.shift) for c in rescaled])
    decoders = [m.net.W_dec_SMD.detach()[0].numpy() for m in models]
    dec_pairs = pairwise(decoders, vector_mcc)
    code_pairs = pairwise(codes, mcc)
    out["decoder_mcc"] = {**summary(dec_pairs), "udr": round(udr(dec_pairs), 6)}
    out["codes_mcc"] = {**summary(code_pairs), "udr": round(udr(code_pairs), 6)}
    out["multiplier"] = summary([m.config["final"]["multiplier"] for m in models])
    out["l1"] = summary([m.config["final"]["val_l1"] for m in models])
    return out
