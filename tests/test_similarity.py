"""SVCCA, CKA, all-pairs distances, topology distances and MDS against plain NumPy and known answers."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import ortho_group

from popdyn.embed import mds
from popdyn.similarity import (
    Prepared,
    SimilarityOptions,
    all_pairs,
    cka,
    prepare,
    svcca,
    topology_distances,
)

S = 120


def population(widths, seed=0, latent=4, noise=0.05):
    """Networks reading a shared low-dimensional signal through their own random maps (like trained ones)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((S, latent))
    return [
        np.tanh(z @ rng.standard_normal((latent, n)) / 2 + rng.standard_normal(n) * 0.3).astype(np.float32)
        + noise * rng.standard_normal((S, n)).astype(np.float32)
        for n in widths
    ]


# plain NumPy references, written from SPEC §4's definitions
def np_svcca(x, y, keep=0.95):
    def reduce(a):
        a = a - a.mean(axis=0)
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(frac >= keep - 1e-6)) + 1
        return a @ vt[:k].T

    a, b = reduce(x.astype(np.float64)), reduce(y.astype(np.float64))
    # CCA: whiten each set, the canonical correlations are the singular values of the cross-covariance
    wa = a @ np.linalg.inv(np.linalg.cholesky(a.T @ a)).T
    wb = b @ np.linalg.inv(np.linalg.cholesky(b.T @ b)).T
    rho = np.linalg.svd(wa.T @ wb, compute_uv=False)
    return rho[: min(a.shape[1], b.shape[1])].mean()


def np_cka(x, y):
    x = x.astype(np.float64) - x.mean(axis=0)
    y = y.astype(np.float64) - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


@pytest.mark.parametrize("widths", [(16, 40), (200, 24), (130, 150)])  # N > S takes the Gram route
def test_svcca_and_cka_equal_numpy_references(widths):
    x, y = population(widths)
    np.testing.assert_allclose(float(svcca(x, y)), np_svcca(x, y), rtol=1e-4)
    np.testing.assert_allclose(float(cka(x, y)), np_cka(x, y), rtol=1e-4)
    np.testing.assert_allclose(float(svcca(x, y, 0.6)), np_svcca(x, y, 0.6), rtol=1e-4)


def test_invariances():
    """CKA: rotation and isotropic scaling; SVCCA: rotation; both: a constant shift (centring)."""
    x, y = population((20, 30), seed=1)
    q = ortho_group.rvs(20, random_state=2).astype(np.float32)
    moved = 3.5 * x @ q + 7.0
    np.testing.assert_allclose(float(cka(moved, y)), float(cka(x, y)), rtol=1e-4)
    np.testing.assert_allclose(float(svcca(x @ q + 7.0, y)), float(svcca(x, y)), rtol=1e-4)
    np.testing.assert_allclose(float(cka(x, moved)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(svcca(x, x)), 1.0, rtol=1e-5)
    # and they do see a difference: an unrelated network is far from 1
    (other,) = population((20,), seed=9)
    assert float(cka(x, other)) < 0.5 and float(svcca(x, other)) < 0.6


def test_all_pairs_equals_the_pairwise_functions():
    widths = (8, 16, 32, 16, 64, 8, 24)  # 7 networks in blocks of 3: padded last block, off-diagonal blocks
    nets = population(widths, seed=3)
    preps = [prepare(x) for x in nets]
    width = max(int(p.k) for p in preps)
    stacked = Prepared(
        np.stack([np.pad(np.asarray(p.basis)[:, :width], ((0, 0), (0, max(0, width - p.basis.shape[1]))))
                  for p in preps]),
        np.stack([p.k for p in preps]),
        np.stack([p.gram for p in preps]),
    )  # fmt: skip
    done = []
    d = all_pairs(stacked, block=3, progress=done.append)
    assert sum(done) == 2 * 7 * 8 // 2
    for name, f in (("svcca", svcca), ("cka", cka)):
        m = d[name]
        assert m.shape == (7, 7)
        np.testing.assert_array_equal(m, m.T)
        np.testing.assert_array_equal(np.diag(m), 0.0)
        for i in range(7):
            for j in range(i + 1, 7):
                np.testing.assert_allclose(m[i, j], 1 - float(f(nets[i], nets[j])), atol=2e-5)
    # CKA in row blocks of 3 (the last one starting early): the same matrix
    np.testing.assert_allclose(all_pairs(stacked, ("cka",), cka_rows=3)["cka"], d["cka"], atol=1e-6)
    with pytest.raises(ValueError, match="procrustes"):
        all_pairs(stacked, ("procrustes",))


def test_identical_networks_have_distance_zero():
    (x,) = population((12,), seed=4)
    p = prepare(x)
    stacked = Prepared(*(np.stack([a, a]) for a in p))
    d = all_pairs(stacked)
    assert d["svcca"][0, 1] < 1e-5 and d["cka"][0, 1] < 1e-5


def test_options_refuse_impossible_values():
    for bad in (dict(keep_variance=1.5), dict(keep_variance=0.0), dict(samples=-1), dict(block=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SimilarityOptions(**bad)


def test_mds_recovers_a_planar_configuration():
    rng = np.random.default_rng(5)
    points = rng.uniform(-1, 1, (30, 2))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    emb = mds(d, seed=0)
    np.testing.assert_allclose(np.linalg.norm(emb[:, None] - emb[None], axis=-1), d, atol=1e-3)
    np.testing.assert_array_equal(mds(d, seed=0), emb)  # deterministic
    d[3, :] = d[:, 3] = np.nan  # a set-aside network is left out, the others still embed
    emb = mds(d, seed=0)
    assert np.isnan(emb[3]).all() and np.isfinite(np.delete(emb, 3, axis=0)).all()
    with pytest.raises(ValueError, match="square"):
        mds(np.zeros((3, 4)))


def test_flipflop_topology_distance_sets_aside_non_modal_networks():
    rng = np.random.default_rng(6)
    k = 4
    counts = np.array([3, 3, 3, 2])  # modal count 3: the last network is set aside
    trans = rng.uniform(size=(4, k, k)).astype(np.float32)
    ds = xr.Dataset(
        {
            "transition": (("member", "fixed_point", "fixed_point_to"), trans),
            "n_fixed_points": (("member", "condition"), counts[:, None]),
            "topology_ok": ("member", counts == 3),
            "diverged": ("member", np.zeros(4, bool)),
        },
        attrs={"task": "flipflop"},
    )
    d, ok = topology_distances(ds)
    assert ok.tolist() == [True, True, True, False]
    assert np.isnan(d[3]).all() and np.isnan(d[:, 3]).all()
    for i in range(3):
        for j in range(3):  # Euclidean distance between the modal-size matrices
            np.testing.assert_allclose(
                d[i, j], np.linalg.norm(trans[i, :3, :3] - trans[j, :3, :3]), rtol=1e-6
            )


def test_dsa_sees_dynamics_up_to_rotation():
    """DSA (optional extra): a rotated copy of a linear system is at ~0, a system with other dynamics far."""
    pytest.importorskip("DSA")
    from popdyn.similarity import dsa_distances

    rng = np.random.default_rng(7)

    def trajectories(a, n=6, t=60):
        x = np.zeros((n, t, a.shape[0]))
        x[:, 0] = rng.standard_normal((n, a.shape[0]))
        for i in range(1, t):
            x[:, i] = x[:, i - 1] @ a.T
        return x

    theta = 2 * np.pi * 0.05
    rot = 0.97 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a = np.block([[rot, np.zeros((2, 2))], [np.zeros((2, 2)), np.diag([0.9, 0.5])]])
    q = ortho_group.rvs(4, random_state=8)
    other = np.diag([0.3, -0.6, 0.95, 0.1])
    opts = SimilarityOptions(dsa=True, dsa_delays=1, dsa_rank=4, dsa_iters=300)
    d = dsa_distances([trajectories(a), trajectories(q @ a @ q.T), trajectories(other)], opts, seed=0)
    assert d.shape == (3, 3) and np.allclose(d, d.T)
    assert d[0, 1] < 0.15 and d[0, 2] > 5 * d[0, 1] and d[1, 2] > 5 * d[0, 1]  # measured 0.08 vs 1.03
