"""gru ([A] eq. 9, SPEC §1): ``r, g = σ(·)``, ``c = f(Wc (r⊙h) + Uc x + bc)``, ``h' = g⊙h + (1−g)⊙c``.

Stored: ``recurrent`` [N, 2N] (blocks r, g), ``candidate`` [N, N] (``Wc``, applied to ``r⊙h``), ``input``
[M, 3N] and ``bias`` [3N] (blocks r, g, c).  Its hoisted loop has two stacked kernels, ``K_rg = [W_rg; U_rg;
b_rg]`` and ``K_c = [Wc; Uc; bc]``, the second reading ``[σ(a_r) ⊙ h; x; 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from popdyn.cells import SIGMOID, CellSpec, orthogonal_blocks, register
from popdyn.recurrence import Loop, _z


def params(declare, units: int, n_in: int) -> dict:
    n = units
    return {
        "recurrent": declare("recurrent", orthogonal_blocks(2), (n, 2 * n)),
        "candidate": declare("candidate", orthogonal_blocks(1), (n, n)),
        "input": declare("input", nn.initializers.lecun_normal(), (n_in, 3 * n)),
        "bias": declare("bias", nn.initializers.zeros, (3 * n,)),
    }


def recur(cell, w: dict, h, xp, noise=None):
    n = cell.units
    rg = jax.nn.sigmoid(h @ w["recurrent"] + xp[..., : 2 * n])
    r, g = rg[..., :n], rg[..., n:]
    c = cell.f((r * h) @ w["candidate"] + xp[..., 2 * n :])
    return g * h + (1.0 - g) * c


def _combine(act):
    def gru(h, acts):  # r acts through the candidate's input only
        _, g, c = acts
        return g * h + (1.0 - g) * c

    return gru


@dataclass(frozen=True)
class GruLoop(Loop):
    """gru's two matmuls per step: gates r, g from ``[h; x; 1]``, the candidate from ``[r⊙h; x; 1]``."""

    def kernels(self, w: dict):
        split = w["recurrent"].shape[1]
        u, b = w["input"], w["bias"][None]
        return (
            jnp.concatenate([w["recurrent"], u[:, :split], b[:, :split]]),
            jnp.concatenate([w["candidate"], u[:, split:], b[:, split:]]),
        )

    def forward_step(self, activation, kernels_t, state, x_t):
        h = state
        k_rg, k_c = kernels_t
        r, g = jnp.split(SIGMOID.fn(k_rg @ _z(h, x_t)), 2)
        acts = (r, g, activation.fn(k_c @ _z(r * h, x_t)))
        return self.combine(activation)(state, acts), acts

    def backward_step(self, activation, w, g, s_prev, acts_t):
        ds, d_acts = jax.vjp(self.combine(activation), s_prev, acts_t)[1](g)
        da = [d * act.deriv(y) for act, d, y in zip(self.blocks(activation), d_acts, acts_t)]
        (w_r, w_g), (w_c,) = w
        h_prev, r = s_prev, acts_t[0]
        drh = w_c @ da[2]  # the candidate reads σ(a_r) ⊙ h
        da[0] = drh * h_prev * SIGMOID.deriv(r)
        return ds + drh * r + w_r @ da[0] + w_g @ da[1], tuple(da)

    def grads(self, grads, kernels, h_prev, acts, da):
        dk_rg, dx_rg = grads(h_prev, kernels[0], da[:2])
        dk_c, dx_c = grads(acts[0] * h_prev, kernels[1], da[2:])
        return (dk_rg, dk_c), dx_rg + dx_c


LOOP = GruLoop(blocks=lambda act: (SIGMOID, SIGMOID, act), combine=_combine)

SPEC = register(
    CellSpec("gru", blocks=3, params=params, recur=recur, loop=LOOP, color="#009E73", marker="^", rank=2)
)
