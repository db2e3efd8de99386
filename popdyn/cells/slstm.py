"""slstm ([R] §5, Miller & Hardt 2019): an lstm (``popdyn/cells/lstm.py``: same equations, parameters and
time loops) whose parameters are projected after every update, and at init, into a region where its state
map is contractive (:func:`project_contractive`)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array

from popdyn.cells import CellSpec, lstm, register

__all__ = ["SLSTM_FORGET_BIAS_MAX", "SLSTM_FORGET_INPUT_CAP", "SLSTM_RECURRENT_CAPS", "project_contractive"]

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


SPEC = register(
    CellSpec(
        "slstm",
        blocks=4,
        params=lstm.params,
        recur=lstm.recur,
        state_factor=2,
        loop=lstm.LOOP,
        fused=lstm.FUSED,
        constrain=project_contractive,
        color="#CC79A7",
        marker="v",
        base="lstm",
        rank=4,
    )  # fmt: skip
)
