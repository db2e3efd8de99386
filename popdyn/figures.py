"""Figures of a run, drawn from what ``popdyn.store.load`` returns: the paper's Figs. 1–4 ([U]), and for
text classifiers [A]'s manifolds, readout angles and dimensions (Figs. 1, 6–8, 10–12).

Each figure function takes the Dataset(s) and an output path prefix and writes ``prefix.png`` and
``prefix.pdf``; :func:`draw_all` draws every one a run directory's task and results allow.  Colours are
safe for colour-blind readers (Okabe & Ito 2008): one colour per architecture and one per activation
throughout (``ARCH_COLORS``, ``ACTIVATION_COLORS``), and one marker per architecture in every scatter of
networks (``ARCH_MARKERS``), so that no figure relies on hue alone.

Figures are bare :class:`matplotlib.figure.Figure` objects, never pyplot's: importing this module
chooses no backend and drawing opens no window, so a notebook's inline plots keep working (the entry
points, ``popdyn.cli``, choose Agg for machines without a display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.patheffects as path_effects
import numpy as np
import xarray as xr
from jaxtyping import Float
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm.auto import tqdm

from popdyn import analyses, cells, similarity, store
from popdyn.cells import ACTIVATIONS
from popdyn.config import build_sweep
from popdyn.model import Model
from popdyn.population import member_key

WIDTH_CMAP = "viridis"  # sequential and colour-blind safe: training curves coloured by width (units)
# cdi's probes, blue → red by μ ([U] Fig. 3b), between Okabe–Ito's blue and vermillion: dark enough at μ = 0
# to show on white, unlike coolwarm's grey middle
BLUE_RED = LinearSegmentedColormap.from_list("blue_red", ["#0072B2", "#D55E00"])


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize, layout: str | None = None, **kw):
    """``plt.subplots`` without pyplot: a bare Figure (no backend, no window, nothing to close) and its
    axes (``Figure.subplots``' ``sharex``, ``sharey``, ``squeeze``)."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def _cmap(name):
    """The colormap called ``name`` (a copy; a Colormap is returned as it is)."""
    return name if isinstance(name, matplotlib.colors.Colormap) else matplotlib.colormaps[name]


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


# ------------------------------------------------------------------------------------- the paper's figures
FIGURES = "figures"  # sub-directory of a run directory that draw_all writes into


def _task_figures(task: str) -> tuple[str, ...]:
    """The per-task figures a task's spec declares (none for a name not registered): ``universality`` —
    [U]'s state figures (Figs. 1–4), for a spec with a ``state_style`` — and its ``TaskSpec.figures``."""
    from popdyn.tasks import spec_of

    spec = spec_of(task)
    if spec is None:
        return ()
    return ("universality",) * (spec.state_style is not None) + tuple(spec.figures)


class _ByArch(Mapping):
    """arch → its figure colour or marker, read from the cell registry when asked (``CellSpec.color`` /
    ``marker``, or the next unused one of ``cells.PALETTE`` / ``cells.MARKERS``), so that a cell registered
    after this import has one too; iterates the registered archs in order."""

    def __init__(self, of):
        self._of = of

    def __getitem__(self, arch: str) -> str:
        if arch not in cells.REGISTRY:
            raise KeyError(arch)
        return self._of(arch)

    def __iter__(self):
        return iter(cells.names())

    def __len__(self) -> int:
        return len(cells.REGISTRY)


class _Archs(Sequence):
    """The registered archs, in registration order, as they are when read."""

    def __getitem__(self, i):
        return cells.names()[i]

    def __len__(self) -> int:
        return len(cells.REGISTRY)


def _first_states_metric(sim: xr.Dataset, prefix: str = "") -> str | None:
    """The first registered states metric (rank order: SVCCA, [U]'s) of which ``sim`` has
    ``<prefix><metric>`` (``<metric>_distance`` without a prefix); None if none."""
    for m in similarity.names("states"):
        if (f"{prefix}{m}" if prefix else f"{m}_distance") in sim:
            return m
    return None


def _metric(name: str):
    """A distance metric's short name, label and colour (``popdyn.similarity``'s registry; one this
    process has not registered is drawn in grey under its own name)."""
    if name in similarity.REGISTRY:
        return similarity.get(name)
    return SimpleNamespace(name=name, short=name, label=f"{name} distance", color="0.5")


# one colour per architecture and per activation in every figure, the two sets disjoint: the Okabe–Ito
# palette, which readers with any common colour-vision deficiency tell apart (each cell's spec names its own)
ARCHS = _Archs()
ARCH_COLORS = _ByArch(cells.color)
ARCH_MARKERS = _ByArch(cells.marker)
ACTIVATION_COLORS = {"tanh": "#000000", "relu": "#F0E442"}  # relu's yellow is drawn with a dark edge
ACTIVATION_STYLES = {"tanh": "solid", "relu": "dashed"}  # line style per activation where colour is taken
DARK_EDGE = "0.25"  # outline of light colours (relu's yellow), so that they show on white
# 0, 1, 2, 3 unstable modes ([U] Fig. 1e: black, red, green, blue), in Okabe–Ito's shades of those
UNSTABLE_COLORS = ("#000000", "#D55E00", "#009E73", "#0072B2")
# one colour per distance metric: each metric's spec (popdyn.similarity; Tol's "bright" set, light
# enough for the black chance ticks on them)
# [U] §2.3 (MDS): architectures are compared among the networks of one activation, activations among
# those of one arch — the run's first in ORDER (tanh and vanilla in [U]'s grids: ACTIVATIONS lists tanh
# first, and the vanilla cell ranks first among the registered cells)
PANELS = {"arch": "activation", "activation": "arch"}
COLORS = {"arch": ARCH_COLORS, "activation": ACTIVATION_COLORS}
ORDER = {"arch": ARCHS, "activation": ACTIVATIONS}
NAMES = {"arch": "architecture", "activation": "activation"}


def _save(fig: Figure, prefix: str | Path) -> list[Path]:
    """Write ``prefix``.png and ``prefix``.pdf.

    The PDF carries no creation date, so the same data give the same bytes (a re-run changes nothing).
    Each file is written under a temporary name and renamed into place (``store.write_file``), so a
    figure is never left half-written under its real name; a full disk is one ``RunDirError``."""
    prefix = Path(prefix)
    png, pdf = (prefix.with_name(prefix.name + ext) for ext in (".png", ".pdf"))
    store.write_file(png, lambda tmp: fig.savefig(tmp, dpi=150, format="png"))
    store.write_file(pdf, lambda tmp: fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}))
    return [png, pdf]


def _light(color) -> bool:
    """Whether ``color`` is too light to show on white without an outline (relative luminance > 0.7)."""
    r, g, b = to_rgb(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.7


def _edge(color) -> str:
    """The marker edge of ``color`` in scatters: dark for light colours, none otherwise."""
    return DARK_EDGE if _light(color) else "none"


def _outline(color, linewidth: float = 1.5) -> list | None:
    """Path effects that draw a light-coloured line with a dark outline (None for other colours)."""
    if not _light(color):
        return None
    return [path_effects.Stroke(linewidth=linewidth + 1.4, foreground=DARK_EDGE), path_effects.Normal()]


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _trained(ds: xr.Dataset) -> np.ndarray:
    """Members that neither diverged nor exploded (``status`` trained; all of them when the Dataset does
    not say)."""
    if "status" in ds:
        return ds.status.values == store.TRAINED
    return ~ds.diverged.values if "diverged" in ds else np.ones(ds.sizes["member"], bool)


def _reference(ds: xr.Dataset, by: str) -> str:
    """The value of coordinate ``by`` that the other factor is compared within: the run's first in
    ``ORDER`` (vanilla, tanh in [U]'s grids)."""
    values = _values(ds, by, np.ones(ds[by].shape, bool))
    return values[0] if values else ""


def _panel(ds: xr.Dataset, by: str) -> tuple[np.ndarray, str]:
    """The networks of the panel coloured by ``by`` ([U] Fig. 1d): mask and title."""
    value = _reference(ds, PANELS[by])
    return ds[PANELS[by]].values == value, f"{value} networks, by {NAMES[by]}"


def _values(ds: xr.Dataset, by: str, mask: np.ndarray) -> list[str]:
    """The values of coordinate ``by`` among ``mask``, in the canonical order."""
    present = set(ds[by].values[mask])
    return [v for v in ORDER[by] if v in present] + sorted(present - set(ORDER[by]))


def _mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard error (0 from a single value) and count over axis 0, ignoring NaN."""
    finite = np.isfinite(values)
    n = finite.sum(axis=0)
    v = np.where(finite, values, 0.0)
    mean = np.where(n > 0, v.sum(axis=0) / np.maximum(n, 1), np.nan)
    sq = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
    se = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1) / np.maximum(n, 1)), 0.0)
    return mean, se, n


def _band(ax: Axes, x: np.ndarray, values: np.ndarray, color: str, label: str) -> None:
    """Mean ± standard error over the rows of ``values`` [networks, x] as a line and a shaded patch."""
    mean, se, _ = _mean_se(values)
    ax.plot(x, mean, color=color, label=f"{label} ({values.shape[0]})", path_effects=_outline(color))
    ax.fill_between(x, mean - se, mean + se, color=color, alpha=0.25, linewidth=0)


def _arch_bands(ax: Axes, ds: xr.Dataset, x: np.ndarray, values: np.ndarray) -> None:
    """Mean ± s.e. of ``values`` [member, x] over the trained networks of each arch, one curve each."""
    ok = _trained(ds)
    for arch in _values(ds, "arch", ok):
        _band(ax, x, values[ok & (ds.arch.values == arch)], ARCH_COLORS.get(arch, "tab:gray"), arch)


def _by_panels(ds: xr.Dataset, bys: tuple[str, ...], values: np.ndarray, x: np.ndarray, axes) -> None:
    """One panel per entry of ``bys`` of mean ± s.e. curves over ``values`` [member, x]: one curve per
    arch (among the networks of the reference activation, :func:`_reference`) or per activation (among
    those of the reference arch)."""
    ok = _trained(ds)
    for ax, by in zip(axes, bys, strict=True):
        mask, title = _panel(ds, by)
        mask &= ok
        ax.set_title(title)
        if not mask.any():
            _empty(ax, f"no trained {_reference(ds, PANELS[by])} networks")
            continue
        for v in _values(ds, by, mask):
            rows = mask & (ds[by].values == v)
            _band(ax, x, values[rows], COLORS[by].get(v, "tab:gray"), v)


def mds_embedding(ds: xr.Dataset, metric: str, prefix: str | Path) -> list[Path]:
    """[U] Fig. 1d: the 2-D MDS embedding ``mds_<metric>`` of the trained networks; left the networks of
    the reference activation coloured by architecture, right those of the reference arch coloured by
    activation (:func:`_reference`: tanh and vanilla in [U]'s grids)."""
    xy = ds[f"mds_{metric}"].values
    placed = np.isfinite(xy).all(axis=1)
    fig, axes = _subplots(1, 2, figsize=(10.0, 4.6), layout="constrained")
    for ax, by in zip(axes, ("arch", "activation"), strict=True):
        mask, title = _panel(ds, by)
        left_out = int((mask & ~placed).sum())
        ax.set_title(title + (f"\n{left_out} left out (diverged or not compared)" if left_out else ""))
        if not (mask & placed).any():
            value = _reference(ds, PANELS[by])
            _empty(ax, f"no {value} networks embedded" if mask.any() else f"no {value} networks in this run")
            continue
        for v in _values(ds, by, mask & placed):
            rows = mask & placed & (ds[by].values == v)
            color = COLORS[by].get(v, "tab:gray")
            marker = ARCH_MARKERS.get(v, "o") if by == "arch" else "o"
            ax.scatter(*xy[rows].T, s=30, color=color, marker=marker, label=f"{v} ({int(rows.sum())})",
                       alpha=0.8, edgecolors=_edge(color), linewidths=0.7)  # fmt: skip
        ax.set_xlabel("MDS 1 (distance units)")
        ax.set_ylabel("MDS 2 (distance units)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize="small", title=NAMES[by])
    fig.suptitle(f"{ds.attrs.get('task', '')}: MDS of the {_metric(metric).label}")
    return _save(fig, prefix)


def network_order(ds: xr.Dataset) -> np.ndarray:
    """Member indices ordered by architecture, activation, units, l2, seed ([U] Fig. 1c)."""
    rank = {by: {v: i for i, v in enumerate(_values(ds, by, np.ones(ds.sizes["member"], bool)))}
            for by in ("arch", "activation")}  # fmt: skip
    arch = [rank["arch"][v] for v in ds.arch.values]
    act = [rank["activation"][v] for v in ds.activation.values]
    return np.lexsort((ds.seed.values, ds.l2.values, ds.units.values, act, arch))


def distance_matrix(ds: xr.Dataset, metric: str, prefix: str | Path) -> list[Path]:
    """[U] Fig. 1c: the network × network ``<metric>_distance``, ordered by arch, activation, units,
    l2, seed; blocks of one (arch, activation) marked; NaN (diverged, set aside) grey."""
    order = network_order(ds)
    d = ds[f"{metric}_distance"].values[np.ix_(order, order)]
    blocks = [f"{a}\n{f}" for a, f in zip(ds.arch.values[order], ds.activation.values[order], strict=True)]
    starts = [i for i in range(len(blocks)) if i == 0 or blocks[i] != blocks[i - 1]]
    ends = [*starts[1:], len(blocks)]
    fig, ax = _subplots(figsize=(6.4, 5.6), layout="constrained")
    cmap = _cmap("viridis").with_extremes(bad="0.5")
    top = float(np.nanmax(d)) if np.isfinite(d).any() else 0.0
    im = ax.imshow(np.ma.masked_invalid(d), cmap=cmap, vmin=0.0, vmax=top if top > 0 else 1.0,
                   interpolation="nearest")  # fmt: skip
    fig.colorbar(im, ax=ax, shrink=0.85, label=_metric(metric).label)
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="white", linewidth=1.0)
        ax.axvline(s - 0.5, color="white", linewidth=1.0)
    centres = [(s + e - 1) / 2 for s, e in zip(starts, ends, strict=True)]
    labels = [blocks[s] for s in starts]
    ax.set_xticks(centres, labels, fontsize="small")
    ax.set_yticks(centres, labels, fontsize="small")
    ax.set_xlabel("network (by arch, activation, units, l2, seed)")
    ax.set_ylabel("network")
    n_nan = int(np.isnan(d).all(axis=1).sum())
    ax.set_title(
        f"{ds.attrs.get('task', '')}: {_metric(metric).short} distances, {len(order)} networks"
        + (f" ({n_nan} not compared, grey)" if n_nan else "")
    )
    return _save(fig, prefix)


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


def trained_untrained(sim: xr.Dataset, prefix: str | Path, metric: str | None = None) -> list[Path]:
    """[U] Fig. 4b: one MDS embedding (``mds_all_<metric>``; default the first states metric the run
    has, SVCCA as in [U]) of trained networks (filled) and their untrained twins (hollow), coloured by
    activation, marker by architecture."""
    metric = metric or _first_states_metric(sim, "mds_all_")
    xy = sim[f"mds_all_{metric}"].values
    trained = sim.trained.values
    placed = np.isfinite(xy).all(axis=1)
    fig, ax = _subplots(figsize=(8.4, 5.0), layout="constrained")
    everyone = np.ones(sim.sizes["network"], bool)
    for arch in _values(sim, "arch", everyone):
        for act in _values(sim, "activation", everyone):
            for is_trained in (True, False):
                rows = placed & (sim.arch.values == arch) & (sim.activation.values == act)
                rows &= trained == is_trained
                if not rows.any():
                    continue
                color = ACTIVATION_COLORS.get(act, "tab:gray")
                # a light colour is filled inside a dark edge, or (hollow) a ring outlined in dark
                edge = DARK_EDGE if _light(color) and is_trained else color
                ax.scatter(*xy[rows].T, s=36, marker=ARCH_MARKERS.get(arch, "o"), linewidths=1.2,
                           facecolors=color if is_trained else "none", edgecolors=edge,
                           path_effects=_outline(color, 1.2) if not is_trained else None,
                           label=f"{arch} {act}, {'trained' if is_trained else 'untrained'} "
                                 f"({int(rows.sum())})")  # fmt: skip
    ax.set_xlabel("MDS 1 (distance units)")
    ax.set_ylabel("MDS 2 (distance units)")
    ax.set_aspect("equal", adjustable="datalim")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    left_out = int((~placed).sum())
    ax.set_title(
        f"{sim.attrs.get('task', '')}: MDS of {_metric(metric).short} distances, trained (filled) and untrained "
        f"(hollow)" + (f"\n{left_out} networks left out (not compared)" if left_out else ""),
        fontsize="medium",
    )
    return _save(fig, prefix)


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


class Network(NamedTuple):
    """One network of a run, ready to draw: its model and parameters, its states on the task's probe
    inputs ``[probes, time, state]`` and its fixed points ``[conditions, fixed_point, state]`` (NaN where
    ``ds.fp_valid`` is False; None for a run without dynamics)."""

    member: int
    model: Model
    params: dict
    states: np.ndarray
    fp_states: np.ndarray | None


def _sweep(run_dir: Path):
    """The run's ``Sweep``: its task, seed and analysis settings."""
    return build_sweep(store.read_config(run_dir))


# compiled once per model and input shape: the figures of one run ask for the same network's states often
@partial(jax.jit, static_argnums=0)
def _states(model: Model, params: dict, inputs):
    return model.states(params, inputs)


@partial(jax.jit, static_argnums=0)
def _outputs(model: Model, params: dict, inputs):
    return model(params, inputs)


def _group_params(run_dir: Path, group: str) -> tuple[store.GroupParams, object]:
    """One group's parameters, read (and checked against its manifest) as ``store.load_params`` reads
    them, but without reading every other group's; and the run's Sweep."""
    sweep = _sweep(run_dir)
    g = next(g for g in sweep.grid.groups if g.name == group)
    path = store.group_dir(run_dir, group) / "params.npz"
    try:
        with np.load(store.verify(path)) as z:
            arrays = {k: z[k] for k in z.files}
    except store.UNREADABLE as e:
        raise store.RunDirError(f"parameters of group {group} in {run_dir} are unreadable ({e})") from None
    member = arrays.pop("member")
    model = Model.for_task(g.arch, g.activation, g.units, sweep.task, sweep.unroll, g.options)
    return store.GroupParams(model, store.unflatten(arrays), member), sweep


def _fp_states(run_dir: Path, ds: xr.Dataset, group: str, member: int) -> np.ndarray:
    """``groups/<group>/dynamics.npz``'s fixed points of ``member`` ``[conditions, K, state]``, padded with
    NaN to the run's ``fixed_point`` size (each group's file is cut to its own most valid points)."""
    path = store.group_dir(run_dir, group) / store.DYNAMICS
    try:
        with np.load(store.verify(path)) as z:
            fp = z["fp_states"][int(np.flatnonzero(z["member"] == member)[0])]
    except (*store.UNREADABLE, IndexError) as e:
        raise store.RunDirError(f"fixed points of network {member} are unreadable ({path}: {e})") from None
    k = ds.sizes.get("fixed_point", fp.shape[1])
    out = np.full((fp.shape[0], max(k, fp.shape[1]), fp.shape[2]), np.nan)
    out[:, : fp.shape[1]] = fp
    return np.where(ds.fp_valid.sel(member=member).values[..., None], out[:, :k], np.nan)


def network(run_dir: str | Path, ds: xr.Dataset, member: int, trained: bool = True) -> Network:
    """Network ``member`` of the run in ``run_dir``, with its probe states and (trained, dynamics
    analysed) fixed points.  ``trained=False``: its untrained twin, with the parameters
    ``popdyn.analysis.compare_run`` compared — ``jax.vmap(model.init)`` over the keys
    ``member_key(seed, "untrained/<m>")`` of every member ``m`` of its group, the same keys and the same
    call, so the very same numbers."""
    run_dir = Path(run_dir)
    group = str(ds.group.sel(member=member).item())
    gp, sweep = _group_params(run_dir, group)
    i = int(np.flatnonzero(gp.member == member)[0])
    params = gp.params
    if not trained:
        keys = jnp.stack([member_key(sweep.seed, f"untrained/{m}") for m in gp.member])
        params = jax.vmap(gp.model.init)(keys)
    params = jax.tree.map(lambda a: jnp.asarray(a[i]), params)
    states = np.asarray(_states(gp.model, params, sweep.task.probe_inputs))
    fps = _fp_states(run_dir, ds, group, member) if trained and "fp_valid" in ds else None
    return Network(member, gp.model, params, states, fps)


def example_states(run_dir: Path, ds: xr.Dataset, member: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One member's states on the task's probe inputs ``[probes, time, state]``, its fixed points
    ``[conditions, K, state]`` (from ``groups/<g>/dynamics.npz``, NaN where not valid) and its
    parameters."""
    net = network(run_dir, ds, member)
    return net.states, net.fp_states, net.params


def _pca(states: Float[np.ndarray, "... state"], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre ``[state]``, top ``n`` principal axes ``[n, state]`` and their shares of the variance of
    the states (rows of every leading axis pooled)."""
    flat = states.reshape(-1, states.shape[-1]).astype(np.float64)
    centre = flat.mean(axis=0)
    _, sv, vt = np.linalg.svd(flat - centre, full_matrices=False)
    total = np.sum(sv**2)
    explained = sv**2 / total if total > 0 else np.zeros_like(sv)
    if vt.shape[0] < n:  # fewer samples than components: pad with zero axes
        vt = np.concatenate([vt, np.zeros((n - vt.shape[0], vt.shape[1]))])
        explained = np.concatenate([explained, np.zeros(n - len(explained))])
    return centre, vt[:n], explained[:n]


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


FACTOR_NAMES = {"arch": "architecture", "activation": "activation", "units": "width", "l2": "L2",
                "trained": "trained vs untrained"}  # fmt: skip


def _p_text(p: float) -> str:
    return "" if not np.isfinite(p) else f"p<{0.001:g}" if p < 0.001 else f"p={p:.2g}"


def statistics(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """How much each grid factor explains each distance (``ds.statistics``, ``popdyn.statistics``): left,
    PERMANOVA R² per factor, a bar per metric with its bootstrap interval over seeds and the permutation
    p-value above it; right, the leave-one-out nearest-neighbour accuracy with its interval, and its
    chance level as a black tick.  Factors with one value (NaN throughout) are left out."""
    table = ds.statistics
    metrics = [str(m) for m in table.metric.values]
    stat = {s: table.sel(statistic=s).values for s in ("R2", "R2_low", "R2_high", "p_value", "nn_accuracy",
                                                        "nn_chance", "nn_low", "nn_high", "groups", "n")}  # fmt: skip
    present = np.isfinite(stat["R2"]).any(axis=0) | np.isfinite(stat["nn_accuracy"]).any(axis=0)
    factors = [str(f) for f in table.factor.values[present]]
    cols = np.flatnonzero(present)
    fig, axes = _subplots(1, 2, figsize=(2 * max(5.2, 1.1 * len(factors) + 2.0), 4.8), layout="constrained")
    width = 0.8 / max(len(metrics), 1)
    x = np.arange(len(factors))
    labels = []
    for f in cols:
        groups, n = (stat[k][:, f][np.isfinite(stat[k][:, f])] for k in ("groups", "n"))
        g = f"\n{int(groups.max())} groups, {int(n.max())} networks" if len(groups) else ""
        labels.append(FACTOR_NAMES.get(str(table.factor.values[f]), str(table.factor.values[f])) + g)
    for m, metric in enumerate(metrics):
        pos = x + (m - (len(metrics) - 1) / 2) * width
        color, name = _metric(metric).color, _metric(metric).short
        for ax, key, low, high in (
            (axes[0], "R2", "R2_low", "R2_high"),
            (axes[1], "nn_accuracy", "nn_low", "nn_high"),
        ):
            v = stat[key][m, cols]
            lo, hi = stat[low][m, cols], stat[high][m, cols]
            err = np.stack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
            err = np.where(np.isfinite(err), err, 0.0)
            ax.bar(
                pos,
                np.nan_to_num(v),
                width * 0.92,
                color=color,
                label=name,
                edgecolor=DARK_EDGE,
                linewidth=0.6,
            )
            ax.errorbar(pos, np.where(np.isfinite(v), v, np.nan), yerr=err, fmt="none", ecolor="0.2",
                        elinewidth=0.9, capsize=2)  # fmt: skip
        for xp, r2, hi, p in zip(pos, stat["R2"][m, cols], stat["R2_high"][m, cols], stat["p_value"][m, cols],
                                 strict=True):  # fmt: skip
            top = np.nanmax([r2, hi]) if np.isfinite([r2, hi]).any() else np.nan
            if np.isfinite(top):
                axes[0].text(xp, top + 0.02, _p_text(p), rotation=90, ha="center", va="bottom", fontsize=6.5)
            else:
                axes[0].text(
                    xp, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6.5, color="0.5"
                )
        chance = stat["nn_chance"][m, cols]
        axes[1].hlines(chance, pos - width * 0.46, pos + width * 0.46, color="black", linewidth=1.6,
                       label="chance" if m == 0 else None, path_effects=[path_effects.Stroke(linewidth=3.2,
                       foreground="white"), path_effects.Normal()])  # fmt: skip
    axes[0].set_ylabel("R² (share of the squared distances)")
    axes[0].set_ylim(0, 1.25)
    axes[0].set_title("PERMANOVA R² (p: permutation test)")
    axes[1].set_ylabel("leave-one-out 1-NN accuracy")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("leave-one-out 1-NN accuracy (black: chance)")
    for ax in axes:
        ax.set_xticks(x, labels, fontsize="small")
        ax.set_xlabel("factor")
    axes[0].legend(fontsize="small", title="distance", loc="upper right", ncols=len(metrics))
    if not factors:
        for ax in axes:
            _empty(ax, "no factor with two values or more")
    fig.suptitle(f"{ds.attrs.get('task', '')}: how much each grid factor explains each distance (PERMANOVA R², "
                 "1-NN accuracy)\nerror bars: bootstrap intervals over training seeds")  # fmt: skip
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
    fig, ax = _subplots(figsize=(5.6, 4.0), layout="constrained")
    _arch_bands(ax, ds, ds.scale.values, ds.loss_line.values[:, -1])
    ax.axvline(1.0, color="black", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("s (parameters s·θ)")
    ax.set_ylabel("V(s·θ)")
    ax.legend(fontsize="small")
    ax.set_title(f"cost along the ray, at step {int(ds.record_step.values[-1])}")
    return _save(fig, prefix)


def memory_curves(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[V] Fig. 3: the memory curve Σσ(τ) — the summed singular values of the normalised state gradients
    ∂s_t/∂e_{t−τ} — against the delay τ, mean ± s.e. per arch (log scale)."""
    ok = _trained(ds)
    fig, ax = _subplots(figsize=(5.6, 4.0), layout="constrained")
    _arch_bands(ax, ds, ds.delay.values, ds.memory.values)
    ax.set_yscale("log")
    ax.set_xlabel("delay τ (steps)")
    ax.set_ylabel("Σ singular values of Ḡ_τ D")
    ax.legend(fontsize="small")
    ax.set_title(f"{ds.attrs.get('task', '')}: memory of {int(ok.sum())} networks")
    return _save(fig, prefix)


def draw_all(run_dir: str | Path, progress: bool = False, missing_only: bool = False) -> list[Path]:
    """Every figure the run's task and results allow, into ``<run_dir>/figures/`` (PNG and PDF each):
    ``mds_<metric>``, ``distance_<metric>`` (each metric computed), ``statistics`` (each grid factor's share
    of each distance), ``fixed_points`` (dynamics analysed); for flip-flop, sine and cdi with dynamics
    analysed ``trajectories`` (one 3-D example per arch × activation) and ``example_trials``;
    ``sine_frequency`` and ``sine_eigenvalues`` (sine), ``cdi_linear`` (cdi); with untrained twins
    compared ``trained_untrained`` (their MDS) and — flip-flop, sine, cdi — ``trained_untrained_states``;
    ``text_manifold``, ``eigenmodes``, ``readout_angles``, ``dimensions`` (text classification),
    ``bifurcation_training``, ``contractivity_training``, ``loss_line`` (parameters saved in training),
    ``memory_curves`` (``memory.max_delay`` > 0).  The example network of the single-network figures is
    :func:`example_member`'s.
    With ``missing_only``, only those not drawn yet (a finished run's figures are left as they are).
    Returns the paths written; ``RunDirError`` for a missing or unfinished run."""
    run_dir = Path(run_dir)
    jobs = _jobs(run_dir)
    if missing_only:
        todo = missing(run_dir, jobs)
        jobs = {name: draw for name, draw in jobs.items() if name in todo}
    paths = []
    for name, draw in tqdm(jobs.items(), desc="figures", unit="figure", disable=not progress):
        paths += draw(run_dir / FIGURES / name)
    return paths


def missing(run_dir: str | Path, jobs: dict | None = None) -> list[str]:
    """The figures :func:`draw_all` would draw of which the PNG or the PDF is not there yet."""
    run_dir = Path(run_dir)
    return [
        name
        for name in (_jobs(run_dir) if jobs is None else jobs)
        if not all((run_dir / FIGURES / f"{name}{ext}").exists() for ext in (".png", ".pdf"))
    ]


def _jobs(run_dir: Path) -> dict:
    """``{figure name: draw(prefix) -> paths}`` for every figure the run's task and results allow."""
    ds = store.load(run_dir)
    task = ds.attrs.get("task", "")
    jobs = {}
    for m in (str(v)[4:] for v in ds.data_vars if str(v).startswith("mds_")):  # every metric the run has
        if f"{m}_distance" in ds:
            jobs[f"mds_{m}"] = partial(mds_embedding, ds, m)
            jobs[f"distance_{m}"] = partial(distance_matrix, ds, m)
    if "statistics" in ds:
        jobs["statistics"] = partial(statistics, ds)
    if "fp_valid" in ds:
        member = example_member(ds)
        jobs["fixed_points"] = lambda prefix: fixed_points(
            ds, member, *example_states(run_dir, ds, member)[:2], prefix
        )
        if "universality" in _task_figures(task):
            jobs["trajectories"] = partial(trajectories, ds, run_dir)
            jobs["example_trials"] = partial(example_trials, ds, run_dir)
        if "sine_eigenvalues" in _task_figures(task):
            jobs["sine_eigenvalues"] = partial(sine_eigenvalues, ds, run_dir)
    if "readout_angle" in ds:  # text classification ([A])
        sweep_task = build_sweep(store.read_config(run_dir)).task
        labels = np.asarray(sweep_task.probe_targets).argmax(-1)

        def manifold(prefix):
            states, fps, params = example_states(run_dir, ds, member)
            kernel = np.asarray(params["readout"]["kernel"])
            return text_manifold(ds, member, states, fps[0], labels, kernel, prefix)

        jobs["text_manifold"] = manifold
        if "fp_mode_overlap" in ds:
            jobs["eigenmodes"] = partial(eigenmodes, ds, member, sweep_task.T)
        jobs["readout_angles"] = partial(readout_angles, ds)
        jobs["dimensions"] = partial(dimensions, ds)
    if "bif_y" in ds:  # [R]: parameters were saved during training
        first = int(ds.member.values[np.argmax(_trained(ds))]) if _trained(ds).any() else int(ds.member[0])
        jobs["bifurcation_training"] = partial(bifurcation_training, ds, first)
        jobs["contractivity_training"] = partial(contractivity_training, ds)
        jobs["loss_line"] = partial(loss_line, ds)
    for spec in analyses.REGISTRY.values():  # each registered per-network analysis's own figures
        if spec.figures and any(v in ds for v in spec.variables()):
            jobs |= {name: partial(draw, ds) for name, draw in spec.figures.items()}
    if "sine_frequency" in ds:
        jobs["sine_frequency"] = partial(sine_frequency, ds)
    if "cdi_spectrum" in ds:
        jobs["cdi_linear"] = partial(cdi_linear, ds)
    if (run_dir / store.SIMILARITY).exists():
        sim = store.load_similarity(run_dir)
        if not sim.trained.values.all() and _first_states_metric(sim, "mds_all_") is not None:
            jobs["trained_untrained"] = partial(trained_untrained, sim)
            if "universality" in _task_figures(task):
                jobs["trained_untrained_states"] = partial(trained_untrained_states, ds, run_dir)
    return jobs
