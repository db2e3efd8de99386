"""The geometry measures of [A] (Aitken et al. 2020, App. A.2 and D.1) on sets of points and readouts.

Dimensionality of a point set ``X`` ([M, D], e.g. final hidden states or fixed points), with
``μ_1 ≥ μ_2 ≥ …`` the PCA variances of X:

- :func:`variance_dimension` — PCA dimensions needed to explain a fraction of the variance (95 %, or
  ``N/(N+1)`` for N classes);
- :func:`participation_ratio` — ``(Σμ)² / Σμ²`` (eq. 5);
- :func:`local_participation_ratio` — the same on each of several random points' k nearest neighbours,
  averaged;
- :func:`mle_dimension` — Levina & Bickel (2005): ``m_k(x) = [(1/(k−1)) Σ_{j<k} log(T_k(x)/T_j(x))]⁻¹``
  with ``T_j(x)`` the distance to the j-th nearest neighbour, averaged over points (eq. 6);
- :func:`correlation_dimension` — Grassberger & Procaccia: the slope of ``log C(r)`` against ``log r``,
  ``C(r)`` the fraction of pairs closer than r (eq. 7), fitted over radii between two quantiles of the
  pairwise distances (the "linear part": [A] gives no rule; the defaults are ours and a parameter).

Readouts ``R`` ([D, N], one column per class): :func:`readout_geometry` gives their norms, pairwise angles
against the regular simplex's ``arccos(−1/(N−1))`` (eq. 11) and the subspace fraction Λ (eq. 12).
:func:`lsa` is the latent semantic analysis of a class × word count matrix (truncated SVD).

Plain NumPy in float64: these run once per network on a few thousand points, on the host.

Registered as the analysis ``geometry`` (classification tasks; no settings): :func:`text_geometry` of every
group from its fixed points, stored into ``dynamics.npz`` beside them (``needs`` and ``into``
``dynamics``) and loaded under the keys' own names; and the dataset's :func:`text_lsa` into the run's
``lsa.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from popdyn import analyses


def pca_variances(x: np.ndarray) -> np.ndarray:
    """PCA variances of the rows of ``x`` ([M, D]), largest first."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    return np.linalg.svd(x, compute_uv=False) ** 2 / max(len(x) - 1, 1)


def variance_dimension(x: np.ndarray, fraction: float = 0.95) -> int:
    """The fewest PCA dimensions whose variances reach ``fraction`` of the total."""
    mu = pca_variances(x)
    explained = np.cumsum(mu) / mu.sum()
    return int(np.searchsorted(explained, fraction - 1e-12) + 1)


def participation_ratio(x: np.ndarray) -> float:
    """``(Σμ)² / Σμ²`` of the PCA variances μ of ``x`` ([A] eq. 5)."""
    mu = pca_variances(x)
    return float(mu.sum() ** 2 / np.sum(mu**2))


def _neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each point's k nearest other points, ``[M, k]`` each, nearest first."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in 1 … {len(x) - 1} (points − 1), got {k}")
    dist, idx = cKDTree(x).query(x, k=k + 1)
    return dist[:, 1:], idx[:, 1:]


def local_participation_ratio(x: np.ndarray, k: int = 20, centres: int = 100, seed: int = 0) -> float:
    """Mean participation ratio of PCA on a random point and its ``k`` nearest neighbours, over
    ``centres`` random points (seeded)."""
    x = np.asarray(x, np.float64)
    _, idx = _neighbours(x, k)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(x), size=min(centres, len(x)), replace=False)
    return float(np.mean([participation_ratio(x[np.r_[i, idx[i]]]) for i in picks]))


def mle_dimension(x: np.ndarray, k: int = 20) -> float:
    """Levina–Bickel maximum-likelihood intrinsic dimension with ``k`` neighbours ([A] eq. 6)."""
    dist, _ = _neighbours(np.asarray(x, np.float64), k)
    dist = np.maximum(dist, 1e-300)
    inv = np.mean(np.log(dist[:, -1:] / dist[:, :-1]), axis=1)
    return float(np.mean(1.0 / inv))


def correlation_dimension(
    x: np.ndarray, quantiles: tuple[float, float] = (0.01, 0.1), radii: int = 20
) -> float:
    """Slope of ``log C(r)`` against ``log r`` ([A] eq. 7) over ``radii`` log-spaced radii between the
    given quantiles of the pairwise distances."""
    d = np.sort(pdist(np.asarray(x, np.float64)))
    d = d[d > 0]
    lo, hi = np.quantile(d, quantiles)
    r = np.geomspace(lo, hi, radii)
    c = np.searchsorted(d, r) / len(d)
    return float(np.polyfit(np.log(r), np.log(c), 1)[0])


def simplex_angle(n: int) -> float:
    """Angle in degrees between two vertices of a regular (n−1)-simplex seen from its centre ([A] eq. 11)."""
    return float(np.degrees(np.arccos(-1.0 / (n - 1))))


def readout_geometry(readout: np.ndarray) -> dict[str, np.ndarray]:
    """Norms ``[N]``, pairwise angles in degrees ``[N, N]`` and the subspace fraction Λ (eq. 12: the mean
    over readouts of ``‖r_i'‖² / ‖r_i‖²``, ``r_i'`` the projection of r_i onto the span of the others) of
    readout vectors, the columns of ``readout`` ([D, N])."""
    r = np.asarray(readout, np.float64)
    norms = np.linalg.norm(r, axis=0)
    cos = (r.T @ r) / np.outer(norms, norms)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    fractions = []
    for i in range(r.shape[1]):
        others = np.delete(r, i, axis=1)
        proj = others @ np.linalg.lstsq(others, r[:, i], rcond=None)[0]
        fractions.append(proj @ proj / (r[:, i] @ r[:, i]))
    return {"norms": norms, "angles": angles, "subspace_fraction": float(np.mean(fractions))}


def lsa(counts: np.ndarray, rank: int) -> dict[str, np.ndarray]:
    """Latent semantic analysis of a class × word count matrix: its rank-``rank`` truncated SVD.

    Returns ``classes`` ([C, rank], U·S: each class's coordinates), ``words`` ([W, rank], V: each word's
    direction) and ``singular_values`` (all of them, largest first)."""
    u, s, vt = np.linalg.svd(np.asarray(counts, np.float64), full_matrices=False)
    return {"classes": u[:, :rank] * s[:rank], "words": vt[:rank].T, "singular_values": s}


def class_word_counts(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The class × word count matrix ``[C, V]`` of one-hot phrases ``inputs`` ([P, L, V]) labelled by
    ``targets`` ([P, C], one-hot or, for multi-label, 0/1 per label): word v's uses in phrases of class c."""
    return np.asarray(targets, np.float64).T @ np.asarray(inputs, np.float64).sum(axis=1)


def network_geometry(
    final_states: np.ndarray,
    fp_states: np.ndarray,
    fp_valid: np.ndarray,
    readout: np.ndarray,
    k: int = 20,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """[A]'s measures of one trained classifier: the dimension of its final hidden states on the probe
    phrases (``hidden_*``) and of its fixed-point manifold at x = 0 (``fp_*``), and its readout geometry.

    ``*_var95`` / ``*_var_classes``: PCA dimensions for 95 % and N/(N+1) of the variance (N = readout
    columns); ``*_pr`` global participation ratio; ``hidden_local_pr``, ``hidden_mle`` (k neighbours),
    ``hidden_corr_dim``.  Fixed-point measures are NaN with fewer than 3 valid points."""
    n = readout.shape[1]
    out: dict[str, np.ndarray] = {}
    sets = {"hidden": np.asarray(final_states, np.float64), "fp": np.asarray(fp_states)[np.asarray(fp_valid)]}
    for name, x in sets.items():
        ok = len(x) >= 3 and pca_variances(x).sum() > 0
        out[f"{name}_var95"] = variance_dimension(x, 0.95) if ok else np.nan
        out[f"{name}_var_classes"] = variance_dimension(x, n / (n + 1)) if ok else np.nan
        out[f"{name}_pr"] = participation_ratio(x) if ok else np.nan
    x = sets["hidden"]
    kk = min(k, len(x) - 1)
    out["hidden_local_pr"] = local_participation_ratio(x, kk, seed=seed)
    out["hidden_mle"] = mle_dimension(x, kk)
    out["hidden_corr_dim"] = correlation_dimension(x)
    g = readout_geometry(readout)
    out.update(readout_norm=g["norms"], readout_angle=g["angles"], subspace_fraction=g["subspace_fraction"])
    return {key: np.asarray(v, np.float32) for key, v in out.items()}


# --------------------------------------------------------------------------------------------------
# the analysis of a run: every member of a classification group, and the dataset's LSA


def reported_words(task) -> tuple[str, ...]:
    """The words the per-word results are given for: the whole vocabulary of a synthetic task; a
    corpus's ``n_words`` most common (``<pad>`` and ``<unk>`` left out)."""
    if not task.vocab:
        return task.words
    return task.words[2 : 2 + task.param("n_words")]


def text_geometry(sweep, gp, dynamics: dict) -> dict[str, np.ndarray]:
    """[A]'s measures of each member of a classification group (:func:`network_geometry`), plus
    ``word_deflection`` [members, V, state] — the mean ``h_t − h_{t−1}`` over the probe phrases' steps
    reading each word — and ``speed`` [members, probes] — ``‖h − F(h, 0)‖`` at each probe phrase's final
    state (slow where it is far below the deflections)."""
    import jax
    import jax.numpy as jnp

    task, model = sweep.task, gp.model
    x = task.probe_inputs
    states = jax.jit(jax.vmap(model.states, (0, None)))(gp.params, x)  # [M, P, L, D]
    zero = jnp.zeros((task.n_in,))  # x = 0: the cell's input (a corpus: the embedded input)
    step = jax.vmap(jax.vmap(model.step, (None, 0, None)), (0, 0, None))  # members × probes
    speed = np.asarray(
        jnp.linalg.norm(step(gp.params["cell"], states[:, :, -1], zero) - states[:, :, -1], axis=-1)
    )
    states = np.asarray(states, np.float64)
    words = np.asarray(x) if task.vocab else np.asarray(x).argmax(-1)  # [P, L] word ids
    delta = np.diff(states, axis=2, prepend=0.0)  # h_0 = 0
    n_words = len(reported_words(task))  # a corpus: its most common words (ids 2 …), padding excluded
    first = 2 if task.vocab else 0
    onehot = (words[..., None] == np.arange(first, first + n_words)).astype(np.float64)  # [P, L, W]
    uses = np.maximum(onehot.sum(axis=(0, 1)), 1)
    deflection = np.einsum("plv,mpld->mvd", onehot, delta) / uses[None, :, None]
    readout = np.asarray(gp.params["readout"]["kernel"])
    rows = [
        network_geometry(states[m, :, -1], dynamics["fp_states"][m, 0], dynamics["fp_valid"][m, 0], readout[m],
                         seed=sweep.seed)
        for m in range(len(gp.member))
    ]  # fmt: skip
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return out | {"word_deflection": deflection.astype(np.float32), "speed": speed.astype(np.float32)}


def text_lsa(sweep, phrases: int = 8192) -> dict[str, np.ndarray]:
    """[A] §4: the LSA of the dataset's class × word count matrix, rank = number of classes — over
    ``phrases`` phrases drawn from the config's seed (synthetic tasks), or a corpus's whole training split
    (counts and word directions kept for :func:`reported_words`).  Also the reported ``words``."""
    from popdyn.population import member_key

    task = sweep.task
    words = reported_words(task)
    if task.vocab:
        c = task.corpus
        counts = np.stack(
            [np.bincount(c.train_ids[t > 0].ravel(), minlength=task.vocab) for t in c.train_targets.T]
        )
        counts = counts.astype(np.float64)
        counts[:, :2] = 0  # <pad>, <unk>
    else:
        inputs, targets = task.sample(member_key(sweep.seed, "lsa"), phrases)
        counts = class_word_counts(inputs, targets)
    out = lsa(counts, task.n_out)
    first = 2 if task.vocab else 0
    keep = slice(first, first + len(words))
    return {"counts": counts[:, keep], "classes": out["classes"], "words": out["words"][keep],
            "singular_values": out["singular_values"], "word": np.array(words)}  # fmt: skip


@dataclass(frozen=True)
class GeometryOptions:
    """[A]'s measures take no settings (``k`` = 20 neighbours, the config's seed)."""


DIMS = {
    **dict.fromkeys(
        [f"{s}_{m}" for s in ("hidden", "fp") for m in ("var95", "var_classes", "pr")]
        + ["hidden_local_pr", "hidden_mle", "hidden_corr_dim", "subspace_fraction"],
        (),
    ),
    "readout_norm": ("output",),
    "readout_angle": ("output", "output_to"),
    "word_deflection": ("word", "state"),
    "speed": ("probe",),
}

analyses.register(
    analyses.Analysis(
        "geometry", GeometryOptions, None, dims=DIMS,
        group=lambda sweep, options, gp, devices, results: text_geometry(sweep, gp, results["dynamics"]),
        needs=("dynamics",), into="dynamics", prefix="",
        applies=lambda options, task: task.classification,
        run_results={"lsa.npz": text_lsa}, doc=__doc__,
    )
)  # fmt: skip
