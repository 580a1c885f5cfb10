"""The analytic Gaussian IB (Chechik et al.): eigen-structure, critical β, information curve, input checks."""

import numpy as np
import pytest

from localrank_utils.gaussian import JointGaussian
from localrank_utils.gaussian_ib import GaussianIB, appendix_b_joint, gaussian_entropy


@pytest.fixture(scope="module")
def app_b() -> GaussianIB:
    return GaussianIB.from_joint(appendix_b_joint())


@pytest.fixture(scope="module")
def random_ib() -> GaussianIB:
    """A non-isotropic case: random Σx, Σy and a cross-covariance well inside the PD region."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((4, 4))
    cov_x = g @ g.T + 0.5 * np.eye(4)
    h = rng.standard_normal((3, 3))
    cov_y = h @ h.T + 0.5 * np.eye(3)
    lx, ly = np.linalg.cholesky(cov_x), np.linalg.cholesky(cov_y)
    c = rng.standard_normal((4, 3))
    c *= 0.8 / np.linalg.norm(c, 2)
    return GaussianIB.from_covariances(cov_x, cov_y, lx @ c @ ly.T)


def test_appendix_b_eigenvalues_and_critical_betas(app_b):
    np.testing.assert_allclose(app_b.eigenvalues, [0.75, 0.75, 0.75, 0.99, 0.99], rtol=0, atol=1e-9)
    np.testing.assert_allclose(app_b.critical_betas, [4, 4, 4, 100, 100], rtol=0, atol=1e-9)
    # The 0.5-correlated coordinates (x3, x4, x5) carry the first transition, the 0.1 ones (x1, x2) the second.
    first = np.abs(app_b.eigenvectors[:3]).sum(0)
    assert np.all(first[2:] > 0.5) and np.all(first[:2] < 1e-9)
    assert app_b.mutual_information_xy == pytest.approx(-1.5 * np.log(0.75) - np.log(0.99), abs=1e-12)


def test_eigenvectors_are_left_eigenvectors(random_ib):
    j = random_ib.joint
    cond = j.cov_x - j.cov_xy @ np.linalg.solve(j.cov_y, j.cov_xy.T)
    m = cond @ np.linalg.inv(j.cov_x)
    for lam, v in zip(random_ib.eigenvalues, random_ib.eigenvectors):
        np.testing.assert_allclose(v @ m, lam * v, atol=1e-10)
    assert np.all(np.diff(random_ib.eigenvalues) >= 0) and np.all((random_ib.eigenvalues > 0) & (random_ib.eigenvalues <= 1))
    # X is 4-dimensional, Y 3-dimensional: one direction of X is uncorrelated with Y and never enters T.
    assert random_ib.eigenvalues[-1] == pytest.approx(1.0) and random_ib.critical_betas[-1] == np.inf


def test_rank_staircase(app_b):
    betas = np.array([1.0, 3.9, 4.1, 50.0, 99.0, 101.0, 1e4])
    np.testing.assert_array_equal(app_b.rank(betas), [0, 0, 3, 3, 3, 5, 5])
    for b, r in zip(betas, app_b.rank(betas)):
        assert np.linalg.matrix_rank(app_b.projection(b), tol=1e-12) == r


@pytest.mark.parametrize("which", ["app_b", "random_ib"])
@pytest.mark.parametrize("beta", [1.5, 3.0, 4.5, 20.0, 150.0, 2e3])
def test_closed_form_information_equals_the_entropy_formula(which, beta, request):
    ib = request.getfixturevalue(which)
    ix, iy = ib.information_of_encoder(ib.projection(beta))
    assert ix == pytest.approx(float(ib.info_x(beta)), abs=1e-9)
    assert iy == pytest.approx(float(ib.info_y(beta)), abs=1e-9)


def test_the_optimum_beats_perturbed_encoders(random_ib):
    """A_β minimises I(T;X) − β I(T;Y): random perturbations never do better."""
    rng = np.random.default_rng(0)
    for beta in (2.0, 10.0, 80.0):
        a = random_ib.projection(beta)
        best = np.subtract(*random_ib.information_of_encoder(a) * np.array([1, beta]))
        for _ in range(20):
            ix, iy = random_ib.information_of_encoder(a + 0.05 * rng.standard_normal(a.shape))
            assert ix - beta * iy >= best - 1e-12


@pytest.mark.parametrize("which", ["app_b", "random_ib"])
def test_slope_of_the_curve_is_one_over_beta(which, request):
    ib = request.getfixturevalue(which)
    crit = ib.critical_betas[np.isfinite(ib.critical_betas)]
    for beta in np.geomspace(crit[0] * 1.05, crit[-1] * 20, 25):
        if np.min(np.abs(np.log(beta / crit))) < 0.01:
            continue  # the slope is one-sided exactly at a transition
        h = beta * 1e-6
        slope = (ib.info_y(beta + h) - ib.info_y(beta - h)) / (ib.info_x(beta + h) - ib.info_x(beta - h))
        assert slope == pytest.approx(1.0 / beta, rel=1e-5)


@pytest.mark.parametrize("which", ["app_b", "random_ib"])
def test_curve_is_continuous_and_saturates(which, request):
    ib = request.getfixturevalue(which)
    for bc in np.unique(ib.critical_betas[np.isfinite(ib.critical_betas)]):
        for f in (ib.info_x, ib.info_y):
            assert abs(f(bc * (1 + 1e-9)) - f(bc * (1 - 1e-9))) < 1e-6
    assert ib.info_x(ib.critical_betas[0] * 0.999) == 0.0
    assert float(ib.info_y(1e12)) == pytest.approx(ib.mutual_information_xy, rel=1e-6)
    curve = ib.curve(np.geomspace(1.01, 1e5, 200))
    assert np.all(np.diff(curve["info_x"]) >= 0) and np.all(np.diff(curve["info_y"]) >= 0)
    assert np.all(curve["info_y"] <= np.minimum(curve["info_x"], ib.mutual_information_xy) + 1e-12)


def test_gaussian_entropy():
    assert gaussian_entropy(np.eye(1)) == pytest.approx(0.5 * np.log(2 * np.pi * np.e))
    assert gaussian_entropy(4 * np.eye(3)) - gaussian_entropy(np.eye(3)) == pytest.approx(1.5 * np.log(4))


def test_bad_covariances_raise_clear_errors():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="Σx is not symmetric"):
        GaussianIB.from_covariances(np.array([[1, 0.2, 0], [0, 1, 0], [0, 0, 1.0]]), eye, 0.1 * eye)
    with pytest.raises(ValueError, match="Σy is not positive semi-definite"):
        GaussianIB.from_covariances(eye, np.diag([1.0, -1.0, 1.0]), 0.1 * eye)
    with pytest.raises(ValueError, match="Σx is singular"):
        GaussianIB.from_covariances(np.diag([1.0, 1.0, 0.0]), eye, 0.1 * eye)
    with pytest.raises(ValueError, match="Σxy has shape"):
        GaussianIB.from_covariances(eye, eye, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="joint covariance"):
        GaussianIB.from_covariances(eye, eye, 1.5 * eye)
    with pytest.raises(ValueError, match="deterministic function"):
        GaussianIB.from_covariances(eye, eye, np.diag([1.0, 0.5, 0.5]))
    ib = GaussianIB.from_joint(JointGaussian(eye, eye, 0.3 * eye))
    with pytest.raises(ValueError, match="must be \\(k, 3\\)"):
        ib.information_of_encoder(np.ones((2, 4)))
    with pytest.raises(ValueError, match="beta"):
        ib.info_x(-1.0)
