"""2-D embeddings of distance matrices for the paper's figures ([U] Figs. 1–3: metric MDS).

Metric MDS (scikit-learn's SMACOF) on a precomputed distance matrix, started from classical MDS and
seeded, so the same matrix and seed give the same picture.  Networks with any NaN distance (diverged,
or set aside by the topology analysis) are left out and get NaN coordinates.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float
from sklearn.manifold import MDS


def mds(distances: Float[np.ndarray, "n n"], seed: int = 0, max_iter: int = 300) -> Float[np.ndarray, "n 2"]:
    """Coordinates ``[n, 2]`` whose Euclidean distances approximate ``distances`` (metric MDS)."""
    d = np.asarray(distances, np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square matrix, got shape {d.shape}")
    bad = ~np.isfinite(d)
    keep = np.ones(d.shape[0], bool)
    while (bad[np.ix_(keep, keep)]).any():  # leave out the network with the most NaNs, until none is left
        counts = np.where(keep, (bad & keep[None]).sum(axis=1) + (bad & keep[:, None]).sum(axis=0), -1)
        keep[np.argmax(counts)] = False
    out = np.full((d.shape[0], 2), np.nan, np.float32)
    sub = d[np.ix_(keep, keep)]
    if sub.shape[0] < 3:  # nothing to lay out
        out[keep] = 0.0
        return out
    sub = 0.5 * (sub + sub.T)
    np.fill_diagonal(sub, 0.0)
    if not np.any(sub > 0):  # all networks alike: one point
        out[keep] = 0.0
        return out
    xy = None
    for init in ("classical_mds", "random"):  # classical MDS can break down on a degenerate spectrum
        model = MDS(n_components=2, metric="precomputed", init=init, n_init=1,
                    max_iter=max_iter, random_state=seed)  # fmt: skip
        try:
            xy = model.fit_transform(sub)
        except ValueError:  # sklearn: "Input contains NaN" from a degenerate classical start
            continue
        if np.isfinite(xy).all():
            break
    out[keep] = xy if xy is not None and np.isfinite(xy).all() else 0.0
    return out
