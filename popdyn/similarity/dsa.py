"""DSA distance (Dynamical Similarity Analysis, Ostrow et al. 2023; angular score): a DMD model of each
network's probe trajectories, ``d = min_C arccos(⟨A_x, C A_y C⁻¹⟩ / ‖A_x‖‖A_y‖)`` over rotations C.

Through the ``dsa-metric`` package, installed by ``pip install -e '.[dsa]'``: its optimisation per pair
makes it a metric for small populations (4 networks of 6 units: 6 s on 2 cores), computed pair by pair
outside the blocked pass (kind ``"pairwise"``).  On with ``similarity.dsa=true`` (or ``dsa`` in
``similarity.metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from popdyn.similarity import MetricSpec, SimilarityOptions, register

__all__ = ["DSAOptions", "DSA_MISSING", "dsa_available", "dsa_distances"]


@dataclass(frozen=True)
class DSAOptions:
    """DSA's settings (config keys ``similarity.<field>``)."""

    dsa: bool = False  # also Dynamical Similarity Analysis (slow: small populations)
    dsa_delays: int = 10  # delays of the Hankel embedding
    dsa_rank: int = 10  # rank of its DMD model
    dsa_iters: int = 1000  # iterations of its rotation fit per pair

    def __post_init__(self):
        for k in ("dsa_delays", "dsa_rank", "dsa_iters"):
            if getattr(self, k) <= 0:
                raise ValueError(f"similarity.{k} = {getattr(self, k)!r} is impossible; it must be > 0")


DSA_MISSING = "similarity.dsa=true needs the dsa-metric package: pip install -e '.[dsa]'"


def dsa_available() -> bool:
    try:
        import DSA  # noqa: F401
    except ImportError:
        return False
    return True


def dsa_distances(trajectories: list[np.ndarray], options: SimilarityOptions, seed: int = 0) -> np.ndarray:
    """``[P, P]`` DSA distances (angular score) between networks' probe trajectories ``[trials, T, D]``.

    Seeded through torch, whose random rotations start each pair's fit."""
    if not dsa_available():
        raise ImportError(DSA_MISSING)
    import torch
    from DSA import DSA

    torch.manual_seed(seed)
    own = options.of("dsa")
    model = DSA(
        [np.asarray(x, np.float64) for x in trajectories],
        n_delays=own.dsa_delays,
        rank=own.dsa_rank,
        score_method="angular",
        iters=own.dsa_iters,
        verbose=False,
    )
    d = np.asarray(model.fit_score(), np.float32)
    return 0.5 * (d + d.T)


register(MetricSpec(
    name="dsa", short="DSA", label="DSA distance (angular, Ostrow et al. 2023)", color="#CCBB44",
    kind="pairwise", pairwise=dsa_distances,
    enabled=lambda options: options.of("dsa").dsa or "dsa" in options.metrics, default=False,
    missing=lambda: None if dsa_available() else DSA_MISSING,
    options=DSAOptions, rank=2,
))  # fmt: skip
