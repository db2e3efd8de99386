"""Figures of text classifiers ([A]): the state manifold with its fixed points and readouts (Figs. 1, 6),
the Jacobian's modes at the fixed points (Fig. 2), readout angles and the manifold's dimension (Figs. 7–8,
10–12)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr
from jaxtyping import Float
from matplotlib.lines import Line2D

from popdyn.figures import Run, register
from popdyn.figures._style import (
    ARCH_COLORS,
    ARCH_MARKERS,
    ARCHS,
    _cmap,
    _empty,
    _save,
    _subplots,
    _trained,
    _values,
)
from popdyn.figures.dynamics import example_member
from popdyn.figures.networks import example_states

__all__ = ["text_manifold", "readout_angles", "dimensions", "dimension_vs_classes", "eigenmodes"]

# ------------------------------------------------------------------------------ text classification ([A])
CLASS_CMAP = "tab10"


def text_manifold(
    ds: xr.Dataset,
    member: int,
    states: Float[np.ndarray, "probes time state"],
    fp_states: Float[np.ndarray, "fixed_point state"],
    labels: np.ndarray,
    readout: Float[np.ndarray, "units classes"],
    prefix: str | Path,
) -> list[Path]:
    """[A] Figs. 1, 10–12: one classifier's final hidden states on the probe phrases in the plane of their
    top two principal components, coloured by the phrase's class, with a few whole trajectories from
    h0 = 0 and the readout vectors as arrows; beside it the fixed points at x = 0 in the same plane,
    coloured by the class their readout predicts; insets: the variance explained by each component."""
    net = ds.sel(member=member)
    final = states[:, -1]
    centre = final.mean(axis=0)
    _, sv, vt = np.linalg.svd(final - centre, full_matrices=False)
    pcs = vt[:2]
    xy = (final - centre) @ pcs.T
    kernel = np.asarray(readout)
    n = kernel.shape[1]
    cmap = _cmap(CLASS_CMAP)
    fig, axes = _subplots(1, 2, figsize=(10.4, 4.8), layout="constrained")
    ax = axes[0]
    for trial in states[:: max(1, len(states) // 8)][:8]:
        path = (np.concatenate([np.zeros((1, states.shape[-1])), trial]) - centre) @ pcs.T
        ax.plot(path[:, 0], path[:, 1], color="0.5", linewidth=0.6, alpha=0.6)
    ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(k % 10) for k in labels], s=8, alpha=0.7)
    ax.scatter(*((-centre) @ pcs.T), marker="s", color="black", s=30, label="h0 = 0", zorder=3)
    # readouts live in the hidden part h of the state (lstm: [h; c]): project them onto the same PCs
    arrows = pcs[:, : kernel.shape[0]] @ kernel  # [2, N]
    arrows *= 0.6 * np.abs(xy).max() / max(np.linalg.norm(arrows, axis=0).max(), 1e-12)
    for k, d in enumerate(arrows.T):
        ax.annotate(
            "", xy=d, xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=cmap(k % 10), linewidth=2)
        )
    ax.set_title("final states of the probe phrases, by class")
    fp = fp_states[net.fp_valid.values[0]]
    ax2 = axes[1]
    if len(fp):
        pxy = (fp - centre) @ pcs.T
        pred = net.fp_readout.values[0][net.fp_valid.values[0]].argmax(-1)
        ax2.scatter(pxy[:, 0], pxy[:, 1], c=[cmap(k % 10) for k in pred], s=14)
    else:
        _empty(ax2, "no fixed points found")
    ax2.set_title(f"{len(fp)} fixed points at x = 0, by predicted class")
    for a, points in ((ax, final), (ax2, fp)):
        a.set_xlabel("PC 1")
        a.set_ylabel("PC 2")
        if len(points) >= 2:
            mu = np.linalg.svd(points - points.mean(0), compute_uv=False) ** 2
            inset = a.inset_axes([0.72, 0.72, 0.26, 0.24])
            inset.bar(np.arange(1, min(10, len(mu)) + 1), (mu / mu.sum())[:10], color="0.4")
            inset.set_title("var. explained", fontsize="x-small")
            inset.tick_params(labelsize="xx-small")
    handles = [Line2D([], [], marker="o", linestyle="", color=cmap(k % 10)) for k in range(n)]
    fig.legend(handles, [f"class {k + 1}" for k in range(n)], loc="outside lower center", ncols=min(n, 10),
               fontsize="small")  # fmt: skip
    fig.suptitle(
        f"{ds.attrs.get('task', '')}: network {member} ({net.arch.item()}, {net.units.item()} units, "
        f"seed {net.seed.item()}), accuracy {float(net.val_accuracy):.3f}"
    )
    return _save(fig, prefix)


def readout_angles(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[A] Fig. 8: the pairwise angles between each network's readout vectors, per architecture, against
    the regular simplex's arccos(−1/(N−1)); and each network's subspace fraction Λ (eq. 12)."""
    from popdyn.analyses.geometry import simplex_angle

    ok = _trained(ds)
    n = ds.sizes["output"]
    pairs = np.triu(np.ones((n, n), dtype=bool), 1)  # each pair once
    archs = _values(ds, "arch", ok)
    fig, axes = _subplots(1, 2, figsize=(9.6, 3.8), layout="constrained")
    for j, arch in enumerate(archs):
        sel = ok & (ds.arch.values == arch)
        angles = ds.readout_angle.values[sel][:, pairs].ravel()
        axes[0].hist(angles, bins=np.linspace(0, 180, 61), alpha=0.6, color=ARCH_COLORS[arch], label=arch)
        axes[1].scatter(np.full(sel.sum(), j), ds.subspace_fraction.values[sel], color=ARCH_COLORS[arch],
                        marker=ARCH_MARKERS.get(arch, "o"), alpha=0.7)  # fmt: skip
    axes[0].axvline(simplex_angle(n), color="black", linestyle="--", label=f"simplex, N = {n}")
    axes[0].set_xlabel("angle between readouts (degrees)")
    axes[0].set_ylabel("pairs")
    axes[0].legend(fontsize="small")
    axes[1].set_xticks(range(len(archs)), archs)
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_ylabel("subspace fraction Λ")
    fig.suptitle(f"{ds.attrs.get('task', '')}: readout geometry of {int(ok.sum())} networks")
    return _save(fig, prefix)


DIMENSION_MEASURES = {
    "hidden_pr": "global PR",
    "hidden_local_pr": "local PR",
    "hidden_var95": "95 % var.",
    "hidden_var_classes": "N/(N+1) var.",
    "hidden_mle": "MLE",
    "hidden_corr_dim": "corr. dim.",
    "fp_pr": "fixed points: PR",
    "fp_var95": "fixed points: 95 % var.",
}


def dimensions(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[A] Fig. 6 for one class count: every dimension measure of the hidden states and fixed points, one
    point per network, coloured by architecture, against the (N−1)-simplex's N − 1."""
    ok = _trained(ds)
    measures = [m for m in DIMENSION_MEASURES if m in ds]
    fig, ax = _subplots(figsize=(1.0 * len(measures) + 2.5, 4.0), layout="constrained")
    archs = _values(ds, "arch", ok)
    for j, arch in enumerate(archs):
        sel = ok & (ds.arch.values == arch)
        for i, m in enumerate(measures):
            x = i + (j - (len(archs) - 1) / 2) * 0.2
            ax.scatter(np.full(sel.sum(), x), ds[m].values[sel], color=ARCH_COLORS[arch], s=14,
                       marker=ARCH_MARKERS.get(arch, "o"), label=arch if i == 0 else None)  # fmt: skip
    n = ds.sizes["output"]
    ax.axhline(n - 1, color="black", linestyle="--", label=f"(N − 1)-simplex, N = {n}")
    ax.set_xticks(range(len(measures)), [DIMENSION_MEASURES[m] for m in measures], rotation=30, ha="right")
    ax.set_ylabel("dimension")
    ax.legend(fontsize="small")
    ax.set_title(f"{ds.attrs.get('task', '')}: dimensionality of {int(ok.sum())} networks")
    return _save(fig, prefix)


def dimension_vs_classes(
    datasets: list[xr.Dataset], prefix: str | Path, measure: str = "hidden_pr"
) -> list[Path]:
    """[A] Figs. 6–7: a dimension measure against the number of classes N, over runs of different N (e.g.
    the run directories of ``-m +grid=categorical 'task.N=range(2,11)'``): median and quartiles per
    architecture, against the (N−1)-simplex."""
    rows = []
    for ds in datasets:
        ok = _trained(ds)
        for arch in _values(ds, "arch", ok):
            v = ds[measure].values[ok & (ds.arch.values == arch)]
            rows.append((arch, ds.sizes["output"], *np.nanquantile(v, [0.25, 0.5, 0.75])))
    fig, ax = _subplots(figsize=(5.6, 4.0), layout="constrained")
    for arch in ARCHS:
        r = sorted((row for row in rows if row[0] == arch), key=lambda row: row[1])
        if r:
            n, lo, med, hi = (np.array(c, float) for c in zip(*[row[1:] for row in r]))
            ax.plot(n, med, marker=ARCH_MARKERS[arch], color=ARCH_COLORS[arch], label=arch)
            ax.fill_between(n, lo, hi, color=ARCH_COLORS[arch], alpha=0.2, linewidth=0)
    ns = np.array(sorted({row[1] for row in rows}), float)
    ax.plot(ns, ns - 1, color="black", linestyle="--", label="(N − 1)-simplex")
    ax.set_xlabel("number of classes N")
    ax.set_ylabel(DIMENSION_MEASURES.get(measure, measure))
    ax.legend(fontsize="small")
    return _save(fig, prefix)


def eigenmodes(ds: xr.Dataset, member: int, length: int, prefix: str | Path) -> list[Path]:
    """[A] Fig. 2 for one network: for each mode of the Jacobian at its fixed points (x = 0), largest |λ|
    first (the slowest, unless |λ| > 1), the time constant ``1/|log|λ||`` in words (left axis, log scale)
    and the share of the mode's right eigenvector in the fixed-point manifold's principal subspace (right
    axis); a marker per point, a line through the medians, the phrase ``length`` dotted.  Integration
    modes are slow *and* inside the manifold."""
    net = ds.sel(member=member)
    valid = net.fp_valid.values[0]
    fig, ax = _subplots(figsize=(6.4, 3.6), layout="constrained")
    if not valid.any():
        _empty(ax, "no fixed points")
        return _save(fig, prefix)
    tau = net.fp_time_constants.values[0][valid]  # [points, modes]
    overlap = net.fp_mode_overlap.values[0][valid]
    shown = min(20, tau.shape[1])
    modes = np.arange(1, shown + 1)
    right = ax.twinx()
    for values, axis, color in ((tau, ax, "black"), (overlap, right, "tab:blue")):
        axis.scatter(np.tile(modes, len(values)), values[:, :shown].ravel(), color=color, s=6, alpha=0.25)
        axis.plot(modes, np.nanmedian(values[:, :shown], axis=0), color=color, marker="o", markersize=3)
    ax.axhline(length, color="gray", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("mode (largest |λ| first)")
    ax.set_ylabel("time constant (words)")
    right.set_ylabel("overlap with the fixed-point manifold", color="tab:blue")
    right.set_ylim(-0.02, 1.02)
    ax.set_title(f"network {member} ({net.arch.item()}-{net.units.item()}): {int(valid.sum())} fixed points")
    return _save(fig, prefix)


@register
def _jobs(run: Run) -> dict:
    """Text classifiers' figures ([A]; ``readout_angle`` loaded): ``text_manifold``, ``eigenmodes`` (the
    Jacobian's modes analysed), ``readout_angles``, ``dimensions``."""
    ds, jobs = run.ds, {}
    if "readout_angle" not in ds:
        return jobs
    task = run.sweep.task
    labels = np.asarray(task.probe_targets).argmax(-1)
    member = example_member(ds)

    def manifold(prefix):
        states, fps, params = example_states(run.dir, ds, member)
        kernel = np.asarray(params["readout"]["kernel"])
        return text_manifold(ds, member, states, fps[0], labels, kernel, prefix)

    jobs["text_manifold"] = manifold
    if "fp_mode_overlap" in ds:
        jobs["eigenmodes"] = partial(eigenmodes, ds, member, task.T)
    jobs["readout_angles"] = partial(readout_angles, ds)
    jobs["dimensions"] = partial(dimensions, ds)
    return jobs
