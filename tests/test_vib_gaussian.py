"""Gaussian deep VIB: the exact moment-form loss equals the per-sample and Monte Carlo losses, training reaches
Chechik's optimum, and the local rank is read off the noise-whitened encoder."""

import numpy as np
import pytest
import torch

from localrank_utils.gaussian import JointGaussian
from localrank_utils.gaussian_ib import appendix_b_joint
from localrank_utils.vib import average_gaussian_kl, gaussian_kl
from localrank_utils.vib_gaussian import (DataMoments, GaussianVIB, crossing_beta, fit, make_jobs,
                                          plug_in_solution)


def _perturbed_model(prior: str) -> GaussianVIB:
    model = GaussianVIB(3, 2, 3, hidden_layers=2, width=4, prior=prior, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.fixture(scope="module")
def data():
    joint = JointGaussian.random_cross_covariance(3, 2, seed=0, max_correlation=0.8)
    x, y = joint.sample(500, seed=0, dtype=torch.float64)
    return x + 0.3, y - 0.2  # non-zero means exercise the bias terms


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_moment_form_equals_the_per_sample_mean(data, prior):
    model = _perturbed_model(prior)
    nll, kl = model.loss_terms(DataMoments.of(*data).tensors())
    nll_each, kl_each = model.per_sample_loss_terms(*data)
    assert nll.item() == pytest.approx(nll_each.mean().item(), rel=1e-10)
    assert kl.item() == pytest.approx(kl_each.mean().item(), rel=1e-10)
    assert kl.item() > 0.01


def test_exact_noise_expectation_matches_monte_carlo(data):
    model = _perturbed_model("learned")
    x, y = data[0][:50], data[1][:50]
    exact, _ = model.per_sample_loss_terms(x, y)
    sampled = model.sampled_nll(x, y, n_noise=20_000, seed=0)
    torch.testing.assert_close(sampled, exact, rtol=0.0, atol=0.05)


def test_average_kl_equals_the_mean_of_per_sample_kls():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(200, 4, generator=g, dtype=torch.float64)
    tril = torch.tril(torch.randn(4, 4, generator=g, dtype=torch.float64), -1) + torch.diag(torch.rand(4, generator=g, dtype=torch.float64) + 0.5)
    m, tril_p = torch.randn(4, generator=g, dtype=torch.float64), torch.eye(4, dtype=torch.float64) * 1.7
    expected = gaussian_kl(mu, tril, m, tril_p).mean()
    got = average_gaussian_kl(mu.mean(0), mu.T @ mu / mu.shape[0], tril, m, tril_p)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_whitened_map_is_the_noise_whitened_jacobian():
    model = _perturbed_model("standard")
    m, _ = model.encoder_affine()
    expected = torch.linalg.svdvals(torch.linalg.solve_triangular(model.noise_scale_tril, m, upper=False))
    net = model.whitened_mean_map()
    jac = torch.func.jacrev(lambda v: net(v[None])[0])(torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.svdvals(jac), expected)


def test_training_reaches_the_analytic_optimum_and_rank():
    jobs = make_jobs(appendix_b_joint(), [2.0, 9.0], ["standard"], hidden_layers=2, width=8, steps=300, epsilon=0.1,
                     n_train=20_000, n_test=2_000, n_rank_points=4, seed=0)
    plug_in = plug_in_solution(jobs[0].train)
    below, above = fit(jobs[0]), fit(jobs[1])
    assert below["local_rank"] == 0 and below["kl"] < 1e-4
    assert above["local_rank"] == 3
    # Converged to the exact optimum for the training sample's covariance.
    assert above["kl"] == pytest.approx(float(plug_in.info_x(9.0)), abs=1e-4)
    assert above["info_x_encoder"] == pytest.approx(above["kl"], abs=1e-4)  # the prior matches p(t) at the optimum


def test_crossing_beta_and_bad_input():
    betas = np.array([1.0, 2.0, 4.0, 8.0])
    assert crossing_beta(betas, np.array([0, 0, 3, 3]), 1.5) == pytest.approx(np.sqrt(8.0))
    assert np.isnan(crossing_beta(betas, np.zeros(4), 1.5))
    with pytest.raises(ValueError, match="prior='flat' is unknown"):
        GaussianVIB(3, 2, 3, hidden_layers=1, width=4, prior="flat", seed=0)
    with pytest.raises(ValueError, match="same n"):
        DataMoments.of(torch.zeros(5, 3), torch.zeros(4, 2))
