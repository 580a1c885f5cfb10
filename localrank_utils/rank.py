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
from concurrent.futures import ThreadPoolExecutor
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
        parts = [[torch.linalg.svdvals(j) for j in _torch_func_jacobians(fn, x[start : start + (chunk_size or 256)])]
                 for start in _chunks(x.shape[0], chunk_size or 256)]
        return [torch.cat(layer) for layer in zip(*parts)]
    dtype = next(module.parameters()).dtype
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    prep = _prepare(module, dtype, x.device)
    chunk, _ = _plan_chunks(module, prep, x, chunk_size, max_memory)
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
    active_gram: int = 0  # ReLU: Gram of the active units only (smaller problem)
    gram: int = 0
    inertia: int = 0  # of the Gram-route pairs, those counted by LDLᵀ inertia rather than eigenvalues
    svd: int = 0
    recomputed_float64: int = 0
    undecided: int = 0


@dataclass(frozen=True)
class _Prepared:
    dtype: torch.dtype
    us: torch.Tensor  # (r, n_1): (U S)^T, rows of the reduced first layer
    s1: torch.Tensor  # (r,) float64: singular values of W_1 = those of J_1 for every x
    forward: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (W_l, b_l) for l = 1..L in dtype, for p_l(x)
    w_spec: tuple[float, ...]  # ||W_l||_2 (float64)
    w_fro: tuple[float, ...]  # ||W_l||_F
    phi_max: float  # max |φ'|, bounds ||D_l||_2 in the error recursion
    us_err: float  # ||(U S)_computed - (U S)||_2 bound after the cast to dtype

    @property
    def weights(self) -> tuple[torch.Tensor, ...]:
        """W_2 ... W_L in dtype: the factors of M_l."""
        return tuple(w for w, _ in self.forward[1:])


_EXACT_DERIVATIVES: dict[str, Callable[[torch.Tensor], torch.Tensor | None]] = {
    # ReLU's D is a 0/1 mask and the identity's is I: exact in any dtype, no autograd needed.
    "relu": lambda p: (p > 0).to(p.dtype),
    "identity": lambda p: None,
    "leaky_relu": lambda p: torch.where(p > 0, 1.0, 0.1).to(p.dtype),
}
_PHI_MAX = {"relu": 1.0, "identity": 1.0, "leaky_relu": 1.0, "tanh": 1.0, "gelu": 1.13}


def _unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def _us_error(us64: torch.Tensor, dtype: torch.dtype) -> float:
    """Bound on ||U S in dtype - U S||_2: computed in float64, then rounded to dtype (|Δ| <= u |US| elementwise)."""
    unit = _unit_roundoff(dtype)
    return (unit if dtype != torch.float64 else 2 * unit) * float(torch.linalg.matrix_norm(us64.to(torch.float64)))


def _prepare(model: MLP, dtype: torch.dtype, device: torch.device, base: _Prepared | None = None) -> _Prepared:
    """Per-call constants; ``base`` (the float64 preparation) is cast instead of recomputing the SVD of W_1."""
    if base is not None:
        cast = dict(dtype=dtype, device=device)
        return dataclasses.replace(
            base, dtype=dtype, us=base.us.to(**cast).contiguous(),
            forward=tuple((w.to(**cast), b.to(**cast)) for w, b in base.forward), us_err=_us_error(base.us, dtype))
    w1 = model.layers[0].weight.detach().to(torch.float64)
    u, s, _ = torch.linalg.svd(w1, full_matrices=False)
    # Directions of W_1 with σ below float64 rounding of W_1 carry no Jacobian: J_l V = M_l U S.
    keep = s > s[0] * max(w1.shape) * torch.finfo(torch.float64).eps if s[0] > 0 else s > 0
    keep[0] = True  # keep at least one column so every shape stays valid; its σ is then 0
    us64 = (u[:, keep] * s[keep]).T
    ws = [layer.weight.detach().to(torch.float64) for layer in model.layers[1:]]
    cast = dict(dtype=dtype, device=device)
    return _Prepared(
        dtype=dtype,
        us=us64.to(dtype=dtype, device=device).contiguous(),
        s1=s[keep].to(device),
        forward=tuple((layer.weight.detach().to(**cast),
                       (layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features)).to(**cast))
                      for layer in model.layers),
        w_spec=tuple(float(torch.linalg.matrix_norm(w, 2)) for w in ws),
        w_fro=tuple(float(torch.linalg.matrix_norm(w)) for w in ws),
        phi_max=_PHI_MAX.get(model.activation_name, 1.13),
        us_err=_us_error(us64, dtype),
    )


def _derivative(model: MLP, p: torch.Tensor) -> torch.Tensor | None:
    exact = _EXACT_DERIVATIVES.get(model.activation_name)
    return exact(p) if exact is not None else _activation_derivative(model.activation, p)


def _product_error(err, spec: float, fro: float, x_fro, n_in: int, prep: _Prepared, unit: float, exact_derivative: bool):
    """Bound on ||T_l computed - T_l exact||_2 from that of T_{l-1} (``err``): the inherited error through
    ||W_l||_2 max|φ'|, plus the GEMM's γ_n ||W_l||_F ||D T_{l-1}||_F (and one rounding of D unless it is exact)."""
    gemm = n_in * unit / (1 - n_in * unit)
    return spec * prep.phi_max * err + (gemm + (0 if exact_derivative else unit)) * fro * x_fro


def _propagate(model: MLP, x: torch.Tensor, prep: _Prepared):
    """Yield (T_l, err_l) for l = 2..L: T_l = (M_l U S)^T of shape (B, r, n_l), one GEMM per layer for the
    whole chunk; err_l (B,) bounds ||T_l computed - T_l exact||_2 (Higham's γ_n bound per product)."""
    unit = _unit_roundoff(prep.dtype)
    pre, h = [], x.to(prep.dtype)
    for w, bias in prep.forward[:-1]:  # p_1 .. p_{L-1}: what the derivatives need
        pre.append(torch.addmm(bias, h, w.T))
        h = model.activation(pre[-1])
    b, (r, n) = x.shape[0], prep.us.shape
    t = prep.us.expand(b, r, n)
    err = torch.full((b,), prep.us_err, dtype=torch.float64, device=x.device)
    exact_derivative = model.activation_name in ("relu", "identity")
    for p_prev, w, spec, fro in zip(pre, prep.weights, prep.w_spec, prep.w_fro):
        d = _derivative(model, p_prev)
        # Masking columns of T (rows of M U S) is D: no diagonal matrix is ever formed.
        xin = t if d is None else t * d.unsqueeze(1)
        x_fro = torch.linalg.vector_norm(xin, dim=(1, 2)).to(torch.float64)
        n_in = xin.shape[-1]
        t = (xin.reshape(b * r, n_in) @ w.T).view(b, r, w.shape[0])  # one GEMM for every sample and row
        err_prev = err
        err = _product_error(err, spec, fro, x_fro, n_in, prep, unit, exact_derivative)
        # For ReLU, T_l depends only on the k active rows of the previous layer: pass what the
        # active-set Gram (see _active_gram) needs; its own rounding is in that route's δ.
        active = (xin, x_fro, d, w, err_prev * spec) if model.activation_name == "relu" else None
        yield t, err, active


def _active_gram(t_prev: torch.Tensor, t_prev_fro: torch.Tensor, mask: torch.Tensor, w: torch.Tensor):
    """ReLU: J_l's reduced matrix is A = W_S C, W_S the columns of W_l at the k active units of layer l-1,
    C = (M_{l-1} U S)[S] (k x r).  With W_S^T W_S = L L^T (Cholesky), AᵀA = (LᵀC)ᵀ(LᵀC), so the nonzero σ(A)²
    are the eigenvalues of the k x k matrix (LᵀC)(LᵀC)ᵀ: with k < n active units its factorisation (∝ k³) is
    cheaper (three quarters of the units active: 0.4x the work).  Zero-padded to the chunk's largest k.  Returns (that matrix (B, k_max, k_max), δ (B,), ok (B,),
    k (B,)) with ok False where W_S is not numerically of full column rank (those samples take the plain Gram)."""
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
    gram = y_t.mT @ y_t
    # Forming H (γ_n), Cholesky's backward error (~k² u ||H||), LᵀC and its Gram (γ_{r+k}): all enter σ²
    # through ||C||² ||W_S||_F² at most.
    c_fro2 = t_prev_fro.square()  # ||C||_F: C holds every nonzero column of the masked T_{l-1}
    kf = k.to(torch.float64)
    delta = unit * ws_fro2 * c_fro2 * (w.shape[0] + kf * kf + 7 * kf + r)
    ok = (info == 0) & torch.isfinite(gram.sum((1, 2)))  # a sum is finite only if every entry is
    return gram, delta, ok, k


def _positive_eigenvalues(a: torch.Tensor, a_fro: torch.Tensor, shift: torch.Tensor):
    """Number of eigenvalues of each symmetric a (B, m, m) above ``shift`` (B,), by Sylvester's law of
    inertia on a Bunch–Kaufman LDLᵀ of a − shift·I (m³/3 flops, a quarter of a tridiagonal reduction).
    ``a_fro`` (B,): ||a||_F.

    Returns (counts (B,), bound (B,), ok (B,)).  The counts are exact for a − shift·I + E with
    ||E||_2 <= bound = 5 m u (||a − shift·I||_F + trace(|L| D̃ |L|ᵀ)) (the backward error
    |E| <= p(m) u (|a| + |L||D||Lᵀ|) of Bunch–Kaufman, Higham, *Accuracy and Stability*, Thm 11.3, with a
    generous constant for p), computed from the factors; ok is False where a pivot is exactly zero or the
    factors are not finite."""
    m = a.shape[-1]
    shifted = a.clone()
    shifted.diagonal(dim1=1, dim2=2).sub_(shift.to(a.dtype).unsqueeze(1))
    ld, pivots, info = torch.linalg.ldl_factor_ex(shifted)  # torch returns L with a zero upper triangle
    d = ld.diagonal(dim1=-2, dim2=-1)
    sub = F.pad(ld.diagonal(offset=-1, dim1=-2, dim2=-1), (0, 1))  # D's off-diagonal where a 2x2 block starts
    two = pivots < 0  # LAPACK marks both columns of a 2x2 block with the same negative pivot
    col = torch.arange(m, device=a.device).expand_as(pivots)
    run_start = torch.where(two, -1, col).cummax(1).values + 1
    block_start = two & ((col - run_start) % 2 == 0)  # 2x2 blocks pair up from the start of each run
    sub = sub * block_start
    d_next = F.pad(d[:, 1:], (0, 1))
    det = d * d_next - sub * sub
    # A 2x2 block with det < 0 has one positive eigenvalue; with det > 0, two or none, as its trace says.
    block_positive = torch.where(det < 0, 1, torch.where(d + d_next > 0, 2, 0))
    counts = ((~two) & (d > 0)).sum(1) + torch.where(block_start, block_positive, 0).sum(1)
    # |L||D||Lᵀ| <= |L| D̃ |L|ᵀ with D̃ = diag(|d_j| + |D's off-diagonal in column j|), whose trace bounds its norm;
    # columns of L: unit diagonal and the strict lower part (D's off-diagonals included: an overestimate).
    d_tilde = d.abs() + sub.abs() + F.pad(sub.abs(), (1, 0))[:, :-1]
    column_norms2 = 1 + ld.square().sum(1) - d.square()
    shifted_fro = a_fro + math.sqrt(m) * shift.abs()
    bound = 5 * m * _unit_roundoff(a.dtype) * (shifted_fro + (d_tilde * column_norms2).sum(1).to(torch.float64))
    ok = (info == 0) & torch.isfinite(bound)
    return counts, bound, ok


def _bracketed_count(a: torch.Tensor, delta: torch.Tensor, err: torch.Tensor, eps: float, cap: torch.Tensor | None):
    """Certified #{σ > ε} for each sample, where a's eigenvalues are the computed σ², each within ``delta``
    of the square of a σ̂ that is itself within ``err`` of the exact σ (all (B,)).

    Counts above s_hi = (ε + err)² + delta + β and above s_lo = (ε − err)₊² − delta − β bracket the exact
    count when the factorisations' backward errors stay below β: equal counts, or a count at s_hi that is
    already the cap (the most nonzero σ there can be), certify it.  β is set before factoring, at 4x what
    the bound of :func:`_positive_eigenvalues` is without growth in L (5 m u (||a||_F + trace a + m s), a's
    eigenvalues being >= 0) and checked afterwards: a wider bracket would only leave more σ undecided.
    Returns (counts, ok)."""
    m = a.shape[-1]
    a_fro = torch.linalg.vector_norm(a, dim=(1, 2)).to(torch.float64)
    size = a_fro + a.diagonal(dim1=1, dim2=2).sum(1).to(torch.float64)
    beta = 20 * m * _unit_roundoff(a.dtype) * (size + 2 * m * ((eps + err).square() + delta))
    s_hi = (eps + err).square() + delta + beta
    s_lo = (eps - err).clamp_min(0).square() - delta - beta
    hi, bound_hi, ok = _positive_eigenvalues(a, a_fro, s_hi)
    ok &= bound_hi <= beta
    rest = (hi != (m if cap is None else cap)).nonzero().squeeze(1)
    if rest.numel():
        whole = rest.numel() == a.shape[0]
        lo, bound_lo, ok_lo = _positive_eigenvalues(a if whole else a[rest], a_fro[rest], s_lo[rest])
        ok[rest] &= ok_lo & (bound_lo <= beta[rest]) & (lo == hi[rest])
    return hi, ok


def _decompose(t: torch.Tensor, err: torch.Tensor, eps: torch.Tensor, relative: bool, tau_min: torch.Tensor,
               decomposition: str, report: RankReport, active=None) -> tuple[torch.Tensor, torch.Tensor]:
    """ε-ranks (B, E) of each T (B, r, n) and whether each is certified by a rounding-error bound.

    Gram route: the smaller side's Gram matrix G (or the active-set matrix of :func:`_active_gram`).
    Forming G costs |ΔG| <= γ_k |T|ᵀ|T| and a backward stable symmetric solver adds <= c m u ||G||, so
    |λ̂ - σ²| <= δ = (k + 4m) u ||T||_F².  It is used for a sample only if δ <= GRAM_MARGIN · τ_min²
    (τ_min: the smallest threshold in use), i.e. where σ near the threshold is resolved to ~0.5 %; else
    the SVD, whose error is <= max(m, n) u ||T||_F on σ directly (no squaring of the condition number).
    With one absolute ε the Gram route counts by inertia (:func:`_bracketed_count`, two LDLᵀ); otherwise
    it takes G's eigenvalues and counts every ε from them."""
    b, r, n = t.shape
    unit = _unit_roundoff(t.dtype)
    fro2 = torch.linalg.vector_norm(t, dim=(1, 2)).to(torch.float64).square()
    m, k = min(r, n), max(r, n)
    delta = (k + 4 * m) * unit * fro2
    use_gram = torch.zeros(b, dtype=torch.bool, device=t.device)
    if decomposition == "auto":
        use_gram = delta <= GRAM_MARGIN * tau_min.square()
    # LAPACK's LDLᵀ beats its eigensolver ~4x per matrix on CPUs; GPU eigensolvers are batched, their LDLᵀ is not.
    by_inertia = not relative and eps.numel() == 1 and t.device.type == "cpu"
    ranks = torch.zeros(b, eps.numel(), dtype=torch.long, device=t.device)
    ok = torch.ones(b, dtype=torch.bool, device=t.device)

    def from_gram(idx, g, d, e, cap):
        """Ranks of the samples ``idx`` from their Gram-like matrices g: eigenvalues within d of σ̂², σ̂ within e."""
        if by_inertia:
            c, certified = _bracketed_count(g, d, e, float(eps[0]), cap)
            ranks[idx], ok[idx] = c.unsqueeze(1), certified
            report.inertia += idx.numel()
            return
        lam = torch.linalg.eigvalsh(g).flip(-1).to(torch.float64)
        dd, ee = d.unsqueeze(1), e.unsqueeze(1)
        sv = lam.clamp_min(0).sqrt()
        lo = ((lam - dd).clamp_min(0).sqrt() - ee).clamp_min(0)
        hi = (lam.clamp_min(0) + dd).sqrt() + ee
        ranks[idx], ok[idx] = _count(sv, lo, hi, eps, relative)

    done = torch.zeros_like(use_gram)
    if active is not None and use_gram.any():
        t_prev, t_prev_fro, mask, w, err_in = active
        if int(mask.sum(1).max()) < m:  # a smaller problem than the plain Gram's
            g, d_act, ok_act, k_act = _active_gram(t_prev, t_prev_fro, mask, w)
            # The active route ranks the exact product of the computed T_{l-1}: its inherited error
            # is ||W_l|| err_{l-1}, not the bound for the rounded T_l.
            done = ok_act & use_gram & (d_act <= GRAM_MARGIN * tau_min.square())
            idx = done.nonzero().squeeze(1)
            if idx.numel():
                from_gram(idx, g if idx.numel() == b else g[idx], d_act[idx], err_in[idx], k_act[idx])
            report.active_gram += idx.numel()
            use_gram = use_gram & ~done
    gi = use_gram.nonzero().squeeze(1)
    si = (~use_gram & ~done).nonzero().squeeze(1)
    if gi.numel():
        tg = t if gi.numel() == b else t[gi]  # no copy when every sample takes the same route
        from_gram(gi, tg.mT @ tg if n <= r else tg @ tg.mT, delta[gi], err[gi], None)
    if si.numel():
        s = torch.linalg.svdvals(t if si.numel() == b else t[si]).to(torch.float64)
        e = (k * unit * fro2[si].sqrt() + err[si]).unsqueeze(1)
        ranks[si], ok[si] = _count(s, (s - e).clamp_min(0), s + e, eps, relative)
    report.gram += gi.numel()
    report.svd += si.numel()
    report.pairs += b
    return ranks, ok


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
        x_fro = prep.phi_max * norm
        err = _product_error(err, spec, fro, x_fro, w.shape[1], prep, unit, exact_derivative=False)
        norm = spec * x_fro
    return err <= GRAM_MARGIN * float(eps.min())


def _bytes_per_sample(model: MLP, prep: _Prepared) -> int:
    r = prep.us.shape[0]
    n = max(model.widths[1:])
    m = min(r, n)
    # Live at once, per sample: T_{l-1}, its masked copy and T_l (3 r n); the active-set route's W_Sᵀ,
    # Cᵀ, (LᵀC)ᵀ (n k + 2 r k, k <= n); H, L, the Gram, its shifted copy, its LDLᵀ factors and LAPACK's
    # copies (8 m²); the forward pass.
    elements = 3 * r * n + n * n + 2 * r * n + 8 * m * m + 4 * sum(model.widths)
    return int(1.25 * elements * prep.dtype.itemsize)  # 25 % for allocator slack and the float64 recompute


MEMORY_RESERVE = 64 * 2**20  # of max_memory, kept for what does not scale with the chunk (weights, BLAS buffers)


CPU_CHUNK = 16
# Measured on the book's 2-core reference machine (1 000 MNIST points, the paper's net): chunks of 12-24
# samples keep a chunk's matrices (16 x 200 x 200 float64: 5 MB) near the cores' caches; 52 samples run
# 20 % slower, 500 nearly 2x.  Larger chunks only pay on a GPU, where the budget alone sets them.


def _plan_chunks(model: MLP, prep: _Prepared, x: torch.Tensor, chunk_size: int | None,
                 max_memory: int | None) -> tuple[int, int]:
    """(samples per chunk, worker threads): one worker per CPU thread, each holding one chunk, all within
    ``max_memory``; a single worker on accelerators."""
    workers = torch.get_num_threads() if x.device.type == "cpu" else 1
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1 (or None to size chunks from max_memory).")
        return chunk_size, workers
    budget = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    per = _bytes_per_sample(model, prep)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < MEMORY_RESERVE + per:
        raise ValueError(f"max_memory={max_memory!r} bytes is below one sample's working set plus the fixed "
                         f"reserve ({MEMORY_RESERVE + per} bytes); give at least that, e.g. max_memory=2**28.")
    fit = int((budget - MEMORY_RESERVE) // per)
    workers = max(1, min(workers, fit))
    chunk = fit // workers
    if x.device.type == "cpu":
        chunk = min(chunk, CPU_CHUNK)
    return max(1, min(chunk, -(-x.shape[0] // workers))), workers


def _merge(report: RankReport, part: RankReport) -> None:
    for field in ("pairs", "active_gram", "gram", "inertia", "svd", "recomputed_float64", "undecided"):
        setattr(report, field, getattr(report, field) + getattr(part, field))


@torch.no_grad()
def _rank_chunk(model: MLP, xc: torch.Tensor, eps: torch.Tensor, relative: bool, decomposition: str,
                report: RankReport, prep: _Prepared, prep64: _Prepared) -> list[torch.Tensor]:
    s1 = prep.s1.unsqueeze(0)
    first, _ = _count(s1, s1, s1, eps, relative)  # W_1 is the same for every x: ranked once, in float64
    ranks = [first.expand(xc.shape[0], -1)]
    failed = torch.zeros(xc.shape[0], dtype=torch.bool, device=xc.device)
    for t, err, active in _propagate(model, xc, prep):
        if relative:
            # σ_max >= ||T||_F / sqrt(m): a certified lower bound on the smallest relative threshold.
            tau_min = eps.min() * torch.linalg.vector_norm(t, dim=(1, 2)).to(torch.float64) / math.sqrt(min(t.shape[1:]))
        else:
            tau_min = eps.min().expand(t.shape[0])
        r, ok = _decompose(t, err, eps, relative, tau_min, decomposition, report, active)
        ranks.append(r)
        failed |= ~ok
        del t
    bad = failed.nonzero().squeeze(1)
    if bad.numel():
        if prep.dtype == torch.float64 and decomposition == "svd":
            report.undecided += bad.numel()  # the float64 SVD is the last word; flag, keep its count
        else:
            report.recomputed_float64 += bad.numel()
            again = _rank_chunk(model, xc[bad], eps, relative, "svd", sub := RankReport(), prep64, prep64)
            report.undecided += sub.undecided
            for l in range(1, len(ranks)):
                ranks[l] = ranks[l].clone()
                ranks[l][bad] = again[l]
    return ranks


def _closed_form_ranks(model: MLP, x: torch.Tensor, eps: torch.Tensor, relative: bool, decomposition: str,
                       chunk: int, workers: int, report: RankReport, prep: _Prepared,
                       prep64: _Prepared) -> list[torch.Tensor]:
    """Chunks in ``workers`` threads of one BLAS thread each: the per-sample eigen- and Cholesky
    factorisations are too small for LAPACK to use two cores on one matrix, so on CPU the cores are
    better spent on different samples."""
    report.dtype = str(prep.dtype).replace("torch.", "")
    report.chunk_size = chunk
    starts = range(0, x.shape[0], chunk)

    def job(start: int) -> tuple[list[torch.Tensor], RankReport]:
        part = RankReport()
        return _rank_chunk(model, x[start : start + chunk], eps, relative, decomposition, part, prep, prep64), part

    if workers > 1 and len(starts) > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(job, starts))
        finally:
            torch.set_num_threads(threads)
    else:
        results = [job(start) for start in starts]
    for _, part in results:
        _merge(report, part)
    return [torch.cat(layer) for layer in zip(*(ranks for ranks, _ in results))]


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
    chunk, workers = _plan_chunks(module, prep64, x, chunk_size, max_memory)  # float64-sized: the recompute's dtype
    return _closed_form_ranks(module, x, eps, relative, decomposition, chunk, workers, report, prep, prep64)
