"""Deep VIB on jointly Gaussian data (Fig. 2, App. B): a deep linear encoder, a Gaussian decoder, a Gaussian prior.

Model.  Encoder p(t|x) = N(μ(x), Σξ): the mean μ is a deep linear network (``MLP`` with the identity activation,
so the rank engine's closed-form Jacobian applies) and the noise covariance Σξ = L_ξ L_ξᵀ is learned and shared by
all inputs, as in the analytic optimum.  Decoder q(y|t) = N(D t + d, S), S learned.  Prior r(t) = N(0, I) (fixed)
or N(m, R) (learned).  Loss per sample, in nats: E_ξ[−log q(y | μ(x) + ξ)] + β_VIB · KL(p(t|x) ‖ r(t)).

Exact, not sampled.  For a linear-Gaussian model both terms are quadratic in (x, y), so their mean over a data set
depends on it only through its first and second moments, and the expectation over ξ is a trace:
E_ξ[−log q] = ½[rᵀS⁻¹r + tr(S⁻¹DΣξDᵀ) + log det S + d_y log 2π] with r = y − Dμ(x) − d.  Training on the moments
of ``n_train`` samples is therefore *exactly* full-batch training on those samples, at a cost independent of
``n_train``; :func:`per_sample_loss_terms` evaluates the same terms sample by sample (the tests check they agree,
and agree with Monte Carlo over ξ).  Full-batch L-BFGS in float64 then converges to the optimum of the model.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .experiments import cpu_threads
from .gaussian import JointGaussian
from .gaussian_ib import GaussianIB, gaussian_entropy
from .models import MLP
from .rank import local_rank, singular_values
from .vib import average_gaussian_kl, gaussian_kl, vib_beta, vib_objective

PRIORS = ("standard", "learned")
DTYPE = torch.float64


@dataclass(frozen=True)
class DataMoments:
    """First and second raw moments of a data set of (x, y) pairs: all the Gaussian VIB loss needs."""

    n: int
    mean_x: tuple[float, ...]
    mean_y: tuple[float, ...]
    xx: tuple[tuple[float, ...], ...]  # E[x xᵀ]
    xy: tuple[tuple[float, ...], ...]  # E[x yᵀ]
    yy: tuple[tuple[float, ...], ...]  # E[y yᵀ]

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor) -> "DataMoments":
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must be (n, dim_x) and (n, dim_y) with the same n >= 2.")
        x, y = x.double(), y.double()
        n = x.shape[0]

        def nested(t: torch.Tensor):
            return tuple(tuple(float(v) for v in row) for row in t.tolist())

        return cls(n, tuple(x.mean(0).tolist()), tuple(y.mean(0).tolist()), nested(x.T @ x / n), nested(x.T @ y / n),
                   nested(y.T @ y / n))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(getattr(self, k), dtype=DTYPE) for k in ("mean_x", "mean_y", "xx", "xy", "yy")}

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (maximum-likelihood) covariances Σx, Σy, Σxy of the sample."""
        mx, my = np.asarray(self.mean_x), np.asarray(self.mean_y)
        return (np.asarray(self.xx) - np.outer(mx, mx), np.asarray(self.yy) - np.outer(my, my),
                np.asarray(self.xy) - np.outer(mx, my))


def _tril_parameter(k: int) -> nn.Parameter:
    """Unconstrained k×k matrix; :func:`_scale_tril` maps it to a Cholesky factor (log-Cholesky)."""
    return nn.Parameter(torch.zeros(k, k, dtype=DTYPE))


def _scale_tril(raw: torch.Tensor) -> torch.Tensor:
    # Exponentiated diagonal: every value of the parameter is a valid positive-definite covariance.
    return torch.tril(raw, -1) + torch.diag_embed(raw.diagonal().exp())


class GaussianVIB(nn.Module):
    """Deep linear Gaussian encoder, linear Gaussian decoder and a fixed or learned Gaussian prior."""

    def __init__(self, dim_x: int, dim_y: int, dim_t: int, *, hidden_layers: int, width: int, prior: str,
                 seed: int) -> None:
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"prior={prior!r} is unknown; use one of {PRIORS}.")
        self.prior_kind = prior
        self.encoder_mean = MLP.with_hidden(dim_x, width, hidden_layers, dim_t, activation="identity", seed=seed).to(DTYPE)
        self.noise_raw = _tril_parameter(dim_t)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.decoder_mean = nn.Linear(dim_t, dim_y).to(DTYPE)
        self.decoder_raw = _tril_parameter(dim_y)
        if prior == "learned":
            self.prior_mean = nn.Parameter(torch.zeros(dim_t, dtype=DTYPE))
            self.prior_raw = _tril_parameter(dim_t)
        else:
            self.register_buffer("prior_mean", torch.zeros(dim_t, dtype=DTYPE))
            self.register_buffer("prior_raw", torch.zeros(dim_t, dim_t, dtype=DTYPE))

    @property
    def noise_scale_tril(self) -> torch.Tensor:
        return _scale_tril(self.noise_raw)

    @property
    def decoder_scale_tril(self) -> torch.Tensor:
        return _scale_tril(self.decoder_raw)

    @property
    def prior_scale_tril(self) -> torch.Tensor:
        return _scale_tril(self.prior_raw)

    def encoder_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, b) with μ(x) = M x + b: the deep linear network's product, read off by evaluating it."""
        n_in = self.encoder_mean.widths[0]
        probe = torch.cat([torch.zeros(1, n_in, dtype=DTYPE), torch.eye(n_in, dtype=DTYPE)])
        out = self.encoder_mean(probe)
        return (out[1:] - out[:1]).T, out[0]

    def _decoder_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.decoder_scale_tril
        # tr(S⁻¹ D Σξ Dᵀ) = ‖ L_S⁻¹ D L_ξ ‖²_F: the decoder's expected penalty for the encoder noise.
        noise_through_decoder = torch.linalg.solve_triangular(s, self.decoder_mean.weight @ self.noise_scale_tril, upper=False)
        const = 2 * s.diagonal().log().sum() + s.shape[0] * math.log(2 * math.pi)
        return s, noise_through_decoder.pow(2).sum(), const

    def loss_terms(self, moments: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean over the data of E_ξ[−log q(y|t)], mean of KL(p(t|x) ‖ r(t))), both exact, in nats per sample."""
        m, b = self.encoder_affine()
        d, c = self.decoder_mean.weight, self.decoder_mean.bias
        s, noise_term, const = self._decoder_terms()
        # r = y − G z with z = (x, 1) and G = [D M, D b + c]; E[r rᵀ] from the raw moments of (x, y).
        g = torch.cat([d @ m, (d @ b + c)[:, None]], dim=1)
        ezz = torch.cat([torch.cat([moments["xx"], moments["mean_x"][:, None]], 1),
                         torch.cat([moments["mean_x"], torch.ones(1, dtype=DTYPE)])[None, :]], 0)
        ezy = torch.cat([moments["xy"], moments["mean_y"][None, :]], 0)
        err = moments["yy"] - g @ ezy - ezy.T @ g.T + g @ ezz @ g.T
        whitened = torch.linalg.solve_triangular(s, torch.linalg.solve_triangular(s, err, upper=False).T, upper=False)
        nll = 0.5 * (whitened.diagonal().sum() + noise_term + const)
        h = torch.cat([m, b[:, None]], dim=1)
        mean_mu, second_mu = h @ torch.cat([moments["mean_x"], torch.ones(1, dtype=DTYPE)]), h @ ezz @ h.T
        kl = average_gaussian_kl(mean_mu, second_mu, self.noise_scale_tril, self.prior_mean, self.prior_scale_tril)
        return nll, kl

    def per_sample_loss_terms(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same two terms sample by sample (exact over ξ; KL via torch.distributions): for checks."""
        mu = self.encoder_mean(x.to(DTYPE))
        s, noise_term, const = self._decoder_terms()
        r = y.to(DTYPE) - self.decoder_mean(mu)
        nll = 0.5 * (torch.linalg.solve_triangular(s, r.T, upper=False).pow(2).sum(0) + noise_term + const)
        kl = gaussian_kl(mu, self.noise_scale_tril, self.prior_mean, self.prior_scale_tril)
        return nll, kl

    def sampled_nll(self, x: torch.Tensor, y: torch.Tensor, *, n_noise: int, seed: int) -> torch.Tensor:
        """−log q(y|t) averaged over ``n_noise`` sampled t ~ p(t|x) per sample (Monte Carlo, for checks)."""
        g = torch.Generator().manual_seed(seed)
        mu = self.encoder_mean(x.to(DTYPE))
        xi = torch.randn(n_noise, *mu.shape, generator=g, dtype=DTYPE) @ self.noise_scale_tril.T
        q = torch.distributions.MultivariateNormal(self.decoder_mean(mu + xi), scale_tril=self.decoder_scale_tril)
        return -q.log_prob(y.to(DTYPE)).mean(0)

    def whitened_mean_map(self) -> MLP:
        """The encoder mean followed by L_ξ⁻¹: T's mean in units of its own noise.  Its Jacobian L_ξ⁻¹ M has the
        singular values of Σξ^{-1/2} M, which do not change under any invertible recoding T → C T (that changes
        neither I(T;X) nor the loss, once the decoder and prior follow), unlike the singular values of M."""
        widths = self.encoder_mean.widths
        net = MLP((*widths, widths[-1]), activation="identity").to(DTYPE)
        with torch.no_grad():
            for src, dst in zip(self.encoder_mean.layers, net.layers):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
            eye = torch.eye(widths[-1], dtype=DTYPE)
            net.layers[-1].weight.copy_(torch.linalg.solve_triangular(self.noise_scale_tril, eye, upper=False))
            net.layers[-1].bias.zero_()
        return net


@dataclass(frozen=True)
class GaussianVIBJob:
    """One point of the β sweep: everything a worker process needs (picklable)."""

    beta_ib: float
    prior: str
    hidden_layers: int
    width: int
    steps: int  # L-BFGS iterations at most
    epsilon: float  # threshold on the whitened singular values
    seed: int
    train: DataMoments
    test: DataMoments
    rank_points: tuple[tuple[float, ...], ...]


def fit(job: GaussianVIBJob) -> dict:
    """Train one model to convergence (full-batch L-BFGS) and measure it; a JSON-ready row."""
    start = time.perf_counter()
    beta_vib = vib_beta(job.beta_ib)
    train_m, test_m = job.train.tensors(), job.test.tensors()
    dim_x, dim_y = len(job.train.mean_x), len(job.train.mean_y)
    with cpu_threads(1):
        model = GaussianVIB(dim_x, dim_y, dim_x, hidden_layers=job.hidden_layers, width=job.width, prior=job.prior,
                            seed=job.seed)
        opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=job.steps, max_eval=2 * job.steps,
                                tolerance_grad=1e-12, tolerance_change=1e-15, history_size=100,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            nll, kl = model.loss_terms(train_m)
            loss = vib_objective(nll, kl, beta_vib)
            loss.backward()
            return loss

        opt.step(closure)
        iterations = int(opt.state[opt._params[0]]["n_iter"])
        grad_norm = float(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())
        with torch.no_grad():
            nll, kl = model.loss_terms(train_m)
            test_nll, test_kl = model.loss_terms(test_m)
            m, _ = model.encoder_affine()
            noise = model.noise_scale_tril
            whitened = torch.linalg.solve_triangular(noise, m, upper=False)
            cov_x = torch.tensor(job.train.covariances()[0], dtype=DTYPE)
            # I(T;X) of the learned encoder on the training data: ½ log det(I + W Σx Wᵀ), W = L_ξ⁻¹ M.
            info_x = 0.5 * torch.logdet(torch.eye(dim_x, dtype=DTYPE) + whitened @ cov_x @ whitened.T)
            points = torch.tensor(job.rank_points, dtype=DTYPE)
            net = model.whitened_mean_map()
            lr = local_rank(net, points, (job.epsilon,))
            gains = singular_values(net, points[:1])[-1][0]
    return {"beta_ib": job.beta_ib, "beta_vib": beta_vib, "prior": job.prior, "kl": float(kl), "nll": float(nll),
            "loss": float(nll + beta_vib * kl), "test_nll": float(test_nll), "test_kl": float(test_kl),
            "test_loss": float(test_nll + beta_vib * test_kl), "info_x_encoder": float(info_x),
            "local_rank": float(lr.mean[-1, 0]), "local_rank_unwhitened": float(lr.mean[-2, 0]),
            "whitened_gains": gains.tolist(), "iterations": iterations, "grad_norm": grad_norm,
            "seconds": time.perf_counter() - start}


def make_jobs(joint: JointGaussian, betas_ib, priors, *, hidden_layers: int, width: int, steps: int, epsilon: float,
              n_train: int, n_test: int, n_rank_points: int, seed: int) -> list[GaussianVIBJob]:
    """The sweep's jobs; the training and test samples are drawn once, here, and passed as their moments."""
    for prior in priors:
        if prior not in PRIORS:
            raise ValueError(f"prior={prior!r} is unknown; use one of {PRIORS}.")
    x_train, y_train = joint.sample(n_train, seed=2 * seed + 1, dtype=DTYPE)
    x_test, y_test = joint.sample(n_test, seed=2 * seed + 2, dtype=DTYPE)
    train_m, test_m = DataMoments.of(x_train, y_train), DataMoments.of(x_test, y_test)
    points = tuple(tuple(row) for row in x_test[:n_rank_points].tolist())
    return [GaussianVIBJob(float(b), prior, hidden_layers, width, steps, epsilon, seed, train_m, test_m, points)
            for prior in priors for b in betas_ib]


def plug_in_solution(moments: DataMoments) -> GaussianIB:
    """Chechik's solution for the sample's own covariance: what a perfectly converged model on it would reach."""
    return GaussianIB.from_covariances(*moments.covariances())


def crossing_beta(betas: np.ndarray, ranks: np.ndarray, level: float) -> float:
    """The first β (log-interpolated) at which ``ranks`` rises through ``level``; NaN if it never does."""
    betas, ranks = np.asarray(betas, float), np.asarray(ranks, float)
    order = np.argsort(betas)
    betas, ranks = betas[order], ranks[order]
    above = np.nonzero(ranks >= level)[0]
    if above.size == 0:
        return float("nan")
    i = int(above[0])
    if i == 0:
        return float(betas[0])
    lo, hi = np.log(betas[i - 1]), np.log(betas[i])
    frac = (level - ranks[i - 1]) / (ranks[i] - ranks[i - 1])
    return float(np.exp(lo + frac * (hi - lo)))


def job_summary(job: GaussianVIBJob) -> dict:
    out = asdict(job)
    for k in ("train", "test", "rank_points"):
        out.pop(k)
    return out


def analytic_sweep(ib: GaussianIB, betas_ib, epsilon: float) -> dict[str, np.ndarray]:
    """What a perfectly trained model would show at each β: I(T;X) (= the KL term with the best prior), the
    ε-rank of Chechik's A_β (whose noise is N(0, I), i.e. already whitened), and the optimal VIB loss
    h(Y) − I(T;Y) + β_VIB I(T;X) (the decoder's cross-entropy is at best h(Y|T) = h(Y) − I(T;Y))."""
    b = np.asarray(betas_ib, dtype=np.float64)
    h_y = gaussian_entropy(ib.joint.cov_y)
    ranks = np.array([(np.linalg.svd(ib.projection(v), compute_uv=False) > epsilon).sum() for v in b])
    return {"beta": b, "info_x": ib.info_x(b), "info_y": ib.info_y(b), "rank": ranks,
            "loss": h_y - ib.info_y(b) + ib.info_x(b) / b}


def away_from_transitions(betas_ib, critical_betas, factor: float) -> np.ndarray:
    """Mask of the β at least ``factor`` away (ratio) from every finite critical β."""
    b = np.asarray(betas_ib, dtype=np.float64)[:, None]
    crit = np.asarray(critical_betas)[np.isfinite(critical_betas)][None, :]
    return np.all(np.abs(np.log(b / crit)) >= np.log(factor), axis=1)
