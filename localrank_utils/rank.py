"""Local rank (Definition 1, Eq. 2-3): ε-rank of the Jacobian of each pre-activation w.r.t. the input.

Two paths compute the Jacobians J_x p_l:

* ``closed_form`` for an :class:`~localrank_utils.models.MLP` with any elementwise activation,
  J_l = W_l diag(φ'(p_{l-1})) ... W_2 diag(φ'(p_1)) W_1, batched over samples.  Its singular
  values are taken from M_l U S, where W_1 = U S V^T and M_l = J_l's product without W_1:
  V^T has orthonormal rows, so M_l U S (n_l x rank W_1) has the singular values of J_l
  (n_l x n_0) at a fraction of the cost.
* ``torch_func`` for any module exposing ``preactivations(x)`` (or an ``nn.Sequential``, whose
  ``nn.Linear`` outputs are its pre-activations): ``torch.func.jacrev`` under ``vmap``, chunked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .models import MLP

METHODS = ("auto", "closed_form", "torch_func")
PreactivationFn = Callable[[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class LocalRank:
    """LR_l^ε for every layer l (rows) and every ε (columns), with standard errors over samples."""

    epsilons: tuple[float, ...]
    relative: bool
    mean: np.ndarray  # (layers, len(epsilons))
    sem: np.ndarray  # (layers, len(epsilons))
    n_samples: int


def _check_epsilons(epsilons: float | Sequence[float], relative: bool) -> tuple[float, ...]:
    eps = (float(epsilons),) if isinstance(epsilons, (int, float)) else tuple(float(e) for e in epsilons)
    if not eps:
        raise ValueError("epsilons is empty; give at least one threshold ε > 0, e.g. epsilons=(0.01,).")
    for e in eps:
        if not math.isfinite(e) or e <= 0:
            raise ValueError(f"ε={e!r} is not a valid threshold: the ε-rank needs a finite ε > 0 (the paper's code uses 0.01).")
        if relative and e >= 1:
            raise ValueError(f"relative ε={e!r} must be < 1: σ > ε·σ_max with ε >= 1 counts nothing.")
    return eps


def preactivation_fn(module: nn.Module) -> tuple[PreactivationFn, int]:
    """The map x -> [p_1(x), ..., p_L(x)] of ``module`` and its input width."""
    if callable(getattr(module, "preactivations", None)):
        widths = getattr(module, "widths", None)
        n_in = widths[0] if widths else next(m for m in module.modules() if isinstance(m, nn.Linear)).in_features
        return module.preactivations, n_in
    if isinstance(module, nn.Sequential):
        linears = [m for m in module if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("this nn.Sequential has no nn.Linear layer, so it has no pre-activations to rank.")

        def sequential_preactivations(x: torch.Tensor) -> list[torch.Tensor]:
            out = []
            for m in module:
                x = m(x)
                if isinstance(m, nn.Linear):
                    out.append(x)
            return out

        return sequential_preactivations, linears[0].in_features
    raise ValueError(
        f"{type(module).__name__} exposes no pre-activations: give it a `preactivations(x) -> list[Tensor]` "
        "method, or use an nn.Sequential whose nn.Linear outputs are the pre-activations."
    )


def _check_inputs(x: torch.Tensor, n_in: int) -> None:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != n_in:
        raise ValueError(f"inputs of shape {tuple(x.shape)} do not fit: expected a non-empty batch (N, {n_in}).")


def _activation_derivative(activation: Callable[[torch.Tensor], torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    # Autograd of an elementwise map gives φ'(p) for any activation without a hand-written table.
    with torch.enable_grad():
        q = p.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(activation(q).sum(), q)
    return d


def _resolve_method(module: nn.Module, method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {METHODS}.")
    if method == "auto":
        return "closed_form" if isinstance(module, MLP) else "torch_func"
    if method == "closed_form" and not isinstance(module, MLP):
        raise ValueError(f"method='closed_form' needs a localrank_utils.MLP, got {type(module).__name__}; use method='torch_func'.")
    return method


def _chunks(n: int, chunk_size: int) -> range:
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be >= 1.")
    return range(0, n, chunk_size)


@torch.no_grad()
def _closed_form_factors(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """M_l for each layer: J_l = M_l W_1, shapes (B, n_l, n_1); M_1 is the identity."""
    pre = model.preactivations(x)
    n1 = model.widths[1]
    m = torch.eye(n1, dtype=x.dtype, device=x.device).expand(x.shape[0], n1, n1)
    factors = [m]
    for layer, p_prev in zip(model.layers[1:], pre[:-1]):
        m = layer.weight @ (_activation_derivative(model.activation, p_prev).unsqueeze(-1) * m)
        factors.append(m)
    return factors


def jacobians(module: nn.Module, x: torch.Tensor, *, method: str = "auto", chunk_size: int = 256) -> list[torch.Tensor]:
    """[J_x p_l] for every layer, each of shape (N, n_l, n_0)."""
    method = _resolve_method(module, method)
    fn, n_in = preactivation_fn(module)
    _check_inputs(x, n_in)
    parts: list[list[torch.Tensor]] = []
    for start in _chunks(x.shape[0], chunk_size):
        xc = x[start : start + chunk_size]
        if method == "closed_form":
            w1 = module.layers[0].weight.detach()
            parts.append([m @ w1 for m in _closed_form_factors(module, xc)])
        else:
            parts.append(_torch_func_jacobians(fn, xc))
    return [torch.cat(layer) for layer in zip(*parts)]


def _torch_func_jacobians(fn: PreactivationFn, x: torch.Tensor) -> list[torch.Tensor]:
    def single(xi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(p[0] for p in fn(xi.unsqueeze(0)))

    with torch.no_grad():
        return [j.detach() for j in torch.func.vmap(torch.func.jacrev(single))(x)]


def singular_values(module: nn.Module, x: torch.Tensor, *, method: str = "auto", chunk_size: int = 256) -> list[torch.Tensor]:
    """Singular values of J_x p_l, descending, one (N, k_l) tensor per layer."""
    method = _resolve_method(module, method)
    fn, n_in = preactivation_fn(module)
    _check_inputs(x, n_in)
    if method == "torch_func":
        return [torch.linalg.svdvals(j) for j in jacobians(module, x, method=method, chunk_size=chunk_size)]
    u, s, _ = torch.linalg.svd(module.layers[0].weight.detach(), full_matrices=False)
    us = u * s
    parts = [
        [torch.linalg.svdvals(m @ us) for m in _closed_form_factors(module, x[start : start + chunk_size])]
        for start in _chunks(x.shape[0], chunk_size)
    ]
    return [torch.cat(layer) for layer in zip(*parts)]


def epsilon_rank(svals: torch.Tensor, epsilons: float | Sequence[float], *, relative: bool = False) -> torch.Tensor:
    """Count singular values above each ε (absolute, Eq. 3) or above ε·σ_max (relative).

    ``svals`` has shape (..., k); the result has shape (..., len(epsilons)).
    """
    eps = torch.tensor(_check_epsilons(epsilons, relative), dtype=svals.dtype, device=svals.device)
    threshold = eps * svals.amax(-1, keepdim=True) if relative else eps
    return (svals.unsqueeze(-1) > threshold.unsqueeze(-2)).sum(-2)


def summarize_ranks(svals: Sequence[torch.Tensor], epsilons: float | Sequence[float], *, relative: bool = False) -> LocalRank:
    """LR per layer and ε from per-layer singular values (as returned by :func:`singular_values`)."""
    eps = _check_epsilons(epsilons, relative)
    ranks = np.stack([epsilon_rank(s, eps, relative=relative).cpu().numpy() for s in svals])  # (L, N, E)
    n = ranks.shape[1]
    mean = ranks.mean(axis=1)
    sem = ranks.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean, dtype=float)
    return LocalRank(epsilons=eps, relative=relative, mean=mean, sem=sem, n_samples=n)


def local_rank(
    module: nn.Module,
    x: torch.Tensor,
    epsilons: float | Sequence[float] = (0.01,),
    *,
    relative: bool = False,
    method: str = "auto",
    chunk_size: int = 256,
) -> LocalRank:
    """LR_l^ε = mean over the samples ``x`` of rank_ε(J_x p_l), for all layers and all ε from one SVD each."""
    _check_epsilons(epsilons, relative)  # fail before the decomposition, not after
    return summarize_ranks(singular_values(module, x, method=method, chunk_size=chunk_size), epsilons, relative=relative)
