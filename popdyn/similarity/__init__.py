"""Who resembles whom: distances between every pair of networks ([U] §2.3, SPEC §4), one file per metric.

Each metric is a :class:`MetricSpec` in :data:`REGISTRY`, registered by its own module of this package
(``svcca.py``, ``cka.py``, ``dsa.py``, ``topology.py``, …), which this file imports
automatically: adding a metric is adding one file (or, from outside popdyn, calling :func:`register`).
A metric is one of three kinds:

- ``"states"``: from the probe states ``X`` (S × N) of each network.  ``prepare`` turns ONE network's
  states into a pytree of arrays (:func:`prepare` does every enabled metric at once, vmapped over a group
  by ``popdyn.analysis``); :func:`stack` pads and concatenates prepared networks of any width; ``score``
  gives the similarity of every network of one block with every network of another, run over the whole
  population in blocks by :func:`all_pairs` (``_pairs.blocked``, memory bounded by the block size), or
  ``pairs`` replaces that pass; ``distance`` maps similarity to distance (default 1 − similarity).
- ``"pairwise"``: a fallback computed pair by pair outside JAX from whole probe trajectories
  ``[trials, T, D]`` (DSA through an optional package).
- ``"fixed_points"``: from the run's fixed-point analysis (``store.load``'s Dataset) rather than states
  (topology); it may compare only some networks (``<name>_compared``).

A metric's own settings are a frozen dataclass, ``MetricSpec.options``: each of its fields is a key of the
config section ``similarity`` (``similarity.keep_variance``, ``similarity.dsa_delays``), beside the shared
keys of :class:`SimilarityOptions`; ``options.of("svcca")`` gives that metric's instance.  A states
metric's ``outputs`` adds per-network arrays of its own to ``similarity.npz`` (SVCCA: ``k``).

A metric's ``rank`` orders every listing (``names()``, the ``similarity.npz`` keys, figures, statistics).
The statistics of metric i draw their permutations from the seed ``[seed, i, j]``: the metrics popdyn
had first keep their ranks (svcca 0, cka 1, dsa 2, topology 3), so their numbers never move when a
metric is added after them; a spec registered without a rank comes after every ranked one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, fields
from typing import Any

import numpy as np

from popdyn import cells
from popdyn._members import import_members

KINDS = ("states", "pairwise", "fixed_points")


def one_minus(similarity: np.ndarray) -> np.ndarray:
    """``d = 1 − s``: the distance of a similarity in [0, 1]."""
    return 1.0 - similarity


@dataclass(frozen=True)
class MetricSpec:
    """One distance between networks: how to compute it, and how figures name it."""

    name: str  # config value, similarity.npz key, CSV column / xarray coordinate ("<name>_distance")
    short: str  # short name in titles and legends ("SVCCA")
    label: str  # axis and colour-bar label ("SVCCA distance (1 − mean canonical correlation)")
    color: str  # its colour in every figure
    kind: str = "states"  # "states", "pairwise" or "fixed_points" (module docstring)
    # states: one network's states [S, N] and the options → a pytree of arrays (jit- and vmap-able)
    prepare: Callable[[Any, Any], Any] | None = None
    # states: (stacked block a, stacked block b) → similarity [A, B] (jit-able); used by _pairs.blocked
    score: Callable[[Any, Any], Any] | None = None
    # states: (stacked population, block, progress, **options) → similarity [P, P] (upper triangle
    # needed), replacing the default blocked pass over `score`
    pairs: Callable[..., np.ndarray] | None = None
    distance: Callable[[np.ndarray], np.ndarray] = one_minus  # states: similarity → distance
    compact: Callable[[Any], Any] | None = None  # states: cut a stacked population's unused padding
    # pairwise: (list of trajectories [trials, T, D], options, seed) → distances [P, P]
    pairwise: Callable[..., np.ndarray] | None = None
    # fixed_points: (store.load Dataset, options) → (distances [P, P] between trained members, [P] compared)
    fixed_points: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    applies: Callable[[str, Any], bool] | None = None  # fixed_points: (task name, Dataset) → defined here?
    enabled: Callable[[Any], bool] | None = None  # options → computed? (default: name in options.metrics)
    default: bool = True  # in similarity.metrics when the config does not list them
    missing: Callable[[], str | None] | None = None  # a message when it cannot run here (a package absent)
    # its own settings: a frozen dataclass whose fields are keys of the config section `similarity`
    options: type | None = None
    # states: the stacked prepared population → extra per-network arrays of similarity.npz ({"k": ...})
    outputs: Callable[[Any], dict[str, Any]] | None = None
    rank: float = math.inf  # position in every listing (module docstring)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"metric {self.name!r}: kind {self.kind!r} is unknown; allowed: {', '.join(KINDS)}"
            )
        need = {"states": ("prepare",), "pairwise": ("pairwise",), "fixed_points": ("fixed_points",)}
        for f in need[self.kind]:
            if getattr(self, f) is None:
                raise ValueError(f"metric {self.name!r} of kind {self.kind!r} needs {f}")
        if self.kind == "states" and self.score is None and self.pairs is None:
            raise ValueError(f"metric {self.name!r} needs score (a block of pairs) or pairs")

    def on(self, options) -> bool:
        """Whether ``options`` (:class:`SimilarityOptions`) ask for this metric."""
        return self.enabled(options) if self.enabled is not None else self.name in options.metrics


REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add a metric (kept in ``rank`` order, ties in registration order); a name taken twice is an error,
    and so is an option field that another metric or :class:`SimilarityOptions` already names."""
    if spec.name in REGISTRY:
        raise ValueError(f"similarity metric {spec.name!r} is registered twice")
    taken = option_fields()
    for f in fields(spec.options) if spec.options is not None else ():
        if f.name in taken:
            owner = taken[f.name][0] or "SimilarityOptions"
            raise ValueError(f"metric {spec.name!r}: option similarity.{f.name} is already {owner}'s")
    items = sorted([*REGISTRY.items(), (spec.name, spec)], key=lambda kv: kv[1].rank)  # stable
    REGISTRY.clear()
    REGISTRY.update(items)
    return spec


def option_fields() -> dict[str, tuple[str | None, Field]]:
    """Every key of the config section ``similarity``: ``{key: (metric name, or None for a shared
    setting, its dataclass field)}``."""
    out: dict[str, tuple[str | None, Field]] = {
        f.name: (None, f) for f in fields(SimilarityOptions) if f.name != "own"
    }
    for name, spec in REGISTRY.items():
        for f in fields(spec.options) if spec.options is not None else ():
            out[f.name] = (name, f)
    return out


def unregister(name: str) -> None:
    """Remove a metric (tests registering a toy metric clean up with this)."""
    REGISTRY.pop(name, None)


def get(name: str) -> MetricSpec:
    """The metric called ``name``; a ValueError naming the allowed ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown similarity metric {name!r}; allowed: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered metric names in rank order (only those of ``kind`` if given)."""
    return tuple(n for n, s in REGISTRY.items() if kind is None or s.kind == kind)


def enabled(options, kind: str | None = None) -> tuple[str, ...]:
    """The metrics ``options`` ask for, in rank order."""
    return tuple(n for n in names(kind) if REGISTRY[n].on(options))


@dataclass(frozen=True, init=False)
class SimilarityOptions:
    """Settings of the similarity analysis; config section ``similarity`` uses the same names.

    The shared settings are the fields below; every registered metric's own (``MetricSpec.options``) are
    given by their field names too, ``SimilarityOptions(samples=256, keep_variance=0.9)``, and read with
    :meth:`of`.  A metric registered after these options were made gets its defaults."""

    samples: int = 512  # probe states compared: a seeded subset of rows shared by every network (0: all)
    block: int = 64  # networks per block of the all-pairs passes (memory ∝ block² · components²)
    # archs whose members get an untrained twin ([U] Fig. 4); None: the cells that declare one (CellSpec.twin)
    untrained: tuple[str, ...] | None = None
    mds_iter: int = 300  # SMACOF iterations of the MDS embeddings
    permutations: int = 999  # PERMANOVA: label permutations for each p-value (0: no p-value)
    bootstrap: int = 200  # resamples of the seeds for the confidence intervals (0: none)
    # the distances computed (registered names); None: every metric whose spec is on by default
    metrics: tuple[str, ...] | None = None
    # (metric name, its options) for every registered metric that declares options
    own: tuple[tuple[str, Any], ...] = ()

    def __init__(self, **settings: Any):
        keys = option_fields()
        # own: metric options already made (dataclasses.replace passes them back)
        given: dict[str, dict[str, Any]] = {n: asdict(o) for n, o in settings.pop("own", ())}
        unknown = sorted(set(settings) - set(keys))
        if unknown:
            raise ValueError(f"unknown similarity setting {unknown[0]!r}; allowed: {', '.join(keys)}")
        for f in fields(self):
            if f.name != "own":
                object.__setattr__(self, f.name, settings.get(f.name, f.default))
        for k, v in settings.items():
            if keys[k][0] is not None:
                given.setdefault(keys[k][0], {})[k] = v
        own = tuple((n, s.options(**given.get(n, {}))) for n, s in REGISTRY.items() if s.options is not None)
        object.__setattr__(self, "own", own)
        self.__post_init__()

    def __post_init__(self):
        if self.untrained is None:
            object.__setattr__(self, "untrained", cells.twins())
        if self.metrics is None:
            object.__setattr__(self, "metrics", tuple(n for n, s in REGISTRY.items() if s.default))
        for m in self.metrics:
            if m not in REGISTRY:
                raise ValueError(f"unknown similarity.metrics {m!r}; allowed: {', '.join(REGISTRY)}")
        for k in ("samples", "block", "mds_iter", "permutations", "bootstrap"):
            v = getattr(self, k)
            if v < 0 if k in ("samples", "permutations", "bootstrap") else v <= 0:
                allowed = {"samples": "≥ 0 (0: all)", "permutations": "≥ 0", "bootstrap": "≥ 0"}.get(k, "> 0")
                raise ValueError(f"similarity.{k} = {v!r} is impossible; it must be {allowed}")

    def of(self, metric: str) -> Any:
        """The options of ``metric`` (its ``MetricSpec.options`` instance; defaults if not given)."""
        for name, options in self.own:
            if name == metric:
                return options
        spec = get(metric)
        if spec.options is None:
            raise ValueError(f"similarity metric {metric!r} declares no options")
        return spec.options()

    def settings(self) -> dict[str, Any]:
        """Every setting by its config key, as plain values (``similarity.yaml``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "own"}
        out |= {"untrained": list(self.untrained), "metrics": list(self.metrics)}
        for name, spec in REGISTRY.items():
            if spec.options is not None:
                out |= asdict(self.of(name))
        return out


from popdyn.similarity._pairs import all_pairs, prepare, stack, take  # noqa: E402  (they read REGISTRY)

__all__ = ["KINDS", "REGISTRY", "MetricSpec", "SimilarityOptions", "all_pairs", "enabled", "get", "names",
           "one_minus", "option_fields", "prepare", "register", "stack", "take", "unregister"]  # fmt: skip


def _import_members() -> None:
    """Import every public module of the package (sorted; each registers its metric) and re-export what
    it lists in ``__all__`` (a function named like its module, e.g. ``svcca``, takes the module's place
    as a package attribute; the module stays importable by its dotted name)."""
    for module in import_members(__name__, __path__):
        for n in getattr(module, "__all__", ()):
            globals()[n] = getattr(module, n)
            __all__.append(n)


_import_members()
