"""Deep VIB classifier (Alemi et al. 2016) on MNIST / Fashion-MNIST and its β sweep (the paper's Fig. 3).

The encoder maps an image x to a diagonal Gaussian p(t|x) = N(μ(x), diag σ²(x)) over a K-dimensional
bottleneck T; a softmax decoder q(y|t) reads one reparameterised sample t = μ + σ ⊙ ξ, ξ ~ N(0, I);
the prior is r(t) = N(0, I).  Training minimises, per sample and in nats,

    −log q(y | t) + β_VIB · KL(p(t|x) ‖ r(t))          (``vib.vib_objective``),

so a larger β_VIB compresses more (Chechik's β = 1/β_VIB, ``vib.ib_beta``).

The mean map x ↦ μ(x) is a :class:`~localrank_utils.models.MLP` of its own, so ``rank.local_rank``
takes its closed-form Jacobian path (784 → K); the log-variance head reads the mean map's last hidden
layer (a shared trunk, as in Alemi et al., whose encoder emits 2K numbers from one MLP).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import DATASET_NAMES, load_split
from .devices import resolve_device, seed_everything
from .experiments import N_CLASSES, cpu_threads, parallel_map
from .models import ACTIVATIONS, MLP
from .rank import _activation_derivative, _check_epsilons, epsilon_rank
from .results import atomic_write_text
from .train import OPTIMIZERS, Split, make_optimizer
from .vib import diagonal_gaussian_kl_to_standard, ib_beta, vib_objective

# The softplus floor keeps σ away from 0 (log σ² ≥ log 1e-4) so the KL stays finite at tiny β_VIB,
# where the noise would otherwise shrink without bound.
_MIN_VARIANCE = 1e-4


class VIBClassifier(nn.Module):
    """Encoder ``mean_map`` (an MLP 784 → hidden → K), log-variance head on its last hidden layer,
    linear softmax decoder K → classes.  ``forward`` returns class log-probabilities: one sample of T
    in training mode, the log of the mean of ``n_decoder_samples`` softmaxes in eval mode (Alemi et
    al. average 12 samples at test time)."""

    def __init__(self, n_in: int = 784, hidden: Sequence[int] = (256, 256), bottleneck_dim: int = 32,
                 n_classes: int = N_CLASSES, *, activation: str = "relu", n_decoder_samples: int = 12,
                 seed: int | None = None) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden={hidden!r} must list at least one hidden width, all >= 1 (e.g. (256, 256)).")
        for name, value in (("n_in", n_in), ("bottleneck_dim", bottleneck_dim), ("n_classes", n_classes),
                            ("n_decoder_samples", n_decoder_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes!r} must be >= 2 for a softmax decoder.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}.")
        self.bottleneck_dim = bottleneck_dim
        self.n_decoder_samples = n_decoder_samples
        self.mean_map = MLP((n_in, *hidden, bottleneck_dim), activation=activation, seed=seed)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed + 1_000_003)  # independent of the mean map's initialisation
            self.log_var_head = nn.Linear(hidden[-1], bottleneck_dim)
            self.decoder = nn.Linear(bottleneck_dim, n_classes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ(x) and log σ²(x), each (B, K)."""
        pre = self.mean_map.preactivations(x)
        trunk = self.mean_map.activation(pre[-2])
        log_var = torch.log(nn.functional.softplus(self.log_var_head(trunk)) + _MIN_VARIANCE)
        return pre[-1], log_var

    def sample(self, mean: torch.Tensor, log_var: torch.Tensor, n: int = 1) -> torch.Tensor:
        """``n`` reparameterised draws t = μ + σ ⊙ ξ, shape (n, B, K); gradients flow through μ and σ."""
        noise = torch.randn((n, *mean.shape), dtype=mean.dtype, device=mean.device)
        return mean + (0.5 * log_var).exp() * noise

    def log_probs(self, x: torch.Tensor, n_samples: int) -> torch.Tensor:
        """log of the mean over ``n_samples`` draws of T of q(y|t), shape (B, classes)."""
        mean, log_var = self.encode(x)
        logp = torch.log_softmax(self.decoder(self.sample(mean, log_var, n_samples)), -1)
        return torch.logsumexp(logp, 0) - math.log(n_samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs(x, 1 if self.training else self.n_decoder_samples)

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The mean map's pre-activations [p_1, ..., μ]: what local rank is measured on."""
        return self.mean_map.preactivations(x)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.mean_map.widths


def vib_loss(beta_vib: float):
    """The VIB objective as a ``train.train`` loss: (model, x, y) -> mean of CE + β_VIB · KL, one sample of T."""
    ib_beta(beta_vib)  # validates β_VIB > 0 with a clear message

    def loss(model: VIBClassifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean, log_var = model.encode(x)
        logits = model.decoder(model.sample(mean, log_var, 1)[0])
        nll = nn.functional.cross_entropy(logits, y, reduction="none")
        return vib_objective(nll, diagonal_gaussian_kl_to_standard(mean, log_var), beta_vib)

    loss.__name__ = f"vib_loss(beta_vib={beta_vib:g})"
    return loss


@torch.no_grad()
def evaluate(model: VIBClassifier, split: Split, chunk: int = 2048) -> dict[str, float]:
    """Accuracy with the averaged decoder, one-sample accuracy, cross-entropy of the averaged decoder and
    the rate E_x KL(p(t|x) ‖ r(t)) in nats (an upper bound on I(T;X))."""
    model.eval()
    correct = correct_one = 0
    nll = rate = 0.0
    for i in range(0, split.x.shape[0], chunk):
        x, y = split.x[i : i + chunk], split.y[i : i + chunk]
        logp = model.log_probs(x, model.n_decoder_samples)
        correct += int((logp.argmax(-1) == y).sum())
        correct_one += int((model.log_probs(x, 1).argmax(-1) == y).sum())
        nll += float(nn.functional.nll_loss(logp, y, reduction="sum"))
        mean, log_var = model.encode(x)
        rate += float(diagonal_gaussian_kl_to_standard(mean, log_var).sum())
    n = split.x.shape[0]
    return {"accuracy": correct / n, "accuracy_one_sample": correct_one / n, "cross_entropy": nll / n, "rate": rate / n}


@dataclass(frozen=True)
class VIBSpec:
    """One deep-VIB training run.  Defaults are the book's CPU-sized setting; Alemi et al. used
    784-1024-1024-2K with K = 256, all 60 000 images, Adam at 1e-4, batch 100, 200 epochs."""

    dataset: str  # "mnist" or "fashion_mnist"
    beta_vib: float  # weight of the KL (Alemi's β); Chechik's β is 1/beta_vib
    hidden: tuple[int, ...] = (256, 256)
    bottleneck_dim: int = 32  # K
    steps: int = 1000  # minibatch steps (an epoch is n_train / batch_size steps)
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    n_train: int = 5000
    n_test: int = 2000
    n_rank_points: int = 256  # test points LR is averaged over
    epsilons: tuple[float, ...] = (0.1, 0.01, 1.0)  # thresholds for J μ; the first is the headline ε
    whitened_epsilons: tuple[float, ...] = (0.1, 0.01, 1.0)  # thresholds for diag(1/σ) J μ (noise σ per unit of x)
    n_decoder_samples: int = 12
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"dataset={self.dataset!r} is unknown; use one of {DATASET_NAMES}.")
        ib_beta(self.beta_vib)
        _check_epsilons(self.epsilons, relative=False)
        _check_epsilons(self.whitened_epsilons, relative=False)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is unknown; choose one of {OPTIMIZERS}.")
        for name in ("bottleneck_dim", "steps", "batch_size", "n_train", "n_test", "n_rank_points", "n_decoder_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        if not 1 <= self.n_train <= 60_000 or not 1 <= self.n_test <= 10_000:
            raise ValueError(f"n_train={self.n_train} must be in [1, 60000] and n_test={self.n_test} in [1, 10000].")
        if self.n_rank_points < 2 or self.n_rank_points > self.n_test:
            raise ValueError(f"n_rank_points={self.n_rank_points} must be in [2, n_test={self.n_test}]: "
                             "LR and its standard error are taken over test points.")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size={self.batch_size} exceeds n_train={self.n_train}.")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be > 0.")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r} must list at least one hidden width, all >= 1.")


def fit(model: VIBClassifier, train_split: Split, *, beta_vib: float, steps: int, batch_size: int, lr: float,
        optimizer: str = "adam", seed: int = 0, progress: bool = False, description: str = "VIB") -> list[float]:
    """Minimise the VIB objective for ``steps`` minibatch steps (reshuffled epochs, as ``train.train``);
    returns the objective every ~1 % of the steps.  ``train.train`` is not used because it ranks every
    layer at every checkpoint, and the 256-wide layers' SVDs would cost more than the training."""
    if not 1 <= batch_size <= train_split.x.shape[0]:
        raise ValueError(f"batch_size={batch_size!r} must be between 1 and the training-set size {train_split.x.shape[0]}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an integer >= 1.")
    loss_fn = vib_loss(beta_vib)
    generator = seed_everything(seed)
    dev = next(model.parameters()).device
    opt = make_optimizer(optimizer, model.parameters(), lr, 0.0)
    n, cursor = train_split.x.shape[0], 0
    order = torch.randperm(n, generator=generator).to(dev)
    losses, every = [], max(1, steps // 100)
    model.train()
    for step in tqdm(range(1, steps + 1), desc=description, disable=not progress, mininterval=0.5):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator).to(dev), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, train_split.x[idx], train_split.y[idx])
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def mean_map_jacobian(mean_map: MLP, x: torch.Tensor) -> torch.Tensor:
    """J_x μ, shape (N, K, n_in), multiplied from the K outputs backwards: W_L D_{L-1} W_{L-1} ... D_1 W_1.
    Same values as ``rank.jacobians(mean_map, x)[-1]``, without forming the hidden layers' square
    Jacobian factors, which cost more than a whole training run here."""
    pre = mean_map.preactivations(x)
    layers = list(mean_map.layers)
    jac = layers[-1].weight.expand(x.shape[0], *layers[-1].weight.shape)
    for layer, p_prev in zip(reversed(layers[:-1]), reversed(pre[:-1])):
        jac = (jac * _activation_derivative(mean_map.activation, p_prev).unsqueeze(1)) @ layer.weight
    return jac


@torch.no_grad()
def mean_map_singular_values(model: VIBClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values of J_x μ (N, K) and of the noise-whitened diag(1/σ(x)) J_x μ (N, K)."""
    j_mean = mean_map_jacobian(model.mean_map, x)
    _, log_var = model.encode(x)
    return torch.linalg.svdvals(j_mean), torch.linalg.svdvals((-0.5 * log_var).exp().unsqueeze(-1) * j_mean)


def _rank_stats(svals: torch.Tensor, epsilons: Sequence[float]) -> tuple[list[float], list[float]]:
    ranks = epsilon_rank(svals, epsilons).double().cpu().numpy()  # (N, len(ε))
    return ranks.mean(0).tolist(), (ranks.std(0, ddof=1) / math.sqrt(ranks.shape[0])).tolist()


@functools.lru_cache(maxsize=4)
def _full_split(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_split(name, split)


def _subset(name: str, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``load_split(name, split, n=n, seed=seed)``, with the verified files read (and hashed) once per
    process: a worker of the sweep runs many specs."""
    x, y = _full_split(name, split)
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def train_vib(spec: VIBSpec, *, progress: bool = False) -> tuple[VIBClassifier, dict[str, Any]]:
    """Train one VIB classifier and return it with its sweep-table row."""
    dev = resolve_device(spec.device)
    train_split = Split(*_subset(spec.dataset, "train", spec.n_train, spec.seed)).to(dev)
    test_split = Split(*_subset(spec.dataset, "test", spec.n_test, spec.seed)).to(dev)
    rank_inputs = test_split.x[: spec.n_rank_points]
    model = VIBClassifier(train_split.x.shape[1], spec.hidden, spec.bottleneck_dim, N_CLASSES,
                          n_decoder_samples=spec.n_decoder_samples, seed=spec.seed).to(dev)
    with cpu_threads(1):
        svals_init, _ = mean_map_singular_values(model, rank_inputs)
        start = time.perf_counter()
        losses = fit(model, train_split, beta_vib=spec.beta_vib, steps=spec.steps, batch_size=spec.batch_size,
                     lr=spec.lr, optimizer=spec.optimizer, seed=spec.seed, progress=progress,
                     description=f"{spec.dataset} β_VIB={spec.beta_vib:.2g}")
        seconds = time.perf_counter() - start
        test, train_metrics = evaluate(model, test_split), evaluate(model, train_split)
        svals, svals_white = mean_map_singular_values(model, rank_inputs)
        with torch.no_grad():
            mean, log_var = model.encode(rank_inputs)
    lr_mean, lr_sem = _rank_stats(svals, spec.epsilons)
    lr_white, lr_white_sem = _rank_stats(svals_white, spec.whitened_epsilons)
    row = {k: v for k, v in asdict(spec).items() if k != "device"}
    row |= {
        "beta_ib": ib_beta(spec.beta_vib),
        "test_accuracy": test["accuracy"],
        "test_accuracy_one_sample": test["accuracy_one_sample"],
        "test_cross_entropy": test["cross_entropy"],
        "rate": test["rate"],
        "train_accuracy": train_metrics["accuracy"],
        "train_rate": train_metrics["rate"],
        # LR of the mean map μ at each ε of ``epsilons`` (and of the whitened map at ``whitened_epsilons``).
        "lr_mean": lr_mean,
        "lr_mean_sem": lr_sem,
        "lr_mean_at_init": _rank_stats(svals_init, spec.epsilons)[0],
        "lr_whitened": lr_white,
        "lr_whitened_sem": lr_white_sem,
        "median_singular_value": float(svals.median()),
        "mean_sigma": float((0.5 * log_var).exp().mean()),
        "mean_abs_mu": float(mean.abs().mean()),
        "final_train_objective": losses[-1],
        "train_seconds": seconds,
        "device": str(dev),
    }
    return model, row


def run_vib(spec: VIBSpec) -> dict[str, Any]:
    """The sweep-table row of one run (module-level, so ``parallel_map`` can pickle it)."""
    return train_vib(spec)[1]


def _run_vib_with_progress(spec: VIBSpec) -> dict[str, Any]:
    # One run at a time (GPU): long runs (the paper profile) show their own step bar too.
    return train_vib(spec, progress=True)[1]


def sweep_specs(datasets: Sequence[str], betas_vib: Sequence[float], seeds: Sequence[int], **settings: Any) -> list[VIBSpec]:
    """One spec per (dataset, seed, β_VIB), in that order; ``settings`` are further VIBSpec fields."""
    known = {f.name for f in fields(VIBSpec)} - {"dataset", "beta_vib", "seed"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown VIB setting(s) {unknown}; known: {sorted(known)}.")
    if not datasets or not betas_vib or not seeds:
        raise ValueError(f"a sweep needs at least one dataset, β_VIB and seed; got {datasets!r}, {betas_vib!r}, {seeds!r}.")
    if "hidden" in settings:
        settings = settings | {"hidden": tuple(settings["hidden"])}
    for key in ("epsilons", "whitened_epsilons"):
        if key in settings:
            settings = settings | {key: tuple(settings[key])}
    return [VIBSpec(dataset=d, beta_vib=float(b), seed=int(s), **settings)
            for d in datasets for s in seeds for b in betas_vib]


def run_sweep(specs: Sequence[VIBSpec], *, workers: int | None = None) -> list[dict[str, Any]]:
    """Every spec's row.  On CPU the runs train side by side in single-thread worker processes, one bar
    counting finished runs; on a GPU one after another (the same bar)."""
    on_cpu = all(resolve_device(s.device).type == "cpu" for s in specs)
    return parallel_map(run_vib if on_cpu else _run_vib_with_progress, list(specs), on_cpu=on_cpu, workers=workers,
                        desc="VIB runs")


SWEEP_FORMAT = "deep-vib-sweep/1"


def save_sweep(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write the sweep table atomically as JSON (and a flat CSV next to it for spreadsheets)."""
    if not rows:
        raise ValueError("an empty sweep has nothing to save.")
    path = Path(path)
    out = atomic_write_text(path, json.dumps({"format": SWEEP_FORMAT, "rows": list(rows)}, indent=1))
    columns = [k for k, v in rows[0].items() if not isinstance(v, (list, tuple))]
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    atomic_write_text(path.with_suffix(".csv"), "\n".join(lines) + "\n")
    return out


def load_sweep(path: str | Path) -> list[dict[str, Any]]:
    """The rows written by :func:`save_sweep`, without retraining."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved sweep at {path}; run the deep_vib_mnist chapter (or run_sweep + save_sweep) first.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a saved VIB sweep ({err}); delete it and re-run the chapter.") from err
    if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path} is not a saved VIB sweep (expected format {SWEEP_FORMAT!r}); delete it and re-run.")
    return data["rows"]


def sweep_arrays(rows: Sequence[dict[str, Any]], dataset: str, key: str, index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """β_VIB values (sorted, unique) and ``key`` as an array (seeds, β) for one dataset; ``index`` picks
    one entry of a list-valued column (e.g. the ε of ``lr_mean``)."""
    sel = [r for r in rows if r["dataset"] == dataset]
    if not sel:
        raise ValueError(f"no rows for dataset={dataset!r}; the sweep has {sorted({r['dataset'] for r in rows})}.")
    betas = np.array(sorted({r["beta_vib"] for r in sel}))
    seeds = sorted({r["seed"] for r in sel})
    out = np.full((len(seeds), len(betas)), np.nan)
    for r in sel:
        v = r[key] if index is None else r[key][index]
        out[seeds.index(r["seed"]), int(np.searchsorted(betas, r["beta_vib"]))] = v
    return betas, out
