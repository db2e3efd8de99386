"""[U] §3.2 the sine wave generator: a constant input x ∈ [0, 1] commands the frequency of the output
``y_t = sin(2π ω t)``, ``ω = 0.04 x + 0.01`` cycles per step, t = 0 … T−1.

Inputs ``[batch, T, 1]`` (x uniform in [0, 1]), targets ``[batch, T, 1]``, MSE at every step. Probes:
``x = linspace(0, 1, n_probe)`` (ends included), constant in time; one condition per probe, x* = its x.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from popdyn.tasks import Task, TaskSpec, register

# ω = SINE_SLOPE · x + SINE_OFFSET cycles per step.
SINE_SLOPE = 0.04
SINE_OFFSET = 0.01


class Sine(TaskSpec):
    names = ("sine",)
    defaults = {"sine": {"T": 500, "n_probe": 16, "probe_seed": 0}}
    topology_dims = {
        "sine_frequency": ("condition",),
        "sine_modulus": ("condition",),
        "sine_graph": ("condition", "condition_to"),
    }
    state_style = "frequency"
    figures = ("sine_eigenvalues",)

    def build(self, name, values):
        return 1, 1, values["T"]

    def sample(self, task: Task, key, batch, data=None):
        return _sample(task.T, key, batch)

    def probes(self, task: Task):
        return _probe(task)

    @staticmethod
    def topology_graph(ds, rule, ok):
        """The per-condition graph; grouped: networks with any oscillatory point, modal: with all."""
        flat = ds.sine_graph.values.reshape(len(ok), -1)
        defined = np.isfinite(flat).any(axis=1) if rule == "grouped" else np.isfinite(flat).all(axis=1)
        return flat, ok & defined

    def probe_condition(self, task: Task):
        return np.arange(task.param("n_probe"), dtype=np.int32)

    def x_star(self, task: Task):
        return np.linspace(0.0, 1.0, task.param("n_probe"), dtype=np.float32)[:, None]

    @staticmethod
    def condition_coords(task: Task) -> dict[str, np.ndarray]:
        """The command frequency ω of each condition (cycles per step)."""
        x = np.asarray(task.x_star)[:, 0]
        return {"omega": SINE_SLOPE * x + SINE_OFFSET}

    @staticmethod
    def topology(model, task, params, fps, topo, key):
        """[U] Fig. 2: each condition's oscillation (frequency, modulus of the point's leading complex
        pair) and the distances between conditions' points, scaled to [0, 1]."""
        from popdyn.analyses.dynamics import _oscillation

        states = model.states(params, task.probe_inputs)  # probe i is condition i
        start = int(topo.burn_in * states.shape[1])
        centre = jnp.mean(states[:, start:], axis=1)
        freq, modulus, point, ok = jax.vmap(_oscillation)(fps, centre)
        dist = jnp.linalg.norm(point[:, None] - point[None], axis=-1)
        both = ok[:, None] & ok[None]
        scale = jnp.max(jnp.where(both, dist, 0.0))
        return dict(
            sine_frequency=freq,
            sine_modulus=modulus,
            sine_graph=jnp.where(both, dist / jnp.maximum(scale, 1e-12), jnp.nan),
        )


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample(T: int, key, batch: int) -> tuple[Array, Array]:
    x = jax.random.uniform(key, (batch,), dtype=jnp.float32)
    return _sine_inputs(x, T), _sine_target(x, T)


@functools.partial(jax.jit, static_argnums=0)
def _probe(task: Task) -> tuple[Array, Array]:
    """The noise-free probes; jitted for the reason ``_sample`` is (flipflop.py)."""
    x = jnp.linspace(0.0, 1.0, task.param("n_probe"), dtype=jnp.float32)
    return _sine_inputs(x, task.T), _sine_target(x, task.T)


def _sine_inputs(x: Float[Array, " b"], T: int) -> Float[Array, "b t 1"]:
    return jnp.broadcast_to(x[:, None, None], (x.shape[0], T, 1)).astype(jnp.float32)


def _sine_target(x: Float[Array, " b"], T: int) -> Float[Array, "b t 1"]:
    """y_t = sin(2π ω t), ω = 0.04 x + 0.01 cycles per step, t = 0..T−1 — [U] §3.2."""
    omega = SINE_SLOPE * x + SINE_OFFSET
    t = jnp.arange(T, dtype=jnp.float32)
    # Reduce the phase to one cycle before the 2π multiply: keeps float32 error independent of T.
    cycles = jnp.mod(omega[:, None] * t[None, :], 1.0)
    return jnp.sin(2.0 * jnp.pi * cycles)[..., None].astype(jnp.float32)


register(Sine())
