"""Figures of a run, drawn from what ``popdyn.store.load`` returns: the paper's Figs. 1–4 ([U]), and for
text classifiers [A]'s manifolds, readout angles and dimensions (Figs. 1, 6–8, 10–12).

Each figure function takes the Dataset(s) and an output path prefix and writes ``prefix.png`` and
``prefix.pdf``; :func:`draw_all` draws every one a run directory's task and results allow.  One colour
per architecture and one per activation throughout (``ARCH_COLORS``, ``ACTIVATION_COLORS``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on machines without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from jaxtyping import Float  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from popdyn import store  # noqa: E402
from popdyn.cells import ACTIVATIONS, ARCHS  # noqa: E402
from popdyn.config import build_sweep  # noqa: E402


def loss_curves(ds: xr.Dataset, path: str | Path) -> Path:
    """Training MSE against step per group: median over members, shaded between the quartiles (log scale).

    Diverged members are left out of the median and counted in the legend.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for group in dict.fromkeys(ds.group.values):
        sub = ds.where((ds.group == group) & ~ds.diverged, drop=True)
        n_div = int((ds.diverged & (ds.group == group)).sum())
        if sub.sizes.get("member", 0) == 0:
            continue
        q = np.nanquantile(sub.loss.values, [0.25, 0.5, 0.75], axis=0)
        label = f"{group} ({sub.sizes['member']})" + (f", {n_div} diverged" if n_div else "")
        (line,) = ax.plot(ds.step, q[1], label=label)
        ax.fill_between(ds.step, q[0], q[2], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    from popdyn.tasks import LOSSES

    loss = LOSSES.get(ds.attrs.get("task", ""), "mse")
    ax.set_ylabel("training MSE" if loss == "mse" else f"training {loss} cross-entropy")
    ax.set_title(f"{ds.attrs.get('task', '')}: median and quartiles over networks")
    ax.legend(fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- the paper's figures
FIGURES = "figures"  # sub-directory of a run directory that draw_all writes into
METRICS = ("svcca", "cka", "dsa", "topology")  # those a run has are drawn
METRIC_NAMES = {"svcca": "SVCCA", "cka": "CKA", "dsa": "DSA", "topology": "topology"}
METRIC_LABELS = {
    "svcca": "SVCCA distance (1 − mean canonical correlation)",
    "cka": "CKA distance (1 − linear CKA)",
    "dsa": "DSA distance (angular, Ostrow et al. 2023)",
    "topology": "fixed-point topology distance (Euclidean)",
}
# one colour per architecture and per activation in every figure, the two sets disjoint
ARCH_COLORS = {
    "vanilla": "tab:blue", "ugrnn": "tab:orange", "gru": "tab:green", "lstm": "tab:red",
    "slstm": "tab:olive", "ornn": "tab:cyan",
}  # fmt: skip
ACTIVATION_COLORS = {"tanh": "tab:purple", "relu": "tab:brown"}
ARCH_MARKERS = {"vanilla": "o", "ugrnn": "s", "gru": "^", "lstm": "D", "slstm": "v", "ornn": "P"}
UNSTABLE_COLORS = ("black", "tab:red", "tab:green", "tab:blue")  # 0, 1, 2, 3 unstable modes ([U] Fig. 1e)
# [U] §2.3 (MDS): architectures are compared among tanh networks, activations among vanilla networks
PANELS = {"arch": ("activation", "tanh"), "activation": ("arch", "vanilla")}
COLORS = {"arch": ARCH_COLORS, "activation": ACTIVATION_COLORS}
ORDER = {"arch": ARCHS, "activation": ACTIVATIONS}
NAMES = {"arch": "architecture", "activation": "activation"}


def _save(fig: plt.Figure, prefix: str | Path) -> list[Path]:
    """Write ``prefix``.png and ``prefix``.pdf and close ``fig``.

    The PDF carries no creation date, so the same data give the same bytes (a re-run changes nothing)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = (prefix.with_name(prefix.name + ext) for ext in (".png", ".pdf"))
    try:
        fig.savefig(png, dpi=150)
        fig.savefig(pdf, metadata={"CreationDate": None})
    finally:
        plt.close(fig)
    return [png, pdf]


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _trained(ds: xr.Dataset) -> np.ndarray:
    """Members that did not diverge (all of them when the Dataset does not say)."""
    return ~ds.diverged.values if "diverged" in ds else np.ones(ds.sizes["member"], bool)


def _panel(ds: xr.Dataset, by: str) -> tuple[np.ndarray, str]:
    """The networks of the panel coloured by ``by`` ([U] Fig. 1d): mask and title."""
    other, value = PANELS[by]
    return ds[other].values == value, f"{value} networks, by {NAMES[by]}"


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


def _band(ax: plt.Axes, x: np.ndarray, values: np.ndarray, color: str, label: str) -> None:
    """Mean ± standard error over the rows of ``values`` [networks, x] as a line and a shaded patch."""
    mean, se, _ = _mean_se(values)
    ax.plot(x, mean, color=color, label=f"{label} ({values.shape[0]})")
    ax.fill_between(x, mean - se, mean + se, color=color, alpha=0.25, linewidth=0)


def _arch_bands(ax: plt.Axes, ds: xr.Dataset, x: np.ndarray, values: np.ndarray) -> None:
    """Mean ± s.e. of ``values`` [member, x] over the trained networks of each arch, one curve each."""
    ok = _trained(ds)
    for arch in _values(ds, "arch", ok):
        _band(ax, x, values[ok & (ds.arch.values == arch)], ARCH_COLORS.get(arch, "tab:gray"), arch)


def _by_panels(ds: xr.Dataset, bys: tuple[str, ...], values: np.ndarray, x: np.ndarray, axes) -> None:
    """One panel per entry of ``bys`` of mean ± s.e. curves over ``values`` [member, x]: one curve per
    arch (tanh networks) or per activation (vanilla networks)."""
    ok = _trained(ds)
    for ax, by in zip(axes, bys, strict=True):
        mask, title = _panel(ds, by)
        mask &= ok
        ax.set_title(title)
        if not mask.any():
            _empty(ax, f"no trained {PANELS[by][1]} networks")
            continue
        for v in _values(ds, by, mask):
            rows = mask & (ds[by].values == v)
            _band(ax, x, values[rows], COLORS[by].get(v, "tab:gray"), v)


def mds_embedding(ds: xr.Dataset, metric: str, prefix: str | Path) -> list[Path]:
    """[U] Fig. 1d: the 2-D MDS embedding ``mds_<metric>`` of the trained networks; left tanh networks
    coloured by architecture, right vanilla networks coloured by activation."""
    xy = ds[f"mds_{metric}"].values
    placed = np.isfinite(xy).all(axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.6), layout="constrained")
    for ax, by in zip(axes, ("arch", "activation"), strict=True):
        mask, title = _panel(ds, by)
        left_out = int((mask & ~placed).sum())
        ax.set_title(title + (f"\n{left_out} left out (diverged or not compared)" if left_out else ""))
        if not (mask & placed).any():
            value = PANELS[by][1]
            _empty(ax, f"no {value} networks embedded" if mask.any() else f"no {value} networks in this run")
            continue
        for v in _values(ds, by, mask & placed):
            rows = mask & placed & (ds[by].values == v)
            ax.scatter(*xy[rows].T, s=28, color=COLORS[by].get(v, "tab:gray"),
                       label=f"{v} ({int(rows.sum())})", alpha=0.8, edgecolors="none")  # fmt: skip
        ax.set_xlabel("MDS 1 (distance units)")
        ax.set_ylabel("MDS 2 (distance units)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize="small", title=NAMES[by])
    fig.suptitle(f"{ds.attrs.get('task', '')}: MDS of the {METRIC_LABELS[metric]}")
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
    fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.5")
    top = float(np.nanmax(d)) if np.isfinite(d).any() else 0.0
    im = ax.imshow(np.ma.masked_invalid(d), cmap=cmap, vmin=0.0, vmax=top if top > 0 else 1.0,
                   interpolation="nearest")  # fmt: skip
    fig.colorbar(im, ax=ax, shrink=0.85, label=METRIC_LABELS[metric])
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
        f"{ds.attrs.get('task', '')}: {METRIC_NAMES[metric]} distances, {len(order)} networks"
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
    graph: an arrow i → j of width ∝ P[i, j] for every off-diagonal transition probability."""
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
    fig, axes = plt.subplots(1, len(planes), figsize=(5.2 * len(planes), 4.8), layout="constrained",
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
                color = UNSTABLE_COLORS[k] if k < len(UNSTABLE_COLORS) else "tab:gray"
                label = "stable" if k == 0 else f"{k} unstable mode{'s' if k > 1 else ''}"
                ax.scatter(points[sel][:, a], points[sel][:, b], s=45, color=color, label=label,
                           zorder=3, edgecolors="white", linewidths=0.6)  # fmt: skip
        ax.set_xlabel(f"PC {a + 1} ({100 * explained[a]:.0f} % of variance)")
        ax.set_ylabel(f"PC {b + 1} ({100 * explained[b]:.0f} % of variance)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if p is not None:
        for q in (0.25, 0.5, 1.0):
            handles.append(plt.Line2D([], [], color="tab:gray", linewidth=0.5 + 3.5 * q))
            labels.append(f"transition P = {q:g}")
    handles.append(plt.Line2D([], [], color="0.55", linewidth=0.8))
    labels.append("probe trajectories")
    fig.legend(handles, labels, fontsize="small", loc="outside lower center", ncols=min(len(labels), 4))
    fig.suptitle(
        f"{ds.attrs.get('task', '')}: fixed points of network {member} ({net.arch.item()}, "
        f"{net.activation.item()}, {net.units.item()} units, seed {net.seed.item()}): "
        f"{int(valid.sum())} fixed points"
        + (f" over {valid.shape[0]} conditions" if valid.shape[0] > 1 else "")
    )
    return _save(fig, prefix)


def sine_frequency(ds: xr.Dataset, prefix: str | Path) -> list[Path]:
    """[U] Fig. 2f: the linear frequency θ/2π of each input-dependent fixed point's oscillatory mode
    against the command frequency ω, mean ± s.e. over networks, by architecture (left, tanh networks)
    and activation (right, vanilla networks); the dashed line is θ/2π = ω."""
    omega = ds.omega.values
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.4), layout="constrained", sharey=True)
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
    against m; mean ± s.e. over networks per architecture (tanh networks)."""
    spectrum = ds.cdi_spectrum.isel(condition=context).values
    response = ds.cdi_response.isel(condition=context).values
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.4), layout="constrained")
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


def trained_untrained(sim: xr.Dataset, prefix: str | Path, metric: str = "svcca") -> list[Path]:
    """[U] Fig. 4b: one MDS embedding (``mds_all_<metric>``) of trained networks (filled) and their
    untrained twins (hollow), coloured by activation, marker by architecture."""
    xy = sim[f"mds_all_{metric}"].values
    trained = sim.trained.values
    placed = np.isfinite(xy).all(axis=1)
    fig, ax = plt.subplots(figsize=(6.4, 5.0), layout="constrained")
    everyone = np.ones(sim.sizes["network"], bool)
    for arch in _values(sim, "arch", everyone):
        for act in _values(sim, "activation", everyone):
            for is_trained in (True, False):
                rows = placed & (sim.arch.values == arch) & (sim.activation.values == act)
                rows &= trained == is_trained
                if not rows.any():
                    continue
                color = ACTIVATION_COLORS.get(act, "tab:gray")
                ax.scatter(*xy[rows].T, s=36, marker=ARCH_MARKERS.get(arch, "o"), linewidths=1.2,
                           facecolors=color if is_trained else "none", edgecolors=color,
                           label=f"{arch} {act}, {'trained' if is_trained else 'untrained'} "
                                 f"({int(rows.sum())})")  # fmt: skip
    ax.set_xlabel("MDS 1 (distance units)")
    ax.set_ylabel("MDS 2 (distance units)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize="small")
    left_out = int((~placed).sum())
    ax.set_title(
        f"{sim.attrs.get('task', '')}: MDS of {METRIC_NAMES[metric]} distances, trained (filled) and untrained "
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
    cmap = plt.get_cmap(CLASS_CMAP)
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.8), layout="constrained")
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
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=cmap(k % 10)) for k in range(n)]
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
    from popdyn.geometry import simplex_angle

    ok = _trained(ds)
    n = ds.sizes["output"]
    pairs = np.triu(np.ones((n, n), dtype=bool), 1)  # each pair once
    archs = _values(ds, "arch", ok)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), layout="constrained")
    for j, arch in enumerate(archs):
        sel = ok & (ds.arch.values == arch)
        angles = ds.readout_angle.values[sel][:, pairs].ravel()
        axes[0].hist(angles, bins=np.linspace(0, 180, 61), alpha=0.6, color=ARCH_COLORS[arch], label=arch)
        axes[1].scatter(np.full(sel.sum(), j), ds.subspace_fraction.values[sel],
                        color=ARCH_COLORS[arch], alpha=0.7)  # fmt: skip
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
    fig, ax = plt.subplots(figsize=(1.0 * len(measures) + 2.5, 4.0), layout="constrained")
    archs = _values(ds, "arch", ok)
    for j, arch in enumerate(archs):
        sel = ok & (ds.arch.values == arch)
        for i, m in enumerate(measures):
            x = i + (j - (len(archs) - 1) / 2) * 0.2
            ax.scatter(np.full(sel.sum(), x), ds[m].values[sel], color=ARCH_COLORS[arch], s=14,
                       label=arch if i == 0 else None)  # fmt: skip
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
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
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


def example_states(run_dir: Path, ds: xr.Dataset, member: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One member's states on the task's probe inputs ``[probes, time, state]``, its fixed points
    ``[conditions, K, state]`` (from ``groups/<g>/dynamics.npz``) and its parameters."""
    group = str(ds.group.sel(member=member).item())
    gp = store.load_params(run_dir)[group]
    i = int(np.flatnonzero(gp.member == member)[0])
    task = build_sweep(store.read_config(run_dir)).task
    params = jax.tree.map(lambda a: a[i], gp.params)
    states = np.asarray(gp.model.states(params, task.probe_inputs))
    path = store.group_dir(run_dir, group) / store.DYNAMICS
    try:
        with np.load(path) as z:
            fp_states = z["fp_states"][int(np.flatnonzero(z["member"] == member)[0])]
    except (*store.UNREADABLE, IndexError) as e:
        raise store.RunDirError(f"fixed points of network {member} are unreadable ({path}: {e})") from None
    return states, fp_states, params


def eigenmodes(ds: xr.Dataset, member: int, length: int, prefix: str | Path) -> list[Path]:
    """[A] Fig. 2 for one network: for each mode of the Jacobian at its fixed points (x = 0), largest |λ|
    first (the slowest, unless |λ| > 1), the time constant ``1/|log|λ||`` in words (left axis, log scale)
    and the share of the mode's right eigenvector in the fixed-point manifold's principal subspace (right
    axis); a marker per point, a line through the medians, the phrase ``length`` dotted.  Integration
    modes are slow *and* inside the manifold."""
    net = ds.sel(member=member)
    valid = net.fp_valid.values[0]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
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
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True, layout="constrained")
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
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), layout="constrained", sharex=True)
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
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
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
    fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
    _arch_bands(ax, ds, ds.delay.values, ds.memory.values)
    ax.set_yscale("log")
    ax.set_xlabel("delay τ (steps)")
    ax.set_ylabel("Σ singular values of Ḡ_τ D")
    ax.legend(fontsize="small")
    ax.set_title(f"{ds.attrs.get('task', '')}: memory of {int(ok.sum())} networks")
    return _save(fig, prefix)


def draw_all(run_dir: str | Path, progress: bool = False) -> list[Path]:
    """Every figure the run's task and results allow, into ``<run_dir>/figures/`` (PNG and PDF each):
    ``mds_<metric>``, ``distance_<metric>`` (each metric computed), ``fixed_points`` (dynamics analysed),
    ``sine_frequency``, ``cdi_linear`` (those tasks), ``trained_untrained`` (untrained twins compared),
    ``text_manifold``, ``eigenmodes``, ``readout_angles``, ``dimensions`` (text classification),
    ``bifurcation_training``, ``contractivity_training``, ``loss_line`` (parameters saved in training),
    ``memory_curves`` (``memory.max_delay`` > 0).
    Returns the paths written; ``RunDirError`` for a missing or unfinished run."""
    run_dir = Path(run_dir)
    ds = store.load(run_dir)
    jobs = {}
    for m in METRICS:
        if f"mds_{m}" in ds:
            jobs[f"mds_{m}"] = partial(mds_embedding, ds, m)
            jobs[f"distance_{m}"] = partial(distance_matrix, ds, m)
    if "fp_valid" in ds:
        member = example_member(ds)
        jobs["fixed_points"] = lambda prefix: fixed_points(
            ds, member, *example_states(run_dir, ds, member)[:2], prefix
        )
    if "readout_angle" in ds:  # text classification ([A])
        task = build_sweep(store.read_config(run_dir)).task
        labels = np.asarray(task.probe_targets).argmax(-1)

        def manifold(prefix):
            states, fps, params = example_states(run_dir, ds, member)
            kernel = np.asarray(params["readout"]["kernel"])
            return text_manifold(ds, member, states, fps[0], labels, kernel, prefix)

        jobs["text_manifold"] = manifold
        if "fp_mode_overlap" in ds:
            jobs["eigenmodes"] = partial(eigenmodes, ds, member, task.T)
        jobs["readout_angles"] = partial(readout_angles, ds)
        jobs["dimensions"] = partial(dimensions, ds)
    if "bif_y" in ds:  # [R]: parameters were saved during training
        first = int(ds.member.values[np.argmax(_trained(ds))]) if _trained(ds).any() else int(ds.member[0])
        jobs["bifurcation_training"] = partial(bifurcation_training, ds, first)
        jobs["contractivity_training"] = partial(contractivity_training, ds)
        jobs["loss_line"] = partial(loss_line, ds)
    if "memory" in ds:  # [V]
        jobs["memory_curves"] = partial(memory_curves, ds)
    if "sine_frequency" in ds:
        jobs["sine_frequency"] = partial(sine_frequency, ds)
    if "cdi_spectrum" in ds:
        jobs["cdi_linear"] = partial(cdi_linear, ds)
    if (run_dir / store.SIMILARITY).exists():
        sim = store.load_similarity(run_dir)
        if not sim.trained.values.all():
            jobs["trained_untrained"] = partial(trained_untrained, sim)
    paths = []
    for name, draw in tqdm(jobs.items(), desc="figures", unit="figure", disable=not progress):
        paths += draw(run_dir / FIGURES / name)
    return paths
