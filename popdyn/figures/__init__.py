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

The package holds one module per family of figures — ``similarity`` (MDS, distance matrices, statistics,
trained vs untrained), ``dynamics`` ([U]'s fixed points, trajectories, example trials, sine and cdi panels),
``text`` ([A]), ``training`` (loss curves, [R], [V]) — and ``networks`` (a stored network rebuilt, to
draw its states).  Each family module registers one function with :func:`register`:
``jobs(run) -> {figure name: draw(prefix) -> [paths]}``, the figures it can draw of a run (:class:`Run`:
its directory and loaded results); a registered per-network analysis's own figures
(``Analysis.figures``) are drawn where its variables are loaded.  A new family is one new module here,
and nothing else names it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import cached_property, partial
from pathlib import Path

import xarray as xr
from tqdm.auto import tqdm

from popdyn import analyses, store
from popdyn._members import import_members
from popdyn.figures._style import ACTIVATION_COLORS, ARCH_COLORS, ARCH_MARKERS, ARCHS, PANELS, UNSTABLE_COLORS

__all__ = [
    "ACTIVATION_COLORS",
    "ARCH_COLORS",
    "ARCH_MARKERS",
    "ARCHS",
    "PANELS",
    "UNSTABLE_COLORS",
    "FIGURES",
    "Run",
    "register",
    "draw_all",
    "missing",
]  # and each family's own (_import_members)

FIGURES = "figures"  # sub-directory of a run directory that draw_all writes into

Draw = Callable[[Path], list[Path]]  # draw(prefix) -> the paths written (prefix.png, prefix.pdf)


class Run:
    """What a figure family's ``jobs`` sees of a run directory: ``dir``, ``ds`` (``store.load``), ``task``
    (its name) and, read when first asked, ``sweep`` (its ``Sweep``) and ``sim`` (``store.load_similarity``; None before the run was
    compared)."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.ds: xr.Dataset = store.load(self.dir)
        self.task: str = self.ds.attrs.get("task", "")

    @cached_property
    def sweep(self):
        """The run's ``Sweep`` (its task, seed and settings), built from its stored config when first asked."""
        from popdyn.figures.networks import _sweep

        return _sweep(self.dir)

    @cached_property
    def sim(self) -> xr.Dataset | None:
        return store.load_similarity(self.dir) if (self.dir / store.SIMILARITY).exists() else None


REGISTRY: dict[str, Callable[[Run], dict[str, Draw]]] = {}  # family module → its jobs(run)


def register(jobs: Callable[[Run], dict[str, Draw]]) -> Callable[[Run], dict[str, Draw]]:
    """Register a figure family: ``jobs(run)`` returns ``{figure name: draw(prefix)}`` for every figure of
    the family that ``run``'s task and results allow (none: ``{}``).  Used as a decorator."""
    REGISTRY[jobs.__module__] = jobs
    return jobs


def draw_all(
    run_dir: str | Path,
    progress: bool = False,
    missing_only: bool = False,
    only: Collection[str] | None = None,
) -> list[Path]:
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
    With ``missing_only``, only those not drawn yet (a finished run's figures are left as they are); with
    ``only``, only the figures of those names (a name the run cannot draw is a ``ValueError`` naming the
    ones it can).  Returns the paths written; ``RunDirError`` for a missing or unfinished run."""
    run_dir = Path(run_dir)
    jobs = _jobs(run_dir)
    if only is not None:
        if unknown := sorted(set(only) - set(jobs)):
            raise ValueError(
                f"figure(s) {', '.join(unknown)} not drawable for {run_dir}; it has: {', '.join(jobs)}"
            )
        jobs = {name: draw for name, draw in jobs.items() if name in only}
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


def _jobs(run_dir: Path) -> dict[str, Draw]:
    """``{figure name: draw(prefix) -> paths}`` for every figure the run's task and results allow: each
    registered family's, then each registered per-network analysis's own."""
    run = Run(run_dir)
    jobs: dict[str, Draw] = {}
    for family in REGISTRY.values():
        jobs |= family(run)
    for spec in analyses.REGISTRY.values():  # dims that depend on the task need the run's task
        if spec.figures and any(
            v in run.ds for v in spec.variables(run.sweep.task if callable(spec.dims) else None)
        ):
            jobs |= {name: partial(draw, run.ds) for name, draw in spec.figures.items()}
    return jobs


def _import_members() -> None:
    """Import every family module (sorted by name; ``_style`` and ``networks``' helpers are imported by the
    families that use them) and re-export what each lists in ``__all__``."""
    for module in import_members(__name__, __path__):
        globals().update({k: getattr(module, k) for k in getattr(module, "__all__", ())})


_import_members()
