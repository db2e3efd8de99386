"""A cell plus a linear readout at every step, unrolled with ``lax.scan`` from ``h0 = 0`` ([U] §2.1).

``states_t = F(states_{t-1}, x_t)``, ``y_t = R h_t + d``.  Parameters are a plain dict
``{"cell": <cell params>, "readout": {"kernel": [N, n_out], "bias": [n_out]}}`` so that a population is the
same dict with a leading member axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from popdyn import fused
from popdyn.cells import Cell, base_arch, make_cell, project_contractive, recurrent_kernel
from popdyn.recurrence import recurrence

GRADS = ("hoisted", "autodiff")
KERNELS = ("auto", "xla")


@dataclass(frozen=True)
class Model:
    """One RNN architecture: ``arch`` × ``activation`` × ``units`` for a task with ``n_in`` → ``n_out``.

    Hashable, so it can close over jitted functions; all methods are pure functions of ``params``.
    """

    arch: str
    activation: str
    units: int
    n_in: int
    n_out: int
    unroll: int = 1
    grad: str = "hoisted"  # backward pass of the time loop: "hoisted" (popdyn.recurrence) or "autodiff"
    readout_bias: bool = True  # [A]'s classifiers read out without a bias
    vocab: int = 0  # > 0: inputs are token ids [batch, time], embedded into n_in dims ([A]'s natural data)
    # the lstm time loop with grad="hoisted": "auto" runs the fused CPU kernel (popdyn.fused) where it can
    # (lstm/slstm, float32, CPU backend, kernel built), else XLA's loop (popdyn.recurrence); "xla" always XLA's
    kernel: str = "auto"

    @classmethod
    def for_task(cls, arch: str, activation: str, units: int, task, unroll: int = 1) -> Model:
        """The model of one group for ``task``: its input and output sizes, a bias-free readout for
        classification."""
        return cls(
            arch, activation, units, task.n_in, task.n_out, unroll,
            readout_bias=not task.classification, vocab=task.vocab,
        )  # fmt: skip

    def __post_init__(self):
        if self.grad not in GRADS:
            raise ValueError(f"unknown grad {self.grad!r}; allowed: {', '.join(GRADS)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; allowed: {', '.join(KERNELS)}")

    @property
    def base(self) -> str:
        """The arch whose equations the cell computes (slstm: lstm, ornn: vanilla)."""
        return base_arch(self.arch)

    @cached_property
    def cell(self) -> Cell:
        return make_cell(self.arch, self.activation, self.units, self.n_in)

    @cached_property
    def _readout(self) -> nn.Dense:
        return nn.Dense(self.n_out, use_bias=self.readout_bias)

    @property
    def state_size(self) -> int:
        return self.cell.state_size

    @cached_property
    def _embed(self) -> nn.Embed:
        return nn.Embed(self.vocab, self.n_in)

    def init(self, key: Array) -> dict:
        """Fresh parameters for one network (and its embedding ``[vocab, n_in]`` when ``vocab`` > 0)."""
        k_cell, k_out, k_embed = jax.random.split(key, 3)
        state = jnp.zeros((self.state_size,))
        cell = self.cell.init(k_cell, state, jnp.zeros((self.n_in,)))["params"]
        readout = self._readout.init(k_out, jnp.zeros((self.units,)))["params"]
        params = {"cell": cell, "readout": readout}
        if self.vocab:
            params["embedding"] = self._embed.init(k_embed, jnp.zeros((1,), jnp.int32))["params"]
        return self.constrain(params)

    def constrain(self, params: dict) -> dict:
        """The parameters moved into the cell's admissible set, after every update: slstm's projection
        onto a contractive region ([R] §5, ``cells.project_contractive``); the others are unconstrained
        (ornn is orthogonal by construction)."""
        if self.arch != "slstm":
            return params
        return {**params, "cell": project_contractive(params["cell"])}

    def embed(self, params: dict, inputs: Array) -> tuple[Float[Array, "batch time n_in"], Array | None]:
        """The cell's inputs and the padding mask (``None`` without an embedding): token ids are looked
        up in ``params["embedding"]``, and id 0 (``<pad>``) is masked."""
        if not self.vocab:
            return inputs, None
        x = self._embed.apply({"params": params["embedding"]}, inputs)
        return x, (inputs != 0).astype(x.dtype)

    def step(
        self, cell_params: dict, state: Float[Array, " state"], x: Float[Array, " n_in"]
    ) -> Float[Array, " state"]:
        """The one-step map ``F(state, x)`` on the full state (lstm: ``[h; c]``); pure in ``cell_params``."""
        return self.cell.apply({"params": cell_params}, state, x)

    def states(
        self, params: dict, inputs: Float[Array, "batch time n_in"] | Int[Array, "batch time"]
    ) -> Float[Array, "batch time state"]:
        """Every state visited on ``inputs`` (token ids with an embedding; padded steps hold the state at
        ``h0 = 0``), from ``h0 = 0``."""
        cell_params = {"params": params["cell"]}
        h0 = jnp.zeros((inputs.shape[0], self.units), params["readout"]["kernel"].dtype)
        state0 = (h0, h0) if self.base == "lstm" else h0
        x, mask = self.embed(params, inputs)

        if self.grad == "hoisted":
            x = x.astype(h0.dtype)
            if self.kernel == "auto" and fused.usable(self.base, x.dtype):
                states = fused.lstm(self.kernels(params), x, state0, mask, self.activation)
            else:
                states = recurrence(
                    self.base, self.activation, self.unroll, self.kernels(params), x, state0, mask
                )
        else:
            # the input half of every gate does not depend on the state: one matmul for the whole sequence
            xp = jnp.swapaxes(self.cell.apply(cell_params, x, method=Cell.project), 0, 1)
            m = None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]
            states = jax.tree.map(
                partial(jnp.swapaxes, axis1=0, axis2=1), self._scan(cell_params, xp, state0, m)
            )
        return jnp.concatenate(states, axis=-1) if self.base == "lstm" else states

    def kernels(self, params: dict):
        """The stacked kernel ``[W; U; b]`` that ``popdyn.recurrence`` multiplies ``[h, x, 1]`` by
        (gru: ``(K_rg, K_c)``: gates r, g, then the candidate)."""
        cell = params["cell"]
        u, b = cell["input"], cell["bias"][None]
        if self.arch == "gru":
            split = 2 * self.units
            return (
                jnp.concatenate([recurrent_kernel(self.arch, cell), u[:, :split], b[:, :split]]),
                jnp.concatenate([cell["candidate"], u[:, split:], b[:, split:]]),
            )
        return jnp.concatenate([recurrent_kernel(self.arch, cell), u, b])

    def _scan(self, cell_params: dict, xp: Array, state0, mask=None):
        """The time loop as plain JAX (autodiff differentiates it step by step)."""
        method = Cell.recur_lstm if self.base == "lstm" else Cell.recur

        def body(state, inputs):
            xp_t, m_t = inputs
            state = self.cell.apply(cell_params, state, xp_t, method=method)
            if m_t is not None:
                state = jax.tree.map(lambda s: s * m_t, state)
            return state, state

        return jax.lax.scan(body, state0, (xp, mask), unroll=self.unroll)[1]

    def readout(self, params: dict, states: Float[Array, "... state"]) -> Float[Array, "... n_out"]:
        """``y = R h + d`` on the hidden part of each state."""
        return self._readout.apply({"params": params["readout"]}, states[..., : self.units])

    def __call__(
        self, params: dict, inputs: Float[Array, "batch time n_in"]
    ) -> Float[Array, "batch time n_out"]:
        return self.readout(params, self.states(params, inputs))


def weight_matrices(params: dict) -> list[Array]:
    """The weight matrices of a parameter tree (every leaf with ≥ 2 dims; biases excluded) — the L2 terms."""
    return [leaf for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim >= 2]
