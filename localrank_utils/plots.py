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


# ---- deep VIB β sweeps (chapter deep_vib_mnist) ----

_DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def _seed_mean_and_spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (rows) and the standard error over seeds (0 for one seed)."""
    n = values.shape[0]
    return values.mean(0), (values.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(values.shape[1]))


def plot_vib_beta_sweep(rows: Sequence[Mapping], datasets: Sequence[str], *, lr_key: str = "lr_mean", lr_index: int = 0,
                        lr_label: str = "local rank of μ(x)", convention: str = "vib") -> Figure:
    """The paper's Fig. 3: per dataset, LR of the encoder mean (left axis, ± standard error over the
    test points of each run) and test accuracy (right axis) against β; thin lines are single seeds,
    thick lines their mean.  ``convention`` "vib" puts β_VIB (the KL weight) on the x axis, "ib"
    Chechik's β = 1/β_VIB."""
    from .vib_classifier import sweep_arrays

    if convention not in ("vib", "ib"):
        raise ValueError(f"convention={convention!r} must be 'vib' (β_VIB, weight of the KL) or 'ib' (β = 1/β_VIB).")
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.0), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        betas, lr = sweep_arrays(rows, dataset, lr_key, lr_index)
        _, lr_sem = sweep_arrays(rows, dataset, f"{lr_key}_sem", lr_index)
        _, acc = sweep_arrays(rows, dataset, "test_accuracy")
        x = betas if convention == "vib" else 1.0 / betas
        for seed_lr, seed_sem in zip(lr, lr_sem):
            ax.errorbar(x, seed_lr, yerr=seed_sem, color="C0", alpha=0.35, lw=0.8, capsize=2)
        ax.plot(x, lr.mean(0), "o-", color="C0", lw=2, label=lr_label)
        ax.set_xscale("log")
        ax.set_xlabel("β_VIB (weight of the KL: larger compresses more)" if convention == "vib"
                      else "Chechik's β = 1/β_VIB (larger keeps more)")
        ax.set_ylabel(lr_label, color="C0")
        ax.set_title(_DATASET_TITLES.get(dataset, dataset))
        twin = ax.twinx()
        for seed_acc in acc:
            twin.plot(x, seed_acc, color="C3", alpha=0.35, lw=0.8)
        twin.plot(x, acc.mean(0), "s--", color="C3", lw=2, label="test accuracy")
        twin.set_ylabel("test accuracy", color="C3")
        twin.set_ylim(0, 1.02)
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        handles = ax.get_legend_handles_labels()[0][-1:] + twin.get_legend_handles_labels()[0][-1:]
        ax.legend(handles, [h.get_label() for h in handles], loc="lower left" if convention == "vib" else "lower right",
                  fontsize="small")
    fig.tight_layout()
    return fig


def plot_vib_rank_vs_rate(rows: Sequence[Mapping], datasets: Sequence[str],
                          series: Sequence[tuple[str, int, str]]) -> Figure:
    """LR against the rate E_x KL(p(t|x) ‖ N(0, I)) (nats, log axis), one panel per dataset; each
    ``series`` is (column, ε index, label); every run is a point, colour = log10 β_VIB."""
    from .vib_classifier import sweep_arrays

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.6 * len(datasets), 4.0), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        betas, rate = sweep_arrays(rows, dataset, "rate")
        for marker, (key, index, label) in zip("os^v", series):
            _, lr = sweep_arrays(rows, dataset, key, index)
            points = ax.scatter(rate.ravel(), lr.ravel(), c=np.log10(np.broadcast_to(betas, rate.shape)).ravel(),
                                cmap="viridis", marker=marker, label=label, edgecolors="k", linewidths=0.3)
        ax.set_xscale("log")
        ax.set_xlabel("rate: KL(p(t|x) ‖ N(0, I)) on test points (nats)")
        ax.set_ylabel("local rank")
        ax.set_title(_DATASET_TITLES.get(dataset, dataset))
        ax.legend(fontsize="small")
        fig.colorbar(points, ax=ax, label="log10 β_VIB")
    fig.tight_layout()
    return fig


def plot_vib_rank_thresholds(rows: Sequence[Mapping], dataset: str, series: Sequence[tuple[str, int, str]]) -> Figure:
    """LR against β_VIB for several thresholds / maps (seed means), to show how much the reading of
    Fig. 3 depends on ε."""
    from .vib_classifier import sweep_arrays

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, index, label in series:
        betas, lr = sweep_arrays(rows, dataset, key, index)
        ax.plot(betas, lr.mean(0), "s--" if "whitened" in key else "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("β_VIB")
    ax.set_ylabel("local rank (mean over seeds)")
    ax.set_title(f"{_DATASET_TITLES.get(dataset, dataset)}: the threshold decides what LR counts")
    ax.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
