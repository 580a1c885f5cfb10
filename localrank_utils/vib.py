"""Variational Information Bottleneck (Alemi et al. 2016): objective, KL to the prior, β conventions.

Two conventions meet in this book.  Chechik et al.'s Gaussian IB minimises I(T;X) − β I(T;Y), so a
larger β keeps more information.  The VIB objective is E[−log q(y|t)] + β_VIB · KL(p(t|x) ‖ r(t)),
so a larger β_VIB compresses more.  Dividing the IB Lagrangian by β shows β_VIB = 1/β.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.distributions import MultivariateNormal, kl_divergence


def _check_positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0.")
    return value


def ib_beta(beta_vib: float) -> float:
    """Chechik's β (multiplies I(T;Y)) for a VIB β_VIB (multiplies the KL): β = 1/β_VIB."""
    return 1.0 / _check_positive(beta_vib, "beta_vib")


def vib_beta(beta_ib: float) -> float:
    """VIB's β_VIB for Chechik's β: β_VIB = 1/β."""
    return 1.0 / _check_positive(beta_ib, "beta_ib")


def log_spaced(low: float, high: float, n: int) -> tuple[float, ...]:
    """``n`` values from ``low`` to ``high``, evenly spaced in log, both ends included."""
    low, high = _check_positive(low, "low"), _check_positive(high, "high")
    if n < 2 or low >= high:
        raise ValueError(f"log_spaced needs low < high and n >= 2; got low={low}, high={high}, n={n}.")
    return tuple(float(v) for v in np.geomspace(low, high, n))


def gaussian_kl(mean: torch.Tensor, scale_tril: torch.Tensor, prior_mean: torch.Tensor,
                prior_scale_tril: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, LLᵀ) ‖ N(prior_mean, L_pL_pᵀ)) in nats, one value per sample (batch shapes broadcast)."""
    return kl_divergence(MultivariateNormal(mean, scale_tril=scale_tril),
                         MultivariateNormal(prior_mean, scale_tril=prior_scale_tril))


def diagonal_gaussian_kl_to_standard(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(exp(log_var))) ‖ N(0, I)) in nats per sample; the closed form Alemi et al. use."""
    return 0.5 * (log_var.exp() + mean.pow(2) - 1.0 - log_var).sum(-1)


def vib_objective(nll: torch.Tensor, kl: torch.Tensor, beta_vib: float) -> torch.Tensor:
    """Mean over the batch of −log q(y|t) + β_VIB · KL, per sample, in nats."""
    return (nll + beta_vib * kl).mean()


def describe_conventions(betas_vib: Sequence[float]) -> str:
    """One line per β_VIB with its IB β, for a chapter's table."""
    return "\n".join(f"β_VIB = {b:<10.4g} β (IB) = {ib_beta(b):.4g}" for b in betas_vib)


def average_gaussian_kl(mean_first_moment: torch.Tensor, mean_second_moment: torch.Tensor, scale_tril: torch.Tensor,
                        prior_mean: torch.Tensor, prior_scale_tril: torch.Tensor) -> torch.Tensor:
    """E_x KL(N(μ(x), LLᵀ) ‖ N(m, L_pL_pᵀ)) in nats for an encoder whose covariance LLᵀ does not depend on x,
    exactly, from the moments E[μ] and E[μμᵀ] of its mean over the data: equal to the mean of
    :func:`gaussian_kl` over the samples, at a cost independent of their number."""
    k = scale_tril.shape[-1]
    eye = torch.eye(k, dtype=scale_tril.dtype, device=scale_tril.device)
    prior_inv_root = torch.linalg.solve_triangular(prior_scale_tril, eye, upper=False)  # L_p⁻¹
    prior_precision = prior_inv_root.T @ prior_inv_root
    # E[(μ − m)(μ − m)ᵀ] from the raw moments.
    centred = (mean_second_moment - torch.outer(mean_first_moment, prior_mean) - torch.outer(prior_mean, mean_first_moment)
               + torch.outer(prior_mean, prior_mean))
    log_det_ratio = 2 * (prior_scale_tril.diagonal().log().sum() - scale_tril.diagonal().log().sum())
    trace_term = (prior_precision * (scale_tril @ scale_tril.T + centred)).sum()
    return 0.5 * (trace_term - k + log_det_ratio)
