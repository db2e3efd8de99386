"""The time loop of a cell with a hand-arranged backward pass (``jax.custom_vjp``).

Autodiff of a ``lax.scan`` accumulates every weight gradient inside the reversed loop: each of the T steps
does a small ``h_{t-1}ᵀ · δ_t`` matmul and carries the [N, G·N] sum to the next step.  On a CPU that made the
backward pass of an lstm 6× its forward (benchmarks/README.md).  Here the reversed loop computes only what
must be sequential — the state cotangent ``δh_{t-1}`` and the pre-activation cotangents ``δa_t`` — and the
weight gradient is ONE matmul over all steps and batch rows afterwards, ``Σ_t h_{t-1}ᵀ δa_t``.

Every cell is split into its matmuls and an element-wise map ``E``:

- vanilla, ugrnn, lstm: ``a = h W + x̂``, ``state' = E(state, a)``;
- gru: ``a_rg = h W_rg + x̂_rg``, ``a_c = (σ(a_r) ⊙ h) W_c + x̂_c``, ``h' = E(h, [a_rg, a_c])``;

(``x̂ = x U + b``, projected before the loop).  The forward loop saves the pre-activations ``a`` (what
autodiff would save too); the backward loop differentiates only ``E`` (by ``jax.vjp``, so no derivative is
written by hand) and multiplies by ``Wᵀ``.  Reverse mode only: use ``Model(grad="autodiff")`` where
forward-mode derivatives of the unrolled states are needed (``jax.jacfwd``); the one-step map ``Model.step``
is plain JAX either way.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from popdyn.cells import _ACT

sigmoid = jax.nn.sigmoid


def _elementwise(arch: str, activation: str, units: int):
    """``E(state, a) -> state'`` of one cell (state: h, or (h, c) for lstm).

    Gate blocks are taken apart with ``jnp.split``, whose transpose is a concatenation; slicing would
    transpose to a zero-padded full-width array per block (measured 1.5× slower backward for lstm)."""
    f = _ACT[activation]
    if arch == "vanilla":
        return lambda h, a: f(a)
    if arch == "ugrnn":

        def ugrnn(h, a):
            a_c, a_g = jnp.split(a, 2, axis=-1)
            g = sigmoid(a_g)
            return g * h + (1.0 - g) * f(a_c)

        return ugrnn
    if arch == "gru":

        def gru(h, a):  # a = (a_rg, a_c); a_r acts through the candidate's input only
            a_rg, a_c = a
            g = sigmoid(jnp.split(a_rg, 2, axis=-1)[1])
            return g * h + (1.0 - g) * f(a_c)

        return gru

    def lstm(hc, a):
        _, c = hc
        a_ifo, a_c = jnp.split(a, [3 * units], axis=-1)
        i, fg, o = jnp.split(sigmoid(a_ifo), 3, axis=-1)
        c_new = fg * c + i * f(a_c)
        return o * f(c_new), c_new

    return lstm


def _hidden(arch: str, state):
    return state[0] if arch == "lstm" else state


def _forward_step(arch: str, activation: str, weights, state, xp_t):
    """One step; returns ``(state', a_t)``."""
    h = _hidden(arch, state)
    if arch == "gru":
        w_rg, w_c = weights
        xp_rg, xp_c = xp_t
        a_rg = h @ w_rg + xp_rg
        a_c = (sigmoid(jnp.split(a_rg, 2, axis=-1)[0]) * h) @ w_c + xp_c
        a = (a_rg, a_c)
    else:
        a = h @ weights + xp_t
    return _elementwise(arch, activation, h.shape[-1])(state, a), a


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def recurrence(
    arch: str, activation: str, unroll: int, weights, xp: Float[Array, "time batch gates"], state0
):
    """All states ``state_1 … state_T`` (time-major; lstm: a pair ``(h, c)``) from ``state0`` and the
    projected inputs ``xp``; ``weights`` is the recurrent kernel (gru: ``(recurrent, candidate)``)."""
    xp = _split_inputs(arch, xp)

    def body(state, xp_t):
        state = _forward_step(arch, activation, weights, state, xp_t)[0]
        return state, state

    return jax.lax.scan(body, state0, xp, unroll=unroll)[1]


def _split_inputs(arch: str, xp):
    """gru: the projected input as (gates r, g | candidate), split once before the loop."""
    return tuple(jnp.split(xp, [xp.shape[-1] * 2 // 3], axis=-1)) if arch == "gru" else xp


def _forward(arch, activation, unroll, weights, xp, state0):
    xp = _split_inputs(arch, xp)

    def body(state, xp_t):
        state, a = _forward_step(arch, activation, weights, state, xp_t)
        return state, (state, a)

    _, (states, a) = jax.lax.scan(body, state0, xp, unroll=unroll)
    return states, (weights, states, a, state0)


def _backward(arch, activation, unroll, residuals, g_states):
    weights, states, a, state0 = residuals
    # state_{t-1} for every t: state0 then all but the last state
    prev = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)
    n = _hidden(arch, state0).shape[-1]
    elementwise = _elementwise(arch, activation, n)

    def body(g_next, inputs):
        g_out, s_prev, a_t = inputs
        g = jax.tree.map(jnp.add, g_next, g_out)  # total cotangent of state_t
        ds, da = jax.vjp(elementwise, s_prev, a_t)[1](g)
        h_prev = _hidden(arch, s_prev)
        if arch == "gru":
            w_rg, w_c = weights
            (_, da_g), da_c = jnp.split(da[0], 2, axis=-1), da[1]
            # the candidate reads σ(a_r) ⊙ h
            drh = da_c @ w_c.T
            r = sigmoid(jnp.split(a_t[0], 2, axis=-1)[0])
            da_rg = jnp.concatenate([drh * h_prev * r * (1.0 - r), da_g], axis=-1)
            ds = ds + drh * r + da_rg @ w_rg.T
            da = (da_rg, da_c)
        elif arch == "lstm":
            ds = (ds[0] + da @ weights.T, ds[1])
        else:
            ds = ds + da @ weights.T
        return ds, da

    g0, da = jax.lax.scan(
        body, jax.tree.map(jnp.zeros_like, state0), (g_states, prev, a), reverse=True, unroll=unroll
    )
    h_prev = _hidden(arch, prev)

    def outer(x, y):  # Σ_t Σ_b x_tbᵀ y_tb: one matmul over every step and batch row
        return jnp.einsum("tbi,tbj->ij", x, y)

    if arch == "gru":
        (da_rg, da_c), r = da, sigmoid(jnp.split(a[0], 2, axis=-1)[0])
        return (outer(h_prev, da_rg), outer(r * h_prev, da_c)), jnp.concatenate(da, axis=-1), g0
    return outer(h_prev, da), da, g0


recurrence.defvjp(_forward, _backward)
