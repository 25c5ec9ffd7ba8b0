"""Matplotlib figures for the chapters: pure functions, tensors in, ``Figure`` out.

Nothing here trains or reads global state, so tests can call each function on small
constructed inputs; chapters end their plotting cells with ``plt.show()``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from . import geometry


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def _titles(n: int, titles: Sequence[str] | None) -> list[str]:
    if titles is None:
        return [f"instance {k}" for k in range(n)]
    if len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} instances")
    return list(titles)


def plot_WtW(W: Tensor, b: Tensor, titles: Sequence[str] | None = None, size: float = 2.6) -> Figure:
    """Per instance, the feature-interaction matrix WᵀW (features × features) with the bias b
    as a column beside it, on a shared red–blue scale (the paper's Figure 2 / 3 panels).

    W: (instances, hidden, features); b: (instances, features).
    """
    W, b = _np(W), _np(b)
    n_inst, _, n_feat = W.shape
    titles = _titles(n_inst, titles)
    WtW = np.einsum("ihf,ihg->ifg", W, W)
    vmax = max(np.abs(WtW).max(), np.abs(b).max(), 1e-6)
    fig, axes = plt.subplots(2, n_inst, figsize=(size * n_inst, size * 1.25), squeeze=False,
                             gridspec_kw={"height_ratios": [n_feat, 1]})
    for k in range(n_inst):
        image = axes[0, k].imshow(WtW[k], cmap="RdBu", vmin=-vmax, vmax=vmax)
        axes[0, k].set_title(titles[k], fontsize=9)
        axes[0, k].set_xticks([])
        axes[0, k].set_yticks([])
        axes[1, k].imshow(b[k][None, :], cmap="RdBu", vmin=-vmax, vmax=vmax)
        axes[1, k].set_xticks([])
        axes[1, k].set_yticks([])
    axes[0, 0].set_ylabel("WᵀW")
    axes[1, 0].set_ylabel("b", rotation=0, labelpad=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    return fig


def plot_feature_fan(W: Tensor, titles: Sequence[str] | None = None, importance: Tensor | None = None,
                     size: float = 2.6) -> Figure:
    """Per instance with a 2-D hidden space, each feature's direction W_i drawn from the origin,
    coloured by feature importance (yellow = most important) — the paper's pentagon pictures.
    """
    W = _np(W)
    if W.shape[1] != 2:
        raise ValueError(f"a feature fan needs hidden=2, got hidden={W.shape[1]}")
    n_inst, _, n_feat = W.shape
    titles = _titles(n_inst, titles)
    imp = np.ones((n_inst, n_feat)) if importance is None else _np(importance).reshape(-1, n_feat)
    imp = np.broadcast_to(imp, (n_inst, n_feat))
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, n_inst, figsize=(size * n_inst, size), squeeze=False)
    lim = max(1.5, float(np.abs(W).max()) * 1.1)
    for k, ax in enumerate(axes[0]):
        span = imp[k].max() - imp[k].min()
        shade = (imp[k] - imp[k].min()) / span if span > 0 else np.full(n_feat, 0.6)
        for i in range(n_feat):
            x, y = W[k, 0, i], W[k, 1, i]
            colour = cmap(0.15 + 0.85 * shade[i])
            ax.plot([0, x], [0, y], color=colour, lw=1.5)
            ax.scatter([x], [y], color=colour, s=25, zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.5, zorder=0)
        ax.axvline(0, color="0.85", lw=0.5, zorder=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(titles[k], fontsize=9)
    return fig


def plot_feature_bars(W: Tensor, titles: Sequence[str] | None = None, size: float = 2.2,
                      vmax: float = 1.0) -> Figure:
    """Per instance, horizontal bars of ‖W_i‖ for every feature, coloured by the superposition
    measure Σ_{j≠i}(Ŵ_i·W_j)² (black = a dimension of its own, yellow = superposed), as in
    the paper's n=20, m=5 sparsity sweep.
    """
    norms = _np(geometry.feature_norms(torch.as_tensor(W)))
    interference = _np(geometry.superposition_interference(torch.as_tensor(W)))
    n_inst, n_feat = norms.shape
    titles = _titles(n_inst, titles)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, n_inst, figsize=(size * n_inst, 0.18 * n_feat + 1.2), squeeze=False,
                             sharey=True)
    for k, ax in enumerate(axes[0]):
        ax.barh(np.arange(n_feat), norms[k], color=cmap(np.clip(interference[k] / vmax, 0, 1)))
        ax.set_xlim(0, max(1.3, norms.max() * 1.05))
        ax.set_yticks(np.arange(0, n_feat, max(1, n_feat // 10)))
        ax.set_title(titles[k], fontsize=9)
        ax.set_xlabel("‖W_i‖", fontsize=8)
    axes[0, 0].invert_yaxis()  # shared: most important feature at the top of every panel
    axes[0, 0].set_ylabel("feature (most important at the top)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, vmax))
    fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.7, label="Σ_{j≠i}(Ŵ_i·W_j)²")
    return fig


PHASE_COLOURS = ListedColormap(["#d9d9d9", "#d7301f", "#2171b5"])


def plot_phase_diagram(relative_importance: Tensor, density: Tensor, trained_phase: Tensor,
                       closed_form_phase: Tensor | None = None, phase_losses=None) -> Figure:
    """The n=2, m=1 phase diagram: trained phase per (relative importance, density) cell,
    with the closed-form boundaries drawn over it (and, if given, the closed-form map beside).

    relative_importance: (R,), density: (D,), trained_phase: (R, D) ints indexing
    ``geometry.PHASES`` (0 ignore feature 2, 1 antipodal pair, 2 ignore feature 1).
    ``phase_losses(r, s) -> (..., 3)`` draws the boundaries (where the cheapest solution
    changes, on a fine grid); the default is ``geometry.phase_losses``, chapter 01 passes the
    learner's.
    """
    r, s = _np(relative_importance), _np(density)
    panels = [("trained (best of seeds)", _np(trained_phase))]
    if closed_form_phase is not None:
        panels.append(("closed form", _np(closed_form_phase)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    fine_r = np.logspace(np.log10(r.min()), np.log10(r.max()), 400)
    fine_s = np.logspace(np.log10(s.min()), np.log10(s.max()), 400)
    losses = (phase_losses or geometry.phase_losses)(torch.as_tensor(fine_r)[:, None], torch.as_tensor(fine_s)[None, :])
    fine_phase = _np(torch.as_tensor(losses).argmin(dim=-1)).T  # (s, r) for contour
    for ax, (title, phase) in zip(axes[0], panels):
        ax.pcolormesh(r, s, phase.T, cmap=PHASE_COLOURS, vmin=-0.5, vmax=2.5, shading="nearest")
        ax.contour(fine_r, fine_s, (fine_phase == 1).astype(float), levels=[0.5], colors="k", linewidths=1.5)
        ax.axvline(1.0, color="k", lw=1.0, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("relative importance of feature 2")
        ax.set_ylabel("feature density 1 - S")
        ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLOURS(i)) for i in range(3)]
    fig.legend(handles, geometry.PHASES, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.25, wspace=0.35)
    return fig


def plot_loss_curves(steps: Sequence[int], losses: Tensor, labels: Sequence[str] | None = None) -> Figure:
    """Loss against step per instance (losses: (logged steps, instances)), log-scaled."""
    losses = _np(losses)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for k in range(losses.shape[1]):
        ax.plot(steps, losses[:, k], label=None if labels is None else labels[k])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if labels is not None:
        ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------------------
# Chapter 02: feature geometry
# --------------------------------------------------------------------------------------

#: The D_i levels of the uniform-superposition scatter and the polytope each one marks.
DIMENSIONALITY_LEVELS = ((1.0, "1  (own dimension)"), (3 / 4, "3/4  tetrahedron"), (2 / 3, "2/3  triangle"),
                         (1 / 2, "1/2  digon"), (2 / 5, "2/5  pentagon"), (3 / 8, "3/8  square antiprism"))


def _guide_lines(ax, labels: bool = True) -> None:
    for value, label in DIMENSIONALITY_LEVELS:
        ax.axhline(value, color="0.6", lw=0.6, ls="--", zorder=0)
        if labels:  # 2/5 and 3/8 are close: one label above its line, one below
            va = {2 / 5: "bottom", 3 / 8: "top"}.get(value, "center")
            ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", fontsize=7, va=va, color="0.35")


def plot_uniform_sweep(density: Tensor, W: Tensor, title: str = "", min_norm: float = 0.5) -> Figure:
    """The paper's uniform-superposition figure for a sweep (one instance per density).

    Top: dimensions per feature m/‖W‖_F² against 1/(1-S) on a log axis, with the sticky 1
    and 1/2 levels.  Bottom: every represented feature's D_i (‖W_i‖ > ``min_norm``), with
    guide lines at 1, 3/4, 2/3, 1/2, 2/5 and 3/8.  density: (instances,); W: (instances,
    hidden, features).
    """
    W = torch.as_tensor(W)
    x = 1.0 / _np(density)
    dpf = _np(geometry.dimensions_per_feature(W))
    D = _np(geometry.feature_dimensionality(W))
    shown = _np(geometry.feature_norms(W)) > min_norm
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.2, 5.6), sharex=True,
                                      gridspec_kw={"height_ratios": [1, 1.4]})
    top.plot(x, dpf, "o-", color="k", ms=3, lw=1)
    for level in (1.0, 0.5):
        top.axhline(level, color="0.6", lw=0.6, ls="--", zorder=0)
    top.set_ylabel("dimensions per feature\nm / ‖W‖²_F")
    top.set_ylim(0, 1.1)
    top.set_title(title, fontsize=10)
    xs = np.broadcast_to(x[:, None], D.shape)[shown]
    jitter = np.exp(np.random.default_rng(0).uniform(-0.03, 0.03, xs.shape))
    bottom.scatter(xs * jitter, D[shown], s=6, alpha=0.35, color="tab:blue", lw=0)
    _guide_lines(bottom)
    bottom.set_ylim(0, 1.1)
    bottom.set_xscale("log")
    bottom.set_xlabel("1 / (1 - S)   (sparser →)")
    bottom.set_ylabel("feature dimensionality D_i")
    fig.subplots_adjust(right=0.78, hspace=0.08)
    return fig


def plot_feature_3d(W: Tensor, titles: Sequence[str] | None = None, size: float = 3.2,
                    view: tuple[float, float] | None = None) -> Figure:
    """Per instance with a 3-D hidden space, each feature's direction W_i as an arrow from the
    origin (features with ‖W_i‖ < 0.1 are left out), e.g. an octahedron of three digons or a
    square antiprism.  ``view=(elevation, azimuth)`` in degrees turns the camera."""
    W = _np(W)
    if W.shape[1] != 3:
        raise ValueError(f"a 3-D view needs hidden=3, got hidden={W.shape[1]}")
    n_inst, _, n_feat = W.shape
    titles = _titles(n_inst, titles)
    fig = plt.figure(figsize=(size * n_inst, size))
    colours = plt.get_cmap("tab10")
    for k in range(n_inst):
        ax = fig.add_subplot(1, n_inst, k + 1, projection="3d")
        lim = max(1.0, float(np.abs(W[k]).max()))
        for i in range(n_feat):
            v = W[k, :, i]
            if np.linalg.norm(v) < 0.1:
                continue
            ax.plot([0, v[0]], [0, v[1]], [0, v[2]], color=colours(i % 10), lw=1.5)
            ax.scatter([v[0]], [v[1]], [v[2]], color=colours(i % 10), s=18)
        for axis in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            axis(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        if view is not None:
            ax.view_init(elev=float(view[0]), azim=float(view[1]))
        ax.set_title(titles[k], fontsize=9)
    return fig


def plot_dimensionality_strip(D: Tensor, norms: Tensor, title: str = "", min_norm: float = 0.5,
                              ax=None) -> Figure:
    """One configuration's D_i as bars, sorted, with the guide levels; features with
    ‖W_i‖ ≤ ``min_norm`` (not represented) in grey.  D, norms: (features,)."""
    D, norms = _np(D), _np(norms)
    order = np.argsort(-D)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 0.22 * len(D) + 1.5), 2.6))
    else:
        fig = ax.figure
    colours = np.where(norms[order] > min_norm, "tab:blue", "0.75")
    ax.bar(np.arange(len(D)), D[order], color=colours)
    _guide_lines(ax)
    ax.set_ylim(0, 1.1)
    ax.set_xticks(np.arange(len(D)), [str(i) for i in order], fontsize=6)
    ax.set_xlabel("feature (sorted by D_i)")
    ax.set_ylabel("D_i")
    ax.set_title(title, fontsize=9)
    return fig


def plot_dynamics(steps: Sequence[int], D: Tensor, loss: Tensor, marker: int | None = None,
                  title: str = "") -> Figure:
    """One instance's learning dynamics: D_i of every feature (top) and the fixed-batch loss
    (bottom, log) against the training step, with guide levels; ``marker`` (a step) draws a
    vertical line on both.  D: (snapshots, features); loss: (snapshots,)."""
    steps, D, loss = _np(steps), _np(D), _np(loss)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.2, 4.6), sharex=True,
                                      gridspec_kw={"height_ratios": [1.4, 1]})
    for i in range(D.shape[1]):
        top.plot(steps, D[:, i], lw=1.2, label=f"feature {i}")
    _guide_lines(top)
    top.set_ylim(0, 1.05)
    top.set_ylabel("D_i")
    top.set_title(title, fontsize=10)
    top.legend(fontsize=7, loc="upper left", ncol=min(3, D.shape[1]))
    bottom.plot(steps, loss, color="k", lw=1.2)
    bottom.set_yscale("log")
    bottom.set_ylabel("loss (fixed batch)")
    bottom.set_xlabel("training step")
    if marker is not None:
        for ax in (top, bottom):
            ax.axvline(marker, color="tab:red", lw=1)
    fig.subplots_adjust(right=0.78, hspace=0.08)
    return fig


def plot_scaling(n_hidden: Sequence[int], loss: Tensor, labels: Sequence[str], weak_theory: Tensor | None = None,
                 title: str = "") -> Figure:
    """Loss against hidden size m on log-log axes, one line per regime (loss: (regimes, m)),
    with each regime's power-law fit, a 1/m guide through the first regime's first point,
    and, if given, the weak-superposition prediction."""
    m = _np(n_hidden).astype(float)
    loss = _np(loss)
    if loss.shape != (len(labels), len(m)):
        raise ValueError(f"loss has shape {loss.shape}; expected ({len(labels)}, {len(m)})")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for k, label in enumerate(labels):
        slope, intercept = np.polyfit(np.log(m), np.log(loss[k]), 1)
        line, = ax.plot(m, loss[k], "o", label=f"{label}: slope {slope:+.2f}")
        ax.plot(m, np.exp(intercept) * m**slope, color=line.get_color(), lw=1)
    ax.plot(m, loss[0, 0] * m[0] / m, color="0.5", ls="--", lw=1, label="∝ 1/m")
    if weak_theory is not None:
        ax.plot(m, _np(weak_theory), color="0.3", ls=":", lw=1.2, label="weak theory (top m stored)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hidden size m")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------------------
# Chapter 03: incidental polysemanticity
# --------------------------------------------------------------------------------------


def plot_polysemantic_weights(Ws: Sequence[Tensor], titles: Sequence[str] | None = None,
                              sort: bool = True, size: float = 3.2) -> Figure:
    """One feature × neuron heatmap per matrix (each W is one instance, (n, m)), on a shared
    red–blue scale.  With ``sort`` the neurons are reordered by ``sort_for_display`` (each
    feature's winner in feature order, unused neurons last) and columns of polysemantic
    neurons, two or more active weights, are marked with a triangle above the matrix."""
    from .polysemanticity import active_weights, sort_for_display

    Ws = [W.detach().cpu() for W in Ws]
    titles = _titles(len(Ws), titles)
    limit = max(float(W.abs().max()) for W in Ws) or 1.0
    fig, axes = plt.subplots(1, len(Ws), figsize=(size * len(Ws), size * 0.8), squeeze=False)
    for ax, W, title in zip(axes[0], Ws, titles):
        if W.dim() != 2:
            raise ValueError(f"each W must be one instance's (n, m) matrix, got shape {tuple(W.shape)}")
        shown = sort_for_display(W)[0] if sort else W
        image = ax.imshow(_np(shown), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                          interpolation="nearest")
        shared = (active_weights(shown[None])[0].sum(0) >= 2).nonzero().flatten()
        for column in shared.tolist():
            ax.plot(column, -1.2, marker="v", color="black", markersize=5, clip_on=False)
        ax.set_ylim(W.shape[0] - 0.5, -1.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("neuron" + (" (sorted)" if sort else ""))
        ax.set_ylabel("feature")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="weight")
    return fig


def plot_collision_sweep(sweeps: dict, title: str = "") -> Figure:
    """Mean polysemantic neurons (± 2 standard errors) against the number of neurons m, on
    log-log axes, one series per ``CollisionSweep`` in ``sweeps`` (label -> sweep), with the
    exact prediction and the paper's n²/(4m) line for the first sweep's n."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    first = next(iter(sweeps.values()))
    from .polysemanticity import predicted_polysemantic

    grid = np.unique(np.geomspace(min(first.widths), max(first.widths), 100).astype(int))

    ax.plot(grid, [predicted_polysemantic(first.n, int(m)) for m in grid], color="black", label="prediction")
    ax.plot(grid, first.n**2 / (4 * grid), color="gray", ls="--", label="n²/(4m)")
    for k, (label, sweep) in enumerate(sweeps.items()):
        mean, err = _np(sweep.mean), 2 * _np(sweep.standard_error)
        shift = 1 + 0.03 * (k - (len(sweeps) - 1) / 2)  # spread overlapping error bars
        ax.errorbar(np.array(sweep.widths) * shift, mean, yerr=err, fmt="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks(first.widths)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("neurons m")
    ax.set_ylabel("polysemantic neurons (mean over seeds)")
    ax.set_title(title or f"n = {first.n} features", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sparsification(time: Tensor, surviving: Tensor, l1_norm: Tensor, predicted: Tensor,
                        title: str = "") -> Figure:
    """The number of surviving weights per feature m'(t) and the ℓ1 norm of a feature's row
    against training time t = lr · steps (log-log), with the paper's predictions m'(t) and √m'(t)."""
    t = _np(time)
    keep = t > 0
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.plot(t[keep], _np(surviving)[keep], color="tab:blue", label="m′ measured")
    ax.plot(t[keep], _np(predicted)[keep], color="tab:blue", ls="--", label="m′ predicted")
    ax.plot(t[keep], _np(l1_norm)[keep], color="tab:red", label="ℓ1 norm measured")
    ax.plot(t[keep], np.sqrt(_np(predicted)[keep]), color="tab:red", ls="--", label="ℓ1 norm predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training time t = lr · step")
    ax.set_ylabel("per feature")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_fourth_norms(steps: Sequence[int], histories: dict, title: str = "") -> Figure:
    """Mean fourth norm Σ_j w_ij⁴ over training, one line per label (label -> (records,
    instances) history; the line is the mean over instances, the band its range)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    x = np.asarray(steps)
    for label, history in histories.items():
        h = _np(history)
        line, = ax.plot(x, h.mean(1), label=label)
        ax.fill_between(x, h.min(1), h.max(1), color=line.get_color(), alpha=0.2)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean fourth norm Σ_j w⁴")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_token_neurons(runs: dict, tokens: str = "ABCD") -> Figure:
    """One heatmap per run (title -> (activations, losses)): a row per seed, the neuron's
    activation h_t on each token (columns), its final loss written at the row's end."""
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 4.6), squeeze=False)
    for ax, (title, (activations, losses)) in zip(axes[0], runs.items()):
        h, loss = _np(activations), _np(losses)
        image = ax.imshow(h, cmap="Greens", aspect="auto", vmin=0)
        ax.set_xticks(range(h.shape[1]), list(tokens[:h.shape[1]]))
        ax.set_yticks(range(h.shape[0]))
        ax.set_ylabel("seed")
        ax.set_xlabel("token (final loss at right)")
        for k, value in enumerate(loss):
            ax.text(h.shape[1] - 0.4, k, f"{value:.3f}", va="center", fontsize=7)
        ax.set_xlim(-0.5, h.shape[1] + 0.6)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.05, label="activation h")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Chapter 04: computation in superposition
# --------------------------------------------------------------------------------------


def _axes_for(ax, panels: int, figsize) -> tuple[Figure, list]:
    """A row of ``panels`` new axes, or the caller's: one Axes (``panels`` = 1) or a sequence."""
    if ax is None:
        fig, axes = plt.subplots(1, panels, figsize=figsize, squeeze=False)
        return fig, list(axes[0])
    axes = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    if len(axes) != panels:
        raise ValueError(f"got {len(axes)} axes for {panels} panels")
    return axes[0].figure, axes


def neuron_display_order(W: Tensor, min_norm: float = 0.1, monosemantic: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The order ``plot_neuron_features`` draws one instance's neurons in, and their groups.

    W: (hidden, features).  Monosemantic neurons (a share ≥ ``monosemantic`` of their squared
    input weight on one feature) come first, by that feature; then polysemantic ones, most
    monosemantic first; then dead ones (‖W_k‖ < ``min_norm``).  Returns (order, group) with
    group 0 / 1 / 2 for monosemantic / polysemantic / dead, both in display order."""
    from .computation import neuron_monosemanticity

    W = torch.as_tensor(W).detach().float().cpu()
    share = _np(neuron_monosemanticity(W[None], min_norm)[0])
    main = _np(W.square().argmax(dim=-1))
    dead = np.isnan(share)
    group = np.where(dead, 2, np.where(share >= monosemantic, 0, 1))
    secondary = np.where(group == 0, main, np.where(group == 1, -np.nan_to_num(share), 0))
    order = np.lexsort((np.arange(len(share)), secondary, group))
    return order, group[order]


def plot_neuron_features(Ws, titles: Sequence[str] | None = None, importance: Tensor | None = None,
                         ax=None, min_norm: float = 0.1, size: float = 3.2) -> Figure:
    """The privileged-basis picture of Elhage et al. (2022): per neuron, a stacked bar of its
    input weights W[k, i], positive weights stacked up and negative ones down, each feature
    coloured by its index (yellow = feature 0, the most important) or, if ``importance`` is
    given, by its importance.  Neurons are ordered by ``neuron_display_order``: monosemantic
    first (by their feature), then polysemantic, then dead ones (marked with a grey ×).

    Ws: one (hidden, features) matrix, a list of them (one panel each, ``titles`` written under
    the panels, e.g. "1 − S = 0.1"), or an (instances, hidden, features) tensor.  Works for
    the abs(x) model's W1 as well (e.g. 40 neurons × 100 features: thin bars, a colourbar)."""
    if isinstance(Ws, (Tensor, np.ndarray)) and np.ndim(Ws) == 2:
        Ws = [Ws]
    Ws = [torch.as_tensor(W).detach().float().cpu() for W in Ws]
    for W in Ws:
        if W.dim() != 2:
            raise ValueError(f"each W must be one instance's (hidden, features) matrix, got shape {tuple(W.shape)}")
    n_feat = Ws[0].shape[1]
    if any(W.shape[1] != n_feat for W in Ws):
        raise ValueError("every W needs the same number of features")
    labels = [None] * len(Ws) if titles is None else _titles(len(Ws), titles)
    # each panel gets its own width (wide enough for its y tick labels and its two-line label,
    # more for many neurons) and constrained layout keeps the labels of neighbours apart and
    # gives the shared colourbar its own room on the right
    width = max(size, 0.14 * max(W.shape[0] for W in Ws) + 1.0) + 0.4
    if ax is None:
        fig, grid = plt.subplots(1, len(Ws), figsize=(width * len(Ws) + 1.0, size + 0.4), squeeze=False,
                                 layout="constrained")
        axes = list(grid[0])
    else:
        fig, axes = _axes_for(ax, len(Ws), None)
    imp = None if importance is None else _np(importance).reshape(-1)
    if imp is not None and len(imp) != n_feat:
        raise ValueError(f"importance has {len(imp)} entries for {n_feat} features")
    if imp is not None and imp.max() > imp.min():
        norm, cmap, bar_label = plt.Normalize(float(imp.min()), float(imp.max())), plt.get_cmap("viridis"), "importance"
        colours = cmap(norm(imp))
    else:  # by index, feature 0 (the most important) yellow
        norm, cmap, bar_label = plt.Normalize(0, max(n_feat - 1, 1)), plt.get_cmap("viridis_r"), "feature index"
        colours = cmap(norm(np.arange(n_feat)))
    from matplotlib.collections import PolyCollection

    for axis, W, label in zip(axes, Ws, labels):
        order, group = neuron_display_order(W, min_norm)
        w = _np(W)[order]  # (hidden, features) in display order
        hidden = w.shape[0]
        # stack each neuron's positive weights upward and its negative ones downward, feature 0
        # nearest the axis; all rectangles in one collection (thousands for the abs(x) model)
        pos, neg = np.clip(w, 0, None), np.clip(w, None, 0)
        top, bottom = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        lo = np.concatenate([top - pos, bottom - neg])  # (2 hidden, features) start of each segment
        hi = np.concatenate([top, bottom])
        k = np.tile(np.arange(hidden), 2)[:, None].repeat(n_feat, 1)
        f = np.arange(n_feat)[None, :].repeat(2 * hidden, 0)
        keep = hi != lo
        x0, x1 = k[keep] - 0.4, k[keep] + 0.4
        y0, y1 = lo[keep], hi[keep]
        vertices = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x1, y1], -1),
                             np.stack([x0, y1], -1)], axis=1)
        bars = PolyCollection(vertices, facecolors=colours[f[keep]], edgecolors="white",
                              linewidths=0.3 if n_feat <= 20 else 0.0)
        axis.add_collection(bars)
        extent = max(float(top[:, -1].max(initial=0)), float(-bottom[:, -1].min(initial=0)), 1e-3)
        axis.set_ylim(min(float(bottom[:, -1].min(initial=0)), -0.05 * extent) * 1.05,
                      max(float(top[:, -1].max(initial=0)), 0.05 * extent) * 1.05)
        if (group == 2).any():
            dead = np.arange(hidden)[group == 2]
            axis.plot(dead, np.zeros(len(dead)), "x", color="0.6", ms=4, label="dead")
        axis.axhline(0, color="0.3", lw=0.6)
        axis.set_xlim(-0.7, hidden - 0.3)
        axis.set_xticks([])
        mono = int((group == 0).sum())
        axis.set_xlabel(f"neurons ({mono}/{hidden} monosemantic)" + (f"\n{label}" if label else ""), fontsize=8)
    axes[0].set_ylabel("input weight W[k, i]")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=norm), ax=axes, shrink=0.8, label=bar_label,
                 fraction=0.12 / len(Ws), pad=0.02)
    return fig


U_AND_CASES = (("both", "both on", "tab:blue"), ("one", "one on", "tab:orange"), ("none", "none on", "tab:green"))


def plot_u_and_errors(l_values: Sequence[int], measured: dict, predicted: dict, ax=None) -> Figure:
    """The U-AND error laws: the mean read-off of AND(i, j) against l, the number of features
    on, for pairs with both / one / none of i, j on.  ``measured`` and ``predicted`` map
    "both" / "one" / "none" to one value per entry of ``l_values``; measured as points,
    predicted as lines, one colour per case.  The ideal read-offs are 1, 0 and 0."""
    l_values = np.asarray(l_values)
    for name, values in (*measured.items(), *predicted.items()):
        if len(values) != len(l_values):
            raise ValueError(f"{name!r} has {len(values)} values for {len(l_values)} values of l")
    fig, (axis,) = _axes_for(ax, 1, (5.2, 3.6))
    for key, label, colour in U_AND_CASES:
        if key in predicted:
            axis.plot(l_values, _np(predicted[key]), "-", color=colour, lw=1.3, label=f"{label}: predicted")
        if key in measured:
            axis.plot(l_values, _np(measured[key]), "o", color=colour, ms=5, label=f"{label}: measured")
    for level in (0.0, 1.0):
        axis.axhline(level, color="0.6", lw=0.6, ls=":", zorder=0)
    axis.set_xlabel("l (features on)")
    axis.set_ylabel("mean AND read-off")
    axis.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_u_and_readoffs(measured: dict, predicted: dict, predicted_exact: dict | None = None, title: str = "",
                        ax=None) -> Figure:
    """One U-AND setting as a grouped bar chart: measured vs predicted mean read-off for pairs
    with both / one / none of their features on (dicts "both" / "one" / "none" -> float), the
    exact prediction, if given, as black ticks, and the ideal AND (1, 0, 0) as grey lines."""
    fig, (axis,) = _axes_for(ax, 1, (4.6, 3.0))
    x = np.arange(len(U_AND_CASES))
    keys = [key for key, _, _ in U_AND_CASES]
    axis.bar(x - 0.2, [measured[k] for k in keys], width=0.4, color="tab:blue", label="measured")
    axis.bar(x + 0.2, [predicted[k] for k in keys], width=0.4, color="tab:orange", label="predicted (first order)")
    if predicted_exact is not None:
        axis.plot(x + 0.2, [predicted_exact[k] for k in keys], "_", color="k", ms=14, mew=2, label="predicted (exact)")
    for k, ideal in enumerate((1.0, 0.0, 0.0)):
        axis.plot([k - 0.45, k + 0.45], [ideal, ideal], color="0.5", lw=1, ls="--",
                  label="ideal AND" if k == 0 else None)
    axis.set_xticks(x, [label for _, label, _ in U_AND_CASES])
    axis.set_ylabel("mean read-off")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_compressed_computation(per_feature: dict, reference: float | None = None,
                                reference_label: str | None = None, sort: bool = True, ax=None) -> Figure:
    """Per-feature loss (divided by the feature probability p) of the compressed-computation
    model, one panel per title of ``per_feature`` (title -> {curve label -> (n_features,)}).
    With ``sort`` each curve is sorted by its own loss (a profile: how the loss is spread over
    the features), so the x position is a rank, not a feature; ``reference`` (e.g. 1/12, the
    naive loss without mixing) is drawn as a dashed line."""
    if not per_feature:
        raise ValueError("per_feature needs at least one panel")
    fig, axes = _axes_for(ax, len(per_feature), (4.2 * len(per_feature), 3.4))
    for axis, (title, curves) in zip(axes, per_feature.items()):
        values = {label: _np(v).reshape(-1) for label, v in curves.items()}
        first = next(iter(values.values()))
        for label, v in values.items():
            if len(v) != len(first):
                raise ValueError(f"{title!r}: {label!r} has {len(v)} features, the first curve {len(first)}")
            axis.plot(np.arange(len(v)), np.sort(v) if sort else v, lw=1.3, label=f"{label} (mean {v.mean():.3f})")
        if reference is not None:
            axis.axhline(reference, color="k", ls="--", lw=1,
                         label=reference_label or f"reference {reference:.3g}")
        axis.set_xlabel("features, each curve sorted by its loss" if sort else "feature")
        axis.set_title(title, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=7)
    axes[0].set_ylabel("loss / p per feature")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_abs_sweep(density, monosemantic_fraction, ax=None) -> Figure:
    """The fraction of live neurons that are monosemantic against feature density 1 − S (log x):
    dense features get neurons of their own, sparse ones share them.  ``monosemantic_fraction``
    is (densities,) or (seeds, densities); with seeds, the mean is drawn with the range as a band."""
    x = _np(density).reshape(-1)
    y = _np(monosemantic_fraction)
    y = y[None] if y.ndim == 1 else y
    if y.shape[-1] != len(x):
        raise ValueError(f"monosemantic_fraction has {y.shape[-1]} densities, density has {len(x)}")
    fig, (axis,) = _axes_for(ax, 1, (4.8, 3.4))
    axis.plot(x, np.nanmean(y, axis=0), "o-", color="k", ms=4, lw=1.2, label="mean" if len(y) > 1 else None)
    if len(y) > 1:
        axis.fill_between(x, np.nanmin(y, axis=0), np.nanmax(y, axis=0), color="0.7", alpha=0.5,
                          label="range over seeds")
        axis.legend(fontsize=7)
    axis.set_xscale("log")
    axis.set_ylim(-0.02, 1.05)
    axis.set_xlabel("feature density 1 − S")
    axis.set_ylabel("monosemantic fraction of live neurons")
    if ax is None:
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# Chapter 05: sparse autoencoders
# --------------------------------------------------------------------------------------


def plot_sae_sweep(x, panels: dict, xlabel: str, logx: bool = True, mark: float | None = None,
                   mark_label: str = "", ax=None) -> Figure:
    """One small panel per metric against a swept setting (an L1 coefficient, a dictionary size):
    ``panels`` maps a metric's name to its values, one per x.  ``mark`` draws a dashed vertical
    line (e.g. the true number of features) labelled ``mark_label``."""
    x = np.asarray(_np(torch.as_tensor(x, dtype=torch.float64))).reshape(-1)
    if not panels:
        raise ValueError("panels is empty: give at least one metric")
    for name, values in panels.items():
        if len(values) != len(x):
            raise ValueError(f"panel {name!r} has {len(values)} values for {len(x)} settings")
    fig, axes = _axes_for(ax, len(panels), (2.5 * len(panels), 2.6))
    for axis, (name, values) in zip(axes, panels.items()):
        axis.plot(x, np.asarray(values, dtype=float), "o-", color="k", ms=4, lw=1.2)
        if mark is not None:
            axis.axvline(mark, color="tab:red", ls="--", lw=1, label=mark_label or None)
            if mark_label and axis is axes[0]:
                axis.legend(fontsize=7)
        if logx:
            axis.set_xscale("log")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.tick_params(labelsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_k_sweep(ks, panels: dict, references: dict | None = None, ax=None) -> Figure:
    """SAE metrics against L0 = k (log axis, one tick labelled at each k and no minor labels,
    so that the labels never overlap): ``panels`` maps a metric's name to its values, one per
    k; ``references`` maps a panel's name to {label: y} horizontal dashed lines (e.g. the
    clean loss)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    ks = [int(k) for k in ks]
    if not panels:
        raise ValueError("panels is empty: give at least one metric")
    for name, values in panels.items():
        if len(values) != len(ks):
            raise ValueError(f"panel {name!r} has {len(values)} values for {len(ks)} values of k")
    fig, axes = _axes_for(ax, len(panels), (3.1 * len(panels), 2.8))
    for axis, (name, values) in zip(axes, panels.items()):
        axis.plot(ks, np.asarray(values, dtype=float), "o-", color="k", ms=4, lw=1.2)
        for i, (label, y) in enumerate((references or {}).get(name, {}).items()):
            axis.axhline(y, color=f"C{i}", ls="--", lw=1, label=label)
        if (references or {}).get(name):
            axis.legend(fontsize=7)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(FixedLocator(ks))
        axis.xaxis.set_major_formatter(FixedFormatter([str(k) for k in ks]))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("L0 = k", fontsize=8)
        axis.tick_params(labelsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_max_cosines(max_cosine: Tensor, probability: Tensor, threshold: float = 0.9, ax=None) -> Figure:
    """Each ground-truth feature's best cosine similarity with an SAE decoder direction against
    how often the feature fires (log x); the dashed line is the "recovered" threshold."""
    cos, p = _np(max_cosine).reshape(-1), _np(probability).reshape(-1)
    if len(cos) != len(p):
        raise ValueError(f"max_cosine has {len(cos)} features, probability has {len(p)}")
    fig, (axis,) = _axes_for(ax, 1, (4.6, 3.0))
    axis.scatter(p, cos, s=14, c=np.where(cos > threshold, "tab:blue", "tab:red"))
    axis.axhline(threshold, color="0.5", ls="--", lw=1)
    axis.set_xscale("log")
    axis.set_ylim(min(0.0, float(cos.min()) - 0.05), 1.02)
    axis.set_xlabel("feature firing probability")
    axis.set_ylabel("max cosine with a latent")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_architectures(rows: dict, metrics: Sequence[str] = ("l0", "fve", "shrinkage", "mmcs"), ax=None) -> Figure:
    """Bars per SAE architecture, one panel per metric; ``rows`` maps an architecture's name to
    its ``sae.evaluate`` dict.  Panels of metrics whose ideal is 1 (fve, shrinkage, mmcs) get a
    dashed line at 1."""
    if not rows:
        raise ValueError("rows is empty: give at least one architecture")
    names = list(rows)
    for name in names:
        missing = [m for m in metrics if m not in rows[name]]
        if missing:
            raise ValueError(f"architecture {name!r} has no {', '.join(missing)}")
    fig, axes = _axes_for(ax, len(metrics), (2.4 * len(metrics), 2.8))
    colours = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    for axis, metric in zip(axes, metrics):
        values = [float(rows[name][metric]) for name in names]
        axis.bar(range(len(names)), values, color=colours)
        if metric in ("fve", "shrinkage", "mmcs", "recovered"):
            axis.axhline(1.0, color="0.4", ls="--", lw=1)
            axis.set_ylim(min(0.5, min(values) - 0.05), 1.08)
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        axis.set_title(metric, fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_sae_directions(true_directions: Tensor, learned_directions: Tensor, titles: Sequence[str] | None = None,
                        size: float = 2.8) -> Figure:
    """2-D feature directions (rows of (n_true, 2)) as grey lines with the SAE's decoder
    directions (rows of (n_learned, 2), one panel per entry when a list is given) as coloured
    arrows on top: the chapter 01 pentagon and what an SAE finds in it."""
    true = _np(true_directions)
    learned = [_np(d) for d in learned_directions] if isinstance(learned_directions, (list, tuple)) \
        else [_np(learned_directions)]
    if true.ndim != 2 or true.shape[1] != 2 or any(d.ndim != 2 or d.shape[1] != 2 for d in learned):
        raise ValueError("directions must be (n, 2) matrices")
    titles = _titles(len(learned), titles)
    fig, axes = plt.subplots(1, len(learned), figsize=(size * len(learned), size), squeeze=False)
    true_unit = true / np.linalg.norm(true, axis=1, keepdims=True)
    for axis, d, title in zip(axes[0], learned, titles):
        for v in true_unit:
            axis.plot([0, v[0]], [0, v[1]], color="0.75", lw=5, solid_capstyle="round", zorder=1)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        colours = plt.get_cmap("tab10")(np.arange(len(d)) % 10)
        for v, colour in zip(d, colours):
            axis.annotate("", xy=(v[0], v[1]), xytext=(0, 0),
                          arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.5), zorder=2)
        axis.set_xlim(-1.2, 1.2)
        axis.set_ylim(-1.2, 1.2)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_latent_histogram(summary: dict, log: bool = False, ax=None) -> Figure:
    """The distribution of one SAE latent's activations where it fires (> 0), from a
    ``widgets.latent_summary`` result: one bar per histogram bin, the firing rate in the title;
    a dead latent gets an empty panel that says so.  ``log`` puts the counts on a log scale."""
    fig, (axis,) = _axes_for(ax, 1, (4.6, 2.4))
    counts, edges = summary["histogram"]["counts"], summary["histogram"]["edges"]
    if counts:
        edges = np.asarray(edges)
        axis.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:orange", edgecolor="white",
                 linewidth=0.5)
        axis.set_title(f"latent {summary['latent']}: fires on {summary['firing_rate']:.2%} of tokens", fontsize=9)
        if log:
            axis.set_yscale("log")
        else:
            axis.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    else:
        axis.text(0.5, 0.5, "never fires (dead latent)", ha="center", va="center", transform=axis.transAxes)
        axis.set_title(f"latent {summary['latent']}: dead", fontsize=9)
    axis.set_xlabel("activation (where > 0)")
    axis.set_ylabel("tokens")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_causal_trace(avg: dict, kinds: Sequence[str] = ("resid", "mlp", "attn"), title: str = "") -> Figure:
    """Heat maps of ``facts.average_trace``'s mean indirect effects: one panel per kind, layers
    down, position categories across (the layout of Meng et al.'s Figure 1)."""
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds), 3.0), squeeze=False)
    top = max(float(avg["effects"][k].max()) for k in kinds)
    for ax, kind in zip(axes[0], kinds):
        image = ax.imshow(_np(avg["effects"][kind]), cmap="Purples", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(len(avg["categories"])))
        ax.set_xticklabels(avg["categories"], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("layer")
        ax.set_title({"resid": "residual stream", "mlp": "MLP output", "attn": "attention output"}.get(kind, kind))
    # room for the rotated category labels below, and, with a title, above the panels' own titles
    # (suptitle's default place overlapped "residual stream", "MLP output", ...); set before the
    # colour bar, which takes its space from the panels as they are then
    fig.subplots_adjust(top=0.78 if title else 0.9, bottom=0.3, wspace=0.3)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="indirect effect")
    if title:
        fig.suptitle(title, y=0.97)
    return fig


def plot_lifelong(runs: dict, metrics: Sequence[str] = ("retention", "untouched_accuracy"), ax=None) -> Figure:
    """Lifelong-editing curves: ``runs`` maps a label to ``editing.lifelong_edit``'s result; one
    panel per metric against the number of edits made (untouched accuracy starts at 0 edits)."""
    names = {"retention": "earlier edits still held (p(new) > p(old))",
             "untouched_accuracy": "untouched facts still recalled (top-1)",
             "paraphrase": "earlier edits, held-out paraphrase"}
    fig, axes = _axes_for(ax, len(metrics), (4.2 * len(metrics), 3.2))
    for a, metric in zip(axes, metrics):
        for label, run in runs.items():
            y = run[metric]
            x = ([0] + list(run["n_edits"])) if len(y) == len(run["n_edits"]) + 1 else run["n_edits"]
            a.plot(x, y, marker="o", label=label)
        a.set_xlabel("edits made")
        a.set_title(names.get(metric, metric), fontsize=9)
        a.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
