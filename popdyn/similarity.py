"""Who resembles whom: SVCCA, CKA and topology distances between networks ([U] §2.3, SPEC §4).

For two state matrices over the same probe samples, ``X`` (S × N1) and ``Y`` (S × N2), columns centred:

- **SVCCA** (Raghu et al. 2017): keep each matrix's top principal components reaching ``keep_variance`` of
  its variance (``X ≈ U_x Σ_x V_xᵀ``, k_x columns); the canonical correlations of the two reduced sets are
  the singular values of ``U_xᵀ U_y``; similarity = their mean over min(k_x, k_y).
- **CKA** (linear, Kornblith et al. 2019): ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)``; with ``K = XXᵀ``,
  ``‖YᵀX‖²_F = ⟨K_x, K_y⟩`` and ``‖XᵀX‖_F = ‖K_x‖_F``, so CKA is the dot product of the two normalised
  Gram matrices.

Distance = 1 − similarity.  A population is *prepared* once per network (:func:`prepare`: the basis
``U_x`` padded with zero columns to a common width, and the normalised Gram matrix packed to its upper
triangle), after which every pair costs one small matmul and singular values (SVCCA) and a dot product
(CKA): :func:`all_pairs` runs them in blocks of networks, one compiled program per block shape, with
memory bounded by the block size.  Networks of every width share one prepared shape.

Beyond the paper, :func:`dsa_distances` gives Dynamical Similarity Analysis (Ostrow et al. 2023, the
``dsa-metric`` package, installed by ``pip install -e '.[dsa]'``): a DMD model of each network's probe
trajectories, compared up to a rotation; its optimisation per pair makes it a metric for small
populations (4 networks of 6 units: 6 s on 2 cores).

Topology distances (:func:`topology_distances`) are Euclidean distances between each network's
fixed-point graph from ``popdyn.dynamics``, defined for every network whatever its number of fixed points
(``similarity.topology=grouped``): flip-flop transition probabilities between memory states — the stable
points grouped by the corner their readout encodes, the saddles by the corners they separate
(:func:`grouped_transitions`) —, sine condition graphs and CDI nearest-neighbour graphs compared on the
entries both networks have.  ``similarity.topology=modal`` is [U] §3.1's rule instead: transition matrices
of the points ordered by readout, networks with a non-modal fixed-point count set aside.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from popdyn.dynamics import full_precision

METRICS = ("svcca", "cka")
TOPOLOGY_RULES = ("grouped", "modal")  # topology_graphs: every network, or [U]'s modal-count rule


@dataclass(frozen=True)
class SimilarityOptions:
    """Settings of the similarity analysis; config section ``similarity`` uses the same names."""

    samples: int = 512  # probe states compared: a seeded subset of rows shared by every network (0: all)
    keep_variance: float = 0.95  # SVCCA: principal components kept per network reach this variance fraction
    block: int = 64  # networks per block of the all-pairs passes (memory ∝ block² · components²)
    untrained: tuple[str, ...] = ("vanilla",)  # archs whose members get an untrained twin ([U] Fig. 4)
    mds_iter: int = 300  # SMACOF iterations of the MDS embeddings
    dsa: bool = False  # also Dynamical Similarity Analysis (the dsa-metric package; slow, small populations)
    dsa_delays: int = 10  # DSA: delays of the Hankel embedding
    dsa_rank: int = 10  # DSA: rank of its DMD model
    dsa_iters: int = 1000  # DSA: iterations of its rotation fit per pair
    topology: str = "grouped"  # topology distance: every network ("grouped") or [U]'s modal-count rule
    permutations: int = 999  # PERMANOVA: label permutations for each p-value (0: no p-value)
    bootstrap: int = 200  # resamples of the seeds for the confidence intervals (0: none)

    def __post_init__(self):
        if self.topology not in TOPOLOGY_RULES:
            raise ValueError(
                f"similarity.topology = {self.topology!r} is unknown; allowed: {', '.join(TOPOLOGY_RULES)}"
            )
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("untrained", "dsa", "topology"):
                continue
            bad = v < 0 if f.name in ("samples", "permutations", "bootstrap") else v <= 0
            if bad or (f.name == "keep_variance" and v > 1):
                allowed = {"samples": "≥ 0 (0: all)", "permutations": "≥ 0", "bootstrap": "≥ 0",
                           "keep_variance": "in (0, 1]"}.get(f.name, "> 0")  # fmt: skip
                raise ValueError(f"similarity.{f.name} = {v!r} is impossible; it must be {allowed}")


class Prepared(NamedTuple):
    """One network's states, reduced for the pairwise passes (stack them for a population)."""

    basis: Float[Array, "S R"]  # U_x: orthonormal principal directions over samples, zero beyond k
    k: Int[Array, ""]  # components kept by SVCCA
    gram: Float[Array, " G"]  # K_x / ‖K_x‖_F, upper triangle, off-diagonal entries × √2


@partial(jax.jit, static_argnames=("keep_variance", "width"))
@full_precision
def prepare(states: Float[Array, "S N"], keep_variance: float = 0.95, width: int | None = None) -> Prepared:
    """Centre, reduce and normalise one network's states; ``width`` pads the basis to that many columns
    (default min(S, N)).  The eigen-decomposition is of the smaller of XᵀX (N × N) and XXᵀ (S × S)."""
    x = states - jnp.mean(states, axis=0)
    s, n = x.shape
    if n <= s:
        lam, v = jnp.linalg.eigh(x.T @ x)
        lam, v = lam[::-1], v[:, ::-1]
        scale = jnp.where(lam > lam[0] * 1e-10, 1.0 / jnp.sqrt(jnp.maximum(lam, 1e-30)), 0.0)
        u = (x @ v) * scale
    else:
        lam, u = jnp.linalg.eigh(x @ x.T)
        lam, u = lam[::-1][:n], u[:, ::-1][:, :n]
    lam = jnp.maximum(lam, 0.0)
    frac = jnp.cumsum(lam) / jnp.sum(lam)
    k = jnp.minimum(jnp.sum(frac < keep_variance - 1e-6) + 1, lam.shape[0])
    u = jnp.where(jnp.arange(u.shape[1]) < k, u, 0.0)
    width = width or u.shape[1]
    if width > u.shape[1]:
        u = jnp.pad(u, ((0, 0), (0, width - u.shape[1])))
    gram = x @ x.T
    gram /= jnp.linalg.norm(gram)
    i, j = np.triu_indices(s)
    packed = gram[i, j] * jnp.where(i == j, 1.0, math.sqrt(2.0))
    return Prepared(u[:, :width], k.astype(jnp.int32), packed)


def _svcca(a: Prepared, b: Prepared) -> Float[Array, ""]:
    rho = jnp.linalg.svd(a.basis.T @ b.basis, compute_uv=False)
    return jnp.sum(rho) / jnp.minimum(a.k, b.k)


def _cka(a: Prepared, b: Prepared) -> Float[Array, ""]:
    return jnp.dot(a.gram, b.gram)


@full_precision
def svcca(x: Float[Array, "S N1"], y: Float[Array, "S N2"], keep_variance: float = 0.95) -> Float[Array, ""]:
    """Mean canonical correlation of the top-``keep_variance`` principal components of x and y."""
    return _svcca(prepare(x, keep_variance), prepare(y, keep_variance))


@full_precision
def cka(x: Float[Array, "S N1"], y: Float[Array, "S N2"]) -> Float[Array, ""]:
    """Linear CKA ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` of the centred states."""
    return _cka(prepare(x), prepare(y))


@jax.jit
@full_precision
def _svcca_block(basis_a, k_a, basis_b, k_b) -> Float[Array, "A B"]:
    """SVCCA similarity of every network of block a with every one of block b."""
    m = jnp.einsum("isk,jsl->ijkl", basis_a, basis_b)
    rho = jnp.linalg.svd(m, compute_uv=False)
    return jnp.sum(rho, axis=-1) / jnp.minimum(k_a[:, None], k_b[None, :])


@partial(jax.jit, static_argnames=("rows",))
@full_precision
def _cka_rows(grams: Float[Array, "P G"], start: Int[Array, ""], rows: int) -> Float[Array, "R P"]:
    """CKA of networks ``start … start + rows`` with every network: one matmul of normalised Grams."""
    return jax.lax.dynamic_slice_in_dim(grams, start, rows) @ grams.T


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for i in range(0, n, size):
        for j in range(i, n, size):
            yield i, j


def _pad_rows(a: np.ndarray, multiple: int) -> np.ndarray:
    pad = -a.shape[0] % multiple
    return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) if pad else a


def all_pairs(
    prepared: Prepared,
    metrics: tuple[str, ...] = METRICS,
    block: int = 64,
    progress=None,
    cka_rows: int = 256,
) -> dict[str, np.ndarray]:
    """``{metric: [P, P] distance}`` (1 − similarity) for a stacked population of :func:`prepare` results;
    symmetric, zero diagonal.

    SVCCA: blocks of ``block`` networks against blocks of ``block`` (upper triangle, mirrored), networks
    taken in order of their component count k so that each block pair pads its bases only to the larger
    k of the two blocks, rounded up to a multiple of 8 (one compiled program per such width; the last
    block padded).  CKA: ``cka_rows`` networks at a time against all, one matmul of normalised Grams
    each.  ``progress``: a callable told the number of pairs done (counted once per metric) after each
    pass (e.g. a tqdm bar's ``update``, total ``len(metrics) · P(P+1)/2``)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown similarity metric {unknown[0]!r}; allowed: {', '.join(METRICS)}")
    p = int(prepared.k.shape[0])
    host = Prepared(*(np.asarray(a) for a in prepared))
    sims = {}
    if "svcca" in metrics:
        size = min(block, p)
        order = np.argsort(host.k, kind="stable")
        basis, k = _pad_rows(host.basis[order], size), _pad_rows(host.k[order], size)
        width = basis.shape[-1]
        sim = np.zeros((p, p), np.float32)
        for i, j in _blocks(p, size):
            w = min(width, -(-max(int(k[i : i + size].max()), int(k[j : j + size].max())) // 8) * 8)
            s = _svcca_block(
                basis[i : i + size, :, :w], k[i : i + size], basis[j : j + size, :, :w], k[j : j + size]
            )
            ni, nj = min(size, p - i), min(size, p - j)
            sim[i : i + ni, j : j + nj] = np.asarray(s)[:ni, :nj]
            if progress is not None:
                progress(ni * nj if i != j else ni * (ni + 1) // 2)
        sim = np.triu(sim) + np.triu(sim, 1).T  # only blocks i ≤ j were computed
        sims["svcca"] = np.empty_like(sim)
        sims["svcca"][np.ix_(order, order)] = sim  # back from k order to the given order
    if "cka" in metrics:
        rows = min(cka_rows, p)
        grams = jnp.asarray(host.gram)  # no padded copy: the last block starts early instead
        sim = np.zeros((p, p), np.float32)
        for i in range(0, p, rows):
            n, start = min(rows, p - i), min(i, p - rows)
            sim[i : i + n] = np.asarray(_cka_rows(grams, start, rows))[i - start : i - start + n]
            if progress is not None:
                progress(sum(p - a for a in range(i, i + n)))
        sims["cka"] = sim
    out = {}
    for m, s in sims.items():
        d = np.triu(1.0 - s, 1)  # one of (i, j) and (j, i), mirrored: exactly symmetric, zero diagonal
        out[m] = np.clip(d + d.T, 0.0, None)  # 1 − similarity of near-identical networks: −1e-7 → 0
    return out


# ---------------------------------------------------------------------------------------- topology


def readout_groups(readout: Float[np.ndarray, "... n_out"]) -> np.ndarray:
    """Each point's memory state as a base-3 integer: every output rounded to the nearest of −1, 0, +1
    (``|y| < ½ → 0``), digit k = level + 1 of output k.  Stable flip-flop points read out at the
    corners {−1, +1}^K; the saddles between two corners read 0 on the channel they separate."""
    y = np.asarray(readout, np.float64)
    digits = np.where(np.abs(y) < 0.5, 1, np.where(y > 0, 2, 0))
    return np.sum(digits * 3 ** np.arange(y.shape[-1]), axis=-1).astype(np.int64)


def grouped_transitions(readout, valid, transition) -> tuple[np.ndarray, np.ndarray]:
    """Flip-flop topology for every network, whatever its number of fixed points: the transition
    probabilities between memory states (:func:`readout_groups`) instead of between points.

    ``T[a, b] = (1/|a|) Σ_{i ∈ a} Σ_{j ∈ b} P[i, j]``: for the valid points i of group a, the mean
    probability that a run started near i ends at a stable point of group b (``P`` of
    ``popdyn.dynamics.transitions``).  A network that has [U]'s ideal set — one stable point per corner,
    saddles between them — gives [U]'s transition matrix with its points labelled by memory state; an
    extra stable point beside a corner joins that corner's group and changes nothing (its runs stay in
    the group), while a missing corner empties a diagonal entry and reroutes the saddles next to it.
    Groups are the union over the population of the groups any network occupies (others are 0 for all).

    ``readout`` [P, K, n_out], ``valid`` [P, K], ``transition`` [P, K, K] → (``[P, G·G]`` flattened T,
    ``[G]`` group codes)."""
    valid = np.asarray(valid, bool)
    codes = np.where(valid, readout_groups(np.nan_to_num(readout)), -1)
    groups = np.unique(codes[valid])
    idx = np.searchsorted(groups, np.where(valid, codes, groups[0] if len(groups) else 0))
    g = len(groups)
    onehot = (idx[..., None] == np.arange(g)) & valid[..., None]  # [P, K, G]
    p = np.where(valid[:, :, None] & valid[:, None, :], np.nan_to_num(transition), 0.0)
    into = np.einsum("pij,pjb->pib", p, onehot)  # [P, K, G]: from point i into group b
    size = onehot.sum(axis=1)  # [P, G]
    t = np.einsum("pia,pib->pab", onehot, into) / np.maximum(size, 1)[:, :, None]
    return t.reshape(len(t), g * g), groups


def topology_graphs(ds, rule: str = "grouped") -> tuple[np.ndarray, np.ndarray]:
    """Each trained network's fixed-point graph as a flat vector (NaN entries: not defined for that
    network), and which networks are compared.

    ``rule="grouped"`` (popdyn's default) compares every trained network (``status``: neither diverged
    nor exploded) that has a fixed point:
    flip-flop: :func:`grouped_transitions`; sine: the per-condition graph of normalised distances between
    the input-dependent fixed points, NaN where a condition has no oscillatory point (pairs compare the
    entries both networks have, :func:`partial_distances`); cdi: every context's nearest-neighbour graph
    resampled to a fixed size (0 where a context has fewer than 2 points).
    ``rule="modal"`` is [U] §3.1's: flip-flop transition matrices over the points ordered by readout,
    networks whose count differs from the modal count set aside; sine networks with a condition
    missing and cdi networks with fewer than 2 points in a context set aside."""
    if rule not in TOPOLOGY_RULES:
        raise ValueError(f"unknown topology rule {rule!r}; allowed: {', '.join(TOPOLOGY_RULES)}")
    task = ds.attrs["task"]
    # trained networks (store.member_status: neither diverged nor exploded) with a fixed point
    trained = ds.status.values == "trained" if "status" in ds else ~ds.diverged.values
    ok = trained & (ds.n_fixed_points.values.sum(axis=1) > 0)
    if task == "flipflop" and rule == "grouped":
        flat, _ = grouped_transitions(
            ds.fp_readout.values[:, 0], ds.fp_valid.values[:, 0], ds.transition.values
        )
    elif task == "flipflop":
        ok &= ds.topology_ok.values
        counts = ds.n_fixed_points.values[:, 0]
        n = int(np.median(counts[ok])) if ok.any() else 0
        flat = ds.transition.values[:, :n, :n].reshape(len(ok), -1)
    elif task == "sine":
        flat = ds.sine_graph.values.reshape(len(ok), -1)
        ok &= np.isfinite(flat).any(axis=1) if rule == "grouped" else np.isfinite(flat).all(axis=1)
    elif task == "cdi":
        flat = ds.cdi_graph.values.reshape(len(ok), -1)
        if rule == "modal":
            ok &= (ds.n_fixed_points.values >= 2).all(axis=1)
    else:
        raise ValueError(f"no topology distance for task {task!r}")
    flat = np.asarray(flat, np.float64)
    if rule == "modal":
        ok &= np.isfinite(flat).all(axis=1)
    return flat, ok


def partial_distances(flat: Float[np.ndarray, "P E"]) -> Float[np.ndarray, "P P"]:
    """Euclidean distances over the entries both vectors define, rescaled to the full length:
    ``d(a, b)² = (E / E_ab) Σ_{e: both finite} (a_e − b_e)²`` (the plain Euclidean distance when nothing
    is missing; NaN for pairs with no entry in common)."""
    m = np.isfinite(flat).astype(np.float64)
    a = np.where(m > 0, flat, 0.0)
    sq = (a**2) @ m.T + m @ (a**2).T - 2 * a @ a.T
    common = m @ m.T
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.sqrt(np.maximum(sq, 0.0) * flat.shape[1] / common)
    d[common == 0] = np.nan
    np.fill_diagonal(d, 0.0)
    return d


def topology_distances(ds, rule: str = "grouped") -> tuple[np.ndarray, np.ndarray]:
    """``([P, P] distances between the networks' graphs, [P] compared)``; NaN rows where not compared."""
    flat, ok = topology_graphs(ds, rule)
    d = np.full((len(ok), len(ok)), np.nan, np.float32)
    if ok.any():
        d[np.ix_(ok, ok)] = partial_distances(flat[ok])
    return d, ok


# ---------------------------------------------------------------------------------------------- DSA
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
