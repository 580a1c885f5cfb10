"""The book's figures, in one style."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .rank import LocalRank
from .results import History

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False, "legend.frameon": False})

_METRIC_LABELS = {"train_loss": "train loss", "test_loss": "test loss", "train_acc": "train accuracy",
                  "test_acc": "test accuracy"}


def plot_rank_history(history: History, eps: float | None = None, *, title: str = "",
                      metrics: Sequence[str] = ("train_loss", "test_loss")) -> Figure:
    """Fig. 1 style: LR_l^ε per layer against training step (log axis), the metrics below."""
    steps = np.asarray(history.steps)
    lr, sem = history.lr(eps), history.lr_sem(eps)
    fig, (ax_rank, ax_metric) = plt.subplots(2, 1, figsize=(8.5, 6), sharex=True, height_ratios=(2, 1))
    colors = plt.cm.viridis(np.linspace(0, 0.9, lr.shape[1]))
    for l, name in enumerate(history.layer_names):
        ax_rank.plot(steps, lr[:, l], color=colors[l], label=name)
        ax_rank.fill_between(steps, lr[:, l] - sem[:, l], lr[:, l] + sem[:, l], color=colors[l], alpha=0.2)
    eps_used = history.epsilons[0] if eps is None else eps
    ax_rank.set_ylabel(f"local rank LR$^\\epsilon_l$ (ε = {eps_used:g})")
    ax_rank.legend(title="layer", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax_rank.set_title(title)
    for key in metrics:
        ax_metric.plot(steps, history.metrics[key], label=_METRIC_LABELS.get(key, key))
    if any("loss" in k for k in metrics):
        ax_metric.set_yscale("log")
    ax_metric.set_xscale("log")
    ax_metric.set_xlabel("training step")
    ax_metric.legend(bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_rank_vs_epsilon(ranks: Mapping[str, LocalRank], layer_names: Sequence[str], *, title: str = "",
                         mark: float | None = None) -> Figure:
    """LR_l^ε against ε for every layer, one line style per network state (e.g. initial, trained)."""
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(layer_names)))
    for style, (label, r) in zip(("--", "-", ":", "-."), ranks.items()):
        eps = np.asarray(r.epsilons)
        for l, name in enumerate(layer_names):
            ax.plot(eps, r.mean[l], style, color=colors[l], label=f"{name} ({label})")
            ax.fill_between(eps, r.mean[l] - r.sem[l], r.mean[l] + r.sem[l], color=colors[l], alpha=0.15)
    if mark is not None:
        ax.axvline(mark, color="k", lw=1, alpha=0.6)
    ax.set_xscale("log")
    relative = next(iter(ranks.values())).relative
    ax.set_xlabel("relative threshold ε (σ > ε·σ_max)" if relative else "threshold ε")
    ax.set_ylabel("local rank LR$^\\epsilon_l$")
    ax.set_title(title)
    ax.legend(ncol=1, fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_spectra(svals: Sequence[Tensor], layer_names: Sequence[str], *, eps: float, title: str = "") -> Figure:
    """Mean singular-value spectrum of J_x p_l per layer; the ε line shows what the rank counts."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(layer_names)))
    for s, name, c in zip(svals, layer_names, colors):
        s = s.detach().double().cpu().numpy()
        ax.plot(np.arange(1, s.shape[1] + 1), s.mean(0), color=c, label=name)
    ax.axhline(eps, color="k", ls="--", lw=1, label=f"ε = {eps:g}")
    ax.set_yscale("log")
    ax.set_xlabel("index i of the singular value σ_i (descending)")
    ax.set_ylabel("mean σ_i of J_x p_l")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_rank_comparison(histories: Mapping[str, History], layer: int, eps: float | None = None, *,
                         title: str = "") -> Figure:
    """LR of one layer against step for several runs (e.g. with and without weight decay)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, h in histories.items():
        ax.plot(h.steps, h.lr(eps)[:, layer], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    name = next(iter(histories.values())).layer_names[layer]
    ax.set_ylabel(f"local rank of {name}")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_drops(histories: Mapping[str, History], eps: float | None = None, *, title: str = "") -> Figure:
    """Per layer, how far each run's final LR lies below its peak (1 - final / peak), one bar per run."""
    names = next(iter(histories.values())).layer_names
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(histories)
    x = np.arange(len(names))
    for k, (label, h) in enumerate(histories.items()):
        drop = [100 * r["drop"] for r in h.rank_summary(eps)]
        ax.bar(x + (k - (len(histories) - 1) / 2) * width, drop, width, label=label)
    ax.set_xticks(x, names)
    ax.set_ylabel("drop of LR from its peak (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "how far each layer's local rank ends below its peak")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_scaling(scaling: Mapping[str, Sequence[Mapping[str, float]]], *, title: str = "") -> Figure:
    """Seconds of the local-rank engine and of the torch.func baseline against samples, width and depth
    (as returned by :func:`localrank_utils.bench.scaling`), log-log, with the speed-up annotated."""
    labels = {"samples": "samples N", "width": "hidden width n", "depth": "hidden layers"}
    fig, axes = plt.subplots(1, len(scaling), figsize=(4.2 * len(scaling), 3.6), squeeze=False)
    for ax, (kind, rows) in zip(axes[0], scaling.items()):
        v = [r["value"] for r in rows]
        for key, name, style in (("baseline_s", "torch.func + SVD", "o-"), ("engine_s", "engine", "s-")):
            ax.plot(v, [r[key] for r in rows], style, label=name)
        for r in rows:
            ax.annotate(f"{r['baseline_s'] / r['engine_s']:.0f}x", (r["value"], r["engine_s"]),
                        textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(v, [f"{x:g}" for x in v])
        ax.minorticks_off()
        ax.set_xlabel(labels.get(kind, kind))
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
