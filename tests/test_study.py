"""The LLM study's pieces: pair reorientation, the label-free cell selection, its config, the
report's tables, and the expanded reconstruction loss used in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssae_core.config import load_config
from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable
from ssae_core.model import StackedSSAE
from ssae_core.study.config import StudyConfig
from ssae_core.study.report import pm, selection_section, steering_section, table
from ssae_core.study.selection import select_cell


def _table(num: int = 200, dim: int = 6) -> EmbeddingTable:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(num, dim)).astype(np.float32)
    return EmbeddingTable(
        pair_id=np.arange(num, dtype=np.int64),
        split=np.array(["train", "test"] * (num // 2), dtype=object),
        z=z,
        z_tilde=z + 1.0,
        shift=np.ones((num, 1), np.float32),
        concepts=["c"],
    )


def test_reoriented_swaps_a_seeded_fraction_and_negates_the_shift():
    table = _table()
    flipped = table.reoriented(0.5, seed=3)
    back = flipped.shift[:, 0] < 0
    assert 0.35 < back.mean() < 0.65
    np.testing.assert_array_equal(flipped.z[back], table.z_tilde[back])
    np.testing.assert_array_equal(flipped.z_tilde[back], table.z[back])
    np.testing.assert_array_equal(flipped.z[~back], table.z[~back])
    np.testing.assert_allclose(flipped.delta, table.delta * flipped.shift)
    # the same pairs flip in a subset (chosen by pair_id, not by row position)
    test = table.subset("test").reoriented(0.5, seed=3)
    np.testing.assert_array_equal(test.shift, flipped.subset("test").shift)
    assert table.reoriented(0.0, seed=3).shift.min() == 1
    with pytest.raises(InputError, match="fraction"):
        table.reoriented(1.5, seed=0)


def _cell(lr, eps, dec, codes, active=True):
    return {
        "lr": lr,
        "sparsity": eps,
        "active": active,
        "decoder_mcc": {"udr": dec, "mean": dec, "std": 0.0},
        "codes_mcc": {"udr": codes, "mean": codes, "std": 0.0},
        "l1": {"mean": eps, "std": 0.0},
    }


def test_select_cell_takes_the_best_decoder_udr_among_active_cells():
    cells = [
        _cell(1e-3, 0.25, 0.90, 0.9),
        _cell(1e-3, 0.5, 0.99, 0.9, active=False),  # best UDR but the budget never bound
        _cell(3e-3, 0.25, 0.95, 0.8),
        _cell(3e-3, 0.5, 0.9505, 0.95),  # tied on decoder UDR, better codes UDR
    ]
    assert (select_cell(cells)["lr"], select_cell(cells)["sparsity"]) == (3e-3, 0.5)
    tie = [_cell(1e-3, 0.5, 0.9, 0.9), _cell(1e-3, 0.25, 0.9, 0.9)]
    assert select_cell(tie)["sparsity"] == 0.25  # full tie: the sparser model
    inactive = [_cell(1e-3, 0.5, 0.8, 0.9, False), _cell(1e-3, 1.0, 0.7, 0.9, False)]
    assert select_cell(inactive)["sparsity"] == 0.5  # none active: still a choice, by UDR


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"grid": {"sparsity": [], "lr": [1e-3]}}, r"study\.grid\.sparsity"),
        ({"grid": {"sparsity": ["a"]}}, r"study\.grid\.sparsity"),
        ({"grid": {"sparsity": [0.5], "lrs": [1e-3]}}, r"study\.grid: unknown key\(s\) lrs"),
        ({"overcomplete": {"set": "nope", "factors": [1]}}, r"study\.overcomplete\.set"),
        ({"overcomplete": {"factors": [1], "seed": [0]}}, r"study\.overcomplete: unknown"),
        ({"optim": {"stepz": 3}}, r"study\.optim: unknown key\(s\) stepz"),
        ({"lr": float("nan")}, r"study\.lr: nan is not a finite number"),
        ({"latent_factor": "2"}, r"study\.latent_factor: expected int"),
    ],
)
def test_study_config_rejects_bad_values_in_one_line(values, message):
    with pytest.raises(InputError, match=message) as error:
        load_config(StudyConfig, values, "params.yaml:study")
    assert "\n" not in str(error.value)


def test_study_config_builds_fixed_length_train_configs():
    study = load_config(
        StudyConfig, {"optim": {"steps": 40, "dual_lr_ratio": 0.5}}, "params.yaml:study"
    )
    cfg = study.train_config("ssae", lr=0.01, sparsity=[0.5, 1.0])
    assert (cfg.min_steps, cfg.patience, cfg.dual_lr, cfg.sparsities) == (40, 0, 0.005, (0.5, 1.0))


def test_expanded_squared_error_equals_the_direct_residual():
    torch.manual_seed(0)
    net = StackedSSAE(7, 3, [0, 1], x_rms=2.0)
    with torch.no_grad():
        net.b_dec_SD.normal_()
        net.b_enc_SM.normal_()
    x = torch.randn(2, 16, 7) * 3
    codes, sq = net.codes_and_sq_error(x)
    codes_ref, recon = net(x)
    torch.testing.assert_close(codes, codes_ref)
    torch.testing.assert_close(sq, (x - recon).pow(2).sum(-1), rtol=1e-4, atol=1e-4)
    # and the gradients agree
    grads = torch.autograd.grad(sq.sum(), [net.W_enc_SDM, net.b_dec_SD, net.gamma_SM])
    ref = torch.autograd.grad(
        (x - net(x)[1]).pow(2).sum(), [net.W_enc_SDM, net.b_dec_SD, net.gamma_SM]
    )
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_report_tables_render_selection_and_steering():
    assert pm({"mean": 0.5, "std": 0.25}) == "0.500 ± 0.250"
    assert pm(None) == "–"
    assert table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    cell = {**_cell(1e-3, 0.5, 0.9, 0.8), "mcc": {"mean": 0.4, "std": 0.1}}
    udr = {"sets": {"lang": {"selected": cell, "rule": "max UDR", "cells": [cell]}}}
    text = "\n".join(selection_section(udr))
    assert "| **lang** | 0.001 | 0.5 | 0.900 | 0.800 | 0.400 ± 0.100 |" in text
    spread = {"values": [0.6, 0.7], "mean": 0.65, "std_seeds": 0.05}
    method = {"n_concepts": 1, "n_scored": [1, 1], "identity": spread, "steered": spread}
    method["gain"] = spread
    steering = {
        "in_distribution": {"lang": {m: method for m in ("ssae", "aff", "md")}},
        "out_of_distribution": {},
    }
    text = "\n".join(steering_section(steering))
    assert "| lang | ssae | 0.650 | 0.650 ± 0.050 | 0.650 ± 0.050 | – | 1 of 1 | 0.462 |" in text
