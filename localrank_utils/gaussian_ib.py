"""The analytic Information Bottleneck of jointly Gaussian (X, Y) (Chechik, Globerson, Tishby & Weiss, 2005).

The IB Lagrangian L = I(T;X) − β I(T;Y) over noisy linear encoders T = A X + ξ, ξ ~ N(0, I), is minimised by
A_β whose rows are α_i v_iᵀ, where v_i are the left eigenvectors of Σ_{x|y} Σ_x⁻¹ with eigenvalues
λ_1 ≤ λ_2 ≤ ... (ascending), Σ_{x|y} = Σ_x − Σ_xy Σ_y⁻¹ Σ_yx, and

    α_i = sqrt((β(1 − λ_i) − 1) / (λ_i v_iᵀ Σ_x v_i))   for β > β_i^c = 1 / (1 − λ_i),   α_i = 0 otherwise.

So rank(A_β) is a staircase in β that steps up at each β_i^c, and the information curve is

    I(T;X) = ½ Σ_{i ≤ n(β)} log((β − 1)(1 − λ_i) / λ_i),   I(T;Y) = I(T;X) − ½ Σ_{i ≤ n(β)} log(β(1 − λ_i)),

with n(β) the number of β_i^c below β; I(T;Y) saturates at I(X;Y) = −½ Σ_i log λ_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .gaussian import JointGaussian, check_covariance

# App. B of the paper: X and Y isotropic in R^5, cross-covariance diag(0.1, 0.1, 0.5, 0.5, 0.5).
APPENDIX_B_CROSS_COVARIANCE = np.diag([0.1, 0.1, 0.5, 0.5, 0.5])


def appendix_b_joint() -> JointGaussian:
    """The (X, Y) of the paper's App. B (Fig. 2): Σx = Σy = I_5, Σxy = diag(0.1, 0.1, 0.5, 0.5, 0.5)."""
    return JointGaussian(np.eye(5), np.eye(5), APPENDIX_B_CROSS_COVARIANCE)


def gaussian_entropy(cov: np.ndarray) -> float:
    """Differential entropy ½ log((2πe)^k det Σ) of N(·, Σ) in nats."""
    cov = check_covariance("the covariance", cov, positive_definite=True)
    sign, logdet = np.linalg.slogdet(cov)
    return 0.5 * (cov.shape[0] * np.log(2 * np.pi * np.e) + logdet)


def _invertible_covariance(name: str, matrix: np.ndarray) -> np.ndarray:
    # PSD first, so a matrix with a negative eigenvalue is reported as such, not as "singular".
    return check_covariance(name, check_covariance(name, matrix), positive_definite=True)


def _as_betas(beta: float | np.ndarray) -> np.ndarray:
    b = np.asarray(beta, dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"beta={beta!r} must be finite and > 0 (Chechik's β multiplies I(T;Y); β_VIB = 1/β).")
    return b


@dataclass(frozen=True)
class GaussianIB:
    """The analytic IB solution for jointly Gaussian (X, Y); build it with :meth:`from_covariances`."""

    joint: JointGaussian
    eigenvalues: np.ndarray  # λ_i, ascending, in (0, 1]
    eigenvectors: np.ndarray  # rows v_iᵀ: left eigenvectors of Σ_{x|y} Σ_x⁻¹, scaled so v_iᵀ Σ_x v_i = 1

    @classmethod
    def from_covariances(cls, cov_x: np.ndarray, cov_y: np.ndarray, cov_xy: np.ndarray) -> "GaussianIB":
        """Validate Σx, Σy (symmetric, positive definite), Σxy (shape) and the joint covariance, then solve."""
        cx, cy = _invertible_covariance("Σx", cov_x), _invertible_covariance("Σy", cov_y)
        return cls.from_joint(JointGaussian(cx, cy, cov_xy))

    @classmethod
    def from_joint(cls, joint: JointGaussian) -> "GaussianIB":
        cx, cy = _invertible_covariance("Σx", joint.cov_x), _invertible_covariance("Σy", joint.cov_y)
        cond = cx - joint.cov_xy @ np.linalg.solve(cy, joint.cov_xy.T)
        cond = 0.5 * (cond + cond.T)
        try:
            check_covariance("Σ_{x|y}", cond, positive_definite=True)
        except ValueError as err:
            raise ValueError("Σ_{x|y} = Σx − Σxy Σy⁻¹ Σyx is singular: some direction of X is a deterministic function "
                             "of Y, so I(X;Y) is infinite and the IB has no finite solution. Reduce the cross-covariance "
                             f"(canonical correlations must be < 1). ({err})") from None
        # v_iᵀ Σ_{x|y} Σx⁻¹ = λ_i v_iᵀ  <=>  Σ_{x|y} v_i = λ_i Σx v_i: a symmetric-definite generalised problem,
        # whose eigenvectors come back ascending and Σx-orthonormal (v_iᵀ Σx v_j = δ_ij).
        lam, vecs = scipy.linalg.eigh(cond, cx)
        return cls(joint, np.clip(lam, np.finfo(float).tiny, 1.0), vecs.T.copy())

    @property
    def dim_x(self) -> int:
        return self.joint.dim_x

    @property
    def critical_betas(self) -> np.ndarray:
        """β_i^c = 1 / (1 − λ_i), ascending; infinite for a direction of X uncorrelated with Y (λ_i = 1)."""
        with np.errstate(divide="ignore"):
            return np.where(self.eigenvalues < 1.0, 1.0 / (1.0 - self.eigenvalues), np.inf)

    @property
    def mutual_information_xy(self) -> float:
        """I(X;Y) = −½ Σ log λ_i: where I(T;Y) saturates as β → ∞."""
        return float(-0.5 * np.log(self.eigenvalues).sum())

    def alphas(self, beta: float) -> np.ndarray:
        """The row scales α_i(β) of A_β; zero for every i with β ≤ β_i^c."""
        b = float(_as_betas(beta))
        lam = self.eigenvalues
        r = np.einsum("ij,jk,ik->i", self.eigenvectors, self.joint.cov_x, self.eigenvectors)
        return np.sqrt(np.clip(b * (1.0 - lam) - 1.0, 0.0, None) / (lam * r))

    def projection(self, beta: float) -> np.ndarray:
        """A_β (dim_x × dim_x), row i = α_i v_iᵀ, for T = A_β X + ξ with ξ ~ N(0, I)."""
        return self.alphas(beta)[:, None] * self.eigenvectors

    def rank(self, beta: float | np.ndarray) -> np.ndarray:
        """rank(A_β) = number of β_i^c strictly below β (the staircase of Theorem 4)."""
        b = _as_betas(beta)
        return (self.critical_betas[None, :] < b.reshape(-1, 1)).sum(-1).reshape(b.shape)

    def _active_terms(self, beta: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = _as_betas(beta)
        flat = b.reshape(-1, 1)
        lam = self.eigenvalues[None, :]
        active = self.critical_betas[None, :] < flat
        with np.errstate(divide="ignore", invalid="ignore"):
            ix = np.where(active, 0.5 * np.log((flat - 1.0) * (1.0 - lam) / lam), 0.0)
            lost = np.where(active, 0.5 * np.log(flat * (1.0 - lam)), 0.0)
        return b, ix, lost

    def info_x(self, beta: float | np.ndarray) -> np.ndarray:
        """I(T;X) of the optimal encoder, in nats (closed form; vectorised over β)."""
        b, ix, _ = self._active_terms(beta)
        return ix.sum(-1).reshape(b.shape)

    def info_y(self, beta: float | np.ndarray) -> np.ndarray:
        """I(T;Y) of the optimal encoder, in nats (closed form; vectorised over β)."""
        b, ix, lost = self._active_terms(beta)
        return (ix - lost).sum(-1).reshape(b.shape)

    def information_of_encoder(self, a: np.ndarray, noise_cov: np.ndarray | None = None) -> tuple[float, float]:
        """(I(T;X), I(T;Y)) of T = A X + ξ, ξ ~ N(0, Σξ) (default I), from Gaussian entropies:
        I(T;X) = h(T) − h(T|X) and I(T;Y) = h(T) − h(T|Y), with Cov(T|Y) = A Σ_{x|y} Aᵀ + Σξ."""
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.dim_x:
            raise ValueError(f"the encoder matrix A has shape {a.shape}; it must be (k, {self.dim_x}) to act on X.")
        k = a.shape[0]
        noise = np.eye(k) if noise_cov is None else check_covariance("Σξ", noise_cov, positive_definite=True)
        if noise.shape != (k, k):
            raise ValueError(f"Σξ has shape {noise.shape}; it must be ({k}, {k}) to match A's {k} rows.")
        cx, cy, cxy = self.joint.cov_x, self.joint.cov_y, self.joint.cov_xy
        cond = cx - cxy @ np.linalg.solve(cy, cxy.T)
        h_t = gaussian_entropy(a @ cx @ a.T + noise)
        h_t_given_x = gaussian_entropy(noise)
        h_t_given_y = gaussian_entropy(a @ cond @ a.T + noise)
        return h_t - h_t_given_x, h_t - h_t_given_y

    def curve(self, betas: np.ndarray) -> dict[str, np.ndarray]:
        """The information curve over ``betas``: β, I(T;X), I(T;Y), rank(A_β)."""
        b = _as_betas(betas)
        return {"beta": b, "info_x": self.info_x(b), "info_y": self.info_y(b), "rank": self.rank(b)}
