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

from popdyn.cells import Cell, CellSpec, base_arch, get, make_cell
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
    # the time loop with grad="hoisted": "auto" runs the cell's fused CPU kernel (``CellSpec.fused``; lstm,
    # slstm: popdyn.fused) where it can (float32, CPU backend, kernel built), else XLA's loop
    # (popdyn.recurrence); "xla" always XLA's
    kernel: str = "auto"
    options: tuple = ()  # the cell's options as sorted (name, value) pairs (popdyn.cells.options)

    @classmethod
    def for_task(
        cls, arch: str, activation: str, units: int, task, unroll: int = 1, options: tuple = ()
    ) -> Model:
        """The model of one group for ``task``: its input and output sizes, a bias-free readout for
        classification."""
        return cls(
            arch, activation, units, task.n_in, task.n_out, unroll,
            readout_bias=not task.classification, vocab=task.vocab, options=tuple(options),
        )  # fmt: skip

    def __post_init__(self):
        if self.grad not in GRADS:
            raise ValueError(f"unknown grad {self.grad!r}; allowed: {', '.join(GRADS)}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; allowed: {', '.join(KERNELS)}")

    @property
    def spec(self) -> CellSpec:
        """The cell's registered spec (``popdyn.cells``)."""
        return get(self.arch)

    @property
    def base(self) -> str:
        """The arch whose equations the cell computes (slstm: lstm, ornn: vanilla)."""
        return base_arch(self.arch)

    @cached_property
    def cell(self) -> Cell:
        return make_cell(self.arch, self.activation, self.units, self.n_in, self.options)

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
        """The parameters moved into the cell's admissible set, after every update (``CellSpec.constrain``;
        e.g. slstm's projection onto a contractive region, [R] §5); most cells are unconstrained."""
        constrain = self.spec.constrain
        if constrain is None:
            return params
        return {**params, "cell": constrain(params["cell"])}

    def weight_matrices(self, params: dict) -> list[Array]:
        """The leaves the L2 penalty sums over: the cell's as its spec says (``CellSpec.l2``), the readout's
        and embedding's matrices; in the order of :func:`weight_matrices`."""
        is_weight = self.spec.l2
        out = []
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            keys = [getattr(k, "key", None) for k in path]
            if keys[0] == "cell" and is_weight(str(keys[-1]), leaf) or keys[0] != "cell" and leaf.ndim >= 2:
                out.append(leaf)
        return out

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
        """The one-step map ``F(state, x)`` on the full state (lstm: ``[h; c]``); pure in ``cell_params``;
        noiseless (a stochastic cell's analyses see its deterministic map)."""
        return self.cell.apply({"params": cell_params}, state, x)

    def time_loop(self, dtype=jnp.float32, noisy: bool = False) -> str:
        """Which time loop :meth:`states` runs here for states of ``dtype`` (``noisy``: with a stochastic
        cell's training noise): ``"fused"`` (the cell's compiled CPU kernel, popdyn.fused), ``"hoisted"``
        (XLA's loop with the hoisted backward pass, popdyn.recurrence) or ``"scan"`` (``lax.scan`` under
        plain autodiff).  Recorded per group in the run's manifests (provenance)."""
        spec = self.spec
        if self.grad != "hoisted" or spec.loop is None or noisy:
            return "scan"
        if self.kernel == "auto" and spec.fused is not None and spec.fused.usable(dtype):
            return "fused"
        return "hoisted"

    def states(
        self,
        params: dict,
        inputs: Float[Array, "batch time n_in"] | Int[Array, "batch time"],
        key: Array | None = None,
    ) -> Float[Array, "batch time state"]:
        """Every state visited on ``inputs`` (token ids with an embedding; padded steps hold the state at
        ``h0 = 0``), from ``h0 = 0``.  ``key``: a stochastic cell's noise (training; ``CellSpec.stochastic``),
        standard normal draws [time, batch, units] from it; ignored by the other cells."""
        spec = self.spec
        cell_params = {"params": params["cell"]}
        h0 = jnp.zeros((inputs.shape[0], self.units), params["readout"]["kernel"].dtype)
        state0 = spec.carry0(h0)
        x, mask = self.embed(params, inputs)
        noisy = spec.stochastic and key is not None
        loop = self.time_loop(h0.dtype, noisy)

        if loop == "fused":
            states = spec.fused.run(self.kernels(params), x.astype(h0.dtype), state0, mask, self.activation)
        elif loop == "hoisted":
            x = x.astype(h0.dtype)
            states = recurrence(
                spec.loop, self.activation, self.unroll, self.kernels(params), x, state0, mask
            )
        else:
            # the input half of every gate does not depend on the state: one matmul for the whole sequence
            xp = jnp.swapaxes(self.cell.apply(cell_params, x, method=Cell.project), 0, 1)
            m = None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None]
            xi = jax.random.normal(key, (xp.shape[0], *h0.shape), h0.dtype) if noisy else None
            states = jax.tree.map(
                partial(jnp.swapaxes, axis1=0, axis2=1), self._scan(cell_params, xp, state0, m, xi)
            )
        return spec.merge(states)

    def kernels(self, params: dict):
        """The stacked kernel ``[W; U; b]`` that ``popdyn.recurrence`` multiplies ``[h, x, 1]`` by (the cell's
        ``loop.kernels``; gru: ``(K_rg, K_c)``: gates r, g, then the candidate)."""
        spec = self.spec
        return spec.loop.kernels(spec.weights(params["cell"]))

    def _scan(self, cell_params: dict, xp: Array, state0, mask=None, noise=None):
        """The time loop as plain JAX (autodiff differentiates it step by step)."""

        def body(state, inputs):
            xp_t, m_t, xi_t = inputs
            state = self.cell.apply(cell_params, state, xp_t, xi_t, method=Cell.recur_carry)
            if m_t is not None:
                state = jax.tree.map(lambda s: s * m_t, state)
            return state, state

        return jax.lax.scan(body, state0, (xp, mask, noise), unroll=self.unroll)[1]

    def readout(self, params: dict, states: Float[Array, "... state"]) -> Float[Array, "... n_out"]:
        """``y = R h + d`` on the hidden part of each state."""
        return self._readout.apply({"params": params["readout"]}, states[..., : self.units])

    def __call__(
        self, params: dict, inputs: Float[Array, "batch time n_in"], key: Array | None = None
    ) -> Float[Array, "batch time n_out"]:
        return self.readout(params, self.states(params, inputs, key))


def weight_matrices(params: dict) -> list[Array]:
    """The weight matrices of a parameter tree (every leaf with ≥ 2 dims; biases excluded) — the L2 terms."""
    return [leaf for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim >= 2]
