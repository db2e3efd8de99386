"""leaky: the continuous-time RNN of neuroscience models (Song, Yang & Wang 2016; Yang et al. 2019),
Euler-discretised with step ``α = dt/τ``:

``h' = (1 − α) h + α f(W h + U x + b + σ_rec √(2/α) ξ)``,  ``ξ ~ N(0, 1)`` per unit and step.

The noise is the discretisation of white noise of variance σ_rec² in continuous time (Song et al. 2016,
eq. 8): with f linear it adds ``α σ_rec √(2/α) ξ`` to h', variance ``2 α σ_rec²`` per step.  It is drawn
from the member's training key during training only (``stochastic``: ``popdyn.train`` passes a key);
fixed points, Jacobians, probes and similarity use the noiseless map (``noise=None``).

Options (``grid.cell_options.leaky``): ``alpha`` in (0, 1] (default 0.2), ``sigma_rec`` ≥ 0 (default
0.05).  Parameters and their init are vanilla's (``recurrent`` [N, N] orthogonal, ``input`` [M, N] LeCun
normal, ``bias`` zero): with α = 1 and no noise the cell is the vanilla cell.  No hoisted loop: training
differentiates the ``lax.scan`` of the step.
"""

from __future__ import annotations

import math

from popdyn.cells import CellSpec, dense_params, register

OPTIONS = {"alpha": 0.2, "sigma_rec": 0.05}


def params(declare, units: int, n_in: int) -> dict:
    return dense_params(declare, units, n_in, 1)


def recur(cell, w: dict, h, xp, noise=None):
    """``h' = (1 − α) h + α f(h W + xp + σ_rec √(2/α) ξ)`` (ξ = ``noise``; none: the noiseless map)."""
    alpha, sigma = cell.opts["alpha"], cell.opts["sigma_rec"]
    pre = h @ w["recurrent"] + xp
    if noise is not None:
        pre = pre + sigma * math.sqrt(2.0 / alpha) * noise
    return (1.0 - alpha) * h + alpha * cell.f(pre)


def check(opts: dict) -> None:
    if not 0.0 < opts["alpha"] <= 1.0:
        raise ValueError(f"option 'alpha' of cell 'leaky' (dt/τ) must be in (0, 1], got {opts['alpha']!r}")
    if not opts["sigma_rec"] >= 0.0:
        raise ValueError(f"option 'sigma_rec' of cell 'leaky' must be ≥ 0, got {opts['sigma_rec']!r}")


SPEC = register(
    CellSpec("leaky", blocks=1, params=params, recur=recur, stochastic=True, options=OPTIONS, check=check)
)
