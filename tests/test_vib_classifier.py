"""Deep VIB classifier: shapes, the objective it trains, that training lowers it, the sweep artifact, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from localrank_utils.data import load_split
from localrank_utils.models import MLP
from localrank_utils.profiles import resolve
from localrank_utils.rank import jacobians, local_rank
from localrank_utils.train import Split
from localrank_utils.vib import diagonal_gaussian_kl_to_standard, gaussian_kl
from localrank_utils.vib_classifier import (VIBClassifier, VIBSpec, evaluate, fit, load_sweep, mean_map_jacobian,
                                            mean_map_singular_values, run_sweep, save_sweep, sweep_arrays, sweep_specs,
                                            vib_loss)


@pytest.fixture(scope="module")
def mnist_small():
    return load_split("mnist", "train", n=600, seed=1)


def test_shapes_and_probabilities():
    model = VIBClassifier(784, (64, 48), 8, 10, n_decoder_samples=5, seed=0)
    x = torch.rand(7, 784)
    mean, log_var = model.encode(x)
    assert mean.shape == log_var.shape == (7, 8)
    assert model.sample(mean, log_var, 3).shape == (3, 7, 8)
    for training in (True, False):
        model.train(training)
        logp = model(x)
        assert logp.shape == (7, 10)
        torch.testing.assert_close(logp.exp().sum(-1), torch.ones(7))
    # The mean map is a plain MLP, so local rank takes the closed-form path, 784 -> K.
    assert isinstance(model.mean_map, MLP) and model.mean_map.widths == (784, 64, 48, 8)
    assert local_rank(model.mean_map, x, 0.01).mean.shape == (3, 1)
    assert [p.shape for p in model.preactivations(x)] == [(7, 64), (7, 48), (7, 8)]


def test_mean_map_jacobian_and_whitening_match_autograd():
    model = VIBClassifier(784, (32, 32), 6, 10, seed=3, activation="tanh")
    x = torch.rand(5, 784, dtype=torch.float64)
    model = model.double()
    jac = mean_map_jacobian(model.mean_map, x)
    by_autograd = torch.stack([torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0][0], xi) for xi in x])
    torch.testing.assert_close(jac, by_autograd)
    torch.testing.assert_close(jac, jacobians(model.mean_map, x, method="torch_func")[-1])
    svals, white = mean_map_singular_values(model, x)
    sigma = model.encode(x)[1].mul(0.5).exp()
    torch.testing.assert_close(white, torch.linalg.svdvals(by_autograd / sigma.unsqueeze(-1)))
    torch.testing.assert_close(svals, torch.linalg.svdvals(by_autograd))


def test_loss_is_cross_entropy_plus_beta_times_the_kl_in_nats():
    model = VIBClassifier(784, (32,), 4, 10, seed=0)
    x, y = torch.rand(16, 784), torch.randint(0, 10, (16,))
    mean, log_var = model.encode(x)
    kl = diagonal_gaussian_kl_to_standard(mean, log_var)
    # The diagonal closed form agrees with the general Gaussian KL to the prior N(0, I).
    general = gaussian_kl(mean, torch.diag_embed(log_var.mul(0.5).exp()), torch.zeros(4), torch.eye(4))
    torch.testing.assert_close(kl, general, rtol=1e-5, atol=1e-5)
    torch.manual_seed(7)
    noise_draw = model.sample(mean, log_var, 1)[0]
    expected_ce = nn.functional.cross_entropy(model.decoder(noise_draw), y)
    for beta in (1e-3, 0.5, 4.0):
        torch.manual_seed(7)  # the same draw of T as above
        loss = vib_loss(beta)(model, x, y)
        torch.testing.assert_close(loss, expected_ce + beta * kl.mean())
    # evaluate()'s rate is the mean per-sample KL.
    assert evaluate(model, Split(x, y))["rate"] == pytest.approx(float(kl.mean().detach()), rel=1e-5)


def test_training_lowers_the_objective_and_learns(mnist_small):
    x, y = mnist_small
    model = VIBClassifier(784, (64,), 8, 10, seed=0)
    split = Split(x, y)
    with torch.no_grad():
        before = float(vib_loss(1e-3)(model, x, y))
    losses = fit(model, split, beta_vib=1e-3, steps=150, batch_size=50, lr=1e-3, seed=0)
    with torch.no_grad():
        after = float(vib_loss(1e-3)(model, x, y))
    assert after < 0.5 * before and np.mean(losses[-10:]) < np.mean(losses[:10])
    assert evaluate(model, split)["accuracy"] > 0.7  # chance is 0.1


def test_a_strong_bottleneck_compresses(mnist_small):
    """Large β_VIB drives the rate (KL) towards 0; small β_VIB leaves it large."""
    x, y = mnist_small
    rates = {}
    for beta in (1e-4, 3.0):
        model = VIBClassifier(784, (64,), 8, 10, seed=0)
        fit(model, Split(x, y), beta_vib=beta, steps=200, batch_size=50, lr=1e-3, seed=0)
        rates[beta] = evaluate(model, Split(x, y))["rate"]
    assert rates[3.0] < 0.5 < 5.0 < rates[1e-4]


def test_sweep_artifact_round_trips_without_retraining(tmp_path):
    specs = sweep_specs(["mnist"], [1e-3, 1.0], [0], hidden=[32], bottleneck_dim=4, steps=5, batch_size=20,
                        n_train=100, n_test=50, n_rank_points=10, device="cpu")
    rows = run_sweep(specs, workers=1)
    assert [r["beta_vib"] for r in rows] == [1e-3, 1.0] and rows[0]["beta_ib"] == pytest.approx(1000.0)
    assert len(rows[0]["lr_mean"]) == len(specs[0].epsilons) and 0 <= rows[0]["lr_mean"][0] <= 4
    path = save_sweep(rows, tmp_path / "sweep.json")
    again = load_sweep(path)
    assert again == json.loads(json.dumps(rows))
    assert (tmp_path / "sweep.csv").read_text().splitlines()[0].startswith("dataset,beta_vib")
    betas, lr = sweep_arrays(again, "mnist", "lr_mean", 0)
    assert betas.tolist() == [1e-3, 1.0] and lr.shape == (1, 2)
    # Same seed, same CPU numbers.
    assert run_sweep(specs[:1], workers=1)[0]["test_accuracy"] == rows[0]["test_accuracy"]
    with pytest.raises(FileNotFoundError, match="no saved sweep"):
        load_sweep(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"rows": 3}')
    with pytest.raises(ValueError, match="not a saved VIB sweep"):
        load_sweep(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no rows for dataset"):
        sweep_arrays(again, "fashion_mnist", "rate")


@pytest.mark.parametrize("kwargs, match", [
    (dict(dataset="cifar10"), "dataset="),
    (dict(beta_vib=0.0), "beta_vib"),
    (dict(beta_vib=-1.0), "beta_vib"),
    (dict(n_rank_points=300, n_test=200), "n_rank_points"),
    (dict(batch_size=500, n_train=100), "batch_size"),
    (dict(bottleneck_dim=0), "bottleneck_dim"),
    (dict(epsilons=(0.0,)), "threshold"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(hidden=()), "hidden"),
])
def test_bad_settings_raise_clearly(kwargs, match):
    base = dict(dataset="mnist", beta_vib=0.1)
    with pytest.raises(ValueError, match=match):
        VIBSpec(**(base | kwargs))


def test_bad_model_and_sweep_arguments_raise_clearly():
    with pytest.raises(ValueError, match="hidden"):
        VIBClassifier(784, (), 8)
    with pytest.raises(ValueError, match="n_decoder_samples"):
        VIBClassifier(784, (8,), 4, n_decoder_samples=0)
    with pytest.raises(ValueError, match="unknown VIB setting"):
        sweep_specs(["mnist"], [0.1], [0], widths=(3,))
    with pytest.raises(ValueError, match="batch_size"):
        fit(VIBClassifier(784, (8,), 2), Split(torch.rand(4, 784), torch.zeros(4, dtype=torch.long)), beta_vib=0.1,
            steps=1, batch_size=5, lr=1e-3)
    for name, bad in (("n_betas", 1), ("bottleneck_dim", 0), ("beta_min", -1.0), ("n_seeds", 0)):
        with pytest.raises(ValueError, match=name):
            resolve("deep_vib_mnist", "quick", **{name: bad})
