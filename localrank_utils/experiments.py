"""Fig. 1 experiments as picklable specs, so several runs can train side by side on CPU cores."""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from .data import load_split
from .devices import resolve_device
from .gaussian import JointGaussian
from .models import MLP
from .results import History
from .train import Split, train


N_CLASSES = 10  # MNIST and Fashion-MNIST alike
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ExperimentSpec:
    """One training run of Fig. 1: an MLP on MNIST/Fashion-MNIST or on synthetic Gaussian data."""

    dataset: str  # "mnist", "fashion_mnist" or "gaussian"
    steps: int
    hidden_layers: int = 4
    width: int = 200
    activation: str = "relu"
    n_train: int = 1000
    n_test: int = 10_000
    n_rank_points: int = 128
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    epsilons: tuple[float, ...] = (0.01,)
    n_checkpoints: int = 50
    seed: int = 0
    device: str = "auto"
    dim_x: int = 100  # gaussian only
    dim_y: int = 2  # gaussian only
    max_correlation: float = 0.9  # gaussian only
    label: str = ""

    def gaussian(self) -> JointGaussian:
        return JointGaussian.random_cross_covariance(self.dim_x, self.dim_y, seed=self.seed,
                                                     max_correlation=self.max_correlation)


def load_experiment_data(spec: ExperimentSpec) -> tuple[Split, Split, torch.Tensor, str]:
    """Train split, test split, the points LR is measured on (the first test points) and the loss name."""
    if spec.dataset == "gaussian":
        joint = spec.gaussian()
        # Distinct seeds for the two splits: the test points must be fresh draws.
        train_split = Split(*joint.sample(spec.n_train, seed=2 * spec.seed + 1))
        test_split = Split(*joint.sample(spec.n_test, seed=2 * spec.seed + 2))
        loss = "mse"
    elif spec.dataset in ("mnist", "fashion_mnist"):
        train_split = Split(*load_split(spec.dataset, "train", n=spec.n_train, seed=spec.seed))
        test_split = Split(*load_split(spec.dataset, "test", n=spec.n_test, seed=spec.seed))
        loss = "cross_entropy"
    else:
        raise ValueError(f"dataset={spec.dataset!r} is unknown; use 'mnist', 'fashion_mnist' or 'gaussian'.")
    if spec.n_rank_points > spec.n_test:
        raise ValueError(f"n_rank_points={spec.n_rank_points} exceeds n_test={spec.n_test}: LR is measured on test points.")
    return train_split, test_split, test_split.x[: spec.n_rank_points], loss


def build_model(spec: ExperimentSpec, n_in: int, n_out: int) -> MLP:
    return MLP.with_hidden(n_in, spec.width, spec.hidden_layers, n_out, activation=spec.activation, seed=spec.seed)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads: small MLPs gain nothing from more, and a fixed count
    keeps CPU numbers identical from run to run."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_experiment(spec: ExperimentSpec, *, progress: bool = True) -> tuple[MLP, History]:
    """Train the spec's model on its data; return the trained model and its history."""
    train_split, test_split, rank_inputs, loss = load_experiment_data(spec)
    n_out = train_split.y.shape[1] if loss == "mse" else N_CLASSES
    model = build_model(spec, train_split.x.shape[1], n_out)
    with cpu_threads(1):
        history = train(model, train_split, test_split, rank_inputs=rank_inputs, steps=spec.steps,
                        batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                        optimizer=spec.optimizer, loss=loss, n_checkpoints=spec.n_checkpoints,
                        epsilons=spec.epsilons, seed=spec.seed, device=spec.device, progress=progress,
                        description=spec.label or spec.dataset)
    history.config |= asdict(spec)
    return model, history


def run_experiment(spec: ExperimentSpec, *, progress: bool = True) -> History:
    return train_experiment(spec, progress=progress)[1]


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, on_cpu: bool = True, workers: int | None = None,
                 desc: str = "runs") -> list[R]:
    """``[fn(item) for item in items]``; on CPU, up to ``workers`` (default: the core count) at a time in
    spawned processes, each single-threaded, which is what a small model can use.  A bar counts items.
    ``fn`` must be a module-level function (it is pickled); results come back in the order of ``items``."""
    if not items:
        return []
    workers = workers or (os.cpu_count() or 1)
    if not on_cpu or workers == 1 or len(items) == 1:
        return [fn(item) for item in tqdm(items, desc=desc, disable=len(items) == 1)]
    results: list[Any] = [None] * len(items)
    # spawn: a forked child would inherit the parent's torch thread pools and can deadlock.
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in tqdm(as_completed(futures), total=len(items), desc=f"{desc} ({min(workers, len(items))} in parallel)"):
            results[futures[future]] = future.result()
    return results


def _run_quietly(spec: ExperimentSpec) -> History:
    return run_experiment(spec, progress=False)


def run_experiments(specs: Sequence[ExperimentSpec], *, workers: int | None = None) -> list[History]:
    """Every spec's history; CPU runs train side by side (see :func:`parallel_map`)."""
    on_cpu = all(resolve_device(s.device).type == "cpu" for s in specs)
    if not on_cpu or len(specs) == 1:
        return [run_experiment(s) for s in specs]
    return parallel_map(_run_quietly, specs, on_cpu=on_cpu, workers=workers)


def fig1_specs(params: Mapping[str, Any], dataset: str) -> list[ExperimentSpec]:
    """The Fig. 1 run with the chapter's parameters, then one run per compared weight decay.
    LR is recorded at ε/10, ε and 10ε so the threshold's effect can be read off the same runs."""
    fields = {f.name for f in dataclasses.fields(ExperimentSpec)}
    eps = params["epsilon"]
    main = ExperimentSpec(dataset=dataset, epsilons=(eps, eps / 10, eps * 10),
                          **{k: v for k, v in params.items() if k in fields and k != "epsilons"})
    main = replace(main, label=f"weight decay {main.weight_decay:g}")
    others = [replace(main, weight_decay=wd, label=f"weight decay {wd:g}")
              for wd in params["compare_weight_decays"] if wd != main.weight_decay]
    return [main, *others]
