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

- one stacked kernel (:class:`Loop`; vanilla, ugrnn, lstm): ``a = Kᵀ [h; x; 1]``, ``state' = C(state, φ(a))``;
- a cell whose matmuls differ overrides :class:`Loop`'s steps (gru, ``popdyn/cells/gru.py``:
  ``(a_r, a_g) = K_rgᵀ [h; x; 1]``, ``a_c = K_cᵀ [σ(a_r) ⊙ h; x; 1]``, ``h' = C(h, φ(a))``).

A cell declares its loop in its :class:`~popdyn.cells.CellSpec` (``loop=``); this module knows no cell.

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

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def _z(h: Array, x: Array) -> Array:
    """``[h; x; 1]`` (rows): the columns that a stacked kernel ``[W; U; b]ᵀ`` multiplies."""
    return jnp.concatenate([h, x, jnp.ones((1,) + h.shape[1:], h.dtype)])


def _rows(a):
    """[time, rows, batch] -> [rows, time·batch]."""
    return jnp.transpose(a, (1, 0, 2)).reshape(a.shape[1], -1)


@dataclass(frozen=True)
class Loop:
    """A cell's hoisted time loop with one stacked kernel ``K = [W; U; b]``.

    ``blocks(activation) -> (Activation, ...)``: the nonlinearity of each N-row block of ``a = Kᵀ [h; x; 1]``
    (``popdyn.cells.Activation``: the function and its derivative as a function of its output);
    ``combine(activation) -> C(carry, acts) -> carry'``: the element-wise rest of the step; ``pair``: the
    carry is ``(h, c)`` (lstm), the first part being what the kernel reads.  Cells with other matmuls
    subclass it and override :meth:`kernels`, :meth:`forward_step`, :meth:`backward_step`, :meth:`grads`.
    Hashable (frozen, functions compare by identity): it is a static argument of the custom VJP.
    """

    blocks: Callable
    combine: Callable
    pair: bool = False

    def hidden(self, state):
        return state[0] if self.pair else state

    def kernels(self, w: dict):
        """The stacked kernel ``[W; U; b]`` of the cell's weights ``w``."""
        return jnp.concatenate([w["recurrent"], w["input"], w["bias"][None]])

    def forward_step(self, activation, kernels_t, state, x_t):
        """One step on transposed arrays ([units, batch]); returns ``(state', acts_t)``."""
        h = self.hidden(state)
        names = self.blocks(activation)
        a = jnp.split(kernels_t @ _z(h, x_t), len(names))
        acts = tuple(act.fn(a_i) for act, a_i in zip(names, a))
        return self.combine(activation)(state, acts), acts

    def backward_step(self, activation, w, g, s_prev, acts_t):
        """``(δstate_{t−1}, δa_t)`` from the total cotangent ``g`` of state_t; ``w``: the recurrent rows of
        the kernels, one [N, N] block per gate (``δh = Σ_i W_i δa_i``)."""
        ds, d_acts = jax.vjp(self.combine(activation), s_prev, acts_t)[1](g)
        da = [d * act.deriv(y) for act, d, y in zip(self.blocks(activation), d_acts, acts_t)]
        dh = sum(w_i @ da_i for w_i, da_i in zip(w, da))
        return ((ds[0] + dh, ds[1]) if self.pair else ds + dh), tuple(da)

    def grads(self, grads, kernels, h_prev, acts, da):
        """``(δK, δx)``; ``grads(h, k, da)``: the cotangents of one stacked kernel read by ``[h; x; 1]``."""
        return grads(h_prev, kernels, da)


def recurrence(
    loop: Loop,
    activation: str,
    unroll: int,
    kernels,
    x: Float[Array, "batch time n_in"],
    state0,
    mask: Float[Array, "batch time"] | None = None,
):
    """All states ``[batch, time, units]`` (a pair loop: ``(h, c)``) from ``state0`` ([batch, units]) and
    the inputs ``x``; ``kernels`` is ``loop.kernels(w)`` (the stacked kernel ``[W; U; b]``; gru: ``(K_rg,
    K_c)``, gates r, g and the candidate).  With a 0/1 ``mask``, ``state_t = mask_t · F(state_{t−1}, x_t)``:
    left padding (mask 0 before a document's first token) holds ``h0 = 0`` until the document starts.  The
    loops run on transposed arrays (module docstring)."""
    from popdyn.cells import activation as _activation

    mask_t = None if mask is None else jnp.transpose(mask)[:, None, :].astype(x.dtype)  # [time, 1, batch]
    states = _recurrence_t(
        loop,
        _activation(activation),
        unroll,
        kernels,
        jnp.transpose(x, (1, 2, 0)),
        jax.tree.map(jnp.transpose, state0),
        mask_t,
    )
    return jax.tree.map(lambda s: jnp.transpose(s, (2, 0, 1)), states)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence_t(loop, activation, unroll, kernels, x_t: Float[Array, "time n_in batch"], state0, mask):
    """``recurrence`` on transposed arrays: states ``[time, units, batch]``."""
    return _forward(loop, activation, unroll, kernels, x_t, state0, mask)[0]


def _forward(loop, activation, unroll, kernels, x, state0, mask):
    kernels_t = jax.tree.map(jnp.transpose, kernels)

    def body(state, inputs):
        x_t, m_t = inputs
        state, acts = loop.forward_step(activation, kernels_t, state, x_t)
        if m_t is not None:
            state = jax.tree.map(lambda s: s * m_t, state)
        return state, (state, acts)

    _, (states, acts) = jax.lax.scan(body, state0, (x, mask), unroll=unroll)
    return states, (kernels, x, states, acts, state0, mask)


def _backward(loop, activation, unroll, residuals, g_states):
    kernels, x, states, acts, state0, mask = residuals
    # state_{t-1} for every t: state0 then all but the last state
    prev = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)
    n = loop.hidden(state0).shape[0]
    # the recurrent rows of each kernel, one [N, N] block per gate: δh = Σ_i W_i δa_i
    w = jax.tree.map(lambda k: jnp.split(k[:n], k.shape[1] // n, axis=1), kernels)

    def body(g_next, inputs):
        g_out, s_prev, acts_t, m_t = inputs
        g = jax.tree.map(jnp.add, g_next, g_out)  # total cotangent of state_t
        if m_t is not None:  # state_t = m_t · C(...)
            g = jax.tree.map(lambda a: a * m_t, g)
        return loop.backward_step(activation, w, g, s_prev, acts_t)

    g0, da = jax.lax.scan(
        body, jax.tree.map(jnp.zeros_like, state0), (g_states, prev, acts, mask), reverse=True, unroll=unroll
    )

    def grads(h, k, da):
        """The kernel's cotangent ``δK = Σ_t z_t δa_tᵀ`` — per gate block one matmul over every step and
        batch column — and the inputs' ``δx_t = U δa_t``."""
        z = _rows(jnp.concatenate([h, x, jnp.ones_like(x[:, :1])], axis=1))
        dk = jnp.concatenate([z @ _rows(da_i).T for da_i in da], axis=1)
        return dk, jnp.einsum("mj,tjb->tmb", k[n : n + x.shape[1]], jnp.concatenate(da, axis=1))

    dk, dx = loop.grads(grads, kernels, loop.hidden(prev), acts, da)
    return dk, dx, g0, None if mask is None else jnp.zeros_like(mask)


_recurrence_t.defvjp(_forward, _backward)
