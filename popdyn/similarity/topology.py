"""Topology distances ([U] §3.1–3.3, SPEC §4): Euclidean distances between each network's fixed-point
graph from ``popdyn.analyses.dynamics``, ``d(a, b) = ‖g_a − g_b‖`` over the entries both graphs define.

Defined for every network whatever its number of fixed points (``similarity.topology=grouped``):
flip-flop transition probabilities between memory states — the stable points grouped by the corner
their readout encodes, the saddles by the corners they separate
(``popdyn.tasks.flipflop.grouped_transitions``) —, sine condition graphs and CDI nearest-neighbour graphs
compared on the entries both networks have.
``similarity.topology=modal`` is [U] §3.1's rule instead: transition matrices of the points ordered by
readout, networks with a non-modal fixed-point count set aside.  Computed from the run's fixed points,
not from states (kind ``"fixed_points"``); each task's graph is its spec's ``topology_graph``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from popdyn.similarity import MetricSpec, register
from popdyn.tasks import spec_of

__all__ = [
    "TOPOLOGY_RULES",
    "TopologyDistanceOptions",
    "partial_distances",
    "topology_distances",
    "topology_graphs",
]

log = logging.getLogger("popdyn")
TOPOLOGY_RULES = ("grouped", "modal")  # topology_graphs: every network, or [U]'s modal-count rule


@dataclass(frozen=True)
class TopologyDistanceOptions:
    """The topology distance's setting (config key ``similarity.topology``)."""

    topology: str = "grouped"  # every network ("grouped") or [U]'s modal-count rule ("modal")

    def __post_init__(self):
        if self.topology not in TOPOLOGY_RULES:
            raise ValueError(
                f"similarity.topology = {self.topology!r} is unknown; allowed: {', '.join(TOPOLOGY_RULES)}"
            )


def topology_graphs(ds, rule: str = "grouped") -> tuple[np.ndarray, np.ndarray]:
    """Each trained network's fixed-point graph as a flat vector (NaN entries: not defined for that
    network), and which networks are compared.

    The graph is the task's (``TaskSpec.topology_graph``).  ``rule="grouped"`` (popdyn's default)
    compares every trained network (``status``: neither diverged nor exploded) that has a fixed point:
    flip-flop: ``popdyn.tasks.flipflop.grouped_transitions``; sine: the per-condition graph of normalised
    distances between the input-dependent fixed points, NaN where a condition has no oscillatory point
    (pairs compare the entries both networks have, :func:`partial_distances`); cdi: every context's
    nearest-neighbour graph resampled to a fixed size (0 where a context has fewer than 2 points).
    ``rule="modal"`` is [U] §3.1's: flip-flop transition matrices over the points ordered by readout,
    networks whose count differs from the modal count set aside; sine networks with a condition
    missing and cdi networks with fewer than 2 points in a context set aside; and every network with an
    undefined entry."""
    if rule not in TOPOLOGY_RULES:
        raise ValueError(f"unknown topology rule {rule!r}; allowed: {', '.join(TOPOLOGY_RULES)}")
    task = ds.attrs["task"]
    graph = getattr(spec_of(task), "topology_graph", None)
    if graph is None:
        raise ValueError(f"no topology distance for task {task!r}")
    # trained networks (store.member_status: neither diverged nor exploded) with a fixed point
    trained = ds.status.values == "trained" if "status" in ds else ~ds.diverged.values
    ok = trained & (ds.n_fixed_points.values.sum(axis=1) > 0)
    flat, ok = graph(ds, rule, ok)
    flat = np.asarray(flat, np.float64)
    if rule == "modal":
        ok &= np.isfinite(flat).all(axis=1)
    return flat, ok


def partial_distances(flat: Float[np.ndarray, "P E"]) -> Float[np.ndarray, "P P"]:
    """Euclidean distances over the entries both vectors define, rescaled to the full length:
    ``d(a, b)² = (E / E_ab) Σ_{e: both finite} (a_e − b_e)²`` (the plain Euclidean distance when nothing
    is missing; NaN for pairs with no entry in common)."""
    m = np.isfinite(flat).astype(np.float64)
    a = np.where(m > 0, flat, 0.0)
    sq = (a**2) @ m.T + m @ (a**2).T - 2 * a @ a.T
    common = m @ m.T
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.sqrt(np.maximum(sq, 0.0) * flat.shape[1] / common)
    d[common == 0] = np.nan
    np.fill_diagonal(d, 0.0)
    return d


def topology_distances(ds, rule: str = "grouped") -> tuple[np.ndarray, np.ndarray]:
    """``([P, P] distances between the networks' graphs, [P] compared)``; NaN rows where not compared."""
    flat, ok = topology_graphs(ds, rule)
    d = np.full((len(ok), len(ok)), np.nan, np.float32)
    if ok.any():
        d[np.ix_(ok, ok)] = partial_distances(flat[ok])
    return d, ok


def _log_set_aside(ds, compared: np.ndarray, rule: str) -> None:
    """Count and name the networks the topology distance could not compare, and why."""
    healthy = ds.status.values == "trained"  # store.TRAINED: neither diverged nor exploded
    log.info("topology (%s): %d of %d trained (neither diverged nor exploded) networks compared", rule, int((compared & healthy).sum()),
             int(healthy.sum()))  # fmt: skip
    left = healthy & ~compared
    if left.any():
        none = left & (ds.n_fixed_points.values.sum(axis=1) == 0)
        names = ", ".join(f"{m} ({g})" for m, g in zip(ds.member.values[left], ds.group.values[left]))
        log.warning(
            "topology: %d trained networks not compared (%d without any fixed point%s): %s",
            int(left.sum()), int(none.sum()),
            "; the others have a fixed-point count other than the modal one" if rule == "modal" else "", names,
        )  # fmt: skip


def _distances(ds, options) -> tuple[np.ndarray, np.ndarray]:
    rule = options.of("topology").topology
    d, compared = topology_distances(ds, rule)
    _log_set_aside(ds, compared, rule)
    return d, compared


register(MetricSpec(
    name="topology", short="topology", label="fixed-point topology distance (Euclidean)", color="#EE6677",
    kind="fixed_points", fixed_points=_distances,
    applies=lambda task, ds: "n_fixed_points" in ds and getattr(spec_of(task), "topology_graph", None) is not None,
    options=TopologyDistanceOptions, rank=3,
))  # fmt: skip
