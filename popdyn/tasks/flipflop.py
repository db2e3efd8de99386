"""[U] §3.1 the K-bit flip-flop (Sussillo & Barak 2013): K channels of ±1 pulses; output each channel's
last pulse, ``y_t = x_s`` with ``s = max{s ≤ t : x_s ≠ 0}``.

Inputs ``[batch, T, K]``, targets ``[batch, T, K]``, MSE at every step. A channel pulses with probability
``p`` per step, the sign ±1 equally likely; with ``initial_pulse`` every channel also pulses at t = 0, so
targets are ±1 from the first step (2^K memory states; without it 3^K, target 0 before a first pulse).
Probes: the trials ``sample(key(probe_seed), n_probe)``; fixed points at x* = 0 (one condition).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn._random import flat
from popdyn.tasks import Task, TaskSpec, register


class FlipFlop(TaskSpec):
    names = ("flipflop",)
    defaults = {
        "flipflop": {"K": 3, "T": 100, "p": 0.05, "initial_pulse": True, "n_probe": 64, "probe_seed": 0}
    }
    topology_dims = {"transition": ("fixed_point", "fixed_point_to")}
    state_style = "bits"

    def build(self, name, values):
        return values["K"], values["K"], values["T"]

    def sample(self, task: Task, key, batch, data=None):
        p = dict(task.params)
        return _sample(task.T, p["K"], p["p"], key, batch, p["initial_pulse"])

    @staticmethod
    def topology(model, task, params, fps, topo, key):
        """[U] Fig. 1e: which stable state each unstable point's unstable manifold leads to (per pair)."""
        from popdyn.analyses.dynamics import transitions

        fp0 = jax.tree.map(lambda a: a[0], fps)
        return {"transition": transitions(model.step, params["cell"], fp0, task.x_star[0], key, topo)}

    @staticmethod
    def topology_graph(ds, rule, ok):
        """grouped: :func:`grouped_transitions`; modal: [U] §3.1's transition matrices over the points
        ordered by readout, networks without the modal fixed-point count set aside."""
        if rule == "grouped":
            flat, _ = grouped_transitions(
                ds.fp_readout.values[:, 0], ds.fp_valid.values[:, 0], ds.transition.values
            )
            return flat, ok
        ok = ok & ds.topology_ok.values
        counts = ds.n_fixed_points.values[:, 0]
        n = int(np.median(counts[ok])) if ok.any() else 0
        return ds.transition.values[:, :n, :n].reshape(len(ok), -1), ok


# Compiled once per (task settings, batch): eager callers (probes, baselines, notebooks) would otherwise
# dispatch and compile every small op one by one; inside an outer jit or vmap it simply inlines. Only the
# settings that shape the trials are static, so changing n_probe or probe_seed does not recompile.
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4, 5))
def _sample(
    T: int, K: int, p: float, key: PRNGKeyArray, batch: int, initial_pulse: bool
) -> tuple[Array, Array]:
    inputs = _flipflop_inputs(key, batch, T, K, p, initial_pulse)
    return inputs, _flipflop_target(inputs)


def _flipflop_inputs(
    key: PRNGKeyArray, batch: int, T: int, K: int, p: float, initial_pulse: bool = True
) -> Float[Array, "b t k"]:
    """Pulses of ±1 on each channel with probability p per step; with ``initial_pulse`` every channel
    also pulses at t = 0 with a random sign (Sussillo & Barak 2013; FixedPointFinder's ``FlipFlopData``),
    so that every target is ±1 from the first step."""
    # One uniform draw gives both events: u < p is a pulse, and its sign is −1 for u < p/2, else +1 —
    # each with probability p/2, independent across channels and steps. One draw, not two, because
    # compiling threefry dominates the cost of sampling. At t = 0 with initial_pulse the same draw's
    # sign alone is used: −1 for u < 1/2.
    u = flat(jax.random.uniform, key, (batch, T, K), dtype=jnp.float32)  # popdyn._random
    x = jnp.where(u < p, jnp.where(u < 0.5 * p, -1.0, 1.0), 0.0)
    if initial_pulse:
        x = x.at[:, 0].set(jnp.where(u[:, 0] < 0.5, -1.0, 1.0))
    return x.astype(jnp.float32)


def _flipflop_target(inputs: Float[Array, "b t k"]) -> Float[Array, "b t k"]:
    """y_t = x_s with s = max{s ≤ t : x_s ≠ 0}, else 0 — [U] §3.1.

    The running max of "step index where a pulse happened" is the index of the last pulse; no scan needed.
    """
    steps = jnp.arange(inputs.shape[1])[None, :, None]
    last = jax.lax.cummax(jnp.where(inputs != 0, steps, -1), axis=1)
    held = jnp.take_along_axis(inputs, jnp.maximum(last, 0), axis=1)
    return jnp.where(last >= 0, held, 0.0).astype(inputs.dtype)


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


register(FlipFlop())
