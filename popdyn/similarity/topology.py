"""Topology distances ([U] §3.1–3.3, SPEC §4): Euclidean distances between each network's fixed-point
graph from ``popdyn.analyses.dynamics``, ``d(a, b) = ‖g_a − g_b‖`` over the entries both graphs define.

Defined for every network whatever its number of fixed points (``similarity.topology=grouped``):
flip-flop transition probabilities between memory states — the stable points grouped by the corner
their readout encodes, the saddles by the corners they separate (:func:`grouped_transitions`) —, sine
condition graphs and CDI nearest-neighbour graphs compared on the entries both networks have.
``similarity.topology=modal`` is [U] §3.1's rule instead: transition matrices of the points ordered by
readout, networks with a non-modal fixed-point count set aside.  Computed from the run's fixed points,
not from states (kind ``"fixed_points"``); the task-specific graphs stay here for now.
"""

from __future__ import annotations

import logging

import numpy as np
from jaxtyping import Float

from popdyn.similarity import TOPOLOGY_RULES, MetricSpec, register
from popdyn.tasks import spec_of

__all__ = [
    "grouped_transitions",
    "partial_distances",
    "readout_groups",
    "topology_distances",
    "topology_graphs",
]

log = logging.getLogger("popdyn")
TASKS = ("flipflop", "sine", "cdi")  # [U]'s tasks: the ones with a topology graph


def readout_groups(readout: Float[np.ndarray, "... n_out"]) -> np.ndarray:
    """Each point's memory state as a base-3 integer: every output rounded to the nearest of −1, 0, +1
    (``|y| < ½ → 0``), digit k = level + 1 of output k.  Stable flip-flop points read out at the
    corners {−1, +1}^K; the saddles between two corners read 0 on the channel they separate."""
    y = np.asarray(readout, np.float64)
    digits = np.where(np.abs(y) < 0.5, 1, np.where(y > 0, 2, 0))
    return np.sum(digits * 3 ** np.arange(y.shape[-1]), axis=-1).astype(np.int64)


def grouped_transitions(readout, valid, transition) -> tuple[np.ndarray, np.ndarray]:
    """Flip-flop topology for every network, whatever its number of fixed points: the transition
    probabilities between memory states (:func:`readout_groups`) instead of between points.

    ``T[a, b] = (1/|a|) Σ_{i ∈ a} Σ_{j ∈ b} P[i, j]``: for the valid points i of group a, the mean
    probability that a run started near i ends at a stable point of group b (``P`` of
    ``popdyn.analyses.dynamics.transitions``).  A network that has [U]'s ideal set — one stable point per corner,
    saddles between them — gives [U]'s transition matrix with its points labelled by memory state; an
    extra stable point beside a corner joins that corner's group and changes nothing (its runs stay in
    the group), while a missing corner empties a diagonal entry and reroutes the saddles next to it.
    Groups are the union over the population of the groups any network occupies (others are 0 for all).

    ``readout`` [P, K, n_out], ``valid`` [P, K], ``transition`` [P, K, K] → (``[P, G·G]`` flattened T,
    ``[G]`` group codes)."""
    valid = np.asarray(valid, bool)
    codes = np.where(valid, readout_groups(np.nan_to_num(readout)), -1)
    groups = np.unique(codes[valid])
    idx = np.searchsorted(groups, np.where(valid, codes, groups[0] if len(groups) else 0))
    g = len(groups)
    onehot = (idx[..., None] == np.arange(g)) & valid[..., None]  # [P, K, G]
    p = np.where(valid[:, :, None] & valid[:, None, :], np.nan_to_num(transition), 0.0)
    into = np.einsum("pij,pjb->pib", p, onehot)  # [P, K, G]: from point i into group b
    size = onehot.sum(axis=1)  # [P, G]
    t = np.einsum("pia,pib->pab", onehot, into) / np.maximum(size, 1)[:, :, None]
    return t.reshape(len(t), g * g), groups


def topology_graphs(ds, rule: str = "grouped") -> tuple[np.ndarray, np.ndarray]:
    """Each trained network's fixed-point graph as a flat vector (NaN entries: not defined for that
    network), and which networks are compared.

    ``rule="grouped"`` (popdyn's default) compares every trained network (``status``: neither diverged
    nor exploded) that has a fixed point:
    flip-flop: :func:`grouped_transitions`; sine: the per-condition graph of normalised distances between
    the input-dependent fixed points, NaN where a condition has no oscillatory point (pairs compare the
    entries both networks have, :func:`partial_distances`); cdi: every context's nearest-neighbour graph
    resampled to a fixed size (0 where a context has fewer than 2 points).
    ``rule="modal"`` is [U] §3.1's: flip-flop transition matrices over the points ordered by readout,
    networks whose count differs from the modal count set aside; sine networks with a condition
    missing and cdi networks with fewer than 2 points in a context set aside."""
    if rule not in TOPOLOGY_RULES:
        raise ValueError(f"unknown topology rule {rule!r}; allowed: {', '.join(TOPOLOGY_RULES)}")
    task = ds.attrs["task"]
    # trained networks (store.member_status: neither diverged nor exploded) with a fixed point
    trained = ds.status.values == "trained" if "status" in ds else ~ds.diverged.values
    ok = trained & (ds.n_fixed_points.values.sum(axis=1) > 0)
    if task == "flipflop" and rule == "grouped":
        flat, _ = grouped_transitions(
            ds.fp_readout.values[:, 0], ds.fp_valid.values[:, 0], ds.transition.values
        )
    elif task == "flipflop":
        ok &= ds.topology_ok.values
        counts = ds.n_fixed_points.values[:, 0]
        n = int(np.median(counts[ok])) if ok.any() else 0
        flat = ds.transition.values[:, :n, :n].reshape(len(ok), -1)
    elif task == "sine":
        flat = ds.sine_graph.values.reshape(len(ok), -1)
        ok &= np.isfinite(flat).any(axis=1) if rule == "grouped" else np.isfinite(flat).all(axis=1)
    elif task == "cdi":
        flat = ds.cdi_graph.values.reshape(len(ok), -1)
        if rule == "modal":
            ok &= (ds.n_fixed_points.values >= 2).all(axis=1)
    else:
        raise ValueError(f"no topology distance for task {task!r}")
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
    d, compared = topology_distances(ds, options.topology)
    _log_set_aside(ds, compared, options.topology)
    return d, compared


register(MetricSpec(
    name="topology", short="topology", label="fixed-point topology distance (Euclidean)", color="#EE6677",
    kind="fixed_points", fixed_points=_distances,
    applies=lambda task, ds: "n_fixed_points" in ds and getattr(spec_of(task), "topology_distances", False),
    options=("topology",), rank=3,
))  # fmt: skip
