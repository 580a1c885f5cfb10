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


def _mark_critical_betas(ax, critical_betas: Sequence[float], *, label: bool = True) -> None:
    """Vertical lines at the distinct finite β_i^c (Chechik's β, the one multiplying I(T;Y))."""
    for k, bc in enumerate(np.unique(np.asarray(critical_betas)[np.isfinite(critical_betas)])):
        ax.axvline(bc, color="k", ls=":", lw=1, label="analytic $\\beta^c_i$" if label and k == 0 else None)


def plot_ib_staircase_and_curve(curve: Mapping[str, np.ndarray], critical_betas: Sequence[float],
                                mutual_information_xy: float) -> Figure:
    """Gaussian IB: rank(A_β) against β (the staircase), I(T;X) and I(T;Y) against β, and the information
    curve I(T;Y) against I(T;X) with the points where the rank steps up marked."""
    fig, (ax_rank, ax_info, ax_curve) = plt.subplots(1, 3, figsize=(13, 3.8))
    b = np.asarray(curve["beta"])
    ax_rank.step(b, curve["rank"], where="post", color="C0")
    _mark_critical_betas(ax_rank, critical_betas)
    ax_rank.set(xscale="log", xlabel="β (IB, multiplies I(T;Y))", ylabel="rank($A_\\beta$)", title="rank staircase")
    ax_rank.legend(loc="upper left")
    ax_info.plot(b, curve["info_x"], color="C0", label="I(T;X) (left axis)")
    ax_y = ax_info.twinx()  # I(T;Y) <= I(X;Y) is far smaller than I(T;X): its own axis
    ax_y.plot(b, curve["info_y"], color="C1", label="I(T;Y) (right axis)")
    ax_y.axhline(mutual_information_xy, color="C1", ls="--", lw=1, label="I(X;Y)")
    ax_y.set_ylabel("I(T;Y) (nats)", color="C1")
    ax_y.grid(False)
    _mark_critical_betas(ax_info, critical_betas, label=False)
    ax_info.set(xscale="log", xlabel="β", ylabel="I(T;X) (nats)", title="information against β")
    handles = ax_info.get_legend_handles_labels()[0] + ax_y.get_legend_handles_labels()[0]
    ax_info.legend(handles=handles, loc="upper left")
    ax_curve.plot(curve["info_x"], curve["info_y"], color="C2")
    for bc in np.unique(np.asarray(critical_betas)[np.isfinite(critical_betas)]):
        i = int(np.argmin(np.abs(np.log(b / bc))))
        ax_curve.plot(curve["info_x"][i], curve["info_y"][i], "ko")
        ax_curve.annotate(f"β$^c$ = {bc:.4g}", (curve["info_x"][i], curve["info_y"][i]), textcoords="offset points",
                          xytext=(8, -12))
    ax_curve.axhline(mutual_information_xy, color="C1", ls="--", lw=1)
    ax_curve.set(xlabel="I(T;X) (nats)", ylabel="I(T;Y) (nats)", title="information curve")
    fig.tight_layout()
    return fig


def plot_ib_encoder(ax_matrix, ax_curve, projection: np.ndarray, beta: float, rank: int,
                    curve: Mapping[str, np.ndarray], point: tuple[float, float]) -> None:
    """One β of the Gaussian IB: A_β as a heatmap with its entries written in (rows α_i v_iᵀ; the colour scale
    is this matrix's own, since A_β grows like sqrt(β)) and its point on the information curve."""
    vmax = max(float(np.abs(projection).max()), 1e-12)
    ax_matrix.imshow(projection, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    for (i, j), value in np.ndenumerate(projection):
        if value != 0:
            ax_matrix.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize="small",
                           color="white" if abs(value) > 0.5 * vmax else "black")
    ax_matrix.set_xticks(range(projection.shape[1]), [f"$x_{j + 1}$" for j in range(projection.shape[1])])
    ax_matrix.set_yticks(range(projection.shape[0]), [f"$t_{i + 1}$" for i in range(projection.shape[0])])
    ax_matrix.grid(False)
    ax_matrix.set_title(f"$A_\\beta$ at β = {beta:.3g}: rank {rank}")
    ax_curve.plot(curve["info_x"], curve["info_y"], color="C2")
    ax_curve.plot(*point, "o", color="C3", ms=9)
    ax_curve.set(xlabel="I(T;X) (nats)", ylabel="I(T;Y) (nats)", title=f"I(T;X) = {point[0]:.3f}, I(T;Y) = {point[1]:.3f}")


def plot_vib_gaussian_sweep(rows: Sequence[Mapping], analytic: Mapping[str, np.ndarray], critical_betas: Sequence[float],
                            epsilon: float) -> Figure:
    """Fig. 2 of the paper, on the IB axis β = 1/β_VIB: left, the KL term against β, points coloured by the
    measured local rank, the analytic I(T;X) as a line; middle, the local rank against β with the analytic
    ε-rank and β^c; right, the test loss against the analytic optimum.  One marker per prior."""
    fig, (ax_kl, ax_lr, ax_loss) = plt.subplots(1, 3, figsize=(14, 4.2))
    markers = {"standard": "o", "learned": "^"}
    names = {"standard": "fixed prior N(0, I)", "learned": "learned prior"}
    b = np.asarray(analytic["beta"])
    ax_kl.plot(b, analytic["info_x"], color="0.4", lw=1.5, label="analytic I(T;X)")
    ax_lr.step(b, analytic["rank"], where="post", color="0.4", lw=1.5, label=f"analytic ε-rank of $A_\\beta$")
    ax_loss.plot(b, analytic["loss"], color="0.4", lw=1.5, label="analytic optimum")
    scatter = None
    for prior, marker in markers.items():
        sel = [r for r in rows if r["prior"] == prior]
        if not sel:
            continue
        beta = np.array([r["beta_ib"] for r in sel])
        kl, lr = np.array([r["kl"] for r in sel]), np.array([r["local_rank"] for r in sel])
        scatter = ax_kl.scatter(beta, kl, c=lr, cmap="viridis", vmin=0, vmax=max(5, lr.max()), marker=marker,
                                edgecolors="k", linewidths=0.3, s=36, label=names[prior], zorder=3)
        ax_lr.plot(beta, lr, marker=marker, ls="-" if prior == "learned" else "--", ms=5, label=names[prior])
        ax_loss.plot(beta, [r["test_loss"] for r in sel], marker=marker, ls="", ms=5, label=names[prior])
    if scatter is not None:
        fig.colorbar(scatter, ax=ax_kl, label=f"local rank (ε = {epsilon:g}, whitened)")
    for ax in (ax_kl, ax_lr, ax_loss):
        _mark_critical_betas(ax, critical_betas, label=ax is ax_lr)
        ax.set_xscale("log")
        ax.set_xlabel("β (IB) = 1 / β$_{VIB}$")
        top = ax.secondary_xaxis("top", functions=(lambda v: 1 / np.clip(v, 1e-12, None), lambda v: 1 / np.clip(v, 1e-12, None)))
        top.set_xlabel("β$_{VIB}$")
    ax_kl.set_ylabel("KL term E$_x$ KL(p(t|x) ‖ r(t)) (nats)")
    ax_kl.set_yscale("symlog", linthresh=0.1)  # linear near 0, where the rank-0 points sit
    ax_kl.set_ylim(bottom=-0.005)
    ax_lr.set_ylabel("local rank of the encoder mean")
    ax_loss.set_ylabel("test loss (nats per sample)")
    for ax in (ax_kl, ax_lr):
        ax.legend(fontsize="small", loc="upper left")
    ax_loss.legend(fontsize="small", loc="upper right")
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
