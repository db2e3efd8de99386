"""Recurrent cells of [U] App. A / [A] eqs. 8–10 as Flax modules and pure one-step maps.

Every cell is a map on its full dynamical state, ``F(state, x) -> state'``:

- vanilla: ``h' = f(W h + U x + b)``
- ugrnn:   ``c = f(Wc h + Uc x + bc)``, ``g = σ(Wg h + Ug x + bg)``, ``h' = g⊙h + (1−g)⊙c``
- gru:     ``r, g = σ(·)``, ``c = f(Wc (r⊙h) + Uc x + bc)``, ``h' = g⊙h + (1−g)⊙c``
- lstm:    ``i, fg, o = σ(·)``, ``c' = fg⊙c + i⊙f(Wc h + Uc x + bc)``, ``h' = o⊙f(c')``;
  the state is ``[h; c]`` (size 2N) so that fixed points and Jacobians see all of it.
- slstm ([R] §5, Miller & Hardt 2019): an lstm whose parameters are projected after every update
  (:func:`project_contractive`) into a region where its state map is contractive.
- ornn ([R] §5, Lezcano-Casado & Martínez-Rubio 2019): a vanilla cell whose recurrent matrix is orthogonal,
  ``W = expm(A − Aᵀ)`` (:func:`orthogonal`) of an unconstrained parameter ``skew`` = A.

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

ARCHS = ("vanilla", "ugrnn", "gru", "lstm", "slstm", "ornn")
ACTIVATIONS = ("relu", "tanh")

# the cell each arch computes with: slstm is an lstm with projected parameters, ornn a vanilla cell with an
# orthogonal recurrent matrix
BASE = {"slstm": "lstm", "ornn": "vanilla"}
_BLOCKS = {"vanilla": 1, "ugrnn": 2, "gru": 3, "lstm": 4}


def base_arch(arch: str) -> str:
    """The arch whose equations and time loop ``arch`` uses (``slstm`` → lstm, ``ornn`` → vanilla)."""
    return BASE.get(arch, arch)


def orthogonal(skew: Float[Array, "units units"]) -> Float[Array, "units units"]:
    """``Q = expm(A − Aᵀ)``: orthogonal with ``det Q = 1`` for any A (the exponential map onto SO(N));
    the ornn's recurrent matrix, differentiable in A ([R] §5; Lezcano-Casado & Martínez-Rubio 2019)."""
    return jax.scipy.linalg.expm(skew - skew.T)


def _rotation_skew(key, shape, dtype=jnp.float32):
    """A with ``expm(A − Aᵀ)`` block-diagonal 2×2 rotations by angles uniform in [−π, π] (expRNN's
    "Henaff" initialisation): an orthogonal matrix spread over the unit circle."""
    n = shape[0]
    theta = jax.random.uniform(key, (n // 2,), dtype, -jnp.pi, jnp.pi)
    return jnp.zeros(shape, dtype).at[2 * jnp.arange(n // 2), 2 * jnp.arange(n // 2) + 1].set(theta)


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
        return 2 * self.units if self.base == "lstm" else self.units

    @property
    def base(self) -> str:
        return base_arch(self.arch)

    @property
    def blocks(self) -> int:
        return _BLOCKS[self.base]

    def setup(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; allowed: {', '.join(ARCHS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        n, g = self.units, self.blocks
        recurrent_blocks = 2 if self.arch == "gru" else g
        if self.arch == "ornn":
            self.skew = self.param("skew", _rotation_skew, (n, n))
            self.recurrent = orthogonal(self.skew)
        else:
            self.recurrent = self.param(
                "recurrent", _orthogonal_blocks(recurrent_blocks), (n, recurrent_blocks * n)
            )
        if self.arch == "gru":
            self.candidate = self.param("candidate", _orthogonal_blocks(1), (n, n))
        self.input_kernel = self.param("input", nn.initializers.lecun_normal(), (self.n_in, g * n))
        bias_init = nn.initializers.zeros
        if self.base == "lstm":
            # forget-gate bias +1 so that memory is kept at initialisation (slstm: projected to ≤ 0)
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
        if self.base == "vanilla":
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


def recurrent_kernel(arch: str, cell_params: dict) -> Array:
    """The recurrent kernel a cell multiplies its state by (``h @ K``): ``recurrent``, or for ornn
    ``orthogonal(skew)``."""
    return orthogonal(cell_params["skew"]) if arch == "ornn" else cell_params["recurrent"]


# The per-gate bounds of [R]'s released code (``stabilize_lstm``, "one set of weights satisfying [Miller &
# Hardt's] stability requirement"): recurrent blocks in popdyn's gate order (i, fg, o, c), the forget
# gate's input block; the bias cap is popdyn's (see project_contractive).
SLSTM_RECURRENT_CAPS = (0.395, 0.155, 0.395, 0.099)
SLSTM_FORGET_INPUT_CAP = 0.25
SLSTM_FORGET_BIAS_MAX = 0.0


# A sum rescaled to the cap lands within float32 rounding of it; only sums beyond that are over the cap,
# or a second projection would move the first one's result again.
_CAP_SLACK = 1.0 + 1e-6


def _cap_rows(w: Array, cap: float) -> Array:
    """``W`` (as in ``W h``) stored transposed (``h @ K``, K = Wᵀ): each output unit's ℓ1 row of W is a
    column of K; scale the columns whose ℓ1 norm exceeds ``cap`` down to it, leave the others."""
    total = jnp.sum(jnp.abs(w), axis=0, keepdims=True)
    return w * jnp.where(total > cap * _CAP_SLACK, cap / jnp.maximum(total, 1e-30), 1.0)


def _cap_columns(w: Array, cap: float) -> Array:
    """Same for the ℓ1 columns of W (rows of K)."""
    total = jnp.sum(jnp.abs(w), axis=1, keepdims=True)
    return w * jnp.where(total > cap * _CAP_SLACK, cap / jnp.maximum(total, 1e-30), 1.0)


def project_contractive(
    cell_params: dict,
    *,
    recurrent_caps: tuple[float, float, float, float] = SLSTM_RECURRENT_CAPS,
    forget_input_cap: float = SLSTM_FORGET_INPUT_CAP,
    forget_bias_max: float = SLSTM_FORGET_BIAS_MAX,
) -> dict:
    """sLSTM: rescale popdyn lstm parameters into a region where the state map is contractive ([R] §5,
    Miller & Hardt 2019), to be applied after every update.

    Enforces, for each gate g ∈ (i, fg, o, c) with ``W_g`` its recurrent block as in ``W_g h``:
    ``‖W_g‖_∞ ≤ cap_g`` and ``‖W_g‖_1 ≤ cap_g`` (every row and every column ℓ1 sum; hence
    ``‖W_g‖₂ ≤ √(‖W_g‖_1‖W_g‖_∞) ≤ cap_g``), ``‖U_fg‖_∞ ≤ forget_input_cap``, ``b_fg ≤ forget_bias_max``
    elementwise. Rows/columns over their cap are scaled down to it, the others untouched: parameters that
    already satisfy the condition come back unchanged, and the map is idempotent (a projection onto the
    set, though not the Euclidean-nearest point). Input blocks of i, o, c and their biases are free.

    Why it contracts — the sufficient condition, re-derived here from the cell equations in the form of
    Miller & Hardt's ℓ∞ argument (tanh lstm, inputs with ``‖x‖_∞ ≤ 1``; σ' ≤ ¼, |tanh| ≤ 1): every forget
    gate is at most ``λ_f = σ(‖W_fg‖_∞ + ‖U_fg‖_∞ + max b_fg)``, so ``‖h‖_∞ ≤ 1`` and ``‖c‖_∞ ≤ C =
    1/(1 − λ_f)`` on every trajectory from ``[h; c] = 0``. There the blocks of ``J = ∂[h'; c']/∂[h; c]``
    obey, in any induced ℓp norm, ``‖∂c'/∂c‖, ‖∂h'/∂c‖ ≤ λ_f``, ``‖∂c'/∂h‖ ≤ β = C‖W_fg‖/4 + ‖W_i‖/4 +
    ‖W_c‖`` and ``‖∂h'/∂h‖ ≤ ‖W_o‖/4 + β``. With the default caps (the values of [R]'s released code):
    λ_f = σ(0.405) = 0.600, C = 2.50, β = 0.295, so ``‖J‖_∞ ≤ λ_f + β + ‖W_o‖/4 = 0.993`` and
    ``‖J‖₂ ≤ ‖[[β + ‖W_o‖/4, λ_f], [β, λ_f]]‖₂ = 0.979`` at every such state, for every input.

    Where this differs from [R]'s code (which rescales every column of each ``W_g`` to an ℓ1 norm of exactly
    its cap — ‖W_g‖₁ only, scaling small weights up — and leaves the biases free): rows are capped
    too, since the forget-gate bound λ_f needs ``‖W_fg‖_∞``; nothing is scaled up; ``b_fg`` is capped, since
    popdyn initialises it at +1, which alone would give λ_f = σ(1.405) = 0.80 and lift the bound to 1.30.
    For relu lstms no such bound holds (|f(·)| is unbounded); the map is applied all the same.

    ``cell_params``: popdyn's lstm layout (``recurrent`` [N, 4N], ``input`` [M, 4N], ``bias`` [4N], column
    blocks i, fg, o, c). Pure jnp: ``jax.vmap`` it over a population.
    """
    if len(recurrent_caps) != 4 or any(not (c > 0) for c in recurrent_caps):
        raise ValueError(
            f"project_contractive: recurrent_caps must be 4 positive numbers (gates i, fg, o, c), "
            f"got {recurrent_caps!r}"
        )
    if not forget_input_cap > 0:
        raise ValueError(f"project_contractive: forget_input_cap must be > 0, got {forget_input_cap!r}")
    k = cell_params["recurrent"]
    n = k.shape[0]
    if k.shape[-1] != 4 * n:
        raise ValueError(
            f"project_contractive: expected an lstm recurrent kernel [N, 4N], got shape {tuple(k.shape)}"
        )
    # columns after rows: scaling columns down cannot raise a row sum again, so both caps hold at the end
    blocks = [_cap_columns(_cap_rows(k[:, g * n : (g + 1) * n], c), c) for g, c in enumerate(recurrent_caps)]
    u, b = cell_params["input"], cell_params["bias"]
    u = u.at[:, n : 2 * n].set(_cap_rows(u[:, n : 2 * n], forget_input_cap))
    b = b.at[n : 2 * n].set(jnp.minimum(b[n : 2 * n], forget_bias_max))
    return {**cell_params, "recurrent": jnp.concatenate(blocks, axis=1), "input": u, "bias": b}


def make_cell(arch: str, activation: str, units: int, n_in: int) -> Cell:
    """A ``Cell`` for inputs of size ``n_in``; raises ``ValueError`` naming a bad arch or activation."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    if int(units) < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}")
    return Cell(arch=arch, activation=activation, units=int(units), n_in=int(n_in))
