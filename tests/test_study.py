"""The LLM study's pieces: pair reorientation, the label-free cell selection, its config, the
report's tables, and the expanded reconstruction loss used in training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ssae_core.config import load_config
from ssae_core.errors import InputError
from ssae_core.io import EmbeddingTable
from ssae_core.model import Normalizer, ShiftAutoencoder, StackedSSAE, uses_gram_form
from ssae_core.record import RECORD_KEY, MemberRecord
from ssae_core.study.budgets import Budgets
from ssae_core.study.config import StudyConfig
from ssae_core.study.report import pm, selection_section, steering_section, table
from ssae_core.study.selection import select_cell
from ssae_core.study.usability import admissible, usability


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


def _cell(lr, ratio, dec, codes, usable=True):
    return {
        "lr": lr,
        "budget_ratio": ratio,
        "sparsity": ratio * 0.4,
        "usable": usable,
        "usability": ["usable"] if usable else ["slack"],
        "sensitivity": {"usable": usable},
        "decoder_mcc": {"udr": dec, "mean": dec, "std": 0.0},
        "codes_mcc": {"udr": codes, "mean": codes, "std": 0.0},
        "l1": {"mean": ratio * 0.4, "std": 0.0},
        "multiplier": {"mean": 0.3, "std": 0.0},
    }


def test_select_cell_takes_the_best_decoder_udr_among_usable_cells():
    cells = [
        _cell(1e-3, 0.25, 0.90, 0.9),
        _cell(1e-3, 0.5, 0.99, 0.9, usable=False),  # best UDR but the budget never bound
        _cell(3e-3, 0.25, 0.95, 0.8),
        _cell(3e-3, 0.5, 0.9505, 0.95),  # tied on decoder UDR, better codes UDR
    ]
    assert (select_cell(cells)["lr"], select_cell(cells)["budget_ratio"]) == (3e-3, 0.5)
    tie = [_cell(1e-3, 0.5, 0.9, 0.9), _cell(1e-3, 0.25, 0.9, 0.9)]
    assert select_cell(tie)["budget_ratio"] == 0.25  # full tie: the sparser model
    unusable = [_cell(1e-3, 0.5, 0.8, 0.9, False), _cell(1e-3, 1.0, 0.7, 0.9, False)]
    assert select_cell(unusable) is None  # never an unusable cell


def _member(
    multiplier: float, l1: float, budget: float | None, settled: bool = True
) -> ShiftAutoencoder:
    net = StackedSSAE(4, 2, [0], x_rms=1.0)
    values = dict.fromkeys(f.name for f in dataclasses.fields(MemberRecord))
    values |= {"method": "aff" if budget is None else "ssae", "seed": 0, "budget": budget}
    values |= {"l1": l1, "multiplier": multiplier, "settled": settled}
    config = {"seed": 0, RECORD_KEY: values}
    return ShiftAutoencoder(net, Normalizer("none", np.zeros(4, np.float32), 1.0), config)


def test_budgets_are_ratios_of_the_aff_l1_and_the_usable_rule():
    aff = [_member(0.0, 0.4, None), _member(0.0, 0.6, None)]
    budgets = Budgets.from_aff(aff, [0.25, 0.5])
    assert budgets.aff_l1 == pytest.approx(0.5)
    assert budgets.budgets == (0.125, 0.25)
    assert usability(_member(0.2, 0.26, 0.25), 0.05) == "usable"  # within 5%
    assert usability(_member(0.2, 0.2, 0.25), 0.05) == "usable"  # sparser: one-sided
    assert usability(_member(0.0, 0.25, 0.25), 0.05) == "slack"
    assert usability(_member(0.2, 0.5, 0.25, settled=False), 0.05) == "not converged"
    assert usability(_member(0.2, 0.5, 0.25, settled=True), 0.05) == "infeasible"
    assert usability(_member(0.2, 0.28, 0.25), 0.05) == "infeasible"
    assert usability(_member(0.2, 0.28, 0.25), 0.15) == "usable"  # the sensitivity tolerance
    assert usability(aff[0], 0.05) == "unconstrained"
    assert admissible("slack", control=True) and not admissible("slack", control=False)
    assert not admissible("infeasible", control=True)
    with pytest.raises(InputError, match="L1"):
        Budgets.from_aff([_member(0.0, 0.0, None)], [0.5])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"grid": {"budget_ratio": [], "lr": [1e-3]}}, r"study\.grid\.budget_ratio"),
        ({"grid": {"budget_ratio": ["a"]}}, r"study\.grid\.budget_ratio"),
        ({"grid": {"budget_ratio": [0.5], "lrs": [1e-3]}}, r"study\.grid: unknown key\(s\) lrs"),
        ({"overcomplete": {"set": "nope", "factors": [1]}}, r"study\.overcomplete\.set"),
        ({"overcomplete": {"factors": [1], "seed": [0]}}, r"study\.overcomplete: unknown"),
        ({"optim": {"stepz": 3}}, r"study\.optim: unknown key\(s\) stepz"),
        ({"lr": float("nan")}, r"study\.lr: nan is not a finite number"),
        ({"latent_factor": "2"}, r"study\.latent_factor: expected int"),
        ({"entangled_sets": ["lang", "mine"]}, r"entangled_sets=.*mine is not one"),
        ({"entangled_sets": []}, r"entangled_sets=\[\]: give one or more sets of study\.sets"),
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


@pytest.mark.parametrize("form", ["_expanded_sq_error", "_direct_sq_error"])
def test_both_squared_error_forms_equal_the_residual_of_forward(form):
    torch.manual_seed(0)
    net = StackedSSAE(7, 3, [0, 1], x_rms=2.0)
    with torch.no_grad():
        net.b_dec_SD.normal_()
        net.b_enc_SM.normal_()
    x = torch.randn(2, 16, 7) * 3
    codes, sq = getattr(net, form)(x)
    codes_ref, recon = net(x)
    torch.testing.assert_close(codes, codes_ref)
    torch.testing.assert_close(sq, (x - recon).pow(2).sum(-1), rtol=1e-4, atol=1e-4)
    # and the gradients agree
    params = [net.W_enc_SDM, net.W_dec_SMD, net.b_dec_SD, net.gamma_SM]
    grads = torch.autograd.grad(sq.sum(), params)
    ref = torch.autograd.grad((x - net(x)[1]).pow(2).sum(), params)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_the_squared_error_form_follows_the_measured_rule():
    # benchmarks/bench_sq_error.py: expanded for few latents on wide batches, direct for
    # many latents (cat: M = 135, B = 64) and for narrow embeddings (the synthetic D = 64)
    assert uses_gram_form(1, 64, 576, 15)
    assert not uses_gram_form(135, 64, 576, 15)
    assert not uses_gram_form(20, 256, 64, 5)
    net = StackedSSAE(576, 135, [0], x_rms=1.0)
    x = torch.randn(1, 64, 576)
    torch.testing.assert_close(net.codes_and_sq_error(x)[1], net._direct_sq_error(x)[1])


def test_report_tables_render_selection_and_steering():
    assert pm({"mean": 0.5, "std": 0.25}) == "0.500 ± 0.250"
    assert pm(None) == "–"
    assert table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    cell = {**_cell(1e-3, 0.5, 0.9, 0.8), "mcc": {"mean": 0.4, "std": 0.1}}
    bad = _cell(3e-3, 0.5, 0.95, 0.8, usable=False)
    udr = {"sets": {"lang": {"selected": cell, "rule": "max UDR", "cells": [cell, bad]}}}
    text = "\n".join(selection_section(udr))
    assert "| **lang** | 0.001 | 0.5 | 0.200 | 0.900 | 0.800 | 0.400 ± 0.100 |" in text
    assert (
        "| lang | 0.003 | 0.5 | 0.200 | 0.950 | 0.800 | – | 0.200 ± 0.000 | 0.300 ± 0.000 | "
        "slack |" in text
    )
    none = {"sets": {"lang": {"selected": None, "rule": "max UDR", "cells": [bad]}}}
    assert "no usable cell" in "\n".join(selection_section(none))
    spread = {"values": [0.6, 0.7], "mean": 0.65, "std_seeds": 0.05}
    method = {"n_concepts": 1, "n_scored": [1, 1], "identity": spread, "steered": spread}
    method["gain"] = spread
    steering = {
        "in_distribution": {"lang": {m: method for m in ("ssae", "aff", "md")}},
        "out_of_distribution": {},
    }
    text = "\n".join(steering_section(steering))
    assert "| lang | ssae | 0.650 | 0.650 ± 0.050 | 0.650 ± 0.050 | – | 1 of 1 | 0.462 |" in text


def _synthetic_runs(tmp_path, workers: int):
    from ssae_core.study.config import load_synthetic_runs
    from ssae_core.study.synthetic_training import SyntheticJob, train_synthetic_jobs
    from ssae_core.synthetic import SynthConfig, write_synthetic

    data = tmp_path / "data.parquet"
    if not data.exists():
        write_synthetic(SynthConfig(3, 2, dim=8, num_pairs=200, seed=0), data)
    values = {"seeds": [0, 1], "epochs": 3, "min_steps": 0, "patience": 0, "batch_size": 32}
    runs = load_synthetic_runs({**values, "workers": workers, "require_active": False}, "ssae")
    out = tmp_path / f"workers-{workers}"
    train_synthetic_jobs([SyntheticJob(data, out, runs)])
    return out


def test_synthetic_latent_sizes_in_worker_processes_give_the_same_runs(tmp_path):
    one, two = _synthetic_runs(tmp_path, 1), _synthetic_runs(tmp_path, 2)
    files = sorted(p.relative_to(one) for p in one.rglob("model.safetensors"))
    assert [str(f) for f in files] == [
        f"m{m}/seed-{s}/model.safetensors" for m in (3, 6) for s in (0, 1)
    ]
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert not list(tmp_path.glob(".workers-*"))  # no checkpoint or partial folder is left


def test_synthetic_workers_must_be_a_positive_integer():
    from ssae_core.study.config import load_synthetic_runs

    for bad in (0, 1.5, True):
        with pytest.raises(InputError, match="workers"):
            load_synthetic_runs({"workers": bad}, "ssae")


def test_a_slack_member_is_admissible_on_a_control_set_only():
    """The one-concept control path: at a budget ratio around 1 the constraint may not bind
    (slack); on a control set that is SSAE = aff, a valid outcome, and the cell can be
    selected; on a multi-concept set it cannot."""
    from ssae_core.study.selection import SENSITIVITY, score_ssae

    members = [_member(0.0, 0.5, 0.55), _member(0.1, 0.55, 0.55)]
    for member in members:
        member.config[RECORD_KEY] |= {"budget_ratio": 1.0}
        member.record  # noqa: B018  (a complete record)
    test = _table(dim=4).reoriented(0.5, seed=3).subset("test")
    control = score_ssae(members, test, (0.05, 0.15), control=True)
    assert control["usability"] == ["slack", "usable"]
    assert control["usable"] and control[SENSITIVITY]["usable"]
    assert not score_ssae(members, test, (0.05, 0.15), control=False)["usable"]
