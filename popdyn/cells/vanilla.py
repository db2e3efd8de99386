"""vanilla ([U] App. A, SPEC §1): ``h' = f(W h + U x + b)``."""

from __future__ import annotations

from popdyn.cells import CellSpec, dense_params, register
from popdyn.recurrence import Loop


def params(declare, units: int, n_in: int) -> dict:
    """``recurrent`` [N, N] (orthogonal), ``input`` [M, N], ``bias`` [N] (zero)."""
    return dense_params(declare, units, n_in, 1)


def recur(cell, w: dict, h, xp, noise=None):
    """``h' = f(h W + xp)``, ``xp = x U + b`` (stored kernels: ``h W`` is the equations' ``W h``)."""
    return cell.f(h @ w["recurrent"] + xp)


LOOP = Loop(blocks=lambda act: (act,), combine=lambda act: lambda h, acts: acts[0])

# twin: [U] Fig. 4 compares trained vanilla networks with untrained ones
SPEC = register(
    CellSpec("vanilla", 1, params, recur, loop=LOOP, color="#0072B2", marker="o", twin=True, rank=0)
)
