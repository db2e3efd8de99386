"""Figures of the dynamics: [U] Fig. 1e (one network's fixed points, coloured by unstable modes, and
flip-flop's transitions), 3-D example trajectories with their fixed points (Figs. 1b, 2b, 3b), example
trials (Fig. 1a), the sine panels (Figs. 2d, 2f: eigenvalues in the complex plane with the unit circle,
frequency vs ω), cdi's linearised dynamics (Fig. 3e, f) and trained vs untrained states (Fig. 4a).  How a
task's states are drawn is its spec's ``state_style`` and ``figures``."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import xarray as xr
from jaxtyping import Float
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from popdyn import store
from popdyn.figures import Run, register
from popdyn.figures._style import (
    BLUE_RED,
    UNSTABLE_COLORS,
    _by_panels,
    _cmap,
    _empty,
    _first_states_metric,
    _metric,
    _save,
    _subplots,
    _trained,
    _values,
    twins_compared,
)
from popdyn.figures.networks import _outputs, _pca, _sweep, example_states, network

__all__ = [
    "example_member",
    "fixed_points",
    "sine_frequency",
    "cdi_linear",
    "probes",
    "trajectories",
    "example_trials",
    "primary_eigenvalues",
    "sine_eigenvalues",
    "trained_untrained_states",
]


def example_member(ds: xr.Dataset) -> int:
    """The network of [U] Fig. 1e: the first non-diverged member with the modal fixed-point count
    (``topology_ok``), else the first non-diverged one, else the first."""
    ok = _trained(ds)
    for mask in (ok & ds.topology_ok.values, ok):
        if mask.any():
            return int(ds.member.values[np.argmax(mask)])
    return int(ds.member.values[0])


def fixed_points(
    ds: xr.Dataset,
    member: int,
    states: Float[np.ndarray, "probes time state"],
    fp_states: Float[np.ndarray, "conditions fixed_point state"],
    prefix: str | Path,
) -> list[Path]:
    """[U] Fig. 1e: one network's probe trajectories in the plane of their top principal components
    (faint), its fixed points coloured by the number of unstable modes, and (flip-flop) the transition
    graph: an arrow i → j of width ∝ P[i, j] for every off-diagonal transition probability.  The title
    says when the network's fixed-point set was cut to ``dynamics.max_points`` (``fp_truncated``)."""
    net = ds.sel(member=member)
    valid = net.fp_valid.values
    n_unstable = net.fp_n_unstable.values
    flat = states.reshape(-1, states.shape[-1])
    centre = flat.mean(axis=0)
    _, sv, vt = np.linalg.svd(flat - centre, full_matrices=False)
    explained = sv**2 / np.sum(sv**2)
    n_pc = min(3, vt.shape[0])
    traj = (states - centre) @ vt[:n_pc].T
    points = (fp_states - centre) @ vt[:n_pc].T  # [C, K, pcs]
    planes = [(0, 1), (0, 2)] if n_pc >= 3 else [(0, 1)]
    fig, axes = _subplots(1, len(planes), figsize=(5.2 * len(planes), 4.8), layout="constrained",
                             squeeze=False)  # fmt: skip
    p = net.transition.values if "transition" in net else None
    for ax, (a, b) in zip(axes[0], planes, strict=True):
        for trial in traj:
            ax.plot(trial[:, a], trial[:, b], color="0.55", linewidth=0.5, alpha=0.35)
        if p is not None:  # transitions of the first condition, between its valid points
            for i, j in zip(*np.nonzero((p > 0) & ~np.eye(len(p), dtype=bool)), strict=True):
                if valid[0, i] and valid[0, j]:
                    ax.annotate("", xy=points[0, j, [a, b]], xytext=points[0, i, [a, b]],
                                arrowprops=dict(arrowstyle="-|>", color="tab:gray", alpha=0.8,
                                                linewidth=0.5 + 3.5 * p[i, j], shrinkA=5, shrinkB=5))  # fmt: skip
        for k in range(int(n_unstable[valid].max(initial=0)) + 1):
            sel = valid & (n_unstable == k)
            if sel.any():
                color = UNSTABLE_COLORS[k] if k < len(UNSTABLE_COLORS) else "0.6"
                label = "stable" if k == 0 else f"{k} unstable mode{'s' if k > 1 else ''}"
                ax.scatter(points[sel][:, a], points[sel][:, b], s=45, color=color, label=label,
                           zorder=3, edgecolors="white", linewidths=0.6)  # fmt: skip
        ax.set_xlabel(f"PC {a + 1} ({100 * explained[a]:.0f} % of variance)")
        ax.set_ylabel(f"PC {b + 1} ({100 * explained[b]:.0f} % of variance)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if p is not None:
        for q in (0.25, 0.5, 1.0):
            handles.append(Line2D([], [], color="tab:gray", linewidth=0.5 + 3.5 * q))
            labels.append(f"transition P = {q:g}")
    handles.append(Line2D([], [], color="0.55", linewidth=0.8))
    labels.append("probe trajectories")
    fig.legend(handles, labels, fontsize="small", loc="outside lower center", ncols=min(len(labels), 4))
    fig.suptitle(
        f"{ds.attrs.get('task', '')}: fixed points of network {member} ({net.arch.item()}, "
        f"{net.activation.item()}, {net.units.item()} units, seed {net.seed.item()}): "
        f"{int(valid.sum())} fixed point{'' if int(valid.sum()) == 1 else 's'}"
        + (f" over {valid.shape[0]} conditions" if valid.shape[0] > 1 else "")
        + _truncation(net)
    )
    return _save(fig, prefix)


def _truncation(net: xr.Dataset) -> str:
    """The title's note that one network's fixed-point set was cut to ``dynamics.max_points`` (``""``
    when it never was): ``"; set cut: 128 kept of 150 found"``."""
    if "fp_truncated" not in net or not net.fp_truncated.values.any():
        return ""
    cut = np.flatnonzero(net.fp_truncated.values)
    kept, found = net.fp_valid.values[cut].sum(axis=-1), net.fp_n_found.values[cut]
    if len(cut) == 1:
        where = f" at condition {cut[0] + 1}" if net.fp_valid.shape[0] > 1 else ""
        return f"\nset cut{where}: {int(kept[0])} kept of {int(found[0])} found"
    return (f"\nset cut at {len(cut)} of {net.fp_valid.shape[0]} conditions: {int(kept.sum())} kept of "
            f"{int(found.sum())} found")  # fmt: skip


def sine_frequency(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[U] Fig. 2f: the linear frequency θ/2π of each input-dependent fixed point's oscillatory mode
    against the command frequency ω, mean ± s.e. over networks, by architecture (left, networks of the
    reference activation: tanh) and activation (right, of the reference arch: vanilla; :func:`_reference`);
    the dashed line is θ/2π = ω."""
    omega = ds.omega.values
    fig, axes = _subplots(1, 2, figsize=(10.0, 4.4), layout="constrained", sharey=True)
    _by_panels(ds, ("arch", "activation"), ds.sine_frequency.values, omega, axes)
    for ax in axes:
        ax.plot(omega, omega, color="black", linestyle="--", linewidth=1, label="identity (θ/2π = ω)")
        ax.set_xlabel("command frequency ω (cycles / step)")
        ax.legend(fontsize="small")
    axes[0].set_ylabel("linear frequency θ/2π (cycles / step)")
    fig.suptitle("sine: oscillatory mode of the fixed points, mean ± s.e. over networks")
    return _save(fig, prefix)


def cdi_linear(ds: xr.Dataset, prefix: str | Path, context: int = 0) -> list[Path]:
    """[U] Fig. 3e,f for one context: the eigenvalue moduli sorted by size (mean over the fixed points of
    the line attractor), and the linearised response to a unit relevant input keeping the m largest modes
    against m; mean ± s.e. over networks per architecture (networks of the reference activation, tanh)."""
    spectrum = ds.cdi_spectrum.isel(condition=context).values
    response = ds.cdi_response.isel(condition=context).values
    fig, axes = _subplots(1, 2, figsize=(10.0, 4.4), layout="constrained")
    rank = np.arange(1, spectrum.shape[1] + 1)
    _by_panels(ds, ("arch",), spectrum, rank, axes[:1])
    _by_panels(ds, ("arch",), response, rank, axes[1:])
    axes[0].set_title(f"sorted eigenvalue moduli\n{axes[0].get_title()}")
    axes[1].set_title(f"mode ablation\n{axes[1].get_title()}")
    axes[0].axhline(1.0, color="black", linestyle="--", linewidth=1, label="|λ| = 1")
    axes[0].set_xlabel("eigenvalue rank (largest |λ| first)")
    axes[0].set_ylabel("|λ| (mean over the line attractor)")
    axes[1].axhline(1.0, color="black", linestyle="--", linewidth=1, label="perfect integrator")
    axes[1].set_xlabel("linear modes kept (largest |λ| first)")
    axes[1].set_ylabel("output after a unit input (linearised)")
    for ax in axes:
        ax.legend(fontsize="small")
    fig.suptitle(f"cdi, context {context + 1}: linearised dynamics, mean ± s.e. over networks")
    return _save(fig, prefix)


class Probes(NamedTuple):
    """The probe trials a state figure draws and how they are coloured: ``index`` into
    ``task.probe_inputs``, ``values`` (one per drawn probe; None: all grey), colour map, its range and
    what the colour means."""

    index: np.ndarray
    values: np.ndarray | None
    cmap: str | LinearSegmentedColormap
    norm: Normalize
    label: str


def probes(task, by_index: int = 0) -> Probes:
    """The probes of [U]'s state figures: flip-flop all in grey, or (``by_index`` > 0) the first
    ``by_index`` coloured by their index; sine
    all, viridis by the command frequency ω (blue smallest, yellow largest; Fig. 2b); cdi the first
    context's, blue → red by the cued stream's value μ (Fig. 3b)."""
    from popdyn.tasks.sine import SINE_OFFSET, SINE_SLOPE

    inputs = np.asarray(task.probe_inputs)
    n = inputs.shape[0]
    style = task.spec.state_style
    if style == "frequency":
        omega = SINE_SLOPE * inputs[:, 0, 0] + SINE_OFFSET
        return Probes(np.arange(n), omega, "viridis", Normalize(omega.min(), omega.max()),
                      "command frequency ω (cycles / step)")  # fmt: skip
    if style == "context":
        k = inputs.shape[-1] // 2
        index = np.flatnonzero(np.asarray(task.probe_condition) == 0)
        return Probes(index, inputs[index, 0, k], BLUE_RED, Normalize(-1.0, 1.0), "probe input μ (context 1)")
    if by_index:
        n = min(n, by_index)
        return Probes(np.arange(n), np.arange(n, dtype=float), "viridis", Normalize(0, max(n - 1, 1)),
                      "probe trial")  # fmt: skip
    return Probes(np.arange(n), None, "viridis", Normalize(0, 1), "")


def _draw_states(ax, xyz: np.ndarray, shown: Probes, alpha: float = 0.85, linewidth: float = 0.9) -> None:
    """Probe trajectories ``xyz`` [probes, time, 2 or 3] as lines, coloured as ``shown`` says."""
    cmap = _cmap(shown.cmap)
    for j, trial in enumerate(xyz):
        color = "0.55" if shown.values is None else cmap(shown.norm(shown.values[j]))
        ax.plot(*trial.T, color=color, linewidth=linewidth, alpha=alpha if shown.values is not None else 0.35)


def _colorbar(fig, axes, shown: Probes) -> None:
    if shown.values is not None:
        mappable = ScalarMappable(shown.norm, _cmap(shown.cmap))
        fig.colorbar(mappable, ax=axes, shrink=0.6, aspect=30, label=shown.label)


def _unstable_style(k: int) -> tuple[str, str]:
    color = UNSTABLE_COLORS[k] if k < len(UNSTABLE_COLORS) else "0.6"
    return color, "stable" if k == 0 else f"{k} unstable mode{'s' if k > 1 else ''}"


def _draw_fixed_points(ax, ds: xr.Dataset, task, member: int, points: np.ndarray, shown: Probes) -> set:
    """A network's valid fixed points ``points`` [conditions, K, 2 or 3] as [U] draws them: flip-flop by
    number of unstable modes (Fig. 1e), sine one colour per condition's ω (Fig. 2d), cdi the first
    context's as black dots (Fig. 3b).  Returns the unstable-mode counts drawn (flip-flop)."""
    net = ds.sel(member=member)
    valid = net.fp_valid.values
    drawn = set()
    style = task.spec.state_style
    if style == "frequency":
        cmap = _cmap(shown.cmap)
        for c in range(points.shape[0]):
            if valid[c].any():
                color = cmap(shown.norm(shown.values[c]))
                ax.scatter(*points[c, valid[c]].T, s=40, color=color, edgecolors="black", linewidths=0.6,
                           zorder=4, **({"depthshade": False} if ax.name == "3d" else {}))  # fmt: skip
    elif style == "context":
        ax.scatter(*points[0, valid[0]].T, s=14, color="black", zorder=4,
                   **({"depthshade": False} if ax.name == "3d" else {}))  # fmt: skip
    else:
        n_unstable = net.fp_n_unstable.values
        for k in sorted(set(n_unstable[valid].tolist())):
            sel = valid & (n_unstable == k)
            color, _ = _unstable_style(k)
            ax.scatter(*points[sel].T, s=40, color=color, edgecolors="white", linewidths=0.6, zorder=4,
                       **({"depthshade": False} if ax.name == "3d" else {}))  # fmt: skip
            drawn.add(k)
    return drawn


def _fixed_point_handles(task, drawn: set) -> tuple[list, list]:
    dot = dict(marker="o", linestyle="")
    style = task.spec.state_style
    if style == "frequency":
        return [Line2D([], [], color="0.6", markeredgecolor="black", **dot)], [
            "fixed points (colour: the ω of their input)"
        ]
    if style == "context":
        return [Line2D([], [], color="black", markersize=4, **dot)], ["fixed points (context 1)"]
    handles, labels = [], []
    for k in sorted(drawn):
        color, label = _unstable_style(k)
        handles.append(Line2D([], [], color=color, **dot))
        labels.append(f"fixed point, {label}")
    handles.append(Line2D([], [], color="0.55", linewidth=0.8))
    labels.append("probe trajectories")
    return handles, labels


def _dot(color, edge, size: float) -> Line2D:
    """A legend handle: one round marker."""
    return Line2D([], [], marker="o", linestyle="", color=color, markeredgecolor=edge, markersize=size)


def _net_title(ds: xr.Dataset, member: int) -> str:
    net = ds.sel(member=member)
    return f"network {member} ({net.arch.item()}, {net.activation.item()}, {net.units.item()} units)"


def trajectories(ds: xr.Dataset, run_dir: str | Path, prefix: str | Path) -> list[Path]:
    """[U] Figs. 1b, 2b, 3b: for each (arch, activation) among the non-diverged networks, one example
    (the pair's first non-diverged member): its states on the task's probe inputs projected on their top
    three principal components (3-D), and its fixed points.  Flip-flop: grey trajectories, fixed points by
    number of unstable modes; sine: trajectories and fixed points coloured by the command frequency ω;
    cdi: the first context's probes, blue → red by μ, and that context's fixed points (black)."""
    run_dir = Path(run_dir)
    task = _sweep(run_dir).task
    shown = probes(task)
    ok = _trained(ds)
    archs, acts = _values(ds, "arch", ok), _values(ds, "activation", ok)
    ncols, nrows = max(len(archs), 1), max(len(acts), 1)
    fig = Figure(figsize=(3.6 * ncols + 1.2, 3.5 * nrows + 0.8), layout="constrained")
    axes, drawn = [], set()
    for r, act in enumerate(acts):
        for c, arch in enumerate(archs):
            ax = fig.add_subplot(nrows, ncols, r * ncols + c + 1, projection="3d")
            axes.append(ax)
            rows = ok & (ds.arch.values == arch) & (ds.activation.values == act)
            if not rows.any():
                ax.set_axis_off()
                ax.text2D(0.5, 0.5, f"no trained {arch} {act} network", ha="center", va="center",
                          transform=ax.transAxes, color="0.4")  # fmt: skip
                continue
            member = int(ds.member.values[np.argmax(rows)])
            net = network(run_dir, ds, member)
            states = net.states[shown.index]
            centre, pcs, explained = _pca(states, 3)
            _draw_states(ax, (states - centre) @ pcs.T, shown)
            if net.fp_states is not None:
                drawn |= _draw_fixed_points(ax, ds, task, member, (net.fp_states - centre) @ pcs.T, shown)
            ax.set_title(f"{arch}, {act}: network {member}", fontsize="medium")
            for axis, name in zip("xyz", range(3)):
                getattr(ax, f"set_{axis}label")(f"PC {name + 1} ({100 * explained[name]:.0f} %)",
                                                fontsize="x-small", labelpad=-6)  # fmt: skip
            ax.tick_params(labelsize="xx-small", pad=-2)
    if not axes:
        ax = fig.add_subplot()
        _empty(ax, "no trained networks")
    _colorbar(fig, axes, shown)
    handles, labels = _fixed_point_handles(task, drawn)
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    fig.suptitle(f"{task.name}: probe trajectories{' of context 1' if task.spec.state_style == 'context' else ''} on their top 3 "
                 "PCs, and fixed points\none example network per architecture and activation")  # fmt: skip
    return _save(fig, prefix)


OUTPUT_COLOR = "#D55E00"  # the network's output in example trials ([U] Fig. 1a: red)
STREAM_COLORS = (
    "#0072B2",
    "#CC79A7",
    "#009E73",
    "#E69F00",
)  # cdi's input streams ([U] Fig. 3a: blue, red), not the output's


def _cdi_trials(task) -> tuple[np.ndarray, np.ndarray]:
    """The first trial of each context among ``task.sample(key(probe_seed), 64)``: inputs and targets."""
    inputs, targets = (np.asarray(a) for a in task.sample(jax.random.key(task.param("probe_seed")), 64))
    k = inputs.shape[-1] // 2
    context = inputs[:, 0, :k].argmax(-1)
    picks = [int(np.argmax(context == c)) for c in range(k) if (context == c).any()]
    return inputs[picks], targets[picks]


def example_trials(ds: xr.Dataset, run_dir: str | Path, prefix: str | Path) -> list[Path]:
    """[U] Fig. 1a and its sine and cdi analogues, for the example network (:func:`example_member`):
    flip-flop, one probe trial, a row per channel with the input pulses (black), the target (dashed) and
    the output (red); sine, the probes of the lowest, middle and highest frequency, target (dashed) against
    output; cdi, one trial per context — the probes hold the cued stream constant, so these are trials of
    the task's own noisy inputs (Fig. 3a), drawn from ``key(probe_seed)`` — its two input streams (top)
    and the target and output (bottom)."""
    run_dir = Path(run_dir)
    task = _sweep(run_dir).task
    member = example_member(ds)
    net = network(run_dir, ds, member)
    t = np.arange(task.T)
    target_style = dict(color="black", linestyle="--", linewidth=1.3, label="target")
    output_style = dict(color=OUTPUT_COLOR, linewidth=1.3, label="network output")
    style = task.spec.state_style
    if style == "context":
        inputs, targets = _cdi_trials(task)
        outputs = np.asarray(_outputs(net.model, net.params, inputs))
        k = inputs.shape[-1] // 2
        fig, axes = _subplots(2, len(inputs), figsize=(4.6 * len(inputs), 5.0), sharex=True, squeeze=False,
                                 layout="constrained")  # fmt: skip
        for j in range(len(inputs)):
            top, bottom = axes[0, j], axes[1, j]
            cued = int(inputs[j, 0, :k].argmax())
            for s in range(k):
                top.plot(t, inputs[j, :, k + s], color=STREAM_COLORS[s % len(STREAM_COLORS)], linewidth=0.9,
                         alpha=1.0 if s == cued else 0.45,
                         label=f"stream {s + 1}" + (" (cued)" if s == cued else ""))  # fmt: skip
            top.set_title(f"context {cued + 1}: integrate stream {cued + 1}")
            top.set_ylabel("input")
            top.legend(fontsize="x-small", loc="upper left")
            bottom.plot(t, targets[j, :, 0], **target_style)
            bottom.plot(t, outputs[j, :, 0], **output_style)
            bottom.set_xlabel("time step")
            bottom.set_ylabel("output")
        fig.legend(
            *axes[1, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small"
        )
    elif style == "frequency":
        inputs, targets = np.asarray(task.probe_inputs), np.asarray(task.probe_targets)
        n = inputs.shape[0]
        picks = list(dict.fromkeys([0, n // 2, n - 1]))
        outputs = np.asarray(_outputs(net.model, net.params, inputs[np.array(picks)]))
        omega = probes(task).values
        fig, axes = _subplots(len(picks), 1, figsize=(7.0, 1.9 * len(picks) + 0.8), sharex=True,
                                 squeeze=False, layout="constrained")  # fmt: skip
        for j, i in enumerate(picks):
            ax = axes[j, 0]
            ax.plot(t, targets[i, :, 0], **target_style)
            ax.plot(t, outputs[j, :, 0], **output_style)
            ax.set_ylabel("output")
            ax.set_title(
                f"ω = {omega[i]:.3f} cycles / step (input x = {inputs[i, 0, 0]:.2f})", fontsize="medium"
            )
        axes[-1, 0].set_xlabel("time step")
        fig.legend(
            *axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize="small"
        )
    else:  # "bits": flip-flop
        inputs, targets = np.asarray(task.probe_inputs[:1]), np.asarray(task.probe_targets[:1])
        outputs = np.asarray(_outputs(net.model, net.params, inputs))
        k = inputs.shape[-1]
        fig, axes = _subplots(k, 1, figsize=(7.0, 1.5 * k + 0.9), sharex=True, squeeze=False,
                                 layout="constrained")  # fmt: skip
        for c in range(k):
            ax = axes[c, 0]
            pulse = np.flatnonzero(inputs[0, :, c])
            ax.vlines(t[pulse], 0, inputs[0, pulse, c], color="black", linewidth=1.6, label="input pulses")
            ax.plot(t, targets[0, :, c], drawstyle="steps-post", **target_style)
            ax.plot(t, outputs[0, :, c], **output_style)
            ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
            ax.set_ylim(-1.5, 1.5)
            ax.set_ylabel(f"bit {c + 1}")
        axes[-1, 0].set_xlabel("time step")
        fig.legend(
            *axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small"
        )
    fig.suptitle(f"{task.name}: example trials of {_net_title(ds, member)}")
    return _save(fig, prefix)


def primary_eigenvalues(
    ds: xr.Dataset,
    member: int,
    states: Float[np.ndarray, "probes time state"],
    fp_states: np.ndarray,
    burn_in: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sine, per condition, the fixed point ``popdyn.analyses.dynamics`` reads the oscillation from — the valid point
    nearest the orbit's centre (the mean state of probe c after the fraction ``burn_in`` of the trial) —
    and its primary oscillatory eigenvalue, the complex one of largest modulus: (point index [C] or −1,
    eigenvalue [C], NaN where there is none)."""
    net = ds.sel(member=member)
    valid = net.fp_valid.values
    eig = net.fp_eigenvalues.values
    centre = states[:, int(burn_in * states.shape[1]) :].mean(axis=1)  # probe c is condition c
    point = np.full(valid.shape[0], -1)
    primary = np.full(valid.shape[0], np.nan + 0j)
    for c in range(valid.shape[0]):
        if not valid[c].any():
            continue
        dist = np.where(valid[c], np.linalg.norm(np.nan_to_num(fp_states[c] - centre[c]), axis=-1), np.inf)
        i = int(np.argmin(dist))
        w = eig[c, i]
        oscillatory = np.isfinite(w) & (np.abs(w.imag) > 1e-6)
        point[c] = i
        if oscillatory.any():
            primary[c] = w[np.argmax(np.where(oscillatory, np.abs(w), -1.0))]
    return point, primary


def sine_eigenvalues(ds: xr.Dataset, run_dir: str | Path, prefix: str | Path) -> list[Path]:
    """[U] Fig. 2d for the example network: left, its probe trajectories in their top-two-PC plane
    coloured by ω, with each condition's input-dependent fixed point (the one nearest the orbit's centre,
    coloured by ω; other valid points grey); right, the eigenvalues of every condition's fixed points
    overlaid in the complex plane (grey) with the unit circle, each condition's primary oscillatory pair
    λ, λ̄ (the complex eigenvalue of largest modulus at that point) coloured by ω."""
    run_dir = Path(run_dir)
    sweep = _sweep(run_dir)
    task = sweep.task
    shown = probes(task)
    member = example_member(ds)
    net = network(run_dir, ds, member)
    point, primary = primary_eigenvalues(ds, member, net.states, net.fp_states, sweep.topology.burn_in)
    cmap = _cmap(shown.cmap)
    colors = [cmap(shown.norm(w)) for w in shown.values]
    fig, axes = _subplots(1, 2, figsize=(10.8, 4.8), layout="constrained")
    centre, pcs, explained = _pca(net.states, 2)
    _draw_states(axes[0], (net.states - centre) @ pcs.T, shown, alpha=0.7)
    xy = (net.fp_states - centre) @ pcs.T
    valid = ds.fp_valid.sel(member=member).values
    others = valid.copy()
    for c, i in enumerate(point):
        if i >= 0:
            others[c, i] = False
    if others.any():
        axes[0].scatter(*xy[others].T, s=14, color="0.6", zorder=3, label="other fixed points")
    for c, i in enumerate(point):
        if i >= 0:
            axes[0].scatter(*xy[c, i], s=55, color=colors[c], edgecolors="black", linewidths=0.7, zorder=4)
    axes[0].set_xlabel(f"PC 1 ({100 * explained[0]:.0f} % of variance)")
    axes[0].set_ylabel(f"PC 2 ({100 * explained[1]:.0f} % of variance)")
    axes[0].set_title("trajectories and input-dependent fixed points")
    handles = [_dot("0.6", "black", 7)] if (point >= 0).any() else []
    labels = ["fixed point of each input (colour: its ω)"] if handles else []
    if others.any():
        handles, labels = [*handles, _dot("0.6", "none", 4)], [*labels, "other fixed points"]
    if handles:
        axes[0].legend(handles, labels, fontsize="x-small", loc="upper right")
    ax = axes[1]
    circle = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(circle), np.sin(circle), color="black", linestyle="--", linewidth=0.8, label="|λ| = 1")
    eig = ds.fp_eigenvalues.sel(member=member).values[valid].ravel()
    eig = eig[np.isfinite(eig)]
    ax.scatter(eig.real, eig.imag, s=8, color="0.75", label="all eigenvalues", zorder=2)
    found = np.isfinite(primary)
    for c in np.flatnonzero(found):
        ax.scatter([primary[c].real] * 2, [primary[c].imag, -primary[c].imag], s=36, color=colors[c],
                   edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(f"eigenvalues at the fixed points of {valid.shape[0]} inputs"
                 + (f" ({int((~found).sum())} without an oscillatory pair)" if (~found).any() else ""))  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    if found.any():
        handles, labels = (
            [*handles, _dot("0.6", "black", 6)],
            [*labels, "primary oscillatory pair (colour: ω)"],
        )
    ax.legend(handles, labels, fontsize="x-small", loc="upper right")
    _colorbar(fig, axes, shown)
    fig.suptitle(f"sine: linearised dynamics of {_net_title(ds, member)}")
    return _save(fig, prefix)


def trained_untrained_states(ds: xr.Dataset, run_dir: str | Path, prefix: str | Path) -> list[Path]:
    """[U] Fig. 4a: the representation of the probe inputs — probe states in each network's own top-two-PC
    plane — of a trained and an untrained network per activation (the first non-diverged member of each
    activation of the untrained-twin arch, the run's first in registry order — vanilla —, and its twin).  The untrained twin's
    parameters are regenerated exactly as ``popdyn.analysis.compare_run`` made them (same keys
    ``member_key(seed, "untrained/<m>")``, same ``jax.vmap(model.init)``; :func:`network`).  cdi: the first
    context's probes, blue → red by μ; sine: by ω; flip-flop: by probe trial.  Each title gives the
    distance (the first states metric of the run: SVCCA, [U]'s) to the trained network of the first
    activation."""
    run_dir = Path(run_dir)
    task = _sweep(run_dir).task
    shown = probes(task, by_index=16)  # 64 overlaid flip-flop trials are a tangle
    sim = store.load_similarity(run_dir)
    untrained = ~sim.trained.values
    metric = _first_states_metric(sim)
    archs = _values(sim, "arch", untrained)
    arch = archs[0]  # the first in ORDER: vanilla in [U]'s grids
    twins = set(sim.member.values[untrained & (sim.arch.values == arch)].tolist())
    ok = _trained(ds) & (ds.arch.values == arch) & np.isin(ds.member.values, list(twins))
    acts = _values(ds, "activation", ok)  # [U] Fig. 4a: tanh first (ACTIVATIONS' order)
    panels = [(act, trained) for trained in (True, False) for act in acts]  # [U] Fig. 4a's order
    if not panels:  # no trained network of that arch (every one diverged or exploded): nothing to show
        return []
    fig, axes = _subplots(1, max(len(panels), 1), figsize=(3.9 * max(len(panels), 1) + 1.4, 4.4),
                             squeeze=False, layout="constrained")  # fmt: skip

    def row(member: int, trained: bool) -> int:
        return int(np.flatnonzero((sim.member.values == member) & (sim.trained.values == trained))[0])

    first = {act: int(ds.member.values[np.argmax(ok & (ds.activation.values == act))]) for act in acts}
    reference = row(first[acts[0]], True) if acts else None
    for ax, (act, trained) in zip(axes[0], panels, strict=True):
        member = first[act]
        states = network(run_dir, ds, member, trained=trained).states[shown.index]
        name = f"{'trained' if trained else 'untrained'} {arch} {act}"
        if not np.isfinite(states).all():
            _empty(ax, "states not finite")
            ax.set_title(name)
            continue
        centre, pcs, explained = _pca(states, 2)
        _draw_states(ax, (states - centre) @ pcs.T, shown, alpha=0.8, linewidth=0.9)
        twin = "" if trained else ", untrained twin"
        distance = ""
        if metric is not None:
            d = float(sim[f"{metric}_distance"].values[row(member, trained), reference])
            distance = f"\n{_metric(metric).short} distance to trained {acts[0]}: {d:.2f}"
        ax.set_title(f"{name}\n(network {member}{twin}){distance}", fontsize="medium")
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f} %)")
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f} %)")
    if not acts:
        _empty(axes[0, 0], f"no trained {arch} network with an untrained twin")
    _colorbar(fig, axes, shown)
    n = len(task.probe_inputs)
    which = (
        " of context 1"
        if task.spec.state_style == "context"
        else f" (first {len(shown.index)} of {n})"
        if len(shown.index) < n
        else ""
    )
    fig.suptitle(
        f"{task.name}: probe states{which} of trained and untrained networks, each in its own top-2 PCs"
    )
    return _save(fig, prefix)


def _task_figures(task: str) -> tuple[str, ...]:
    """The per-task figures a task's spec declares (none for a name not registered): ``universality`` —
    [U]'s state figures (Figs. 1–4), for a spec with a ``state_style`` — and its ``TaskSpec.figures``."""
    from popdyn.tasks import spec_of

    spec = spec_of(task)
    if spec is None:
        return ()
    return ("universality",) * (spec.state_style is not None) + tuple(spec.figures)


@register
def _jobs(run: Run) -> dict:
    """``fixed_points`` (dynamics analysed), the task's state figures (``TaskSpec.state_style``:
    ``trajectories``, ``example_trials``, with untrained twins compared ``trained_untrained_states``), the
    task's own (``TaskSpec.figures``: ``sine_eigenvalues``), ``sine_frequency`` and ``cdi_linear`` where
    their variables are loaded."""
    ds, jobs, task_figures = run.ds, {}, _task_figures(run.task)
    if "fp_valid" in ds:
        member = example_member(ds)
        jobs["fixed_points"] = lambda prefix: fixed_points(
            ds, member, *example_states(run.dir, ds, member)[:2], prefix
        )
        if "universality" in task_figures:
            jobs["trajectories"] = partial(trajectories, ds, run.dir)
            jobs["example_trials"] = partial(example_trials, ds, run.dir)
        if "sine_eigenvalues" in task_figures:
            jobs["sine_eigenvalues"] = partial(sine_eigenvalues, ds, run.dir)
    if "sine_frequency" in ds:
        jobs["sine_frequency"] = partial(sine_frequency, ds)
    if "cdi_spectrum" in ds:
        jobs["cdi_linear"] = partial(cdi_linear, ds)
    if "universality" in task_figures and twins_compared(run.sim):
        jobs["trained_untrained_states"] = partial(trained_untrained_states, ds, run.dir)
    return jobs
