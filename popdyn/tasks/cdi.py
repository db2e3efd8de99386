"""[U] §3.3 context-dependent integration (Mante et al. 2013): a one-hot context picks which of K noisy
streams to integrate, ``y_t = Σ_{s≤t} x_{k,s}`` for the cued stream k.

Inputs ``[batch, T, 2K]`` (K context channels, then K streams ``μ_k + N(0, 1)``, ``μ_k`` uniform in
[−1, 1]), targets ``[batch, T, 1]``, MSE at every step. Probes, context-major: for context k and
``μ in linspace(-1, 1, n_probe)``, context k on, stream k held at the noise-free constant μ, the others 0
→ ``[K·n_probe, T, 2K]`` ([U] Fig. 3a); fixed points per context at one-hot context, zero streams.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn._random import flat
from popdyn.tasks import Task, TaskSpec, register


class ContextIntegration(TaskSpec):
    names = ("cdi",)
    defaults = {"cdi": {"K": 2, "T": 30, "n_probe": 8, "probe_seed": 0}}
    topology_dims = {
        "cdi_graph": ("condition", "node", "node_to"),
        "cdi_spectrum": ("condition", "mode"),
        "cdi_response": ("condition", "mode"),
    }
    state_style = "context"
    vectors = True  # mode_overlap, linear_response

    def build(self, name, values):
        return 2 * values["K"], 1, values["T"]

    def sample(self, task: Task, key, batch, data=None):
        return _sample(task.T, task.param("K"), key, batch)

    @staticmethod
    def topology_graph(ds, rule, ok):
        """Every context's nearest-neighbour graph; modal: networks with 2 points in every context."""
        if rule == "modal":
            ok = ok & (ds.n_fixed_points.values >= 2).all(axis=1)
        return ds.cdi_graph.values.reshape(len(ok), -1), ok

    def probes(self, task: Task):
        return _probe(task)

    def probe_condition(self, task: Task):
        return np.repeat(np.arange(task.param("K"), dtype=np.int32), task.param("n_probe"))

    def x_star(self, task: Task):
        k = task.param("K")
        return np.concatenate([np.eye(k, dtype=np.float32), np.zeros((k, k), np.float32)], axis=1)

    @staticmethod
    def topology(model, task, params, fps, topo, key):
        """[U] Fig. 3: each context's nearest-neighbour graph of its points, mean |λ| spectrum and the
        readout's linear response along the attractor."""
        from popdyn.analyses.dynamics import _nn_graph, linear_response

        out = {}
        n_ctx = task.x_star.shape[0]
        out["cdi_graph"] = jax.vmap(functools.partial(_nn_graph, size=topo.graph_size))(fps.states, fps.valid)
        mod = jnp.where(fps.valid[..., None], jnp.abs(fps.eigenvalues), jnp.nan)
        out["cdi_spectrum"] = jnp.nanmean(mod, axis=1)
        kernel = params["readout"]["kernel"]
        resp = jnp.stack(
            [
                linear_response(jax.tree.map(lambda a, c=c: a[c], fps), kernel, n_ctx + c, task.T)
                for c in range(n_ctx)
            ]
        )
        # median over the attractor's points: one point with |λ| = 1.18 off the attractor gives 1.18^T
        # and would swamp a mean (seen on a tiny run)
        out["cdi_response"] = jnp.nanmedian(resp, axis=1)
        return out


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _sample(T: int, K: int, key: PRNGKeyArray, batch: int) -> tuple[Array, Array]:
    inputs = _cdi_inputs(key, batch, T, K)
    return inputs, _cdi_target(inputs)


@functools.partial(jax.jit, static_argnums=0)
def _probe(task: Task) -> tuple[Array, Array]:
    """The noise-free probes (module docstring); jitted for the reason flipflop's ``_sample`` is."""
    n, T, k = task.param("n_probe"), task.T, task.param("K")
    context = jnp.repeat(jnp.arange(k), n)  # context-major
    mu = jnp.tile(jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32), k)
    eye = jnp.eye(k, dtype=jnp.float32)[context]  # [k·n, k]
    streams = jnp.broadcast_to((eye * mu[:, None])[:, None, :], (k * n, T, k))
    contexts = jnp.broadcast_to(eye[:, None, :], (k * n, T, k))
    inputs = jnp.concatenate([contexts, streams], axis=-1)
    return inputs, _cdi_target(inputs)


def _cdi_inputs(key: PRNGKeyArray, batch: int, T: int, K: int) -> Float[Array, "b t two_k"]:
    k_trial, k_noise = jax.random.split(key)
    # One uniform row per trial gives the cued context (first entry) and the K stream means μ_k.
    u = flat(jax.random.uniform, k_trial, (batch, K + 1), dtype=jnp.float32)  # popdyn._random
    context = jnp.minimum(jnp.floor(u[:, 0] * K).astype(jnp.int32), K - 1)
    mu = 2.0 * u[:, None, 1:] - 1.0
    streams = mu + flat(jax.random.normal, k_noise, (batch, T, K), dtype=jnp.float32)
    contexts = jnp.broadcast_to(jax.nn.one_hot(context, K, dtype=jnp.float32)[:, None, :], (batch, T, K))
    return jnp.concatenate([contexts, streams], axis=-1)


def _cdi_target(inputs: Float[Array, "b t two_k"]) -> Float[Array, "b t 1"]:
    """y_t = Σ_{s≤t} x_{k,s} for the cued stream k — [U] §3.3.

    Read from the inputs (context one-hot · streams) so probes and samples share one definition.
    """
    K = inputs.shape[-1] // 2
    cued = jnp.sum(inputs[..., :K] * inputs[..., K:], axis=-1)
    return jnp.cumsum(cued, axis=1)[..., None]


register(ContextIntegration())
