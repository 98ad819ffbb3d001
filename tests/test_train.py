from dataclasses import replace

import numpy as np
import pytest
import torch

from ssae_core import train as train_mod
from ssae_core.errors import InputError
from ssae_core.metrics import mcc
from ssae_core.model import StackedSSAE
from ssae_core.synthetic import SynthConfig, make_synthetic
from ssae_core.train import TrainConfig, train

FAST = {"epochs": 3, "min_steps": 0, "patience": 0, "settle_tol": 0.0, "batch_size": 64}


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(SynthConfig(num_concepts=3, max_changes=2, dim=16, num_pairs=1500))


def _weights(result, k):
    return {n: p.detach().clone() for n, p in result.models[k].net.state_dict().items()}


@pytest.mark.parametrize("method", ["ssae", "aff"])
def test_stacked_equals_separate_runs(synth, method):
    delta = synth.subset("train").delta
    stacked = train(
        delta, TrainConfig(method=method, latent_dim=4, seeds=(0, 1, 2), **FAST), progress=False
    )
    for k, seed in enumerate((0, 1, 2)):
        alone = train(
            delta, TrainConfig(method=method, latent_dim=4, seeds=(seed,), **FAST), progress=False
        )
        for name, value in _weights(alone, 0).items():
            torch.testing.assert_close(_weights(stacked, k)[name], value, atol=2e-5, rtol=1e-4)
        assert stacked.models[k].record.multiplier == pytest.approx(
            alone.models[0].record.multiplier, abs=1e-6
        )


def test_same_seed_gives_identical_weights(synth):
    delta = synth.subset("train").delta
    cfg = TrainConfig(latent_dim=3, seeds=(4,), **FAST)
    a, b = train(delta, cfg, progress=False), train(delta, cfg, progress=False)
    for name, value in _weights(a, 0).items():
        assert torch.equal(value, _weights(b, 0)[name]), name


def test_decoder_rows_unit_norm_after_training(synth):
    result = train(
        synth.subset("train").delta, TrainConfig(latent_dim=6, seeds=(0, 1), **FAST), progress=False
    )
    for model in result.models:
        norms = model.net.W_dec_SMD.detach().norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_gradient_projection_acts_in_both_extragradient_passes(synth, monkeypatch):
    calls = []
    original = StackedSSAE._remove_parallel_grad

    def spy(self, grad):
        projected = original(self, grad)
        w = self.W_dec_SMD.detach()
        calls.append(float((projected * w).sum(-1).abs().max()))
        return projected

    monkeypatch.setattr(StackedSSAE, "_remove_parallel_grad", spy)
    cfg = TrainConfig(
        latent_dim=3,
        seeds=(0,),
        epochs=1,
        min_steps=0,
        patience=0,
        batch_size=len(synth.subset("train")),
    )
    train(
        synth.subset("train").delta,
        cfg,
        progress=False,
    )
    # one batch per epoch, one roll: extrapolation pass + update pass
    assert len(calls) == 2
    assert max(calls) < 1e-5  # no component along any decoder row survives


def test_parallel_component_removed_from_real_gradient():
    net = StackedSSAE(dim=8, latent_dim=3, seeds=[0, 1], x_rms=1.0)
    x = torch.randn(2, 32, 8)
    _, recon = net(x)
    (recon - x).pow(2).sum().backward()
    parallel = (net.W_dec_SMD.grad * net.W_dec_SMD.detach()).sum(-1)
    assert parallel.abs().max() < 1e-5
    assert net.W_dec_SMD.grad.abs().max() > 1e-3


def test_ssae_constraint_active_at_the_end(synth):
    cfg = TrainConfig(latent_dim=3, seeds=(0, 1), sparsity=0.75)
    result = train(synth.subset("train").delta, cfg, progress=False)
    for model in result.models:
        record = model.record
        assert record.multiplier > 0
        assert record.status == "usable"
        assert record.l1 == pytest.approx(0.75, rel=0.1)
    test = synth.subset("test")
    assert min(mcc(m.encode(test.delta), test.shift) for m in result.models) > 0.95


def test_interrupted_training_resumes_to_identical_weights(synth, tmp_path, monkeypatch):
    delta = synth.subset("train").delta
    cfg = TrainConfig(latent_dim=3, seeds=(0, 1), epochs=4, min_steps=0, patience=0)
    reference = train(delta, cfg, progress=False)

    real_evaluate, count = train_mod._evaluate, {"n": 0}

    def interrupt_after_two(*args):
        count["n"] += 1
        if count["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args)

    ckpt = tmp_path / "run.ckpt"
    monkeypatch.setattr(train_mod, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(train_mod, "_evaluate", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(delta, cfg, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    monkeypatch.setattr(train_mod, "_evaluate", real_evaluate)
    resumed = train(delta, cfg, checkpoint=ckpt, progress=False)
    assert not ckpt.exists()
    for k in range(2):
        for name, value in _weights(reference, k).items():
            assert torch.equal(value, _weights(resumed, k)[name]), name
    assert len(resumed.history) == len(reference.history)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "pca"}, "method='pca' is unknown"),
        ({"latent_dim": -1}, "latent_dim=-1"),
        ({"normalize": "batch"}, "normalize='batch'"),
        ({"seeds": ()}, "at least one seed"),
        ({"sparsity": 0.0}, "must be positive"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**kwargs)


def test_layer_normalisation_reports_rescaled_codes(synth):
    cfg = TrainConfig(latent_dim=3, seeds=(0,), normalize="layer", **FAST)
    model = train(synth.subset("train").delta, cfg, progress=False).models[0]
    delta = synth.subset("test").delta
    raw, rescaled = model.encode(delta), model.encode(delta, rescale=True)
    std = delta.std(axis=1)
    np.testing.assert_allclose(rescaled, raw * std[:, None], rtol=1e-3, atol=1e-4)


def test_lr_decay_schedule_and_training():
    from ssae_core.train import decay_factor

    assert [decay_factor(s, 10, 0.0) for s in (0, 9)] == [1.0, 1.0]
    assert [decay_factor(s, 10, 0.5) for s in (0, 4, 5, 7, 9)] == [1.0, 1.0, 1.0, 0.6, 0.2]
    with pytest.raises(InputError, match="lr_decay"):
        TrainConfig(lr_decay=1.0)
    table = make_synthetic(SynthConfig(num_concepts=2, max_changes=1, dim=8, num_pairs=200))
    base = TrainConfig(latent_dim=2, seeds=(0,), epochs=3, min_steps=0, patience=0, batch_size=64)
    plain = train(table.delta, base, progress=False).models[0]
    decayed = train(table.delta, replace(base, lr_decay=0.5), progress=False).models[0]
    assert decayed.config["hyperparameters"]["lr_decay"] == 0.5
    assert not torch.equal(plain.net.W_dec_SMD, decayed.net.W_dec_SMD)
