"""DSA distance (Dynamical Similarity Analysis, Ostrow et al. 2023; angular score): a DMD model of each
network's probe trajectories, ``d = min_C arccos(⟨A_x, C A_y C⁻¹⟩ / ‖A_x‖‖A_y‖)`` over rotations C.

Through the ``dsa-metric`` package, installed by ``pip install -e '.[dsa]'``: its optimisation per pair
makes it a metric for small populations (4 networks of 6 units: 6 s on 2 cores), computed pair by pair
outside the blocked pass (kind ``"pairwise"``).  On with ``similarity.dsa=true`` (or ``dsa`` in
``similarity.metrics``).
"""

from __future__ import annotations

import numpy as np

from popdyn.similarity import MetricSpec, SimilarityOptions, register

__all__ = ["DSA_MISSING", "dsa_available", "dsa_distances"]

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
    model = DSA(
        [np.asarray(x, np.float64) for x in trajectories],
        n_delays=options.dsa_delays,
        rank=options.dsa_rank,
        score_method="angular",
        iters=options.dsa_iters,
        verbose=False,
    )
    d = np.asarray(model.fit_score(), np.float32)
    return 0.5 * (d + d.T)


register(MetricSpec(
    name="dsa", short="DSA", label="DSA distance (angular, Ostrow et al. 2023)", color="#CCBB44",
    kind="pairwise", pairwise=dsa_distances,
    enabled=lambda options: options.dsa or "dsa" in options.metrics, default=False,
    missing=lambda: None if dsa_available() else DSA_MISSING,
    options=("dsa", "dsa_delays", "dsa_rank", "dsa_iters"), rank=2,
))  # fmt: skip
