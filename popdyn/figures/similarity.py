"""Figures of the similarity of networks: [U] Fig. 1c (distance matrices), 1d (MDS by architecture and by
activation), 4b (trained vs untrained MDS), and the statistics of how much each grid factor explains each
distance (``popdyn.statistics``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import matplotlib.patheffects as path_effects
import numpy as np
import xarray as xr

from popdyn.figures import Run, register
from popdyn.figures._style import (
    ACTIVATION_COLORS,
    ARCH_MARKERS,
    COLORS,
    DARK_EDGE,
    NAMES,
    PANELS,
    _cmap,
    _edge,
    _empty,
    _first_states_metric,
    _light,
    _metric,
    _outline,
    _panel,
    _reference,
    _save,
    _subplots,
    _values,
    twins_compared,
)

__all__ = ["mds_embedding", "network_order", "distance_matrix", "trained_untrained", "statistics"]


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


@register
def _jobs(run: Run) -> dict:
    """``mds_<metric>`` and ``distance_<metric>`` for each metric the run computed, ``statistics``, and
    ``trained_untrained`` when untrained twins were compared."""
    ds, jobs = run.ds, {}
    for m in (str(v)[4:] for v in ds.data_vars if str(v).startswith("mds_")):  # every metric the run has
        if f"{m}_distance" in ds:
            jobs[f"mds_{m}"] = partial(mds_embedding, ds, m)
            jobs[f"distance_{m}"] = partial(distance_matrix, ds, m)
    if "statistics" in ds:
        jobs["statistics"] = partial(statistics, ds)
    if twins_compared(run.sim):
        jobs["trained_untrained"] = partial(trained_untrained, run.sim)
    return jobs
