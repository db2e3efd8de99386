"""ugrnn ([A] eq. 8, SPEC §1): ``c = f(Wc h + Uc x + bc)``, ``g = σ(Wg h + Ug x + bg)``,
``h' = g⊙h + (1−g)⊙c``; fused column blocks c, g."""

from __future__ import annotations

import jax

from popdyn.cells import SIGMOID, CellSpec, dense_params, register
from popdyn.recurrence import Loop


def params(declare, units: int, n_in: int) -> dict:
    return dense_params(declare, units, n_in, 2)


def recur(cell, w: dict, h, xp, noise=None):
    n = cell.units
    pre = h @ w["recurrent"] + xp
    c, g = cell.f(pre[..., :n]), jax.nn.sigmoid(pre[..., n:])
    return g * h + (1.0 - g) * c


def _combine(act):
    def ugrnn(h, acts):
        c, g = acts
        return g * h + (1.0 - g) * c

    return ugrnn


LOOP = Loop(blocks=lambda act: (act, SIGMOID), combine=_combine)

SPEC = register(
    CellSpec("ugrnn", blocks=2, params=params, recur=recur, loop=LOOP, color="#E69F00", marker="s", rank=1)
)
