"""Jointly Gaussian (X, Y) with a stated covariance: the synthetic data of Fig. 1 (left) and App. B."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def check_covariance(name: str, matrix: np.ndarray, *, positive_definite: bool = False, tol: float = 1e-10) -> np.ndarray:
    """Return ``matrix`` as float64 after checking it is square, symmetric and PSD (or PD)."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite entries.")
    scale = max(1.0, float(np.abs(a).max()))
    asym = float(np.abs(a - a.T).max())
    if asym > tol * scale:
        raise ValueError(f"{name} is not symmetric (max |A - A^T| = {asym:.3g}); symmetrise it, e.g. (A + A.T) / 2.")
    eig_min = float(np.linalg.eigvalsh(a).min())
    if positive_definite and eig_min <= tol * scale:
        raise ValueError(f"{name} is singular or not positive definite (smallest eigenvalue {eig_min:.3g}); "
                         "it must be invertible here: add a small ridge, e.g. A + 1e-6 I.")
    if eig_min < -tol * scale:
        raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {eig_min:.3g}): no Gaussian has it. "
                         "Check the cross-covariance: it must satisfy ||Σx^-1/2 Σxy Σy^-1/2||_2 <= 1.")
    return a


@dataclass(frozen=True)
class JointGaussian:
    """Zero-mean jointly Gaussian (X, Y) with blocks Σx, Σy, Σxy; refuses a non-PSD joint covariance."""

    cov_x: np.ndarray
    cov_y: np.ndarray
    cov_xy: np.ndarray

    def __post_init__(self) -> None:
        cx = check_covariance("Σx", self.cov_x)
        cy = check_covariance("Σy", self.cov_y)
        cxy = np.asarray(self.cov_xy, dtype=np.float64)
        if cxy.shape != (cx.shape[0], cy.shape[0]):
            raise ValueError(f"Σxy has shape {cxy.shape}, but Σx is {cx.shape} and Σy is {cy.shape}: it must be {(cx.shape[0], cy.shape[0])}.")
        object.__setattr__(self, "cov_x", cx)
        object.__setattr__(self, "cov_y", cy)
        object.__setattr__(self, "cov_xy", cxy)
        check_covariance("the joint covariance [[Σx, Σxy], [Σyx, Σy]]", self.joint_covariance)

    @property
    def dim_x(self) -> int:
        return self.cov_x.shape[0]

    @property
    def dim_y(self) -> int:
        return self.cov_y.shape[0]

    @property
    def joint_covariance(self) -> np.ndarray:
        return np.block([[self.cov_x, self.cov_xy], [self.cov_xy.T, self.cov_y]])

    @classmethod
    def random_cross_covariance(cls, dim_x: int, dim_y: int, *, seed: int, max_correlation: float = 0.9) -> "JointGaussian":
        """Σx = I, Σy = I and a random Σxy (Gaussian entries, seeded) rescaled so its largest
        canonical correlation is ``max_correlation`` < 1, which keeps the joint covariance PD."""
        if dim_x < 1 or dim_y < 1:
            raise ValueError(f"dim_x={dim_x!r} and dim_y={dim_y!r} must be >= 1.")
        if not 0 < max_correlation < 1:
            raise ValueError(f"max_correlation={max_correlation!r} must lie in (0, 1).")
        g = np.random.default_rng(seed).standard_normal((dim_x, dim_y))
        cross = g * (max_correlation / np.linalg.norm(g, 2))
        return cls(np.eye(dim_x), np.eye(dim_y), cross)

    def canonical_correlations(self) -> np.ndarray:
        """Singular values of Σx^-1/2 Σxy Σy^-1/2, descending."""
        def inv_sqrt(c: np.ndarray) -> np.ndarray:
            w, v = np.linalg.eigh(check_covariance("Σ", c, positive_definite=True))
            return (v / np.sqrt(w)) @ v.T
        return np.linalg.svd(inv_sqrt(self.cov_x) @ self.cov_xy @ inv_sqrt(self.cov_y), compute_uv=False)

    def sample(self, n: int, *, seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` i.i.d. draws of (X, Y) as tensors of shapes (n, dim_x) and (n, dim_y)."""
        if n < 1:
            raise ValueError(f"n={n!r} must be >= 1.")
        # eigh rather than Cholesky: a PSD but singular covariance is still a valid Gaussian.
        w, v = np.linalg.eigh(self.joint_covariance)
        root = v * np.sqrt(np.clip(w, 0.0, None))
        z = np.random.default_rng(seed).standard_normal((n, root.shape[0])) @ root.T
        xy = torch.from_numpy(z).to(dtype)
        return xy[:, : self.dim_x], xy[:, self.dim_x :]
