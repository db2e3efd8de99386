"""Delayed discrimination (Romo et al. 1999; PsychRNN's ``DelayedDiscrimination``, Huang et al. 2025):
compare two scalar stimuli separated by a delay, ``y = sign(f1 − f2)`` after a go cue.

One trial, t = 0 … T−1, with ``s = STIMULUS`` (10) and a delay ``D`` uniform on
``min_delay … max_delay`` (integers, default 20 … 50):

- input 0 (stimulus): ``f1`` for ``t ∈ [0, s)``, ``f2`` for ``t ∈ [s + D, 2s + D)``, else 0;
- input 1 (go cue): 1 for the response period ``t ∈ [2s + D, 2s + D + RESPONSE)`` (RESPONSE = 10), else 0;
- target: ``+1`` if ``f1 > f2``, ``−1`` otherwise, during the response period; 0 before and after.

After the response the trial is padding (no input, target 0) up to ``T ≥ 2s + max_delay + RESPONSE``
(80 with the defaults; default T = 100). MSE at every step. ``f1`` is uniform in [−1, 1] and ``f2`` is
uniform on the part of [−1, 1] at least ``gap`` (0.2) from ``f1`` — drawn there directly (a uniform
draw on the allowed length, mapped below or above the excluded band), so ``|f1 − f2| ≥ gap`` holds for
every trial with one draw each, no rejection loop. (The pair is exactly uniform on the allowed region
except for ``|f1| > 1 − gap``, where only one side of ``f1`` is left.)

Probes: every ordered pair ``(f1, f2)`` of ``linspace(−1, 1, n_probe)`` with ``|f1 − f2| ≥ gap``, f1-major,
each with the longest delay ``max_delay`` (``[n_pairs, T, 2]``). Fixed points are sought at zero input,
x* = 0 (one condition): the delay period, where a trained network holds f1 on a line attractor.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn.tasks import Task, TaskError, TaskSpec, integer, register

STIMULUS = 10  # steps of each stimulus
RESPONSE = 10  # steps of the go cue and the response


class Discrimination(TaskSpec):
    names = ("discrimination",)
    defaults = {
        "discrimination": {
            "T": 100,
            "min_delay": 20,
            "max_delay": 50,
            "gap": 0.2,
            "n_probe": 8,
            "probe_seed": 0,
        }
    }

    def build(self, name, values):
        lo = integer(name, "min_delay", values["min_delay"], 1)
        hi = integer(name, "max_delay", values["max_delay"], lo)
        gap = values["gap"]
        if isinstance(gap, bool) or not isinstance(gap, numbers.Real) or not 0.0 <= gap < 2.0:
            raise TaskError(f"{name}: gap must be a number in [0, 2), got {gap!r}")
        values["gap"] = float(gap)
        longest = 2 * STIMULUS + hi + RESPONSE
        if values["T"] < longest:
            raise TaskError(f"{name}: T must be at least {longest} (the longest trial), got {values['T']}")
        return 2, 1, values["T"]

    def sample(self, task: Task, key, batch, data=None):
        p = dict(task.params)
        return _sample(task.T, p["min_delay"], p["max_delay"], p["gap"], key, batch)

    def probes(self, task: Task):
        f1, f2 = probe_pairs(task.param("n_probe"), task.param("gap"))
        delay = np.full(f1.shape, task.param("max_delay"), np.int32)
        return _jit_trials(jnp.asarray(f1), jnp.asarray(f2), jnp.asarray(delay), task.T)

    def probe_condition(self, task: Task):
        return np.zeros(len(probe_pairs(task.param("n_probe"), task.param("gap"))[0]), np.int32)


def probe_pairs(n: int, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """The probe grid: ``(f1, f2)`` of ``linspace(−1, 1, n)``², f1-major, pairs with ``|f1 − f2| ≥ gap``."""
    f = np.linspace(-1.0, 1.0, n).astype(np.float32)
    f1, f2 = (a.ravel() for a in np.meshgrid(f, f, indexing="ij"))
    keep = np.abs(f1 - f2) >= np.float32(gap) - 1e-6
    return f1[keep], f2[keep]


def sample_pair(key: PRNGKeyArray, batch: int, gap: float) -> tuple[Float[Array, " b"], Float[Array, " b"]]:
    """``f1 ~ U[−1, 1]``; ``f2`` uniform on ``[−1, f1 − gap] ∪ [f1 + gap, 1]`` (lengths ``a``, ``b``):
    ``u ~ U[0, a + b)``, ``f2 = −1 + u`` if ``u < a`` else ``f1 + gap + (u − a)``."""
    k1, k2 = jax.random.split(key)
    f1 = jax.random.uniform(k1, (batch,), jnp.float32, -1.0, 1.0)
    below = jnp.maximum(f1 - gap + 1.0, 0.0)
    above = jnp.maximum(1.0 - f1 - gap, 0.0)
    u = jax.random.uniform(k2, (batch,), jnp.float32) * (below + above)
    f2 = jnp.where(u < below, -1.0 + u, f1 + gap + (u - below))
    # float32 rounding may leave f2 a hair inside the band or outside [−1, 1]: clip back onto the set
    f2 = jnp.where(f2 < f1, jnp.minimum(f2, f1 - gap), jnp.maximum(f2, f1 + gap))
    return f1, jnp.clip(f2, -1.0, 1.0)


def trials(
    f1: Float[Array, " b"], f2: Float[Array, " b"], delay: Array, T: int
) -> tuple[Float[Array, "b T 2"], Float[Array, "b T 1"]]:
    """Inputs ``[b, T, 2]`` (stimulus, go cue) and targets ``[b, T, 1]`` of trials (module docstring)."""
    t = jnp.arange(T)[None, :]
    s2 = STIMULUS + delay[:, None]  # second stimulus onset
    go = s2 + STIMULUS  # go cue and response onset
    first = t < STIMULUS
    second = (t >= s2) & (t < go)
    response = (t >= go) & (t < go + RESPONSE)
    stimulus = jnp.where(first, f1[:, None], 0.0) + jnp.where(second, f2[:, None], 0.0)
    inputs = jnp.stack([stimulus, response.astype(jnp.float32)], axis=-1).astype(jnp.float32)
    sign = jnp.where(f1 > f2, 1.0, -1.0)[:, None]
    return inputs, jnp.where(response, sign, 0.0)[..., None].astype(jnp.float32)


_jit_trials = jax.jit(trials, static_argnums=3)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 5))
def _sample(T: int, min_delay: int, max_delay: int, gap: float, key: PRNGKeyArray, batch: int):
    k_pair, k_delay = jax.random.split(key)
    f1, f2 = sample_pair(k_pair, batch, gap)
    delay = jax.random.randint(k_delay, (batch,), min_delay, max_delay + 1)
    return trials(f1, f2, delay, T)


register(Discrimination())
