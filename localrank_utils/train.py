"""The one training loop: minibatch training with log-spaced checkpoints that measure local rank."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .devices import resolve_device, seed_everything
from .rank import _check_epsilons, local_rank
from .results import History

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split (class indices for classification, vectors for regression)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] == 0 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"a split needs as many targets as inputs (> 0): got x {tuple(self.x.shape)}, y {tuple(self.y.shape)}.")

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


def log_spaced_steps(total_steps: int, n_checkpoints: int) -> list[int]:
    """Distinct integer steps from 1 to ``total_steps``, evenly spaced on a log axis."""
    if total_steps < 1 or n_checkpoints < 1:
        raise ValueError(f"total_steps={total_steps!r} and n_checkpoints={n_checkpoints!r} must both be >= 1.")
    grid = np.unique(np.round(np.logspace(0, np.log10(total_steps), n_checkpoints)).astype(int))
    return [int(s) for s in grid]


def _loss_function(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss == "cross_entropy":
        return lambda model, x, y: nn.functional.cross_entropy(model(x), y)
    if loss == "mse":
        return lambda model, x, y: nn.functional.mse_loss(model(x), y)
    raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES} or pass a callable (model, x, y) -> loss.")


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if not lr > 0:
        raise ValueError(f"lr={lr!r} must be > 0.")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r} must be >= 0.")
    params = list(params)
    # The fused kernels take a third off a small MLP's step on CPU; they exist for cpu and cuda only.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is unknown; choose one of {OPTIMIZERS}.")


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: LossFn, split: Split, classification: bool, chunk: int = 4096) -> tuple[float, float]:
    total, correct = 0.0, 0
    for i in range(0, split.x.shape[0], chunk):
        x, y = split.x[i : i + chunk], split.y[i : i + chunk]
        total += float(loss_fn(model, x, y)) * x.shape[0]
        if classification:
            correct += int((model(x).argmax(-1) == y).sum())
    n = split.x.shape[0]
    return total / n, (correct / n if classification else float("nan"))


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    *,
    rank_inputs: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    optimizer: str = "adamw",
    loss: str | LossFn = "cross_entropy",
    n_checkpoints: int = 50,
    epsilons: float | Sequence[float] = (0.01,),
    seed: int = 0,
    device: str | torch.device = "auto",
    on_checkpoint: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: bool = True,
    description: str = "training",
) -> History:
    """Train ``model`` for ``steps`` minibatch steps; at log-spaced checkpoints record train/test
    loss (and accuracy for cross-entropy), LR_l^ε of every layer on ``rank_inputs`` for all
    ``epsilons``, and whatever ``on_checkpoint(model)`` returns."""
    eps = list(_check_epsilons(epsilons, relative=False))
    if not 1 <= batch_size <= train_split.x.shape[0]:
        raise ValueError(f"batch_size={batch_size!r} must be between 1 and the training-set size {train_split.x.shape[0]}.")
    checkpoints = log_spaced_steps(steps, n_checkpoints)
    loss_fn = _loss_function(loss)
    classification = loss == "cross_entropy"
    dev = resolve_device(device)
    generator = seed_everything(seed)
    model.to(dev)
    train_split, test_split, rank_inputs = train_split.to(dev), test_split.to(dev), rank_inputs.to(dev)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    history = History(
        config=dict(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                    loss=loss if isinstance(loss, str) else getattr(loss, "__name__", "custom"), seed=seed,
                    n_train=train_split.x.shape[0], n_test=test_split.x.shape[0], n_rank_points=rank_inputs.shape[0],
                    device=str(dev)),
        epsilons=eps,
        layer_names=[],
    )
    n = train_split.x.shape[0]
    order = torch.randperm(n, generator=generator).to(dev)
    cursor = 0
    start = time.perf_counter()
    next_checkpoint = 0
    bar = tqdm(total=steps, desc=description, disable=not progress, mininterval=0.5)
    for step in range(1, steps + 1):
        if cursor + batch_size > n:
            order = torch.randperm(n, generator=generator).to(dev)
            cursor = 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        model.train()
        opt.zero_grad(set_to_none=True)
        batch_loss = loss_fn(model, train_split.x[idx], train_split.y[idx])
        batch_loss.backward()
        opt.step()
        if next_checkpoint < len(checkpoints) and step == checkpoints[next_checkpoint]:
            next_checkpoint += 1
            model.eval()
            train_loss, train_acc = _evaluate(model, loss_fn, train_split, classification)
            test_loss, test_acc = _evaluate(model, loss_fn, test_split, classification)
            ranks = local_rank(model, rank_inputs, eps)
            row = {"train_loss": train_loss, "test_loss": test_loss}
            if classification:
                row |= {"train_acc": train_acc, "test_acc": test_acc}
            if on_checkpoint is not None:
                with torch.no_grad():
                    row |= on_checkpoint(model)
            history.layer_names = [f"p{l + 1}" for l in range(ranks.mean.shape[0])]
            history.steps.append(step)
            for key, value in row.items():
                history.metrics.setdefault(key, []).append(float(value))
            history.local_rank.append(ranks.mean.tolist())
            history.local_rank_sem.append(ranks.sem.tolist())
            bar.set_postfix(loss=f"{train_loss:.3g}", LR=f"{ranks.mean[0, 0]:.1f}", refresh=False)
        bar.update(1)
    bar.close()
    history.elapsed_s = time.perf_counter() - start
    model.eval()
    return history
