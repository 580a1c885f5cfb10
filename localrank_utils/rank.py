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

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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


def singular_values(
    module: nn.Module,
    x: torch.Tensor,
    *,
    method: str = "auto",
    chunk_size: int | None = None,
    max_memory: int | None = None,
) -> list[torch.Tensor]:
    """Singular values of J_x p_l, descending, one (N, k_l) tensor per layer (SVD: the full spectrum).

    Closed form: σ(M_l U S) from the one-pass engine, chunked to ``max_memory`` bytes; for the ranks alone
    :func:`epsilon_ranks` is faster (it may use the Gram matrix where that is certified for the ε)."""
    method = _resolve_method(module, method)
    fn, n_in = preactivation_fn(module)
    _check_inputs(x, n_in)
    if method == "torch_func":
        return [torch.linalg.svdvals(j) for j in jacobians(module, x, method=method, chunk_size=chunk_size or 256)]
    dtype = next(module.parameters()).dtype
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    prep = _prepare(module, dtype, x.device)
    chunk = _auto_chunk(module, prep, chunk_size, max_memory)
    parts = []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xc = x[start : start + chunk]
            first = prep.s1.to(dtype).expand(xc.shape[0], -1)
            parts.append([first] + [torch.linalg.svdvals(t) for t, _, _ in _propagate(module, xc, prep)])
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
    return _summarize([epsilon_rank(s, eps, relative=relative) for s in svals], eps, relative)


def _summarize(ranks: Sequence[torch.Tensor], eps: tuple[float, ...], relative: bool) -> LocalRank:
    stacked = np.stack([r.cpu().numpy() for r in ranks])  # (L, N, E)
    n = stacked.shape[1]
    mean = stacked.mean(axis=1)
    sem = stacked.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean, dtype=float)
    return LocalRank(epsilons=eps, relative=relative, mean=mean, sem=sem, n_samples=n)


def local_rank(
    module: nn.Module,
    x: torch.Tensor,
    epsilons: float | Sequence[float] = (0.01,),
    *,
    relative: bool = False,
    method: str = "auto",
    chunk_size: int | None = None,
    max_memory: int | None = None,
    decomposition: str = "auto",
    dtype: torch.dtype | None = None,
    report: RankReport | None = None,
) -> LocalRank:
    """LR_l^ε = mean over the samples ``x`` of rank_ε(J_x p_l), for all layers and all ε (see :func:`epsilon_ranks`)."""
    eps = _check_epsilons(epsilons, relative)  # fail before the decomposition, not after
    ranks = epsilon_ranks(module, x, eps, relative=relative, method=method, decomposition=decomposition,
                          chunk_size=chunk_size, max_memory=max_memory, dtype=dtype, report=report)
    return _summarize(ranks, eps, relative)


# ---------------------------------------------------------------------------------------------
# The engine: every layer's ε-rank from one pass, certified against rounding error.
# ---------------------------------------------------------------------------------------------

DECOMPOSITIONS = ("auto", "svd")
DEFAULT_MAX_MEMORY = 512 * 2**20  # bytes of working memory per chunk; 10 000 MNIST points fit in ~0.6 GB
GRAM_MARGIN = 1e-2  # Gram only where its error on σ² is <= 1 % of the smallest threshold² in use


@dataclass
class RankReport:
    """How :func:`epsilon_ranks` computed the ranks: per sample-layer pair, which decomposition, how many
    pairs it had to recompute in float64 because the fast result was not certified, and how many stayed
    undecided (a singular value within float64 rounding of the threshold: no method can decide those)."""

    dtype: str = ""
    chunk_size: int = 0
    pairs: int = 0  # sample-layer pairs ranked by a decomposition (layer 1 needs none)
    active_gram: int = 0  # ReLU: Gram of the active units only (smaller eigenproblem)
    gram: int = 0
    svd: int = 0
    recomputed_float64: int = 0
    undecided: int = 0


@dataclass(frozen=True)
class _Prepared:
    dtype: torch.dtype
    us: torch.Tensor  # (r, n_1): (U S)^T, rows of the reduced first layer
    s1: torch.Tensor  # (r,) float64: singular values of W_1 = those of J_1 for every x
    weights: tuple[torch.Tensor, ...]  # W_2 ... W_L in dtype
    forward: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (W_l, b_l) for l = 1..L in dtype, for p_l(x)
    w_spec: tuple[float, ...]  # ||W_l||_2 (float64)
    w_fro: tuple[float, ...]  # ||W_l||_F
    phi_max: float  # max |φ'|, bounds ||D_l||_2 in the error recursion
    us_err: float  # ||(U S)_computed - (U S)||_2 bound after the cast to dtype


_EXACT_DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] = {
    # ReLU's D is a 0/1 mask and the identity's is I: exact in any dtype, no autograd needed.
    "relu": lambda p: (p > 0).to(p.dtype),
    "identity": lambda p: None,
    "leaky_relu": lambda p: torch.where(p > 0, 1.0, 0.1).to(p.dtype),
}
_PHI_MAX = {"relu": 1.0, "identity": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "gelu": 1.13}


def _unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def _prepare(model: MLP, dtype: torch.dtype, device: torch.device, base: _Prepared | None = None) -> _Prepared:
    """Per-call constants; ``base`` (the float64 preparation) is cast instead of recomputing the SVD of W_1."""
    if base is not None:
        unit = _unit_roundoff(dtype)
        cast = dict(dtype=dtype, device=device)
        return dataclasses.replace(
            base, dtype=dtype, us=base.us.to(**cast).contiguous(), weights=tuple(w.to(**cast) for w in base.weights),
            forward=tuple((w.to(**cast), b.to(**cast)) for w, b in base.forward),
            us_err=(unit if dtype != torch.float64 else 2 * unit) * float(torch.linalg.matrix_norm(base.us)))
    w1 = model.layers[0].weight.detach().to(torch.float64)
    u, s, _ = torch.linalg.svd(w1, full_matrices=False)
    # Directions of W_1 with σ below float64 rounding of W_1 carry no Jacobian: J_l V = M_l U S.
    keep = s > s[0] * max(w1.shape) * torch.finfo(torch.float64).eps if s[0] > 0 else s > 0
    keep[0] = True  # keep at least one column so every shape stays valid; its σ is then 0
    us64 = (u[:, keep] * s[keep]).T
    ws = [layer.weight.detach().to(torch.float64) for layer in model.layers[1:]]
    unit = _unit_roundoff(dtype)
    cast = dict(dtype=dtype, device=device)
    return _Prepared(
        dtype=dtype,
        us=us64.to(dtype=dtype, device=device).contiguous(),
        s1=s[keep].to(device),
        weights=tuple(w.to(**cast) for w in ws),
        forward=tuple((layer.weight.detach().to(**cast),
                       (layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features)).to(**cast))
                      for layer in model.layers),
        w_spec=tuple(float(torch.linalg.matrix_norm(w, 2)) for w in ws),
        w_fro=tuple(float(torch.linalg.matrix_norm(w)) for w in ws),
        phi_max=_PHI_MAX.get(model.activation_name, 1.13),
        # Rounding U S (computed in float64) to dtype: |Δ| <= u |US| elementwise.
        us_err=(unit if dtype != torch.float64 else 2 * unit) * float(torch.linalg.matrix_norm(us64)),
    )


def _derivative(model: MLP, p: torch.Tensor) -> torch.Tensor | None:
    exact = _EXACT_DERIVATIVES.get(model.activation_name)
    return exact(p) if exact is not None else _activation_derivative(model.activation, p)


def _propagate(model: MLP, x: torch.Tensor, prep: _Prepared):
    """Yield (T_l, err_l) for l = 2..L: T_l = (M_l U S)^T of shape (B, r, n_l), one GEMM per layer for the
    whole chunk; err_l (B,) bounds ||T_l computed - T_l exact||_2 (Higham's γ_n bound per product)."""
    unit = _unit_roundoff(prep.dtype)
    pre, h = [], x.to(prep.dtype)
    for l, (w, bias) in enumerate(prep.forward[:-1]):  # p_1 .. p_{L-1}: what the derivatives need
        pre.append(torch.addmm(bias, h, w.T))
        h = model.activation(pre[-1])
    b, (r, n) = x.shape[0], prep.us.shape
    t = prep.us.expand(b, r, n)
    err = torch.full((b,), prep.us_err, dtype=torch.float64, device=x.device)
    for p_prev, w, spec, fro in zip(pre, prep.weights, prep.w_spec, prep.w_fro):
        d = _derivative(model, p_prev)
        exact_mask = model.activation_name in ("relu", "identity")
        # Masking columns of T (rows of M U S) is D: no diagonal matrix is ever formed.
        xin = t if d is None else t * d.unsqueeze(1)
        x_fro = torch.linalg.vector_norm(xin, dim=(1, 2)).to(torch.float64)
        n_in = xin.shape[-1]
        t = (xin.reshape(b * r, n_in) @ w.T).view(b, r, w.shape[0])  # one GEMM for every sample and row
        gemm = n_in * unit / (1 - n_in * unit)
        err_prev = err
        err = spec * prep.phi_max * err + (gemm + (0 if exact_mask else unit)) * fro * x_fro
        # For ReLU, T_l depends only on the k active rows of the previous layer: pass what the
        # active-set Gram (see _active_gram) needs; its own rounding is in that route's δ.
        active = (xin, d, w, err_prev * spec) if model.activation_name == "relu" else None
        yield t, err, active


def _active_gram(t_prev: torch.Tensor, mask: torch.Tensor, w: torch.Tensor):
    """ReLU: J_l's reduced matrix is A = W_S C, W_S the columns of W_l at the k active units of layer l-1,
    C = (M_{l-1} U S)[S] (k x r).  With W_S^T W_S = L L^T (Cholesky), AᵀA = (LᵀC)ᵀ(LᵀC), so the nonzero σ(A)²
    are the eigenvalues of the k x k matrix (LᵀC)(LᵀC)ᵀ: k ~ n/2 active units make the eigensolver ~8x
    cheaper.  Zero-padded to the chunk's largest k.  Returns (λ descending (B, k_max), δ (B,), ok (B,))
    with ok False where W_S is not numerically of full column rank (those samples take the plain Gram)."""
    b, r, _ = t_prev.shape
    unit = _unit_roundoff(t_prev.dtype)
    k = mask.sum(1)
    k_max = int(k.max())
    order = torch.argsort(mask, dim=1, descending=True, stable=True)[:, :k_max]  # active units first
    valid = torch.gather(mask, 1, order)
    # H = W_Sᵀ W_S is a submatrix of WᵀW (formed once per layer, not per sample). Padding indices point at an
    # appended zero row and column, so the gather itself zero-pads.
    n_prev = w.shape[1]
    gram_ext = w.new_zeros(n_prev + 1, n_prev + 1)
    gram_ext[:n_prev, :n_prev] = w.T @ w
    idx = torch.where(valid > 0, order, n_prev)
    h = gram_ext[idx.unsqueeze(2), idx.unsqueeze(1)]  # (B, k_max, k_max)
    ws_fro2 = h.diagonal(dim1=1, dim2=2).sum(1).to(torch.float64)  # ||W_S||_F² = trace H
    h.diagonal(dim1=1, dim2=2).add_(1 - valid)  # identity on the padding keeps H positive definite
    chol, info = torch.linalg.cholesky_ex(h)
    # t_prev is already masked (D T), so its padding columns (inactive units) are zero.
    c_t = torch.gather(t_prev, 2, order.unsqueeze(1).expand(b, r, k_max))  # Cᵀ (B, r, k_max)
    y_t = c_t @ chol  # (LᵀC)ᵀ
    lam = torch.linalg.eigvalsh(y_t.mT @ y_t).flip(-1).to(torch.float64)
    # Forming H (γ_n), Cholesky's backward error (~k² u ||H||), LᵀC and its Gram (γ_{r+k}): all enter σ²
    # through ||C||² ||W_S||_F² at most.
    c_fro2 = torch.linalg.vector_norm(c_t, dim=(1, 2)).to(torch.float64).square()
    kf = k.to(torch.float64)
    delta = unit * ws_fro2 * c_fro2 * (w.shape[0] + kf * kf + 7 * kf + r)
    ok = (info == 0) & torch.isfinite(lam).all(1)
    return lam, delta, ok


def _decompose(t: torch.Tensor, err: torch.Tensor, tau_min: torch.Tensor | None, decomposition: str,
               report: RankReport, active=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Singular values of each T (B, r, n) descending, with certified lower and upper bounds.

    Gram route: λ(TᵀT or TTᵀ, the smaller side).  Forming G costs |ΔG| <= γ_k |T|ᵀ|T| and a backward
    stable symmetric eigensolver adds <= c m u ||G||, so |λ̂ - σ²| <= δ = (k + 4m) u ||T||_F².  It is
    used for a sample only if δ <= GRAM_MARGIN · τ_min² (τ_min: the smallest threshold in use),
    i.e. where σ near the threshold is resolved to ~0.5 %; else the SVD, whose error is
    <= max(m, n) u ||T||_F on σ directly (no squaring of the condition number)."""
    b, r, n = t.shape
    unit = _unit_roundoff(t.dtype)
    fro2 = torch.linalg.vector_norm(t, dim=(1, 2)).to(torch.float64).square()
    m, k = min(r, n), max(r, n)
    delta = (k + 4 * m) * unit * fro2
    svd_err = k * unit * fro2.sqrt()
    use_gram = torch.zeros(b, dtype=torch.bool, device=t.device)
    if decomposition == "auto" and tau_min is not None:
        use_gram = delta <= GRAM_MARGIN * tau_min.square()
    sv = torch.empty(b, m, dtype=torch.float64, device=t.device)
    lo = torch.empty_like(sv)
    hi = torch.empty_like(sv)
    if active is not None and use_gram.any():
        t_prev, mask, w, err_in = active
        k_max = int(mask.sum(1).max())
        if k_max < m:  # a smaller eigenproblem than the plain Gram's
            lam, d_act, ok = _active_gram(t_prev, mask, w)
            # The active route ranks the exact product of the computed T_{l-1}: its inherited error
            # is ||W_l|| err_{l-1}, not the bound for the rounded T_l.
            take = ok & use_gram & (d_act <= GRAM_MARGIN * tau_min.square())
            lam = F.pad(lam, (0, m - k_max))
            d = d_act.unsqueeze(1)
            e_in = err_in.unsqueeze(1)
            sv[take] = lam[take].clamp_min(0).sqrt()
            lo[take] = ((lam - d).clamp_min(0).sqrt() - e_in)[take]
            hi[take] = ((lam.clamp_min(0) + d).sqrt() + e_in)[take]
            report.active_gram += int(take.sum())
            use_gram = use_gram & ~take
            done = take
        else:
            done = torch.zeros_like(use_gram)
    else:
        done = torch.zeros_like(use_gram)
    gi = use_gram.nonzero().squeeze(1)
    si = (~use_gram & ~done).nonzero().squeeze(1)
    if gi.numel():
        tg = t if gi.numel() == b else t[gi]  # no copy when every sample takes the same route
        g = tg.mT @ tg if n <= r else tg @ tg.mT
        lam = torch.linalg.eigvalsh(g).flip(-1).to(torch.float64)
        d = delta[gi].unsqueeze(1)
        sv[gi] = lam.clamp_min(0).sqrt()
        lo[gi] = (lam - d).clamp_min(0).sqrt()
        hi[gi] = (lam.clamp_min(0) + d).sqrt()
    if si.numel():
        s = torch.linalg.svdvals(t if si.numel() == b else t[si]).to(torch.float64)
        e = svd_err[si].unsqueeze(1)
        sv[si], lo[si], hi[si] = s, (s - e).clamp_min(0), s + e
    report.gram += gi.numel()
    report.svd += si.numel()
    report.pairs += b
    e = err.unsqueeze(1)
    lo = torch.where(done.unsqueeze(1), lo, lo - e).clamp_min(0)
    hi = torch.where(done.unsqueeze(1), hi, hi + e)
    return sv, lo, hi


def _count(sv, lo, hi, eps: torch.Tensor, relative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ε-ranks (B, E) from the point estimates, and whether each is certified by the bounds."""
    if relative:
        tau, tau_lo, tau_hi = (eps * v[:, :1] for v in (sv, lo, hi))
    else:
        tau = tau_lo = tau_hi = eps.expand(sv.shape[0], -1)
    ranks = (sv.unsqueeze(-1) > tau.unsqueeze(1)).sum(1)
    sure = (lo.unsqueeze(-1) > tau_hi.unsqueeze(1)).sum(1)
    possible = (hi.unsqueeze(-1) > tau_lo.unsqueeze(1)).sum(1)
    return ranks, (sure == possible).all(-1)


def _float32_is_certified(model: MLP, prep: _Prepared, eps: torch.Tensor, relative: bool) -> bool:
    """Whether float32 propagation is certified a priori for these thresholds.

    The error bound of :func:`_propagate` grows like n u ||W_l||_F ||D T_{l-1}||_F per layer; with
    ||T_l||_F <= ||U S||_F prod ||W_k||_2 max|φ'| it is bounded before any data is seen.  Float32 is used
    only if that bound is below GRAM_MARGIN · ε_min for absolute thresholds; relative thresholds (σ_max
    unknown in advance) and everything else run in float64, whose bound is ~10^9 times smaller."""
    if relative:
        return False
    unit = _unit_roundoff(torch.float32)
    err = unit * float(torch.linalg.matrix_norm(prep.us.T))
    norm = float(torch.linalg.matrix_norm(prep.us.T))
    for w, spec, fro in zip(prep.weights, prep.w_spec, prep.w_fro):
        n_in = w.shape[1]
        x_fro = prep.phi_max * norm
        err = spec * prep.phi_max * err + (n_in * unit / (1 - n_in * unit) + unit) * fro * x_fro
        norm = spec * x_fro
    return err <= GRAM_MARGIN * float(eps.min())


def _bytes_per_sample(model: MLP, prep: _Prepared) -> int:
    r = prep.us.shape[0]
    n = max(model.widths[1:])
    m = min(r, n)
    # Live at once, per sample: T_{l-1}, its masked copy and T_l (3 r n); the active-set route's W_Sᵀ,
    # Cᵀ, (LᵀC)ᵀ (n k + 2 r k, k <= n); H, L, the Gram and LAPACK's copies (5 m²); the forward pass.
    elements = 3 * r * n + n * n + 2 * r * n + 5 * m * m + 4 * sum(model.widths)
    return int(1.25 * elements * prep.dtype.itemsize)  # 25 % for allocator slack and the float64 recompute


MEMORY_RESERVE = 64 * 2**20  # of max_memory, kept for what does not scale with the chunk (weights, BLAS buffers)


def _auto_chunk(model: MLP, prep: _Prepared, chunk_size: int | None, max_memory: int | None) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1 (or None to size chunks from max_memory).")
        return chunk_size
    budget = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    per = _bytes_per_sample(model, prep)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < MEMORY_RESERVE + per:
        raise ValueError(f"max_memory={max_memory!r} bytes is below one sample's working set plus the fixed "
                         f"reserve ({MEMORY_RESERVE + per} bytes); give at least that, e.g. max_memory=2**28.")
    return max(1, int((budget - MEMORY_RESERVE) // per))


@torch.no_grad()
def _closed_form_ranks(model: MLP, x: torch.Tensor, eps: torch.Tensor, relative: bool, decomposition: str,
                       chunk: int, report: RankReport, prep: _Prepared, prep64: _Prepared) -> list[torch.Tensor]:
    dtype = prep.dtype
    report.dtype = str(dtype).replace("torch.", "")
    report.chunk_size = chunk
    s1 = prep.s1.unsqueeze(0)
    first, _ = _count(s1, s1, s1, eps, relative)  # W_1 is the same for every x: ranked once, in float64
    parts: list[list[torch.Tensor]] = []
    for start in range(0, x.shape[0], chunk):
        xc = x[start : start + chunk]
        ranks = [first.expand(xc.shape[0], -1)]
        failed = torch.zeros(xc.shape[0], dtype=torch.bool, device=x.device)
        for t, err, active in _propagate(model, xc, prep):
            if relative:
                # σ_max >= ||T||_F / sqrt(m): a certified lower bound on the smallest relative threshold.
                tau_min = eps.min() * torch.linalg.vector_norm(t, dim=(1, 2)).to(torch.float64) / math.sqrt(min(t.shape[1:]))
            else:
                tau_min = eps.min().expand(t.shape[0])
            sv, lo, hi = _decompose(t, err, tau_min, decomposition, report, active)
            r, ok = _count(sv, lo, hi, eps, relative)
            ranks.append(r)
            failed |= ~ok
            del t, sv, lo, hi
        bad = failed.nonzero().squeeze(1)
        if bad.numel():
            if dtype == torch.float64 and decomposition == "svd":
                report.undecided += bad.numel()  # the float64 SVD is the last word; flag, keep its count
            else:
                report.recomputed_float64 += bad.numel()
                sub = RankReport()
                again = _closed_form_ranks(model, xc[bad], eps, relative, "svd", chunk, sub, prep64, prep64)
                report.undecided += sub.undecided
                for l in range(1, len(ranks)):
                    ranks[l] = ranks[l].clone()
                    ranks[l][bad] = again[l]
        parts.append(ranks)
    return [torch.cat(layer) for layer in zip(*parts)]


def epsilon_ranks(
    module: nn.Module,
    x: torch.Tensor,
    epsilons: float | Sequence[float] = (0.01,),
    *,
    relative: bool = False,
    method: str = "auto",
    decomposition: str = "auto",
    chunk_size: int | None = None,
    max_memory: int | None = None,
    dtype: torch.dtype | None = None,
    report: RankReport | None = None,
) -> list[torch.Tensor]:
    """rank_ε(J_x p_l) for every sample, layer and ε: one (N, len(epsilons)) int tensor per layer.

    Closed form (an :class:`MLP`): the reduced matrices M_l U S of all layers from one pass, chunked over
    samples so that the working memory stays below ``max_memory`` bytes (default 512 MiB).  ``dtype=None``
    computes in float32 only where an a-priori rounding bound certifies it for the smallest ε
    (:func:`_float32_is_certified`), else in float64; every count is then certified a posteriori by a
    rounding-error bound, and the samples it cannot certify are recomputed in float64 with the SVD.  ``decomposition='auto'`` uses the Gram matrix's eigenvalues where
    its bound resolves the threshold (see :func:`_decompose`), ``'svd'`` always the SVD.  Pass a
    :class:`RankReport` to learn which route each pair took.
    """
    eps_t = _check_epsilons(epsilons, relative)
    if decomposition not in DECOMPOSITIONS:
        raise ValueError(f"decomposition={decomposition!r} is unknown; choose one of {DECOMPOSITIONS}.")
    method = _resolve_method(module, method)
    fn, n_in = preactivation_fn(module)
    _check_inputs(x, n_in)
    report = RankReport() if report is None else report
    if method == "torch_func":
        svals = singular_values(module, x, method=method, chunk_size=chunk_size)
        return [epsilon_rank(s, eps_t, relative=relative) for s in svals]
    eps = torch.tensor(eps_t, dtype=torch.float64, device=x.device)
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype={dtype!r} is not supported; use torch.float32, torch.float64 or None (chosen for ε).")
    prep64 = _prepare(module, torch.float64, x.device)
    if dtype is None:
        dtype = torch.float32 if _float32_is_certified(module, prep64, eps, relative) else torch.float64
    prep = prep64 if dtype == torch.float64 else _prepare(module, dtype, x.device, base=prep64)
    chunk = _auto_chunk(module, prep64, chunk_size, max_memory)  # sized for float64: the recompute's dtype
    with torch.no_grad():
        return _closed_form_ranks(module, x, eps, relative, decomposition, chunk, report, prep, prep64)
