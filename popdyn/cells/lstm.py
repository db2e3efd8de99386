"""lstm ([A] eq. 10, SPEC §1): ``i, fg, o = σ(·)``, ``c' = fg⊙c + i⊙f(Wc h + Uc x + bc)``, ``h' = o⊙f(c')``.

The state is ``[h; c]`` (size 2N) so that fixed points and Jacobians see all of it; time loops carry the
pair ``(h, c)``.  Fused column blocks i, fg, o, c; the forget-gate bias starts at +1 (Gers et al. 2000).  On
JAX's CPU backend (float32) the time loop runs in the C++ kernel of ``popdyn.fused``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from popdyn import fused
from popdyn.cells import SIGMOID, CellSpec, Fused, dense_params, register
from popdyn.recurrence import Loop


def params(declare, units: int, n_in: int) -> dict:
    n = units

    # forget-gate bias +1 so that memory is kept at initialisation (slstm: projected to ≤ 0)
    def bias_init(key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype).at[n : 2 * n].set(1.0)

    return dense_params(declare, units, n_in, 4, bias_init)


def recur(cell, w: dict, hc, xp, noise=None):
    """The step on ``(h, c)``."""
    n, f = cell.units, cell.f
    h, c = hc
    pre = h @ w["recurrent"] + xp
    gates = jax.nn.sigmoid(pre[..., : 3 * n])
    i, fg, o = gates[..., :n], gates[..., n : 2 * n], gates[..., 2 * n :]
    c_new = fg * c + i * f(pre[..., 3 * n :])
    return o * f(c_new), c_new


def _combine(act):
    f = act.fn

    def lstm(hc, acts):
        i, fg, o, cand = acts
        c_new = fg * hc[1] + i * cand
        return o * f(c_new), c_new

    return lstm


LOOP = Loop(blocks=lambda act: (SIGMOID, SIGMOID, SIGMOID, act), combine=_combine, pair=True)
FUSED = Fused(usable=fused.usable, run=fused.lstm)

SPEC = register(
    CellSpec(
        "lstm",
        blocks=4,
        params=params,
        recur=recur,
        state_factor=2,
        loop=LOOP,
        fused=FUSED,
        color="#D55E00",
        marker="D",
        rank=3,
    )  # fmt: skip
)
