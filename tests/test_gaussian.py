"""The synthetic Gaussian generator states its covariance and refuses invalid ones."""

from __future__ import annotations

import numpy as np
import pytest

from localrank_utils.gaussian import JointGaussian, check_covariance


def test_random_cross_covariance_is_seeded_and_has_the_stated_correlation():
    a = JointGaussian.random_cross_covariance(100, 2, seed=0, max_correlation=0.9)
    b = JointGaussian.random_cross_covariance(100, 2, seed=0, max_correlation=0.9)
    c = JointGaussian.random_cross_covariance(100, 2, seed=1, max_correlation=0.9)
    assert np.array_equal(a.cov_xy, b.cov_xy) and not np.array_equal(a.cov_xy, c.cov_xy)
    assert a.canonical_correlations()[0] == pytest.approx(0.9, abs=1e-12)
    assert np.linalg.eigvalsh(a.joint_covariance).min() > 0


def test_samples_have_the_stated_covariance():
    joint = JointGaussian(np.eye(5), np.eye(5), np.diag([0.1, 0.1, 0.5, 0.5, 0.5]))
    x, y = joint.sample(200_000, seed=3)
    emp = np.cov(np.hstack([x.numpy(), y.numpy()]).T.astype(np.float64))
    assert np.abs(emp - joint.joint_covariance).max() < 0.02  # ~ 4.5 standard errors at n = 2e5
    x2, _ = joint.sample(10, seed=3)
    assert np.array_equal(x2.numpy(), x[:10].numpy())


@pytest.mark.parametrize(
    ("cov_x", "cov_y", "cov_xy", "message"),
    [
        (np.eye(2), np.eye(2), np.eye(2) * 1.5, "joint covariance .* not positive semi-definite"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), np.eye(2), np.zeros((2, 2)), "Σx is not symmetric"),
        (np.diag([1.0, -1.0]), np.eye(2), np.zeros((2, 2)), "Σx is not positive semi-definite"),
        (np.eye(2), np.eye(3), np.zeros((3, 2)), r"Σxy has shape \(3, 2\).*must be \(2, 3\)"),
        (np.eye(2), np.eye(2)[:1], np.zeros((2, 2)), "Σy must be a non-empty square matrix"),
        (np.array([[np.nan, 0], [0, 1.0]]), np.eye(2), np.zeros((2, 2)), "NaN"),
    ],
)
def test_invalid_covariances_are_refused_with_the_reason(cov_x, cov_y, cov_xy, message):
    with pytest.raises(ValueError, match=message):
        JointGaussian(cov_x, cov_y, cov_xy)


def test_singular_covariance_is_refused_where_an_inverse_is_needed():
    with pytest.raises(ValueError, match="singular"):
        check_covariance("Σ", np.diag([1.0, 0.0]), positive_definite=True)
    joint = JointGaussian(np.diag([1.0, 0.0]), np.eye(1), np.zeros((2, 1)))  # PSD: still a valid Gaussian
    assert joint.sample(5, seed=0)[0][:, 1].abs().max() == 0
    with pytest.raises(ValueError, match="max_correlation"):
        JointGaussian.random_cross_covariance(3, 2, seed=0, max_correlation=1.0)
