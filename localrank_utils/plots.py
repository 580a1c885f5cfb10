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


# --- theory chapter ------------------------------------------------------------------------------

def plot_lemma5_counts(epsilons: np.ndarray, jacobian_rank: np.ndarray, weight_rank: np.ndarray, *,
                       smallest_singular_value: float, onset: float, title: str = "") -> Figure:
    """rank_ε(J_x p_l) and rank_ε(W_l) against ε; shaded where Lemma 5's inequality fails."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.step(epsilons, jacobian_rank, where="post", label="rank$_\\epsilon(J_x p_l)$", color="tab:red")
    ax.step(epsilons, weight_rank, where="post", label="rank$_\\epsilon(W_l)$", color="tab:blue", ls="--")
    fails = jacobian_rank > weight_rank
    ax.fill_between(epsilons, 0, np.maximum(jacobian_rank, weight_rank), where=fails, step="post", color="tab:red",
                    alpha=0.15, label="inequality fails")
    ax.axvline(smallest_singular_value, color="k", lw=1, label=f"σ$_\\min^+(W_l)$ = {smallest_singular_value:.3g}")
    if np.isfinite(onset) and not np.isclose(onset, smallest_singular_value):
        ax.axvline(onset, color="tab:red", lw=1, ls=":", label=f"first failure ε = {onset:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("threshold ε")
    ax.set_ylabel("ε-rank")
    ax.set_title(title)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_frobenius_property(frobenius: np.ndarray, lower: np.ndarray, epsilons: np.ndarray, *,
                            title: str = "") -> Figure:
    """ε·sqrt(rank_ε(A)) / ‖A‖_F against ε / ‖A‖_F for many (A, ε): every point must lie at or below 1."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    keep = frobenius > 0
    x, y = epsilons[keep] / frobenius[keep], lower[keep] / frobenius[keep]
    ax.scatter(x, y, s=4, alpha=0.3)
    ax.axhline(1.0, color="k", lw=1, label="‖A‖$_F$ (the bound)")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 3)  # outside, rank_ε(A) is 0 or the ratio is negligible
    ax.set_xlabel("ε / ‖A‖$_F$ (points outside [1e-4, 3] lie near 0)")
    ax.set_ylabel("ε·sqrt(rank$_\\epsilon$(A)) / ‖A‖$_F$")
    ax.set_title(title)
    ax.legend(loc="center left")
    fig.tight_layout()
    return fig


def plot_norm_ratios(reports: Mapping[str, object]) -> Figure:
    """Per-layer ‖W_l‖_F/‖W_l‖_σ of each min-norm net (one panel per problem) with their harmonic mean,
    Timor et al.'s bound on it, and the hidden-layer bound. ``reports`` maps titles to BoundReports."""
    fig, axes = plt.subplots(1, len(reports), figsize=(5.2 * len(reports), 3.8), squeeze=False)
    for ax, (name, r) in zip(axes[0], reports.items()):
        layers = np.arange(1, len(r.ratios) + 1)
        colors = ["tab:orange" if l == r.hidden_layer else "tab:green" if l == r.proposition_layer else "tab:gray"
                  for l in layers]
        ax.bar(layers, r.ratios, color=colors)
        ax.axhline(r.harmonic, color="k", lw=1, label=f"harmonic mean {r.harmonic:.3f}")
        ax.axhline(r.timor_bound, color="tab:red", ls="--", label=f"Timor et al.'s bound {r.timor_bound:.3f}")
        if np.isfinite(r.hidden_bound):
            ax.axhline(r.hidden_bound, color="tab:orange", ls=":", label=f"hidden-layer bound {r.hidden_bound:.3f}")
        ax.set_xticks(layers, [f"W{l}" for l in layers])
        ax.set_ylim(0.9, max(r.timor_bound, r.hidden_bound if np.isfinite(r.hidden_bound) else 0, r.ratios.max()) * 1.1)
        ax.set_ylabel("‖W$_l$‖$_F$ / ‖W$_l$‖$_\\sigma$")
        ax.set_title(f"{name}\n(green: proposition's layer, orange: best hidden layer)", fontsize="medium")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0, -0.1), ncol=2)
    fig.tight_layout()
    return fig


def plot_rank_bounds(report, *, title: str = "") -> Figure:
    """LR_l^ε at the two chosen layers against the bounds: the proposition's right-hand side, the
    proof's intermediate steps rank_ε(W_l) and ‖W_l‖_F²/ε²; ε < σ_min^+(W_l) (Lemma 5's range) shaded."""
    eps = report.epsilons
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    picks = (("proposition", report.proposition_layer, report.proposition_rhs),
             ("hidden-layer corollary", report.hidden_layer, report.hidden_rhs))
    for ax, (label, layer, rhs) in zip(axes, picks):
        i = layer - 1
        ax.plot(eps, report.local_rank[i], "o-", color="tab:blue", label="LR$^\\epsilon_l$ (measured)")
        ax.step(eps, report.weight_rank[i], where="post", color="tab:gray", label="rank$_\\epsilon$(W$_l$)")
        ax.plot(eps, report.frobenius[i] ** 2 / eps ** 2, ":", color="tab:gray", label="‖W$_l$‖$_F^2$/ε²")
        ax.plot(eps, rhs, "--", color="tab:red", label="right-hand side")
        eps0 = report.lemma5_eps0[i]
        if eps0 > eps[0]:  # Lemma 5's range, where the proposition applies
            ax.axvspan(eps[0], min(eps0, eps[-1]), color="tab:green", alpha=0.1, label="ε < σ$_\\min^+$(W$_l$): the proposition's range")
            range_note = ""
        else:
            range_note = f"\nthe proposition's range ε < σ$_\\min^+$(W$_l$) = {eps0:.1g} lies left of the grid"
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("threshold ε")
        ax.set_title(f"{label}: layer {layer}{range_note}", fontsize="medium")
    axes[0].set_ylabel("local rank and bounds")
    by_label = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(text, handle)
    axes[-1].legend(by_label.values(), by_label.keys(), fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
