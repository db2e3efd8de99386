"""[R] §5.1 (Ribeiro et al. 2020) sine generation, the task ``sinegen``: a constant input ω (rad/step)
commands the output ``y_t = sin(ω (t+1))``, t = 0 … T−1.

The set is ``n_sequences`` sequences with ω evenly spaced in [π/16, π/8] (ends included); a batch draws
sequences of the set with replacement. Inputs and targets ``[batch, T, 1]``, MSE at every step. Probes:
``n_probe`` frequencies evenly spaced over the same interval, one condition each, x* = its ω.
:func:`sine_generation` is the dataset as [R] defines it (grid or random ω).  Pure JAX.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn.tasks import Task, TaskSpec, bounded_int, positive_int, register

SPACINGS = ("grid", "random")


class SineGeneration(TaskSpec):
    names = ("sinegen",)
    defaults = {"sinegen": {"T": 400, "n_sequences": 100, "n_probe": 16, "probe_seed": 0}}

    def build(self, name, values):
        values["n_sequences"] = positive_int(name, "n_sequences", values["n_sequences"])
        return 1, 1, values["T"]

    def sample(self, task: Task, key, batch, data=None):  # a batch of the set's sequences, with replacement
        pick = jax.random.randint(key, (batch,), 0, task.param("n_sequences"))
        omega = jnp.asarray(_sinegen_omegas(task.param("n_sequences")))[pick]
        return _sinegen_trials(omega, task.T)

    def probes(self, task: Task):
        return _probe(task)

    def probe_condition(self, task: Task):
        return np.arange(task.param("n_probe"), dtype=np.int32)

    def x_star(self, task: Task):
        return _sinegen_omegas(task.param("n_probe"))[:, None]


@functools.partial(jax.jit, static_argnums=0)
def _probe(task: Task) -> tuple[Array, Array]:
    """``n_probe`` frequencies of the interval; jitted for the reason flipflop's ``_sample`` is."""
    return _sinegen_trials(jnp.asarray(_sinegen_omegas(task.param("n_probe"))), task.T)


def _sinegen_omegas(n: int) -> np.ndarray:
    """[R] §5.1's angular frequencies: ``n`` evenly spaced in [π/16, π/8] rad/step, ends included (host
    NumPy: constants, also when read inside a trace)."""
    return np.linspace(np.pi / 16, np.pi / 8, n).astype(np.float32)


def _sinegen_trials(omega: Float[Array, " b"], T: int) -> tuple[Array, Array]:
    """Input ``x_t = ω`` (constant), target ``sin(ω (t+1))`` ([R] §5.1): the one definition of the trials."""
    steps = jnp.arange(1, T + 1, dtype=jnp.float32)
    inputs = jnp.broadcast_to(omega[:, None, None], (omega.shape[0], T, 1))
    return inputs, jnp.sin(omega[:, None] * steps)[..., None]


def sine_generation(
    key: PRNGKeyArray,
    n_sequences: int = 100,
    length: int = 400,
    omega_min: float = math.pi / 16,
    omega_max: float = math.pi / 8,
    spacing: str = "grid",
) -> tuple[Float[Array, "n time 1"], Float[Array, "n time 1"]]:
    """[R] §5.1: input ``x_t = ω`` (constant), target ``y_t = sin(ω (t+1))``, t = 0 … length−1.

    ω is the angular frequency in radians per step, ``ω ∈ [omega_min, omega_max]`` ([R]: [π/16, π/8], 100
    sequences of length 400). The network receives ω itself as its one input — "the input is a constant
    [that specifies] the frequency" — as in [R]'s code, where Fig. 4's constant input 0.218 is such an ω.
    The phase after t+1 steps (``cumsum`` of the input in [R]'s code), so ``y_0 = sin ω``.

    ``spacing="grid"``: ω evenly spaced over the interval, ends included (``linspace``, [R]'s code; "uniformly
    picked" in the text; ``key`` unused); ``"random"``: ω i.i.d. uniform on the interval, from ``key``.
    Returns ``(inputs, targets)``, both ``[n_sequences, length, 1]`` float32.
    """
    where = "sine_generation"
    n_sequences = bounded_int(where, "n_sequences", n_sequences, 1)
    length = bounded_int(where, "length", length, 1)
    for name, value in (("omega_min", omega_min), ("omega_max", omega_max)):
        # ω > π aliases to a lower frequency; the `not` form also rejects NaN
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value <= math.pi:
            raise ValueError(f"{where}: {name} must be a frequency in (0, π] rad/step, got {value!r}")
    if omega_min > omega_max:
        raise ValueError(
            f"{where}: omega_min must be ≤ omega_max, got omega_min={omega_min!r} > omega_max={omega_max!r}"
        )
    if spacing not in SPACINGS:
        raise ValueError(f"{where}: unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    return _sine(key, n_sequences, length, float(omega_min), float(omega_max), spacing)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _sine(key, n: int, length: int, lo: float, hi: float, spacing: str):
    if spacing == "grid":
        omega = jnp.linspace(lo, hi, n, dtype=jnp.float32)
    else:
        omega = jax.random.uniform(key, (n,), jnp.float32, lo, hi)
    return _sinegen_trials(omega, length)


register(SineGeneration())
