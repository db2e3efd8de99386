"""Figures of training: the loss curves of every group (``loss_curves.png`` beside the run), [R]'s
bifurcation diagram, contractivity and loss along the parameter ray (parameters saved during training),
and [V]'s memory curves (drawn through ``popdyn.analyses.memory``'s figure)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from popdyn import store
from popdyn.figures import Run, register
from popdyn.figures._style import (
    ACTIVATION_STYLES,
    WIDTH_CMAP,
    _arch_bands,
    _cmap,
    _save,
    _subplots,
    _trained,
    _values,
)

__all__ = ["loss_curves", "bifurcation_training", "contractivity_training", "loss_line", "memory_curves"]


def _loss_figure(ds: xr.Dataset) -> Figure:
    """The figure of :func:`loss_curves`: one panel per arch (shared log y axis), in each one line per
    group — colour by width, solid tanh, dashed relu — at the median over its non-diverged members, shaded
    between the quartiles; the legend counts each group's networks and its diverged or exploded members."""
    from popdyn.tasks import loss_of

    everyone = np.ones(ds.sizes["member"], bool)
    archs = _values(ds, "arch", everyone)
    acts = _values(ds, "activation", everyone)
    widths = sorted(set(ds.units.values.tolist()))
    shade = dict(zip(widths, _cmap(WIDTH_CMAP)(np.linspace(0.0, 0.8, len(widths))), strict=True))
    ncols = len(archs) if len(archs) <= 3 else 2 if len(archs) == 4 else 3
    nrows = -(-len(archs) // ncols)
    fig, axes = _subplots(nrows, ncols, figsize=(4.4 * ncols + 0.6, 3.4 * nrows + 0.6), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    step = ds.step.values
    diverged = ~_trained(ds)  # diverged or exploded: left out of the median, counted in the legend
    for ax, arch in zip(axes.flat, archs):
        ax.set_title(arch)
        for act in acts:
            for units in widths:
                rows = (ds.arch.values == arch) & (ds.activation.values == act) & (ds.units.values == units)
                if not rows.any():
                    continue
                n_div = int((rows & diverged).sum())
                ok = rows & ~diverged
                label = f"{act}, {units} units ({int(ok.sum())})" + (
                    f", {n_div} diverged or exploded" if n_div else ""
                )
                style = dict(
                    color=shade[units], linestyle=ACTIVATION_STYLES.get(act, "dotted"), linewidth=1.4
                )
                if not ok.any():
                    ax.plot([], [], label=label, **style)
                    continue
                loss = np.where(np.isfinite(ds.loss.values[ok]), ds.loss.values[ok], np.nan)
                q = np.nanquantile(loss, [0.25, 0.5, 0.75], axis=0)
                ax.plot(step, q[1], label=label, **style)
                ax.fill_between(step, q[0], q[2], color=shade[units], alpha=0.15, linewidth=0)
        ax.set_yscale("log")
        ax.legend(fontsize="x-small", title="activation, width (networks)", title_fontsize="x-small")
    for ax in axes.flat[len(archs) :]:
        ax.set_visible(False)
    loss = loss_of(ds.attrs.get("task", ""))
    for ax in axes[:, 0]:
        ax.set_ylabel("training MSE" if loss == "mse" else f"training {loss} cross-entropy")
    for ax in axes.flat[max(0, len(archs) - ncols) : len(archs)]:
        ax.set_xlabel("training step")
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(f"{ds.attrs.get('task', '')}: training loss per group, median and quartiles over networks")
    return fig


def loss_curves(ds: xr.Dataset, path: str | Path) -> Path:
    """Training loss against step (log scale): one panel per arch, one line per group (colour by width,
    line style by activation) at the median over its members, shaded between the quartiles.

    Diverged members are left out of the median and counted in the legend.
    """
    fig = _loss_figure(ds)
    path = Path(path)
    store.write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    return path


def bifurcation_training(ds: xr.Dataset, member: int, prefix: str | Path) -> list[Path]:
    """[R] Figs. 4, 7: one network's bifurcation diagram over training — at each saved step, the outputs
    ``y_t`` (top) and ``y_t − y_{t−1}`` (bottom) visited under the constant input after the burn-in (first
    output).  A point per step is a fixed point, a few a cycle, a smear a quasi-periodic or chaotic orbit."""
    net = ds.sel(member=member)
    steps = ds.record_step.values
    fig, axes = _subplots(2, 1, figsize=(6.4, 5.2), sharex=True, layout="constrained")
    for ax, name, label in ((axes[0], "bif_y", "y_t"), (axes[1], "bif_dy", "y_t − y_{t−1}")):
        values = net[name].values[..., 0]  # [record_step, bif_t]
        ax.scatter(np.repeat(steps, values.shape[1]), values.ravel(), s=0.5, color="black", alpha=0.4,
                   rasterized=True)  # fmt: skip
        ax.set_ylabel(f"${label}$")
    axes[1].set_xlabel("training step")
    axes[0].set_title(f"network {member} ({net.arch.item()}-{net.units.item()}): attractors through training")
    return _save(fig, prefix)


def contractivity_training(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[R] §3.2, §4.2: the largest spectral norm ‖J‖₂ and |eigenvalue| of the state Jacobian over the
    probe trials' states at each saved step, mean ± s.e. per arch; above 1 the map is not contractive."""
    steps = ds.record_step.values
    fig, axes = _subplots(1, 2, figsize=(9.6, 3.6), layout="constrained", sharex=True)
    for ax, name, label in (
        (axes[0], "spectral_norm", "max ‖∂F/∂s‖₂"),
        (axes[1], "spectral_radius", "max |λ(∂F/∂s)|"),
    ):
        _arch_bands(ax, ds, steps, ds[name].values)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    axes[0].legend(fontsize="small")
    return _save(fig, prefix)


def loss_line(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[R] Fig. 1b: the cost V(s·θ) along the ray through the final parameters θ (s = 1), mean ± s.e.
    per arch (log scale)."""
    title = f"cost along the ray, at step {int(ds.record_step.values[-1])}"
    return _arch_curves(ds, ds.scale.values, ds.loss_line.values[:, -1], "s (parameters s·θ)", "V(s·θ)", title,
                        prefix, mark=1.0)  # fmt: skip


def memory_curves(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[V] Fig. 3: the memory curve Σσ(τ) — the summed singular values of the normalised state gradients
    ∂s_t/∂e_{t−τ} — against the delay τ, mean ± s.e. per arch (log scale)."""
    title = f"{ds.attrs.get('task', '')}: memory of {int(_trained(ds).sum())} networks"
    return _arch_curves(ds, ds.delay.values, ds.memory.values, "delay τ (steps)", "Σ singular values of Ḡ_τ D",
                        title, prefix)  # fmt: skip


def _arch_curves(ds, x, values, xlabel, ylabel, title, prefix, mark=None) -> list[Path]:
    """One panel of mean ± s.e. curves of ``values`` [member, x] per arch on a log y axis (a dotted line at
    x = ``mark``)."""
    fig, ax = _subplots(figsize=(5.6, 4.0), layout="constrained")
    _arch_bands(ax, ds, x, values)
    if mark is not None:
        ax.axvline(mark, color="black", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    ax.set_title(title)
    return _save(fig, prefix)


@register
def _jobs(run: Run) -> dict:
    """[R]'s figures, where parameters were saved during training (``bif_y`` loaded)."""
    ds, jobs = run.ds, {}
    if "bif_y" in ds:
        ok = _trained(ds)
        first = int(ds.member.values[np.argmax(ok)]) if ok.any() else int(ds.member[0])
        jobs["bifurcation_training"] = partial(bifurcation_training, ds, first)
        jobs["contractivity_training"] = partial(contractivity_training, ds)
        jobs["loss_line"] = partial(loss_line, ds)
    return jobs
