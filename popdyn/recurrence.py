"""The time loop of a cell with a hand-arranged backward pass (``jax.custom_vjp``), laid out for XLA's CPU.

Autodiff of a ``lax.scan`` accumulates every weight gradient inside the reversed loop: each of the T steps
does a small ``h_{t-1}ᵀ · δ_t`` matmul and carries the [N, G·N] sum to the next step.  On a CPU that made the
backward pass of an lstm 6× its forward (benchmarks/README.md).  Here the reversed loop computes only what
must be sequential — the state cotangent ``δh_{t-1}`` and the pre-activation cotangents ``δa_t`` — and the
kernel gradients are matmuls over all steps and batch columns afterwards.

A step reads its input and bias through the same matmul as its state: ``a = Kᵀ z`` with ``z = [h; x; 1]``
and ``K = [W; U; b]`` (recurrent, input and bias parameters stacked), so the loop needs no projected input
sequence and ``δK = Σ_t z_t δa_tᵀ`` gives the recurrent, input and bias gradients together.

Every cell is split into its matmuls, its nonlinearities ``acts = φ(a)`` (each N-wide gate block a sigmoid
or the cell's activation) and an element-wise combination ``C``:

- vanilla, ugrnn, lstm: ``a = Kᵀ [h; x; 1]``, ``state' = C(state, φ(a))``;
- gru: ``(a_r, a_g) = K_rgᵀ [h; x; 1]``, ``a_c = K_cᵀ [σ(a_r) ⊙ h; x; 1]``, ``h' = C(h, φ(a))``.

The forward loop saves ``acts`` rather than ``a``: σ, tanh and relu have derivatives that are functions of
their outputs (``σ(1−σ)``, ``1−tanh²``, ``[y > 0]``), so the backward loop evaluates no transcendental of
the gates again.  ``C`` is differentiated by ``jax.vjp`` (no derivative of it is written by hand).

Layout (each choice measured, benchmarks/README.md).  Inside the loops every array is transposed —
states [N, batch], gate blocks [N, batch] — and the gate blocks are separate arrays, saved as separate
[T, N, batch] stacks.  XLA's CPU code for an element-wise fusion that reads part of a scanned-over array (a
``dynamic-slice`` followed by a ``slice``) is not vectorised: the lstm's backward step spent 33 µs in one
[64, 64] tanh that takes 5 µs when its operand is a whole array.  The kernel gradients are 2-D matmuls
``[rows, T·batch] @ [T·batch, N]``, one per gate block, because XLA lowers a contraction over two axes
(``einsum("tkb,tjb->kj")``) to transposes and a matmul at a third of that speed.

Reverse mode only: use ``Model(grad="autodiff")`` where forward-mode derivatives of the unrolled states are
needed (``jax.jacfwd``); the one-step map ``Model.step`` is plain JAX either way.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from popdyn.cells import _ACT

sigmoid = jax.nn.sigmoid

# the derivative of each nonlinearity as a function of its output y
_DERIV = {
    "sigmoid": lambda y: y * (1.0 - y),
    "tanh": lambda y: 1.0 - y * y,
    "relu": lambda y: (y > 0).astype(y.dtype),
}
_FN = {"sigmoid": sigmoid, **_ACT}


def _blocks(arch: str, activation: str) -> tuple[str, ...]:
    """The nonlinearity of each N-row block of the pre-activations (gru: r, g, then the candidate)."""
    return {
        "vanilla": (activation,),
        "ugrnn": (activation, "sigmoid"),
        "gru": ("sigmoid", "sigmoid", activation),
        "lstm": ("sigmoid", "sigmoid", "sigmoid", activation),
    }[arch]


def _combine(arch: str, activation: str):
    """``C(state, acts) -> state'`` of one cell; state: h, or (h, c) for lstm, [N, batch] each; ``acts``
    the tuple of activated blocks."""
    f = _ACT[activation]
    if arch == "vanilla":
        return lambda h, acts: acts[0]
    if arch == "ugrnn":

        def ugrnn(h, acts):
            c, g = acts
            return g * h + (1.0 - g) * c

        return ugrnn
    if arch == "gru":

        def gru(h, acts):  # r acts through the candidate's input only
            _, g, c = acts
            return g * h + (1.0 - g) * c

        return gru

    def lstm(hc, acts):
        i, fg, o, cand = acts
        c_new = fg * hc[1] + i * cand
        return o * f(c_new), c_new

    return lstm


def _hidden(arch: str, state):
    return state[0] if arch == "lstm" else state


def _z(h: Array, x: Array) -> Array:
    """``[h; x; 1]`` (rows): the columns that a stacked kernel ``[W; U; b]ᵀ`` multiplies."""
    return jnp.concatenate([h, x, jnp.ones((1,) + h.shape[1:], h.dtype)])


def _forward_step(arch: str, activation: str, kernels_t, state, x_t):
    """One step on transposed arrays ([units, batch]); returns ``(state', acts_t)``."""
    h = _hidden(arch, state)
    names = _blocks(arch, activation)
    if arch == "gru":
        k_rg, k_c = kernels_t
        r, g = jnp.split(sigmoid(k_rg @ _z(h, x_t)), 2)
        acts = (r, g, _FN[activation](k_c @ _z(r * h, x_t)))
    else:
        a = jnp.split(kernels_t @ _z(h, x_t), len(names))
        acts = tuple(_FN[name](a_i) for name, a_i in zip(names, a))
    return _combine(arch, activation)(state, acts), acts


def recurrence(
    arch: str,
    activation: str,
    unroll: int,
    kernels,
    x: Float[Array, "batch time n_in"],
    state0,
    mask: Float[Array, "batch time"] | None = None,
):
    """All states ``[batch, time, units]`` (lstm: a pair ``(h, c)``) from ``state0`` ([batch, units]) and
    the inputs ``x``; ``kernels`` is the stacked kernel ``[W; U; b]`` (gru: ``(K_rg, K_c)``, gates r, g
    and the candidate).  With a 0/1 ``mask``, ``state_t = mask_t · F(state_{t−1}, x_t)``: left padding
    (mask 0 before a document's first token) holds ``h0 = 0`` until the document starts.  The loops run
    on transposed arrays (module docstring)."""
    mask_t = None if mask is None else jnp.transpose(mask)[:, None, :].astype(x.dtype)  # [time, 1, batch]
    states = _recurrence_t(
        arch,
        activation,
        unroll,
        kernels,
        jnp.transpose(x, (1, 2, 0)),
        jax.tree.map(jnp.transpose, state0),
        mask_t,
    )
    return jax.tree.map(lambda s: jnp.transpose(s, (2, 0, 1)), states)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence_t(arch, activation, unroll, kernels, x_t: Float[Array, "time n_in batch"], state0, mask):
    """``recurrence`` on transposed arrays: states ``[time, units, batch]``."""
    return _forward(arch, activation, unroll, kernels, x_t, state0, mask)[0]


def _forward(arch, activation, unroll, kernels, x, state0, mask):
    kernels_t = jax.tree.map(jnp.transpose, kernels)

    def body(state, inputs):
        x_t, m_t = inputs
        state, acts = _forward_step(arch, activation, kernels_t, state, x_t)
        if m_t is not None:
            state = jax.tree.map(lambda s: s * m_t, state)
        return state, (state, acts)

    _, (states, acts) = jax.lax.scan(body, state0, (x, mask), unroll=unroll)
    return states, (kernels, x, states, acts, state0, mask)


def _backward(arch, activation, unroll, residuals, g_states):
    kernels, x, states, acts, state0, mask = residuals
    # state_{t-1} for every t: state0 then all but the last state
    prev = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)
    n = _hidden(arch, state0).shape[0]
    combine = _combine(arch, activation)
    names = _blocks(arch, activation)
    # the recurrent rows of each kernel, one [N, N] block per gate: δh = Σ_i W_i δa_i
    w = jax.tree.map(lambda k: jnp.split(k[:n], k.shape[1] // n, axis=1), kernels)

    def body(g_next, inputs):
        g_out, s_prev, acts_t, m_t = inputs
        g = jax.tree.map(jnp.add, g_next, g_out)  # total cotangent of state_t
        if m_t is not None:  # state_t = m_t · C(...)
            g = jax.tree.map(lambda a: a * m_t, g)
        ds, d_acts = jax.vjp(combine, s_prev, acts_t)[1](g)
        da = [d * _DERIV[name](y) for name, d, y in zip(names, d_acts, acts_t)]
        if arch == "gru":
            (w_r, w_g), (w_c,) = w
            h_prev, r = s_prev, acts_t[0]
            drh = w_c @ da[2]  # the candidate reads σ(a_r) ⊙ h
            da[0] = drh * h_prev * _DERIV["sigmoid"](r)
            return ds + drh * r + w_r @ da[0] + w_g @ da[1], tuple(da)
        dh = sum(w_i @ da_i for w_i, da_i in zip(w, da))
        return ((ds[0] + dh, ds[1]) if arch == "lstm" else ds + dh), tuple(da)

    g0, da = jax.lax.scan(
        body, jax.tree.map(jnp.zeros_like, state0), (g_states, prev, acts, mask), reverse=True, unroll=unroll
    )

    def rows(a):  # [time, rows, batch] -> [rows, time·batch]
        return jnp.transpose(a, (1, 0, 2)).reshape(a.shape[1], -1)

    def grads(h, k, da):
        """The kernel's cotangent ``δK = Σ_t z_t δa_tᵀ`` — per gate block one matmul over every step and
        batch column — and the inputs' ``δx_t = U δa_t``."""
        z = rows(jnp.concatenate([h, x, jnp.ones_like(x[:, :1])], axis=1))
        dk = jnp.concatenate([z @ rows(da_i).T for da_i in da], axis=1)
        return dk, jnp.einsum("mj,tjb->tmb", k[n : n + x.shape[1]], jnp.concatenate(da, axis=1))

    h_prev = _hidden(arch, prev)
    if arch == "gru":
        dk_rg, dx_rg = grads(h_prev, kernels[0], da[:2])
        dk_c, dx_c = grads(acts[0] * h_prev, kernels[1], da[2:])
        return (dk_rg, dk_c), dx_rg + dx_c, g0, None if mask is None else jnp.zeros_like(mask)
    dk, dx = grads(h_prev, kernels, da)
    return dk, dx, g0, None if mask is None else jnp.zeros_like(mask)


_recurrence_t.defvjp(_forward, _backward)
