"""Recurrent cells of [U] App. A / [A] eqs. 8–10 as Flax modules and pure one-step maps.

Every cell is a map on its full dynamical state, ``F(state, x) -> state'``:

- vanilla: ``h' = f(W h + U x + b)``
- ugrnn:   ``c = f(Wc h + Uc x + bc)``, ``g = σ(Wg h + Ug x + bg)``, ``h' = g⊙h + (1−g)⊙c``
- gru:     ``r, g = σ(·)``, ``c = f(Wc (r⊙h) + Uc x + bc)``, ``h' = g⊙h + (1−g)⊙c``
- lstm:    ``i, fg, o = σ(·)``, ``c' = fg⊙c + i⊙f(Wc h + Uc x + bc)``, ``h' = o⊙f(c')``;
  the state is ``[h; c]`` (size 2N) so that fixed points and Jacobians see all of it.

``f`` is the cell's activation (relu or tanh); gates are always sigmoids.

Layout. Kernels are stored as Flax stores them, ``inputs @ kernel`` (the transpose of the ``W h`` in the
equations), and the gates of one cell are fused into one kernel so that a step is one or two matmuls:

=========  ======================  =========================  ==================
arch       ``recurrent``           ``input`` / ``bias``       column blocks
=========  ======================  =========================  ==================
vanilla    [N, N]                  [M, N] / [N]               h
ugrnn      [N, 2N]                 [M, 2N] / [2N]             c, g
gru        [N, 2N] + ``candidate`` [M, 3N] / [3N]             r, g | c
lstm       [N, 4N]                 [M, 4N] / [4N]             i, fg, o, c
=========  ======================  =========================  ==================

(gru's ``candidate`` [N, N] is ``Wc``, applied to ``r⊙h``.)  A step is split into ``project`` (the input
part ``x U + b``, which does not depend on the state, so a whole sequence is projected in one matmul before
the time loop) and ``recur`` (the state-dependent part inside the loop); ``step = recur ∘ project``.

Initialisation: input kernels LeCun-normal, recurrent kernels orthogonal per gate block, biases zero except
the LSTM forget gate (+1, Gers et al. 2000) — the usual defaults of gated-RNN libraries.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

ARCHS = ("vanilla", "ugrnn", "gru", "lstm")
ACTIVATIONS = ("relu", "tanh")

_BLOCKS = {"vanilla": 1, "ugrnn": 2, "gru": 3, "lstm": 4}
_ACT: dict[str, Callable[[Array], Array]] = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def _orthogonal_blocks(blocks: int):
    """Orthogonal init for each [N, N] block of a fused [N, blocks·N] recurrent kernel."""

    def init(key, shape, dtype=jnp.float32):
        n = shape[0]
        keys = jax.random.split(key, blocks)
        return jnp.concatenate([nn.initializers.orthogonal()(k, (n, n), dtype) for k in keys], axis=1)

    return init


class Cell(nn.Module):
    """One recurrent cell; ``__call__(state, x) -> state'`` is the one-step map ``F``.

    ``units`` is N; the state has ``state_size`` = N (2N for lstm).
    """

    arch: str
    activation: str
    units: int
    n_in: int

    @property
    def state_size(self) -> int:
        return 2 * self.units if self.arch == "lstm" else self.units

    @property
    def blocks(self) -> int:
        return _BLOCKS[self.arch]

    def setup(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; allowed: {', '.join(ARCHS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        n, g = self.units, self.blocks
        recurrent_blocks = 2 if self.arch == "gru" else g
        self.recurrent = self.param(
            "recurrent", _orthogonal_blocks(recurrent_blocks), (n, recurrent_blocks * n)
        )
        if self.arch == "gru":
            self.candidate = self.param("candidate", _orthogonal_blocks(1), (n, n))
        self.input_kernel = self.param("input", nn.initializers.lecun_normal(), (self.n_in, g * n))
        bias_init = nn.initializers.zeros
        if self.arch == "lstm":
            # forget-gate bias +1 so that memory is kept at initialisation
            def bias_init(key, shape, dtype=jnp.float32):
                return jnp.zeros(shape, dtype).at[n : 2 * n].set(1.0)

        self.bias = self.param("bias", bias_init, (g * n,))

    def project(self, x: Float[Array, "... n_in"]) -> Float[Array, "... blocks_units"]:
        """Input part of every gate, ``x U + b`` (state-independent)."""
        return x @ self.input_kernel + self.bias

    def recur(
        self, state: Float[Array, "... state"], xp: Float[Array, "... blocks_units"]
    ) -> Float[Array, "... state"]:
        """State part of the step, given the projected input ``xp = project(x)``."""
        n, f = self.units, _ACT[self.activation]
        if self.arch == "vanilla":
            return f(state @ self.recurrent + xp)
        if self.arch == "ugrnn":
            pre = state @ self.recurrent + xp
            c, g = f(pre[..., :n]), jax.nn.sigmoid(pre[..., n:])
            return g * state + (1.0 - g) * c
        if self.arch == "gru":
            rg = jax.nn.sigmoid(state @ self.recurrent + xp[..., : 2 * n])
            r, g = rg[..., :n], rg[..., n:]
            c = f((r * state) @ self.candidate + xp[..., 2 * n :])
            return g * state + (1.0 - g) * c
        return jnp.concatenate(self.recur_lstm((state[..., :n], state[..., n:]), xp), axis=-1)

    def recur_lstm(
        self, hc: tuple[Array, Array], xp: Float[Array, "... blocks_units"]
    ) -> tuple[Array, Array]:
        """The lstm step on ``(h, c)`` kept apart: the time loop carries the pair, not ``[h; c]``, so that
        no step concatenates or slices the state."""
        n, f = self.units, _ACT[self.activation]
        h, c = hc
        pre = h @ self.recurrent + xp
        gates = jax.nn.sigmoid(pre[..., : 3 * n])
        i, fg, o = gates[..., :n], gates[..., n : 2 * n], gates[..., 2 * n :]
        c_new = fg * c + i * f(pre[..., 3 * n :])
        return o * f(c_new), c_new

    def __call__(
        self, state: Float[Array, "... state"], x: Float[Array, "... n_in"]
    ) -> Float[Array, "... state"]:
        return self.recur(state, self.project(x))

    def hidden(self, state: Float[Array, "... state"]) -> Float[Array, "... units"]:
        """The part of the state the readout sees (h; for lstm the first N of ``[h; c]``)."""
        return state[..., : self.units]


def make_cell(arch: str, activation: str, units: int, n_in: int) -> Cell:
    """A ``Cell`` for inputs of size ``n_in``; raises ``ValueError`` naming a bad arch or activation."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if int(units) < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}")
    return Cell(arch=arch, activation=activation, units=int(units), n_in=int(n_in))
