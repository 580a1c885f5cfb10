"""The theory chapter's objects: Lemma 5, Timor et al.'s harmonic-mean bounds, Propositions 2/7 and 3/9.

* Norm ratios ‖W‖_F / ‖W‖_σ, their harmonic mean, and the right-hand sides of Timor et al.'s
  bounds (12) / (21) and of the propositions' bounds (13) / (23) (with the exponent 2k/L, k the
  reference net's depth).
* Lemma 5 made explicit: rank_ε(J_x p_l) ≤ rank_ε(W_l) holds for every x and every
  0 < ε < σ_min^+(W_l), the smallest non-zero singular value of W_l; ``lemma5_onset`` finds, from
  two spectra, the largest ε_0 below which the inequality holds, and ``amplifying_network`` builds a
  net where it fails above it.
* The Jacobian chain J_x p_l = W_l D_{l-1} W_{l-1} ⋯ D_1 W_1 written out literally (checked against
  autograd), and nets with a deliberately low-rank layer.
* Set-ups for the min-norm problems (4) and (6): a bias-free depth-k reference ("teacher") network
  with its Frobenius bound B, data it classifies with margin 1 or interpolates, and training of a
  deeper bias-free student towards the minimum norm (small coupled weight decay, then exact
  rescaling and layer balancing, which the true optimum satisfies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .models import MLP
from .rank import epsilon_rank
from .train import Split, train

PROBLEMS = ("classification", "interpolation")


# --- norms and the bounds' right-hand sides ---------------------------------------------------

def _as_matrix(w: torch.Tensor | np.ndarray) -> torch.Tensor:
    w = torch.as_tensor(w)
    if w.ndim != 2 or w.numel() == 0:
        raise ValueError(f"expected a non-empty 2-D weight matrix, got shape {tuple(w.shape)}.")
    return w.detach().double()


def spectral_norm(w: torch.Tensor | np.ndarray) -> float:
    """‖W‖_σ, the largest singular value."""
    return float(torch.linalg.matrix_norm(_as_matrix(w), ord=2))


def frobenius_to_spectral_ratio(w: torch.Tensor | np.ndarray) -> float:
    """‖W‖_F / ‖W‖_σ ∈ [1, sqrt(rank W)]; its square is the stable rank."""
    m = _as_matrix(w)
    sigma = float(torch.linalg.matrix_norm(m, ord=2))
    if sigma == 0:
        raise ValueError("the ratio ‖W‖_F/‖W‖_σ is undefined for a zero matrix; the min-norm solutions have none.")
    return float(torch.linalg.matrix_norm(m, ord="fro")) / sigma


def harmonic_mean(values: Sequence[float]) -> float:
    """n / Σ 1/v for positive values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"the harmonic mean needs a non-empty list of finite positive values, got {list(values)!r}.")
    return float(v.size / np.sum(1.0 / v))


def _check_depths(frobenius_bound: float, k: int, depth: int) -> None:
    if not (math.isfinite(frobenius_bound) and frobenius_bound > 0):
        raise ValueError(f"B={frobenius_bound!r} must be a finite positive bound on the reference net's ‖W_i‖_F.")
    if k < 2 or depth <= k:
        raise ValueError(f"Timor et al.'s bounds need a reference depth k >= 2 and a deeper net, L > k; got k={k}, L={depth}.")


def timor_classification_bound(frobenius_bound: float, k: int, depth: int) -> float:
    """Right-hand side of (12): harmonic mean of ‖W_i*‖_F/‖W_i*‖_σ ≤ √2 (B/√2)^{k/L} √((L+1)/L)."""
    _check_depths(frobenius_bound, k, depth)
    return math.sqrt(2) * (frobenius_bound / math.sqrt(2)) ** (k / depth) * math.sqrt((depth + 1) / depth)


def timor_interpolation_bound(frobenius_bound: float, k: int, depth: int) -> float:
    """Right-hand side of (21): harmonic mean of ‖W_i*‖_F/‖W_i*‖_σ ≤ B^{k/L}."""
    _check_depths(frobenius_bound, k, depth)
    return frobenius_bound ** (k / depth)


def ratio_bound(problem: str, frobenius_bound: float, k: int, depth: int) -> float:
    """Timor et al.'s bound on the harmonic mean for ``problem`` ("classification" (4) or "interpolation" (6))."""
    if problem == "classification":
        return timor_classification_bound(frobenius_bound, k, depth)
    if problem == "interpolation":
        return timor_interpolation_bound(frobenius_bound, k, depth)
    raise ValueError(f"problem={problem!r} is unknown; choose one of {PROBLEMS}.")


def local_rank_bound(ratio_upper: float, spectral: float, epsilons: float | Sequence[float]) -> np.ndarray:
    """(ratio_upper · ‖W_l‖_σ / ε)² for each ε: the right-hand side of (13) with ratio_upper from (12),
    of (23) with ratio_upper from (21), or of the hidden-layer corollary with its own ratio bound."""
    eps = np.atleast_1d(np.asarray(epsilons, dtype=float))
    if np.any(~np.isfinite(eps)) or np.any(eps <= 0):
        raise ValueError(f"every ε must be finite and > 0, got {eps.tolist()!r}.")
    if not (ratio_upper >= 1 and spectral >= 0):
        raise ValueError(f"ratio_upper={ratio_upper!r} must be >= 1 (‖W‖_F >= ‖W‖_σ) and ‖W_l‖_σ={spectral!r} >= 0.")
    return (ratio_upper * spectral / eps) ** 2


def hidden_layer_ratio_bound(ratio_upper: float, depth: int) -> float:
    """With a scalar output the last layer's ratio is exactly 1, so the harmonic-mean bound b over
    all L layers leaves, for the L-1 hidden ones, a harmonic mean ≤ b (L-1)/(L-b) (needs b < L)."""
    if not 1 <= ratio_upper < depth:
        raise ValueError(f"the hidden-layer bound needs 1 <= b < L; got b={ratio_upper!r}, L={depth}.")
    return ratio_upper * (depth - 1) / (depth - ratio_upper)


# --- Lemma 5 --------------------------------------------------------------------------------

def smallest_nonzero_singular_value(w: torch.Tensor | np.ndarray, rtol: float | None = None) -> float:
    """σ_min^+(W), the ε_0 of Lemma 5 made explicit; 'non-zero' as torch.linalg.matrix_rank counts it."""
    s = torch.linalg.svdvals(_as_matrix(w))
    tol = (max(_as_matrix(w).shape) * torch.finfo(s.dtype).eps if rtol is None else rtol) * float(s[0])
    positive = s[s > tol]
    if positive.numel() == 0:
        raise ValueError("W is zero: it has no non-zero singular value.")
    return float(positive[-1])


def lemma5_onset(jacobian_svals: torch.Tensor, weight_svals: torch.Tensor) -> float:
    """The largest ε_0 such that rank_ε(J) ≤ rank_ε(W) for every 0 < ε < ε_0 (``inf`` if it never fails).

    ``jacobian_svals`` may be batched (..., k): the inequality must hold for every row. Both counts are
    step functions of ε that are constant on [s_i, s_{i+1}) between consecutive singular values (σ > ε
    is strict), so the first failure, if any, is at one of the singular values.
    """
    js = torch.as_tensor(jacobian_svals).double()
    ws = torch.as_tensor(weight_svals).double().reshape(-1)
    js = js.reshape(-1, js.shape[-1])
    candidates = torch.unique(torch.cat([js.reshape(-1), ws]))
    candidates = candidates[candidates > 0]
    if candidates.numel() == 0:
        return math.inf
    rank_j = (js.unsqueeze(-1) > candidates).sum(-2)  # (rows, candidates)
    rank_w = (ws.unsqueeze(-1) > candidates).sum(-2)  # (candidates,)
    fails = (rank_j > rank_w).any(0)
    return float(candidates[fails].min()) if bool(fails.any()) else math.inf


def random_test_matrices(n: int, seed: int = 0, max_side: int = 12) -> list[np.ndarray]:
    """``n`` random matrices with varied shapes and spectra, for the property (14): generic, rank-deficient
    (including zero), spread over 16 decades, and with all singular values equal (where (14) is tight)."""
    if n < 1 or max_side < 1:
        raise ValueError(f"n={n!r} and max_side={max_side!r} must be >= 1.")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        m, k = rng.integers(1, max_side + 1, size=2)
        r = min(m, k)
        kind = i % 4
        if kind == 0:
            s = rng.exponential(size=r)
        elif kind == 1:
            s = np.concatenate([rng.exponential(size=rng.integers(0, r + 1)), np.zeros(r)])[:r]
        elif kind == 2:
            s = 10.0 ** rng.uniform(-8, 8, size=r)
        else:
            s = np.full(r, 10.0 ** rng.uniform(-3, 3))
        u, _ = np.linalg.qr(rng.standard_normal((m, m)))
        v, _ = np.linalg.qr(rng.standard_normal((k, k)))
        out.append(u[:, :r] @ np.diag(s) @ v[:, :r].T)
    return out


def frobenius_rank_gap(w: torch.Tensor | np.ndarray, epsilons: Sequence[float]) -> np.ndarray:
    """‖W‖_F - ε·sqrt(rank_ε(W)) for each ε; (14) says it is never negative."""
    m = _as_matrix(w)
    s = torch.linalg.svdvals(m)
    ranks = epsilon_rank(s, list(epsilons)).numpy()
    return float(torch.linalg.matrix_norm(m, ord="fro")) - np.asarray(epsilons, dtype=float) * np.sqrt(ranks)


def bias_free_mlp(widths: Sequence[int], activation: str = "relu", seed: int | None = None) -> MLP:
    """An :class:`MLP` without biases: the networks of Timor et al. (their proof bounds |N(x)| by
    ∏‖W_j‖_σ ‖x‖, which needs N(0) = 0)."""
    model = MLP(widths, activation=activation, seed=seed)
    for layer in model.layers:
        layer.register_parameter("bias", None)
    return model


def amplifying_network(layer_singular_values: Sequence[float], amplification: float, depth: int = 3) -> MLP:
    """A bias-free ReLU net whose last layer is diag(layer_singular_values) and whose earlier layers
    are ``amplification`` · I: on inputs with positive entries every ReLU is active, so
    J_x p_L = amplification^{L-1} · W_L and rank_ε(J) > rank_ε(W_L) for ε between σ_min(W_L) and
    amplification^{L-1} σ_min(W_L)."""
    s = torch.as_tensor(layer_singular_values, dtype=torch.float64)
    if s.ndim != 1 or s.numel() == 0 or bool((s <= 0).any()):
        raise ValueError(f"layer_singular_values={list(layer_singular_values)!r} must be a non-empty list of positive numbers.")
    if not amplification > 0 or depth < 2:
        raise ValueError(f"amplification={amplification!r} must be > 0 and depth={depth!r} >= 2.")
    n = s.numel()
    model = bias_free_mlp([n] * (depth + 1), seed=0).double()
    with torch.no_grad():
        for layer in model.layers[:-1]:
            layer.weight.copy_(amplification * torch.eye(n, dtype=torch.float64))
        model.layers[-1].weight.copy_(torch.diag(s))
    return model


# --- the Jacobian chain, literally ------------------------------------------------------------

def jacobian_chain(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """[W_l D_{l-1} W_{l-1} ⋯ D_1 W_1 for l = 1..L], each (N, n_l, n_0), with D_k = diag(1[p_k(x) > 0])
    (ReLU) or I (identity): the product of Lemma 5's proof, multiplied out from W_1 on."""
    if model.activation_name not in ("relu", "identity"):
        raise ValueError(f"the 0/1 activation pattern D_k exists for ReLU (or identity) nets, not {model.activation_name!r}.")
    with torch.no_grad():
        pre = model.preactivations(x)
        j = model.layers[0].weight.expand(x.shape[0], -1, -1)
        out = [j]
        for layer, p in zip(model.layers[1:], pre[:-1]):
            d = (p > 0).to(p.dtype) if model.activation_name == "relu" else torch.ones_like(p)
            j = layer.weight @ (d.unsqueeze(-1) * j)
            out.append(j)
    return out


def autograd_jacobians(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Reference Jacobians: one ``torch.autograd.functional.jacobian`` call per sample and layer."""
    n_layers = len(model.preactivations(x[:1]))
    return [torch.stack([torch.autograd.functional.jacobian(lambda xi: model.preactivations(xi[None])[l][0], xi)
                         for xi in x]) for l in range(n_layers)]


def make_layer_low_rank(model: MLP, layer: int, rank: int, seed: int = 0) -> MLP:
    """Replace W_layer (1-based) by a random product A B of inner dimension ``rank`` (so rank W_layer = rank)."""
    if not 1 <= layer <= len(model.layers):
        raise ValueError(f"layer={layer!r} must be between 1 and {len(model.layers)}.")
    w = model.layers[layer - 1].weight
    if not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank={rank!r} must be between 1 and {min(w.shape)} for a {tuple(w.shape)} matrix.")
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(w.shape[0], rank, generator=g, dtype=w.dtype) / math.sqrt(rank)
    b = torch.randn(rank, w.shape[1], generator=g, dtype=w.dtype) / math.sqrt(w.shape[1])
    with torch.no_grad():
        w.copy_(a @ b)
    return model


# --- the min-norm problems (4) and (6) --------------------------------------------------------

@dataclass(frozen=True)
class ReferenceProblem:
    """Data and a depth-k reference net N that satisfies the constraints of (4) or (6) with ‖W_i‖_F ≤ B."""

    problem: str
    x: torch.Tensor  # (n, n_0), every ‖x_i‖ = 1
    y: torch.Tensor  # (n,) labels ±1, or positive regression targets
    reference: MLP
    frobenius_bound: float  # B = max_i ‖W_i‖_F of the balanced, exactly feasible reference net

    @property
    def k(self) -> int:
        return len(self.reference.layers)


def layer_norms(model: MLP) -> tuple[np.ndarray, np.ndarray]:
    """(‖W_l‖_F, ‖W_l‖_σ) per layer."""
    ws = [layer.weight.detach().double() for layer in model.layers]
    return (np.array([float(torch.linalg.matrix_norm(w, ord="fro")) for w in ws]),
            np.array([float(torch.linalg.matrix_norm(w, ord=2)) for w in ws]))


def balance_layers(model: MLP, scale: float = 1.0) -> MLP:
    """Multiply the function by ``scale`` (>0) and give every layer the same ‖W_l‖_F. A bias-free ReLU
    net is positively homogeneous in each layer, so W_l → a_l W_l with ∏ a_l = scale changes the output
    by ``scale`` only; equal Frobenius norms minimise Σ‖W_l‖_F² among these rescalings, as at the optimum."""
    if any(layer.bias is not None for layer in model.layers):
        raise ValueError("balancing changes the function of a net with biases; use bias_free_mlp.")
    if not scale > 0:
        raise ValueError(f"scale={scale!r} must be > 0.")
    fro, _ = layer_norms(model)
    target = math.exp((np.log(fro).sum() + math.log(scale)) / len(fro))
    with torch.no_grad():
        for layer, f in zip(model.layers, fro):
            layer.weight.mul_(target / f)
    return model


def _unit_sphere(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def reference_problem(problem: str, n_points: int, dim: int, width: int, seed: int = 0) -> ReferenceProblem:
    """A bias-free depth-2 ReLU reference net of width ``width`` and ``n_points`` inputs on the unit sphere.

    Classification: y_i = sign N(x_i) for the half of 4n candidates with the largest |N(x_i)| (a
    wider margin gives a smaller B), N rescaled so that min_i y_i N(x_i) = 1. Interpolation: the output
    weights are made positive so N ≥ 0, the n candidates with largest N(x_i) are kept and N is rescaled
    so that max_i y_i = 1 (Theorem 8 needs some y_i ≥ 1). B is max_i ‖W_i‖_F after balancing.
    """
    if problem not in PROBLEMS:
        raise ValueError(f"problem={problem!r} is unknown; choose one of {PROBLEMS}.")
    if n_points < 2 or dim < 1 or width < 2:
        raise ValueError(f"need n_points >= 2, dim >= 1, width >= 2 (Timor et al.'s m >= 2); got {n_points}, {dim}, {width}.")
    g = torch.Generator().manual_seed(seed)
    net = bias_free_mlp((dim, width, 1), seed=seed).double()
    candidates = _unit_sphere(4 * n_points, dim, g)
    with torch.no_grad():
        if problem == "interpolation":
            net.layers[1].weight.abs_()
        out = net(candidates)[:, 0]
        if problem == "classification":
            keep = out.abs().argsort(descending=True)[:n_points]
            x, y = candidates[keep], torch.sign(out[keep])
            scale = 1.0 / float((y * out[keep]).min())
        else:
            keep = out.argsort(descending=True)[:n_points]
            x = candidates[keep]
            scale = 1.0 / float(out[keep].max())
        balance_layers(net, scale)
        if problem == "interpolation":
            y = net(x)[:, 0]
    fro, _ = layer_norms(net)
    return ReferenceProblem(problem, x, y, net, float(fro.max()))


def squared_hinge(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of max(0, 1 - y N(x))²: zero exactly on the feasible set of (4)."""
    return torch.relu(1 - y * model(x)[:, 0]).pow(2).mean()


def squared_residual(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of (N(x) - y)²: zero exactly on the feasible set of (6)."""
    return (model(x)[:, 0] - y).pow(2).mean()


@dataclass
class MinNormFit:
    """A student net trained towards the min-norm problem, made exactly (4) or approximately (6) feasible."""

    model: MLP
    norm: float  # ‖θ‖ after rescaling and balancing
    constraint_violation: float  # (4): 1 - min_i y_i N(x_i) (0 by construction); (6): max_i |N(x_i) - y_i| / max y
    history_loss: list[float]


def fit_min_norm(reference: ReferenceProblem, depth: int, width: int, *, steps: int, lr: float,
                 weight_decay: float, seed: int = 0, device: str = "cpu", progress: bool = False) -> MinNormFit:
    """Train a bias-free ReLU student of depth ``depth`` towards (4) / (6) with ``train.train``:
    full-batch Adam on the constraint penalty plus coupled weight decay λ‖θ‖²/2 (Adam's fixed points
    are then stationary points of the penalised problem, whose minimisers tend to (4)/(6) as λ → 0),
    in two stages (lr, then lr/10). Then (4) is made exactly feasible by scaling the output to a
    minimum margin of 1; both problems get their layers balanced (norm-reducing, function-preserving)."""
    if depth <= reference.k:
        raise ValueError(f"depth={depth} must exceed the reference depth k={reference.k} (Timor et al.'s L > k).")
    if width < reference.reference.widths[1]:
        raise ValueError(f"width={width} must be at least the reference width m={reference.reference.widths[1]}.")
    n, dim = reference.x.shape
    model = bias_free_mlp((dim, *[width] * (depth - 1), 1), seed=seed).double()
    # He initialisation keeps the signal of a deep bias-free ReLU net from vanishing (PyTorch's default
    # shrinks it by about √6 per layer, and a point whose ReLUs all die can never be classified).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g, dtype=torch.float64)
                               * math.sqrt(2.0 / layer.weight.shape[1]))
    loss = squared_hinge if reference.problem == "classification" else squared_residual
    split = Split(reference.x, reference.y)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices of side <= a few dozen: threads cost more than they save
    try:
        _train_stages(model, split, reference, steps, lr, weight_decay, seed, device, progress, loss, losses, n)
    finally:
        torch.set_num_threads(threads)
    model = model.cpu()
    with torch.no_grad():
        out = model(reference.x)[:, 0]
        if reference.problem == "classification":
            margin = float((reference.y * out).min())
            if margin <= 0:
                raise RuntimeError(f"the trained student misclassifies a point (min margin {margin:.3g}); train longer.")
            balance_layers(model, 1.0 / margin)
            violation = max(0.0, 1.0 - float((reference.y * model(reference.x)[:, 0]).min()))  # 0 up to round-off
        else:
            balance_layers(model)
            violation = float((model(reference.x)[:, 0] - reference.y).abs().max() / reference.y.abs().max())
    norm = float(math.sqrt(sum(float(p.detach().pow(2).sum()) for p in model.parameters())))
    return MinNormFit(model, norm, violation, losses)


def _train_stages(model, split, reference, steps, lr, weight_decay, seed, device, progress, loss, losses, n) -> None:
    for stage, stage_lr in enumerate((lr, lr / 10)):
        history = train(model, split, split, rank_inputs=reference.x[:2], steps=max(steps // 2, 1), batch_size=n,
                        lr=stage_lr, weight_decay=weight_decay, optimizer="adam", loss=loss, n_checkpoints=8,
                        seed=seed + stage, device=device, progress=progress,
                        description=f"{reference.problem} L={len(model.layers)} stage {stage + 1}")
        losses += history.metrics["train_loss"]


@dataclass(frozen=True)
class BoundReport:
    """Check 5 on one (approximately) min-norm net: ratios, Timor et al.'s bound, the chosen layers,
    and LR_l^ε against the propositions' right-hand sides for every ε of ``epsilons``."""

    problem: str
    epsilons: np.ndarray  # (E,)
    ratios: np.ndarray  # ‖W_l‖_F/‖W_l‖_σ per layer (L,)
    spectral: np.ndarray  # ‖W_l‖_σ per layer
    frobenius: np.ndarray  # ‖W_l‖_F per layer
    harmonic: float
    timor_bound: float  # b of (12) or (21)
    hidden_bound: float  # b (L-1)/(L-b), nan if b >= L
    proposition_layer: int  # 1-based argmin of the ratio over all layers (what the proof picks)
    hidden_layer: int  # 1-based argmin over the hidden layers (the corollary's pick)
    local_rank: np.ndarray  # LR_l^ε (L, E), mean over the inputs
    max_rank_per_point: np.ndarray  # max over inputs of rank_ε(J_x p_l) (L, E)
    weight_rank: np.ndarray  # rank_ε(W_l) (L, E)
    lemma5_eps0: np.ndarray  # σ_min^+(W_l) per layer
    proposition_rhs: np.ndarray  # (E,) at proposition_layer
    hidden_rhs: np.ndarray  # (E,) at hidden_layer, with hidden_bound (nan if undefined)
    norm: float  # ‖θ‖
    certified_bound: float  # ‖θ‖ / (√L · max_i(|N(x_i)|/‖x_i‖)^{1/L}): bounds the harmonic mean of this very net

    def to_dict(self) -> dict:
        """JSON-ready: arrays as lists, infinite slack as None."""
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        for which in ("proposition", "hidden"):
            out[f"slack_{which}"] = [None if not math.isfinite(v) else float(v) for v in self.slack(which)]
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

    def slack(self, which: str = "proposition") -> np.ndarray:
        """RHS / LR per ε at the chosen layer (inf where LR = 0)."""
        layer, rhs = ((self.proposition_layer, self.proposition_rhs) if which == "proposition"
                      else (self.hidden_layer, self.hidden_rhs))
        lr = self.local_rank[layer - 1]
        with np.errstate(divide="ignore"):
            return np.where(lr > 0, rhs / np.where(lr > 0, lr, 1), np.inf)


def bound_report(fit: MinNormFit, reference: ReferenceProblem, epsilons: Sequence[float],
                 inputs: torch.Tensor | None = None) -> BoundReport:
    """Measure everything check 5 reports; ``inputs`` (default: the training inputs) sample the data."""
    from .rank import singular_values  # local: rank imports nothing from here, but keep the module light

    eps = np.asarray(sorted(float(e) for e in epsilons))
    model = fit.model
    depth = len(model.layers)
    fro, sig = layer_norms(model)
    ratios = fro / sig
    b = ratio_bound(reference.problem, reference.frobenius_bound, reference.k, depth)
    hidden_b = hidden_layer_ratio_bound(b, depth) if b < depth else math.nan
    l_prop = int(np.argmin(ratios)) + 1
    l_hidden = int(np.argmin(ratios[:-1])) + 1
    x = reference.x if inputs is None else inputs
    svals = singular_values(model, x.to(next(model.parameters()).dtype))
    ranks = [epsilon_rank(s, list(eps)).double().numpy() for s in svals]  # each (N, E)
    w_ranks = np.stack([epsilon_rank(torch.linalg.svdvals(layer.weight.detach().double()), list(eps)).numpy()
                        for layer in model.layers])
    eps0 = np.array([smallest_nonzero_singular_value(layer.weight) for layer in model.layers])
    with torch.no_grad():
        reach = float((model(reference.x)[:, 0].abs() / reference.x.norm(dim=1)).max())
    hidden_rhs = (local_rank_bound(hidden_b, sig[l_hidden - 1], eps) if math.isfinite(hidden_b)
                  else np.full(eps.shape, np.nan))
    return BoundReport(
        problem=reference.problem, epsilons=eps, ratios=ratios, spectral=sig, frobenius=fro,
        harmonic=harmonic_mean(ratios), timor_bound=b, hidden_bound=hidden_b, proposition_layer=l_prop,
        hidden_layer=l_hidden, local_rank=np.stack([r.mean(0) for r in ranks]),
        max_rank_per_point=np.stack([r.max(0) for r in ranks]), weight_rank=w_ranks, lemma5_eps0=eps0,
        proposition_rhs=local_rank_bound(b, sig[l_prop - 1], eps), hidden_rhs=hidden_rhs, norm=fit.norm,
        certified_bound=fit.norm / (math.sqrt(depth) * reach ** (1 / depth)))
