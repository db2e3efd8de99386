"""SVCCA, CKA, Procrustes, all-pairs distances, topology distances and MDS against plain NumPy and known
answers; the metric registry."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import numpy as np
import pytest
import xarray as xr
from scipy.stats import ortho_group

from popdyn import similarity
from popdyn.embed import mds
from popdyn.similarity import (
    SimilarityOptions,
    all_pairs,
    cka,
    prepare,
    procrustes,
    stack,
    svcca,
    topology_distances,
)
from tests.test_outside import _mean_block, registered

OPTS = SimilarityOptions()


def prepared(nets, metrics=("svcca", "cka")):
    """The stacked preparation of a list of networks' states."""
    return stack([jax.tree.map(lambda a: np.asarray(a)[None], prepare(x, OPTS, metrics)) for x in nets])


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
    stacked = prepared(nets)
    assert stacked["svcca"].basis.shape[-1] == int(stacked["svcca"].k.max())  # cut to the largest k
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
    with pytest.raises(ValueError, match="nope.*allowed: svcca, cka"):
        all_pairs(stacked, ("nope",))
    with pytest.raises(ValueError, match="'procrustes' was not prepared"):
        all_pairs(stacked, ("procrustes",))


def test_identical_networks_have_distance_zero():
    (x,) = population((12,), seed=4)
    d = all_pairs(prepared([x, x], ("svcca", "cka", "procrustes")))
    assert d["svcca"][0, 1] < 1e-5 and d["cka"][0, 1] < 1e-5 and d["procrustes"][0, 1] < 2e-3


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


def test_flipflop_topology_distance_with_the_modal_rule_sets_aside_non_modal_networks():
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
    d, ok = topology_distances(ds, rule="modal")  # [U] §3.1's rule
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


# ------------------------------------------------------------------ topology for every network (grouped)
@functools.cache
def _flipflop_analysis(widths: tuple[float, ...]):
    """The analysis of a constructed flip-flop network ``h' = tanh(diag(w) h + 4 x)``, ``y = h / a(w)``
    (``tests/test_dynamics.py``): with every w_k > 1 the ideal 3^K points, 2^K stable corners; a unit with
    w_k < 1 has one stable state (0), so the network holds no memory on that channel."""
    from functools import partial

    import jax

    from popdyn.analyses.dynamics import FixedPointOptions, TopologyOptions, analyze_one
    from popdyn.model import Model
    from popdyn.tasks import make_task
    from tests.test_dynamics import saturation_root

    k = len(widths)
    # no initial pulse: the probes then visit the states between the corners, where the saddles are
    task = make_task("flipflop", K=k, T=50, initial_pulse=False)
    model = Model("vanilla", "tanh", k, task.n_in, task.n_out)
    w = np.asarray(widths, np.float32)
    scale = np.array([saturation_root(v) if v > 1 else 1.0 for v in widths], np.float32)
    params = {
        "cell": {
            "recurrent": np.diag(w),
            "input": 4.0 * np.eye(k, dtype=np.float32),
            "bias": np.zeros(k, np.float32),
        },
        "readout": {"kernel": np.diag(1 / scale), "bias": np.zeros(k, np.float32)},
    }
    run = jax.jit(partial(analyze_one, model, task, FixedPointOptions(steps=600), TopologyOptions()))
    return jax.tree.map(np.asarray, run(params, jax.random.key(0)))


def _dataset(outs: list[dict]) -> xr.Dataset:
    kmax = max(o["fp_valid"].shape[1] for o in outs)

    def pad(a, fill, axes):
        widths = [(0, 0)] * a.ndim
        for ax in axes:
            widths[ax] = (0, kmax - a.shape[ax])
        return np.pad(a, widths, constant_values=fill)

    return xr.Dataset(
        {
            "fp_readout": (("member", "condition", "fixed_point", "output"),
                           np.stack([pad(o["fp_readout"], np.nan, [1]) for o in outs])),
            "fp_valid": (("member", "condition", "fixed_point"), np.stack([pad(o["fp_valid"], False, [1]) for o in outs])),
            "transition": (("member", "fixed_point", "fixed_point_to"),
                           np.stack([pad(o["transition"], 0.0, [0, 1]) for o in outs])),
            "n_fixed_points": (("member", "condition"), np.stack([o["n_fixed_points"] for o in outs])),
            "diverged": ("member", np.zeros(len(outs), bool)),
        },
        attrs={"task": "flipflop"},
    )  # fmt: skip


def _with_extra_corner_point(out: dict) -> dict:
    """``out`` with one more stable point just beside its first stable corner: its runs stay with it, and
    half the runs that ended at that corner end at the new point instead (the two share the basin)."""
    out = {k: v.copy() for k, v in out.items()}
    valid = out["fp_valid"][0]
    n = int(valid.sum())
    corner = int(np.flatnonzero(valid & (out["fp_n_unstable"][0] == 0))[0])
    k = valid.shape[0] + 1
    for name, fill in (("fp_valid", False), ("fp_n_unstable", 0), ("fp_readout", np.nan)):
        a = out[name]
        out[name] = np.concatenate([a, np.full_like(a[:, :1], fill)], axis=1)
    out["fp_valid"][0, n] = True
    out["fp_readout"][0, n] = out["fp_readout"][0, corner] * 0.97
    p = np.zeros((k, k))
    p[:-1, :-1] = out["transition"]
    p[:, n], p[:, corner] = 0.5 * p[:, corner], 0.5 * p[:, corner]
    p[n, n] = 1.0
    out["transition"] = p
    out["n_fixed_points"] = out["n_fixed_points"] + 1
    return out


def test_grouped_topology_compares_every_network_as_the_paper_would_wish():
    """An extra stable point beside a corner leaves a network close to the ideal one; a network with no
    memory on one channel (4 corners instead of 8) is far; point order does not matter; every network
    is compared whatever its fixed-point count, where [U]'s modal rule would set two of them aside."""
    ideal = _flipflop_analysis((2.0, 2.0, 2.0))
    assert ideal["n_fixed_points"][0] == 27 and ideal["n_stable"][0] == 8
    extra = _with_extra_corner_point(ideal)
    forgetful = _flipflop_analysis((2.0, 2.0, 0.5))
    assert forgetful["n_stable"][0] == 4
    ds = _dataset([ideal, ideal, extra, forgetful])
    d, ok = topology_distances(ds)
    assert ok.all()
    assert d[0, 1] == 0.0
    assert d[0, 2] < 0.05  # the extra point joins its corner's memory state
    assert d[0, 3] > 1.0  # four memory states missing
    assert d[0, 3] > 20 * d[0, 2]
    modal_ok = topology_distances(
        ds.assign(topology_ok=("member", ds.n_fixed_points.values[:, 0] == 27)), "modal"
    )[1]
    assert modal_ok.tolist() == [True, True, False, False]


def test_grouped_transitions_are_the_papers_matrix_labelled_by_memory_state():
    """For the ideal network each memory state holds one point: a stable corner keeps its runs (T = 1
    on the diagonal), a saddle between two corners splits them between exactly those two, and the
    relabelling does not depend on the order the points are stored in."""
    from popdyn.tasks.flipflop import grouped_transitions, readout_groups

    out = _flipflop_analysis((2.0, 2.0, 2.0))
    valid = out["fp_valid"][0]
    y = out["fp_readout"][0]
    t, groups = grouped_transitions(y[None], valid[None], out["transition"][None])
    assert len(groups) == 27  # every memory state of 3^3 occupied once
    t = t.reshape(27, 27)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    digits = (groups[:, None] // 3 ** np.arange(3)) % 3 - 1  # each group's levels per channel
    for a in range(27):
        zeros = np.flatnonzero(digits[a] == 0)
        if not len(zeros):
            assert t[a, a] == 1.0
        if len(zeros) == 1:  # a saddle with one unstable mode: runs end at the two corners it separates
            targets = np.flatnonzero(t[a] > 0)
            assert len(targets) == 2 and all((digits[b] != 0).all() for b in targets)
            assert all((digits[b][digits[a] != 0] == digits[a][digits[a] != 0]).all() for b in targets)
    perm = np.random.default_rng(0).permutation(valid.shape[0])
    t2, groups2 = grouped_transitions(
        y[perm][None], valid[perm][None], out["transition"][np.ix_(perm, perm)][None]
    )
    np.testing.assert_array_equal(groups2, groups)
    np.testing.assert_allclose(t2.reshape(27, 27), t, atol=1e-12)
    assert readout_groups(np.array([[0.9, -1.2, 0.2]])).tolist() == [2 * 1 + 0 * 3 + 1 * 9]


def test_partial_distances_compare_the_entries_both_networks_define():
    from popdyn.similarity import partial_distances

    a = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, np.nan, 5.0], [np.nan, np.nan, np.nan, np.nan]])
    d = partial_distances(a)
    np.testing.assert_allclose(d[0, 1], np.sqrt(4.0 * 4 / 3))  # (3 − 5)² over 3 shared entries, × 4/3
    assert np.isnan(d[0, 2]) and d[2, 2] == 0.0
    full = np.random.default_rng(1).standard_normal((5, 7))
    np.testing.assert_allclose(
        partial_distances(full), np.linalg.norm(full[:, None] - full[None], axis=-1), atol=1e-10
    )


def test_sine_and_cdi_topology_compare_networks_with_missing_points():
    """Sine: a network without an oscillatory point at one condition is compared on the conditions it has
    (the modal rule set it aside); cdi: a context with fewer than 2 points gives an empty graph, still
    compared. Networks without any fixed point, or diverged, are not compared."""
    rng = np.random.default_rng(3)
    graphs = rng.uniform(size=(4, 3, 3))
    graphs[1, 2, :] = graphs[1, :, 2] = np.nan  # no oscillatory point at condition 2
    ds = xr.Dataset(
        {"sine_graph": (("member", "condition", "condition_to"), graphs),
         "n_fixed_points": (("member", "condition"), np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 0]])),
         "diverged": ("member", np.array([False, False, True, False]))},
        attrs={"task": "sine"},
    )  # fmt: skip
    d, ok = topology_distances(ds)
    assert ok.tolist() == [True, True, False, False]
    shared = np.isfinite(graphs[1].ravel())
    diff = (graphs[0].ravel() - graphs[1].ravel())[shared]
    np.testing.assert_allclose(d[0, 1], np.sqrt(np.sum(diff**2) * 9 / shared.sum()), rtol=1e-6)
    assert topology_distances(ds, "modal")[1].tolist() == [True, False, False, False]
    cdi = xr.Dataset(
        {"cdi_graph": (("member", "condition", "node", "node_to"), rng.uniform(size=(3, 2, 4, 4))),
         "n_fixed_points": (("member", "condition"), np.array([[5, 5], [1, 6], [4, 4]])),
         "diverged": ("member", np.zeros(3, bool))},
        attrs={"task": "cdi"},
    )  # fmt: skip
    assert topology_distances(cdi)[1].all()
    assert topology_distances(cdi, "modal")[1].tolist() == [True, False, True]


@pytest.mark.parametrize("rule", ["grouped", "modal"])
@pytest.mark.parametrize("case", ["no fixed point anywhere", "none trained"])
def test_degenerate_topologies_are_nan_rows_not_a_crash(rule, case):
    """Modal fixed-point count 0 (no network has a point), or every network diverged or exploded: no
    network is compared, every distance is NaN, and the MDS and statistics of it are NaN too."""
    from popdyn import embed, statistics

    n, k = 4, 3
    none = case == "no fixed point anywhere"
    counts = np.zeros(n, int) if none else np.full(n, k)
    valid = np.arange(k)[None] < counts[:, None]
    ds = xr.Dataset(
        {
            "transition": (("member", "fixed_point", "fixed_point_to"), np.where(valid[..., None], 0.5, 0.0)),
            "fp_readout": (("member", "condition", "fixed_point", "output"),
                           np.where(valid[:, None, :, None], 1.0, np.nan) * np.ones((n, 1, k, 2))),
            "fp_valid": (("member", "condition", "fixed_point"), valid[:, None]),
            "n_fixed_points": (("member", "condition"), counts[:, None]),
            "topology_ok": ("member", np.full(n, none)),  # store.load: count == modal (0) where none
            "diverged": ("member", np.full(n, not none)),
            "status": ("member", np.array(["trained"] * n if none else ["diverged", "exploded"] * 2)),
        },
        attrs={"task": "flipflop"},
    )  # fmt: skip
    d, ok = topology_distances(ds, rule)
    assert not ok.any() and d.shape == (n, n) and np.isnan(d).all()
    assert np.isnan(embed.mds(d)).all()
    table = statistics.statistics_table({"topology": d}, {"arch": np.array(["a", "a", "b", "b"])},
                                        seeds=np.arange(n), permutations=9, bootstrap=9)  # fmt: skip
    assert np.isnan(table.values).all()


# ------------------------------------------------------------------------------------------ Procrustes
def np_procrustes(x, y):
    """Williams et al. 2021's angular shape distance, from its definition: centre, scale to unit Frobenius
    norm, zero-pad the narrower to the wider, then ``arccos`` of the best alignment over orthogonal Q,
    ``max_Q tr(Qᵀ XᵀY) = Σ svd(XᵀY)``."""
    x, y = (a.astype(np.float64) - a.mean(axis=0) for a in (x, y))
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    n = max(x.shape[1], y.shape[1])
    x, y = (np.pad(a, ((0, 0), (0, n - a.shape[1]))) for a in (x, y))
    return float(np.arccos(np.clip(np.linalg.svd(x.T @ y, compute_uv=False).sum(), -1.0, 1.0)))


@pytest.mark.parametrize("widths", [(16, 40), (200, 24), (130, 150), (24, 24)])  # N > S: the QR route
def test_procrustes_equals_the_numpy_reference(widths):
    x, y = population(widths, seed=5)
    np.testing.assert_allclose(float(procrustes(x, y)), np_procrustes(x, y), rtol=1e-4, atol=1e-5)


def test_procrustes_invariances_symmetry_and_zero_on_itself():
    """Rotations and reflections of the units, isotropic scaling and translation leave it unchanged."""
    x, y = population((20, 30), seed=6)
    q = ortho_group.rvs(20, random_state=7).astype(np.float32)
    flip = np.diag(np.where(np.arange(20) % 3 == 0, -1.0, 1.0)).astype(np.float32)  # a reflection
    d = float(procrustes(x, y))
    assert 0.1 < d < np.pi / 2
    for moved in (x @ q, x @ flip, 3.5 * x, x - 7.0, 0.2 * (x @ q @ flip) + 1.5):
        np.testing.assert_allclose(float(procrustes(moved, y)), d, rtol=1e-4)
        assert float(procrustes(moved, x)) < 2e-3  # the same shape: zero (float32: ≈ √(2ε) at most)
    np.testing.assert_allclose(float(procrustes(y, x)), d, rtol=1e-6)  # symmetric
    assert float(procrustes(x, x)) < 2e-3
    # a rotation into more units (zero-padded narrower network) is still the same shape
    wide = np.pad(x, ((0, 0), (0, 10))) @ ortho_group.rvs(30, random_state=8).astype(np.float32)
    assert float(procrustes(x, wide)) < 2e-3


def test_procrustes_satisfies_the_triangle_inequality():
    rng = np.random.default_rng(9)
    for trial in range(4):
        widths = rng.integers(3, 40, size=6)
        nets = population(tuple(widths), seed=10 + trial, noise=float(rng.uniform(0.05, 1.0)))
        d = all_pairs(prepared(nets, ("procrustes",)), block=4)["procrustes"]
        assert (d >= 0).all() and np.isfinite(d).all() and (d <= np.pi / 2 + 1e-6).all()
        # d(i, k) ≤ d(i, j) + d(j, k) for every triple
        assert (d[:, None, :] <= d[:, :, None] + d[None, :, :] + 1e-4).all()


def test_procrustes_blocked_equals_pairwise_for_mixed_widths():
    widths = (8, 150, 32, 16, 64, 8, 24, 130)  # N > S = 120 for two of them; blocks of 3: padded, sorted
    nets = population(widths, seed=11)
    stacked = prepared(nets, ("procrustes",))
    assert stacked["procrustes"].z.shape == (8, S, S) and list(stacked["procrustes"].width) == [
        min(S, n) for n in widths
    ]
    done = []
    d = all_pairs(stacked, block=3, progress=done.append)["procrustes"]
    assert sum(done) == 8 * 9 // 2
    np.testing.assert_array_equal(d, d.T)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    for i in range(8):
        for j in range(i + 1, 8):
            np.testing.assert_allclose(d[i, j], float(procrustes(nets[i], nets[j])), atol=2e-5)
            np.testing.assert_allclose(d[i, j], np_procrustes(nets[i], nets[j]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(all_pairs(stacked, block=64)["procrustes"], d, atol=1e-6)  # one block


# ---------------------------------------------------------------------------------------- the registry
def test_the_registry_lists_every_metric_in_rank_order_and_refuses_bad_names():
    assert similarity.names()[:5] == ("svcca", "cka", "dsa", "topology", "procrustes")
    assert similarity.names("states") == ("svcca", "cka", "procrustes")
    assert similarity.get("procrustes").label.startswith("Procrustes shape distance")
    with pytest.raises(ValueError, match="unknown similarity metric 'nope'; allowed: svcca, cka, dsa"):
        similarity.get("nope")
    with pytest.raises(ValueError, match="registered twice"):
        similarity.register(similarity.get("cka"))
    with pytest.raises(ValueError, match="unknown similarity.metrics 'nope'"):
        SimilarityOptions(metrics=("svcca", "nope"))
    assert similarity.enabled(SimilarityOptions()) == ("svcca", "cka", "topology", "procrustes")
    assert similarity.enabled(SimilarityOptions(dsa=True), "pairwise") == ("dsa",)


def test_metrics_registered_from_outside_are_on_by_default_and_gone_after():
    """The toys of tests/test_outside.py (whose sweep computes them): each kind in its list, enabled by
    default (MetricSpec.default), removed again by unregister."""
    with registered(metrics=True):
        assert similarity.names()[-2:] == ("mean_activity", "mean_speed")
        assert "mean_activity" in similarity.names("states") and "mean_speed" in similarity.names("pairwise")
        assert similarity.enabled(SimilarityOptions())[-2:] == ("mean_activity", "mean_speed")
        assert similarity.enabled(SimilarityOptions(), "pairwise") == ("mean_speed",)
    assert "mean_activity" not in similarity.REGISTRY and "mean_speed" not in similarity.REGISTRY


def test_the_metrics_config_value_names_registered_metrics():
    from popdyn.config import ConfigError, _similarity

    assert _similarity({"metrics": None}).metrics == SimilarityOptions().metrics  # null: the defaults
    assert _similarity({"metrics": "cka"}).metrics == ("cka",) and _similarity({"metrics": []}).metrics == ()
    with pytest.raises(ConfigError, match="unknown similarity.metrics 'nope'; allowed: svcca, cka, dsa"):
        _similarity({"metrics": ["svcca", "nope"]})


@dataclass(frozen=True)
class ScaledOptions:
    scaled_factor: float = 1.0

    def __post_init__(self):
        if self.scaled_factor <= 0:
            raise ValueError(f"similarity.scaled_factor = {self.scaled_factor!r} is impossible")


SCALED = similarity.MetricSpec(
    name="scaled", short="scaled", label="scaled mean-activity distance", color="#000000", score=_mean_block,
    prepare=lambda states, options: states.mean(axis=0) * options.of("scaled").scaled_factor,
    distance=lambda d: d, options=ScaledOptions, outputs=lambda prepared: {"scaled_norm": prepared[:, 0]},
)  # fmt: skip


def test_old_similarity_settings_are_the_same_keys_and_values():
    """A run directory analysed before metrics declared their options is accepted with the same settings:
    ``similarity.yaml`` is the same flat mapping."""
    before = {"samples": 512, "keep_variance": 0.95, "block": 64, "untrained": ["vanilla"], "mds_iter": 300,
              "dsa": False, "dsa_delays": 10, "dsa_rank": 10, "dsa_iters": 1000, "topology": "grouped",
              "permutations": 999, "bootstrap": 200, "metrics": ["svcca", "cka", "topology", "procrustes"]}  # fmt: skip
    assert SimilarityOptions().settings() == before
    opts = SimilarityOptions(keep_variance=0.9, dsa_rank=4, topology="modal")
    assert opts.of("svcca").keep_variance == 0.9 and opts.of("dsa").dsa_rank == 4
    assert opts.of("topology").topology == "modal"
    assert opts.settings() == before | {"keep_variance": 0.9, "dsa_rank": 4, "topology": "modal"}
    again = dataclasses.replace(opts, block=8)  # a metric's options survive a replace of the shared ones
    assert again.block == 8 and again.of("svcca").keep_variance == 0.9 and again.of("dsa").dsa_rank == 4


def test_a_metric_declares_its_options_and_outputs(tiny_run, tmp_path):
    import shutil

    from popdyn import analysis, store
    from popdyn.config import ConfigError, _similarity, build_sweep

    with pytest.raises(ValueError, match="option similarity.keep_variance is already svcca's"):
        similarity.register(similarity.MetricSpec(
            name="clash", short="c", label="c", color="#000000", prepare=lambda s, o: s, score=_mean_block,
            options=type(similarity.get("svcca").options()),
        ))  # fmt: skip
    assert "clash" not in similarity.REGISTRY
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / store.SIMILARITY).unlink()
    (run / store.SIMILARITY_CONFIG).unlink()
    similarity.register(SCALED)
    try:
        assert SimilarityOptions().of("scaled") == ScaledOptions()  # made before: its defaults
        assert _similarity({"scaled_factor": 2}).of("scaled").scaled_factor == 2.0
        with pytest.raises(ConfigError, match="similarity.scaled_factor must be float"):
            _similarity({"scaled_factor": "big"})
        with pytest.raises(ConfigError, match="similarity.scaled_factor = -1.0 is impossible"):
            _similarity({"scaled_factor": -1})
        config = store.read_config(run)
        config["similarity"] = {**config.get("similarity", {}), "scaled_factor": 2.0}
        s = build_sweep(config)
        analysis.compare_run(s, run, progress=False)
        assert store.read_yaml(run / store.SIMILARITY_CONFIG)["scaled_factor"] == 2.0
        with np.load(run / store.SIMILARITY) as z:
            norm, k, network = z["scaled_norm"], z["k"], z["network"]
        sim = store.load_similarity(run)
    finally:
        similarity.unregister("scaled")
    assert norm.shape == network.shape and np.isfinite(norm).any()  # written by compare_run, per network
    np.testing.assert_array_equal(k, store.load_similarity(tiny_run).k.values)  # SVCCA's, as before
    assert "scaled_distance" in sim
