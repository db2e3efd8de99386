"""How much a grid factor (architecture, activation, …) explains a network-by-network distance matrix.

For ``N`` networks with distances ``d [N, N]`` and one factor's labels, in ``g`` groups of sizes ``n_g``
(one-way PERMANOVA, Anderson 2001):

- total sum of squares          SS_T = (1/N) Σ_{i<j} d_ij²
- within-group sum of squares   SS_W = Σ_g (1/n_g) Σ_{i<j in g} d_ij²
- among-group sum of squares    SS_A = SS_T − SS_W
- pseudo-F                      F = (SS_A / (g − 1)) / (SS_W / (N − g))
- share of the variation        R² = SS_A / SS_T = 1 − SS_W / SS_T
- permutation p-value           p = (1 + #{F_perm ≥ F}) / (1 + permutations), labels shuffled at random
- leave-one-out 1-NN accuracy   (1/N) Σ_i [label(argmin_{j≠i} d_ij) = label_i], ties to the lowest j
- its chance level              Σ_g n_g (n_g − 1) / (N (N − 1)), the accuracy of a random other network
- bootstrap interval            percentiles of R² and of the 1-NN accuracy over resamples of training
                                seeds (with replacement, a seed bringing all its networks; copies of one
                                network are never each other's neighbours, nor a pair in a sum of squares)

Networks with a non-finite distance to one of the others (diverged, or never compared) are left out
first, the one with the most such distances at a time until none is left, as in ``popdyn/embed.py``;
with fewer than 3 networks or 2 groups left, every statistic is NaN.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import xarray as xr
from jaxtyping import Float, Int, Shaped

STATISTICS = (
    "pseudo_F",
    "R2",
    "p_value",
    "nn_accuracy",
    "nn_chance",
    "R2_low",
    "R2_high",
    "nn_low",
    "nn_high",
    "n",
    "groups",
)

Seed = int | Sequence[int]  # anything np.random.default_rng / SeedSequence take

_BLOCK = 1 << 21  # float64 elements in one block of label matrices (16 MiB), which bounds the memory used
_MASK_BLOCK = 1 << 24  # booleans in one block of neighbour masks (16 MiB)
_TIE = 1e-10  # relative to SS_T: a permuted partition this close to the observed one is a tie, not rounding


def _prepare(distances: Float[np.ndarray, "n n"]) -> Float[np.ndarray, "n n"]:
    d = np.array(distances, np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square matrix, got shape {d.shape}")
    # a self-distance nobody computed must not exclude its network, and computed distances are
    # symmetric only up to rounding
    np.fill_diagonal(d, 0.0)
    return 0.5 * (d + d.T)


def _finite(d: Float[np.ndarray, "n n"]) -> Shaped[np.ndarray, " n"]:
    """Which networks to keep ``[n]`` (bool): drop the one with the most non-finite distances until none is left."""
    bad = ~np.isfinite(d)
    keep = np.ones(d.shape[0], bool)
    while (bad[np.ix_(keep, keep)]).any():
        counts = np.where(keep, (bad & keep[None]).sum(axis=1) + (bad & keep[:, None]).sum(axis=0), -1)
        keep[np.argmax(counts)] = False
    return keep


def _vector(values, n: int, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the distance matrix, got {a.shape}")
    return a


def _codes(labels: Shaped[np.ndarray, " n"]) -> tuple[Int[np.ndarray, " n"], int]:
    """Integer codes ``[n]`` in ``0 .. g-1`` and the number of groups ``g``."""
    names, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1), len(names)


def _blocks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(start + size, total)


def _sums(
    d2: Float[np.ndarray, "n n"],
    codes: Int[np.ndarray, "p n"],
    groups: int,
    weights: Float[np.ndarray, "p n"] | None = None,
) -> tuple[Float[np.ndarray, " p"], Float[np.ndarray, " p"], Int[np.ndarray, " p"]]:
    """SS_T ``[p]``, SS_W ``[p]`` and the number of non-empty groups ``[p]`` for ``p`` labellings at once.

    ``d2`` holds squared distances; ``weights`` (default 1) count the copies of each network in a
    resample, so that ``Σ_{a<b}`` over the copies is ``½ Σ_ij w_i w_j d_ij²``.  Pairs of copies of one
    network are left out (their distance 0 is no measurement; counting them would shrink every sum of
    squares and lift the resampled R²): each sum over the ``(n² − Σ w_i²)/2`` pairs of distinct networks
    is rescaled to the ``n(n − 1)/2`` pairs of its group — for weights of 1 the usual formula.  Every
    labelling becomes a weighted one-hot matrix ``L [n, g]`` and ``Σ_{i<j in g} d_ij² = ½ L_gᵀ D² L_g``,
    all labellings in one matrix product.
    """
    p, n = codes.shape
    x = np.zeros((n, p, groups))
    x[np.arange(n)[:, None], np.arange(p)[None], codes.T] = 1.0 if weights is None else weights.T
    m = (d2 @ x.reshape(n, p * groups)).reshape(n, p, groups)
    sizes = x.sum(axis=0)
    distinct = sizes**2 - (x**2).sum(axis=0)  # 2 × the pairs of distinct networks in each group
    quad = np.einsum("npg,npg->pg", x, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        ss_w = np.where(distinct > 0, quad * (sizes - 1) / (2 * distinct), 0.0).sum(axis=1)
        w = x.sum(axis=2)
        total, total_distinct = w.sum(axis=0), w.sum(axis=0) ** 2 - (w**2).sum(axis=0)
        ss_t = np.einsum("np,np->p", w, m.sum(axis=2)) * (total - 1) / (2 * total_distinct)
    return ss_t, ss_w, (sizes > 0).sum(axis=1)


def _pseudo_f(ss_t: np.ndarray, ss_w: np.ndarray, n: int, groups: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ss_t - ss_w) / (groups - 1)) / (ss_w / (n - groups))


def _permanova(
    d: Float[np.ndarray, "n n"], codes: Int[np.ndarray, " n"], groups: int, permutations: int, seed: Seed
) -> tuple[float, float, float]:
    """(pseudo-F, R², p-value) of a finite matrix with at least 3 networks and 2 groups."""
    n = len(codes)
    d2 = d**2
    ss_t, ss_w, _ = _sums(d2, codes[None], groups)
    ss_t, ss_w = float(ss_t[0]), float(ss_w[0])
    f = float(_pseudo_f(np.asarray(ss_t), np.asarray(ss_w), n, groups))
    r2 = 1.0 - ss_w / ss_t if ss_t > 0 else np.nan
    if permutations <= 0 or np.isnan(f):
        return f, r2, np.nan
    rng = np.random.default_rng(seed)
    hits = 0
    # with SS_T fixed by the matrix, F only falls as SS_W grows, so F_perm ≥ F is SS_W_perm ≤ SS_W
    for start, stop in _blocks(permutations, max(1, _BLOCK // (n * groups))):
        shuffled = rng.permuted(np.tile(codes, (stop - start, 1)), axis=1)
        _, ss_w_perm, _ = _sums(d2, shuffled, groups)
        hits += int(np.count_nonzero(ss_w_perm <= ss_w + _TIE * ss_t))
    return f, r2, (1 + hits) / (1 + permutations)


def _nn(d: Float[np.ndarray, "n n"], codes: Int[np.ndarray, " n"], groups: int) -> tuple[float, float]:
    n = len(codes)
    others = d.copy()
    np.fill_diagonal(others, np.inf)
    accuracy = float(np.mean(codes[np.argmin(others, axis=1)] == codes))
    sizes = np.bincount(codes, minlength=groups).astype(np.float64)
    return accuracy, float(np.sum(sizes * (sizes - 1)) / (n * (n - 1)))


def _nn_weighted(
    d: Float[np.ndarray, "n n"], codes: Int[np.ndarray, " n"], weights: Float[np.ndarray, "p n"]
) -> Float[np.ndarray, " p"]:
    """1-NN accuracy ``[p]`` of ``p`` resamples, network ``i`` present ``weights[:, i]`` times.

    A copy's neighbour is the nearest other network present (ties to the lowest original index), never
    another copy of itself; every copy counts once in the accuracy.  NaN where nothing has a neighbour.
    """
    n = len(codes)
    others = d.copy()
    np.fill_diagonal(others, np.inf)
    # the stable sort keeps ties in index order, and the diagonal (the only inf) goes last and is cut
    order = np.argsort(others, axis=1, kind="stable")[:, :-1]
    out = np.full(weights.shape[0], np.nan)
    for start, stop in _blocks(weights.shape[0], max(1, _MASK_BLOCK // (n * n))):
        w = weights[start:stop]
        present = (w > 0)[:, order]
        nearest = order[np.arange(n)[None], present.argmax(axis=2)]
        right = (codes[nearest] == codes[None]) & present.any(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:stop] = (w * right).sum(axis=1) / w.sum(axis=1)
    return out


def _bootstrap(
    d: Float[np.ndarray, "n n"],
    codes: Int[np.ndarray, " n"],
    groups: int,
    units: Int[np.ndarray, " n"],
    bootstrap: int,
    seed: np.random.SeedSequence,
) -> tuple[Float[np.ndarray, " b"], Float[np.ndarray, " b"]]:
    """R² ``[b]`` and 1-NN accuracy ``[b]`` of ``b`` resamples of the units (seeds) with replacement."""
    rng = np.random.default_rng(seed)
    n, k = len(codes), int(units.max()) + 1
    draws = rng.integers(0, k, size=(bootstrap, k))
    counts = np.zeros((bootstrap, k))
    np.add.at(counts, (np.arange(bootstrap)[:, None], draws), 1.0)
    weights = counts[:, units]
    d2 = d**2
    r2 = np.empty(bootstrap)
    for start, stop in _blocks(bootstrap, max(1, _BLOCK // (n * groups))):
        ss_t, ss_w, present = _sums(d2, np.tile(codes, (stop - start, 1)), groups, weights[start:stop])
        with np.errstate(divide="ignore", invalid="ignore"):
            r2[start:stop] = np.where(present >= 2, 1.0 - ss_w / ss_t, np.nan)
    valid = (np.count_nonzero(weights, axis=1) >= 3) & np.isfinite(r2)
    nn = _nn_weighted(d, codes, weights)
    return np.where(valid, r2, np.nan), np.where(valid, nn, np.nan)


def _interval(values: Float[np.ndarray, " b"], ci: float) -> tuple[float, float]:
    if np.isnan(values).all():  # nanpercentile would warn
        return np.nan, np.nan
    low, high = np.nanpercentile(values, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)])
    return float(low), float(high)


def _select(distances, labels) -> tuple[np.ndarray, np.ndarray, Int[np.ndarray, " m"], int]:
    """The finite submatrix ``[m, m]``, the mask of kept networks ``[n]``, their codes ``[m]`` and ``g``."""
    d = _prepare(distances)
    labels = _vector(labels, d.shape[0], "labels")
    keep = _finite(d)
    codes, groups = _codes(labels[keep])
    return d[np.ix_(keep, keep)], keep, codes, groups


def permanova(
    distances: Float[np.ndarray, "n n"],
    labels: Shaped[np.ndarray, " n"],
    permutations: int = 999,
    seed: Seed = 0,
) -> dict[str, float]:
    """One-way PERMANOVA of ``distances [n, n]`` by ``labels [n]`` (strings or numbers).

    Returns ``{"pseudo_F", "R2", "p_value", "n", "groups"}``: ``n`` networks and ``groups`` groups used
    after leaving out networks with non-finite distances; all NaN with fewer than 3 networks or 2
    groups.  ``p_value`` is NaN with ``permutations == 0``; labels are shuffled with
    ``np.random.default_rng(seed)``.
    """
    d, keep, codes, groups = _select(distances, labels)
    out = dict.fromkeys(("pseudo_F", "R2", "p_value", "n", "groups"), np.nan)
    if len(codes) < 3 or groups < 2:
        return out
    f, r2, p = _permanova(d, codes, groups, permutations, seed)
    out.update(pseudo_F=f, R2=r2, p_value=p, n=float(len(codes)), groups=float(groups))
    return out


def nn_accuracy(distances: Float[np.ndarray, "n n"], labels: Shaped[np.ndarray, " n"]) -> tuple[float, float]:
    """(leave-one-out 1-NN accuracy, chance level) of ``labels [n]`` under ``distances [n, n]``.

    Networks with non-finite distances are left out first; ``(nan, nan)`` with fewer than 3 networks or
    2 groups.
    """
    d, _, codes, groups = _select(distances, labels)
    if len(codes) < 3 or groups < 2:
        return np.nan, np.nan
    return _nn(d, codes, groups)


def factor_statistics(
    distances: Float[np.ndarray, "n n"],
    labels: Shaped[np.ndarray, " n"],
    seeds: Shaped[np.ndarray, " n"] | None = None,
    permutations: int = 999,
    bootstrap: int = 200,
    ci: float = 0.95,
    seed: Seed = 0,
) -> dict[str, float]:
    """Every entry of ``STATISTICS`` for one factor with ``labels [n]`` under ``distances [n, n]``.

    ``seeds [n]`` (the training seed of each network) are the bootstrap's resampling units; the
    intervals are NaN when ``seeds`` is None or ``bootstrap == 0``.  The permutations use
    ``np.random.default_rng(seed)`` (the same p-value as ``permanova``), the bootstrap a stream spawned
    from ``seed``.  All NaN with fewer than 3 networks or 2 groups left.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    d, keep, codes, groups = _select(distances, labels)
    out = dict.fromkeys(STATISTICS, np.nan)
    if len(codes) < 3 or groups < 2:
        return out
    f, r2, p = _permanova(d, codes, groups, permutations, seed)
    accuracy, chance = _nn(d, codes, groups)
    out.update(pseudo_F=f, R2=r2, p_value=p, nn_accuracy=accuracy, nn_chance=chance)
    out.update(n=float(len(codes)), groups=float(groups))
    if seeds is not None and bootstrap > 0:
        _, units = np.unique(_vector(seeds, len(keep), "seeds")[keep], return_inverse=True)
        stream = np.random.SeedSequence(seed).spawn(1)[0]
        r2s, nns = _bootstrap(d, codes, groups, units.reshape(-1), bootstrap, stream)
        out["R2_low"], out["R2_high"] = _interval(r2s, ci)
        out["nn_low"], out["nn_high"] = _interval(nns, ci)
    return out


def statistics_table(
    distances: dict[str, Float[np.ndarray, "n n"]],
    factors: dict[str, Shaped[np.ndarray, " n"]],
    seeds: Shaped[np.ndarray, " n"] | None = None,
    permutations: int = 999,
    bootstrap: int = 200,
    ci: float = 0.95,
    seed: int = 0,
) -> xr.DataArray:
    """``factor_statistics`` for every metric × factor: a DataArray ``[metric, factor, statistic]``.

    ``distances`` maps a metric's name to its matrix ``[n, n]``, ``factors`` a factor's name to its
    labels ``[n]``, all over the same ``n`` networks.  A factor with fewer than 2 distinct values among
    the networks used is NaN throughout.  The draws for metric ``i`` and factor ``j`` come from the seed
    ``[seed, i, j]``, so the whole table is reproducible and no two cells share a stream.
    """
    metrics, names = list(distances), list(factors)
    values = np.full((len(metrics), len(names), len(STATISTICS)), np.nan)
    for i, metric in enumerate(metrics):
        for j, name in enumerate(names):
            cell = factor_statistics(
                distances[metric], factors[name], seeds, permutations, bootstrap, ci, seed=[seed, i, j]
            )
            values[i, j] = [cell[s] for s in STATISTICS]
    return xr.DataArray(
        values,
        dims=("metric", "factor", "statistic"),
        coords={"metric": metrics, "factor": names, "statistic": list(STATISTICS)},
        name="statistics",
        attrs={"permutations": permutations, "bootstrap": bootstrap, "ci": ci, "seed": seed},
    )


def format_table(table: xr.DataArray) -> str:
    """Plain text for a log, one line per metric × factor that has a value (NaN cells are left out):
    R² [CI], pseudo-F, p, NN accuracy [CI] vs chance, n."""
    table = table.transpose("metric", "factor", "statistic")
    at = {str(k): i for i, k in enumerate(table.coords["statistic"].values)}
    metrics = [str(m) for m in table.coords["metric"].values]
    factors = [str(f) for f in table.coords["factor"].values]
    wm = max((len(m) for m in metrics), default=0)
    wf = max((len(f) for f in factors), default=0)
    lines = []
    for i, metric in enumerate(metrics):
        for j, factor in enumerate(factors):
            s = {k: float(table.values[i, j, at[k]]) for k in STATISTICS}
            if np.isnan(s["R2"]):  # a factor with one value, or a metric it does not apply to
                continue
            lines.append(
                f"{metric:<{wm}}  {factor:<{wf}}  R2 {s['R2']:.3f} [{s['R2_low']:.3f}, {s['R2_high']:.3f}]"
                f"  F {s['pseudo_F']:8.2f}  p {s['p_value']:<6.3g}"
                f"  NN {s['nn_accuracy']:.3f} [{s['nn_low']:.3f}, {s['nn_high']:.3f}]"
                f" vs {s['nn_chance']:.3f}  n {s['n']:.0f}"
            )
    return "\n".join(lines)
