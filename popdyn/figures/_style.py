"""What every figure shares: the colours (Okabe & Ito's colour-blind-safe palette; one per architecture
from the cell registry, one per activation), markers, panels ([U] §2.3: architectures compared within the
reference activation, activations within the reference arch), bare-Figure subplots, the reproducible
PNG + PDF writer and the mean ± s.e. bands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.patheffects as path_effects
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure

from popdyn import cells, similarity, store
from popdyn.cells import ACTIVATIONS

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


def twins_compared(sim: xr.Dataset | None) -> bool:
    """Whether a run's similarity results (``store.load_similarity``; None: not compared) hold untrained
    twins of its networks embedded by a states metric ([U] Fig. 4)."""
    return (
        sim is not None and not sim.trained.values.all() and _first_states_metric(sim, "mds_all_") is not None
    )
