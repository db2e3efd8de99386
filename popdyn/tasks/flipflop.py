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
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn.tasks import Task, TaskSpec, register


class FlipFlop(TaskSpec):
    names = ("flipflop",)
    defaults = {
        "flipflop": {"K": 3, "T": 100, "p": 0.05, "initial_pulse": True, "n_probe": 64, "probe_seed": 0}
    }
    topology_distances = True
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
    u = jax.random.uniform(key, (batch, T, K), dtype=jnp.float32)
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


register(FlipFlop())
