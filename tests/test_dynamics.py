"""Fixed points, linearisation and topology (SPEC §4) against systems whose answers are known in closed form."""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn.analyses import dynamics
from popdyn.analyses.dynamics import (
    FixedPointOptions,
    FixedPoints,
    TopologyOptions,
    analyze_one,
    decompose,
    descend,
    eigenvalues,
    find_fixed_points,
    mode_overlap,
    speed,
)
from popdyn.model import Model
from popdyn.population import HParams
from popdyn.tasks import make_task, zero_baseline
from popdyn.train import TrainSettings, train_one

OPTS = FixedPointOptions(steps=600, max_points=16)


def find(step, params, x, h0, opts=OPTS):
    return jax.jit(find_fixed_points, static_argnums=(0, 4))(step, params, x, h0, opts)


def valid(fp, name):
    return np.asarray(getattr(fp, name))[np.asarray(fp.valid)]


def linear(p, h, x):
    return p["A"] @ h + p["b"] + 0.0 * jnp.sum(x)


def decoupled(p, h, x):
    return jnp.tanh(p["w"] * h) + 0.0 * jnp.sum(x)


def saturation_root(w: float) -> float:
    """The positive root of a = tanh(w a) (w > 1)."""
    a = 1.0
    for _ in range(500):
        a = np.tanh(w * a)
    return a


@pytest.mark.parametrize("radius, n_out", [(0.9, 0), (1.5, 1)])
def test_linear_map_has_one_fixed_point_with_the_maps_spectrum(radius, n_out):
    """F(h) = A h + b: h* = (I − A)⁻¹ b, J = A, eigenvalues of A (non-normal), n_unstable = #{|λ| > 1}."""
    rng = np.random.default_rng(0)
    d = 4
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.array([radius, 0.7, 0.5, -0.3]) if n_out else np.array([radius, 0.6, -0.5, 0.2])
    s = np.eye(d) + 0.5 * np.triu(rng.standard_normal((d, d)), 1)  # non-normal
    a = q @ s @ np.diag(lam) @ np.linalg.inv(s) @ q.T
    b = rng.standard_normal(d)
    p = {"A": jnp.asarray(a, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    h0 = jnp.asarray(rng.standard_normal((64, d)), jnp.float32)
    fp = find(linear, p, jnp.zeros(1), h0)
    assert int(fp.count) == 1
    h_star = np.linalg.solve(np.eye(d) - a, b)
    np.testing.assert_allclose(valid(fp, "states")[0], h_star, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(valid(fp, "jacobians")[0], a, rtol=1e-5, atol=1e-5)
    w = valid(fp, "eigenvalues")[0]
    np.testing.assert_allclose(w, sorted(lam, key=lambda x: -abs(x)), atol=1e-4)
    assert valid(fp, "n_unstable")[0] == n_out
    r, left = valid(fp, "right")[0], valid(fp, "left")[0]
    np.testing.assert_allclose(a @ r, r * w, atol=1e-4)  # right eigenvectors
    np.testing.assert_allclose(left.conj().T @ a, w[:, None] * left.conj().T, atol=1e-4)  # left
    np.testing.assert_allclose(left.conj().T @ r, np.eye(d), atol=1e-4)  # Lᴴ R = I
    np.testing.assert_allclose(valid(fp, "time_constants")[0], 1 / np.abs(np.log(np.abs(w))), rtol=1e-4)


def test_decoupled_saturating_units_every_point_none_spurious():
    """h' = tanh(2h) per unit: fixed points {−a, 0, a}² (a = tanh(2a)); unstable modes = zero coordinates."""
    a = saturation_root(2.0)
    h0 = jax.random.uniform(jax.random.key(0), (128, 2), minval=-1.2, maxval=1.2)
    fp = find(decoupled, {"w": jnp.float32(2.0)}, jnp.zeros(1), h0)
    found = valid(fp, "states")
    expected = np.array(list(itertools.product([-a, 0.0, a], repeat=2)))
    assert len(found) == 9
    for e in expected:  # every point, once
        assert np.sum(np.linalg.norm(found - e, axis=1) < 1e-4) == 1
    assert np.all(valid(fp, "q") < OPTS.q_tol)
    n_zero = np.sum(np.abs(found) < 1e-4, axis=1)
    np.testing.assert_array_equal(valid(fp, "n_unstable"), n_zero)
    # J = diag(w (1 − h²)): 2 at zero coordinates, 2(1 − a²) at saturated ones
    diag = np.where(np.abs(found) < 1e-4, 2.0, 2.0 * (1 - a**2))
    np.testing.assert_allclose(
        np.abs(valid(fp, "jacobians")), np.abs(np.apply_along_axis(np.diag, 1, diag)), atol=1e-4
    )


def test_default_options_find_all_81_fixed_points_of_a_4d_decoupled_system():
    """h' = tanh(3h) per unit in 4-D: 3^4 = 81 fixed points {−a, 0, a}^4 — beyond the 32 points popdyn
    kept before — with n_unstable = the number of zero coordinates: {0: 16, 1: 32, 2: 24, 3: 8, 4: 1}.
    Every one is found with the default options from the default number of initial states, none cut."""
    a = saturation_root(3.0)
    opts = FixedPointOptions()
    h0 = jax.random.uniform(jax.random.key(5), (opts.n_initial, 4), minval=-1.2, maxval=1.2)
    fp = jax.jit(find_fixed_points, static_argnums=(0, 4))(
        decoupled, {"w": jnp.float32(3.0)}, jnp.zeros(1), h0, opts
    )
    found = valid(fp, "states")
    assert len(found) == 81 and int(fp.n_found) == 81
    expected = np.array(list(itertools.product([-a, 0.0, a], repeat=4)))
    for e in expected:
        assert np.sum(np.linalg.norm(found - e, axis=1) < 1e-4) == 1
    counts = np.bincount(valid(fp, "n_unstable"), minlength=5)
    assert counts.tolist() == [16, 32, 24, 8, 1]


def test_the_compacted_descent_moves_only_the_moving_points_along_the_same_paths():
    """After ``compact_after`` steps only the points still moving (q ≥ settled_q) go on, gathered in chunks
    with their Adam moments: each ends where the uncompacted descent puts it (Adam is elementwise), and
    the settled ones stay where they were at ``compact_after``.  Constant lr and ``dq_tol = 0``, so that
    the three runs compare step for step."""
    p, x = {"w": jnp.float32(3.0)}, jnp.zeros(1)
    h0 = jax.random.uniform(jax.random.key(1), (200, 4), minval=-1.2, maxval=1.2)
    plain = FixedPointOptions(steps=400, lr_decay=1.0, dq_tol=0.0, compact_after=None)
    compact = replace(plain, compact_after=200, compact_chunk=16)
    go = jax.jit(descend, static_argnums=(0, 4))
    full, staged, early = (
        np.asarray(go(decoupled, p, x, h0, o)) for o in (plain, compact, replace(plain, steps=200))
    )
    q = np.asarray(jax.vmap(speed, (None, None, 0, None))(decoupled, p, jnp.asarray(early), x))
    moving = q >= compact.settled_q
    assert 16 < moving.sum() < len(moving)  # more than one chunk goes on (38 of 200), the rest settled
    np.testing.assert_allclose(staged[moving], full[moving], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(staged[~moving], early[~moving])


def test_transition_runs_stop_once_settled_with_the_same_ends(monkeypatch):
    """The transition runs of a chunk stop once every run lies near a stable point: the same matrix as
    following every run for all ``transition_steps``."""
    task, model, params = flipflop_network()

    def transitions():
        run = jax.jit(partial(analyze_one, model, task, FixedPointOptions(steps=600), TopologyOptions()))
        return np.asarray(run(params, jax.random.key(0))["transition"])

    settled = transitions()
    monkeypatch.setattr(dynamics, "_SETTLE_EVERY", 10**6)  # one block of transition_steps: no early stop
    np.testing.assert_array_equal(settled, transitions())


def test_a_cut_set_is_flagged_with_the_number_found():
    """max_points below the number of distinct points: the lowest-q points are kept, and n_found says how
    many there were (popdyn.analysis logs it and stores fp_truncated)."""
    h0 = jax.random.uniform(jax.random.key(0), (128, 2), minval=-1.2, maxval=1.2)
    fp = find(
        decoupled, {"w": jnp.float32(2.0)}, jnp.zeros(1), h0, FixedPointOptions(steps=600, max_points=4)
    )
    assert int(fp.count) == 4 and int(fp.n_found) == 9


def test_rotation_gives_the_oscillatory_pair():
    """h' = r R(θ) h: one fixed point at 0 with eigenvalues r e^{±iθ}; time constant 1/|log r|."""
    r, theta = 0.95, 2 * np.pi * 0.03

    def rotation(p, h, x):
        c, s = jnp.cos(p["theta"]), jnp.sin(p["theta"])
        return p["r"] * jnp.array([[c, -s], [s, c]]) @ h + 0.0 * jnp.sum(x)

    h0 = jax.random.normal(jax.random.key(1), (32, 2))
    fp = find(rotation, {"r": jnp.float32(r), "theta": jnp.float32(theta)}, jnp.zeros(1), h0)
    assert int(fp.count) == 1
    np.testing.assert_allclose(valid(fp, "states")[0], 0.0, atol=1e-5)
    w = valid(fp, "eigenvalues")[0]
    np.testing.assert_allclose(np.abs(w), r, rtol=1e-5)
    np.testing.assert_allclose(np.sort(np.angle(w)), [-theta, theta], rtol=1e-4)
    np.testing.assert_allclose(valid(fp, "time_constants")[0], 1 / abs(np.log(r)), rtol=1e-4)
    assert valid(fp, "n_unstable")[0] == 0


def test_vmap_over_networks_equals_each_alone():
    """One compiled program over several networks gives each network's own result."""
    ws = jnp.array([2.0, 3.0, 0.5], jnp.float32)
    h0 = jax.random.uniform(jax.random.key(2), (3, 64, 2), minval=-1.2, maxval=1.2)
    batched = jax.jit(jax.vmap(lambda w, h: find_fixed_points(decoupled, {"w": w}, jnp.zeros(1), h, OPTS)))(
        ws, h0
    )
    assert [int(c) for c in batched.valid.sum(axis=1)] == [9, 9, 1]
    for i in range(3):
        alone = find(decoupled, {"w": ws[i]}, jnp.zeros(1), h0[i])
        mine = jax.tree.map(lambda a, i=i: a[i], batched)
        # compared as sets of points (slots are in order of q, and exact fixed points' q ~1e-15 may tie
        # in another order on another backend)
        for name in ("states", "n_unstable", "eigenvalues"):
            np.testing.assert_allclose(by_state(mine, name), by_state(alone, name), rtol=1e-5, atol=1e-6)


def by_state(fp, name):
    """``name`` of the valid points, in lexicographic order of their states."""
    s = valid(fp, "states")
    return valid(fp, name)[np.lexsort(np.round(s, 4).T[::-1])]


def flipflop_network(k: int = 3, w: float = 2.0):
    """A vanilla tanh network that solves flip-flop by construction: h' = tanh(w h + 4 x), y = h / a.
    Its probes have no pulse at t = 0 (``initial_pulse=False``), so that they also visit the states
    between the corners, where the saddles lie."""
    task = make_task("flipflop", K=k, T=50, initial_pulse=False)
    model = Model("vanilla", "tanh", k, task.n_in, task.n_out)
    a = saturation_root(w)
    params = {
        "cell": {"recurrent": w * jnp.eye(k), "input": 4.0 * jnp.eye(k), "bias": jnp.zeros(k)},
        "readout": {"kernel": jnp.eye(k) / a, "bias": jnp.zeros(k)},
    }
    return task, model, params


def test_flipflop_topology_of_a_constructed_network():
    """3^K fixed points, the 2^K stable ones at the readout's corners; transitions as the geometry says:
    a stable point keeps its runs, a point with one unstable unit splits them between the two corners it
    separates, the origin sends them to every corner."""
    task, model, params = flipflop_network()
    run = jax.jit(partial(analyze_one, model, task, FixedPointOptions(steps=600), TopologyOptions()))
    out = jax.tree.map(np.asarray, run(params, jax.random.key(0)))
    ok = out["fp_valid"][0]
    assert out["n_fixed_points"][0] == 27 and out["n_stable"][0] == 8
    y = out["fp_readout"][0][ok]
    # ordered lexicographically by readout (rounded), corners exactly ±1
    keys = [tuple(r) for r in np.round(y, 1)]
    assert keys == sorted(keys)
    stable = out["fp_n_unstable"][0][ok] == 0
    np.testing.assert_allclose(np.abs(y[stable]), 1.0, atol=1e-3)
    assert len({tuple(np.sign(r)) for r in y[stable]}) == 8
    p = out["transition"][: ok.sum(), : ok.sum()]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    zeros = np.sum(np.abs(y) < 1e-3, axis=1)
    for i in range(len(y)):
        targets = np.flatnonzero(p[i] > 0)
        assert all(stable[targets])
        # the runs end at corners that agree with point i on its saturated units
        assert all(np.all(np.sign(y[j])[zeros[i] == 0] == np.sign(y[i])[zeros[i] == 0]) for j in targets)
        if zeros[i] == 0:
            assert p[i, i] == 1.0
        else:  # 2^zeros reachable corners, each a fair share (100 runs: loose bounds)
            assert len(targets) == 2 ** zeros[i]
            assert p[i, targets].min() > 0.5 / 2 ** zeros[i]


def test_analysis_is_deterministic_and_shaped_for_every_task():
    for name in ("flipflop", "sine", "cdi"):
        task = make_task(name, T=20, **({"n_probe": 4} if name == "sine" else {}))
        model = Model("gru", "tanh", 5, task.n_in, task.n_out)
        params = model.init(jax.random.key(3))
        run = jax.jit(
            partial(analyze_one, model, task, FixedPointOptions(steps=100, n_initial=16), TopologyOptions())
        )
        a = jax.tree.map(np.asarray, run(params, jax.random.key(4)))
        b = jax.tree.map(np.asarray, run(params, jax.random.key(4)))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        c = task.x_star.shape[0]
        k = FixedPointOptions().max_points  # slots beyond the 16 initial states are padding
        assert a["fp_states"].shape == (c, k, 5) and a["n_fixed_points"].shape == (c,)
        if name == "sine":
            assert a["sine_frequency"].shape == (4,) and a["sine_graph"].shape == (4, 4)
        if name == "cdi":
            assert a["cdi_graph"].shape == (2, 16, 16) and a["cdi_response"].shape == (2, 5)


@pytest.mark.slow
def test_trained_flipflop_network_has_stable_points_at_the_memory_corners():
    """A vanilla network trained on 3-bit flip-flop: its stable fixed points read out near the 2^3 corners."""
    task = make_task("flipflop", T=50)
    model = Model("vanilla", "tanh", 24, task.n_in, task.n_out)
    # 2000 steps: at 1500 (loss 0.074) an AVX-512 machine's network had found only 7 of the 8 corners
    settings = TrainSettings(steps=2000, batch=64, chunk=500)
    hp = HParams(lr=jnp.float32(0.05), decay=jnp.float32(0.3), momentum=jnp.float32(0.9),
                 clip=jnp.float32(1.0), l2=jnp.float32(1e-5))  # fmt: skip
    state, losses = train_one(model, task, settings, hp, jax.random.key(0))
    baseline = zero_baseline(task, jax.random.key(2))
    assert float(jnp.nanmean(losses[-100:])) < 0.15 * baseline
    run = jax.jit(partial(analyze_one, model, task, FixedPointOptions(), TopologyOptions()))
    out = jax.tree.map(np.asarray, run(state.params, jax.random.key(1)))
    ok = out["fp_valid"][0] & (out["fp_n_unstable"][0] == 0)
    y = out["fp_readout"][0][ok]
    corners = {tuple(np.sign(r).astype(int)) for r in y if np.all(np.abs(r) > 0.5)}
    assert len(corners) == 8, y


@pytest.mark.slow
def test_trained_sine_network_linear_frequency_tracks_omega():
    """[U] Fig. 2f: a GRU trained on sine generation has, per command frequency ω, a fixed point whose
    oscillatory eigenvalue pair turns at θ/2π ≈ ω (small systematic deviations allowed), |λ| near 1."""
    task = make_task("sine", T=100, n_probe=8)
    model = Model("gru", "tanh", 32, task.n_in, task.n_out)
    hp = HParams(lr=jnp.float32(0.1), decay=jnp.float32(0.3), momentum=jnp.float32(0.9),
                 clip=jnp.float32(1.0), l2=jnp.float32(1e-6))  # fmt: skip
    settings = TrainSettings(steps=3000, batch=32, chunk=500)
    state, losses = train_one(model, task, settings, hp, jax.random.key(0))
    assert float(jnp.nanmean(losses[-100:])) < 0.01 * zero_baseline(task, jax.random.key(2))
    run = jax.jit(partial(analyze_one, model, task, FixedPointOptions(), TopologyOptions()))
    out = jax.tree.map(np.asarray, run(state.params, jax.random.key(1)))
    omega = 0.04 * np.asarray(task.x_star)[:, 0] + 0.01
    # the slowest command (one cycle per trial) is left out: its orbit barely turns within T = 100
    freq, mod, w = out["sine_frequency"][1:], out["sine_modulus"][1:], omega[1:]
    assert np.all(np.isfinite(freq))
    assert np.all(np.diff(freq) > 0) and np.corrcoef(freq, w)[0, 1] > 0.99
    # θ/2π tracks ω in proportion, not to the digit: the pair is weakly unstable (|λ| > 1 feeds a limit
    # cycle whose frequency the linearisation only approximates), and how far depends on the training
    # trajectory, which differs between CPUs in the last bits. Measured (2026-12-02, AMD EPYC, seeds 0–2 at
    # this loss ≈ 5e-5): θ/2π / ω from 0.8 to 1.45, slope 1.3–1.5; on an AVX-512 machine slope ≈ 1
    slope = np.polyfit(w, freq, 1)[0]
    assert 0.5 < slope < 2.0, slope
    assert np.all((freq / w > 0.6) & (freq / w < 1.7)), freq / w
    assert np.all(
        (mod > 0.9) & (mod < 1.5)
    )  # near 1: a weakly unstable pair feeds the orbit (1.26–1.39 on one CPU)


def test_mode_overlap_measures_each_mode_s_share_in_the_manifold():
    """Points filling the (e1, e2) plane of R⁴: modes along e1, e2 lie in it (1), e4 does not (0), and
    (e2 + e3)/√2 half in it by norm (1/√2); points not valid give NaN."""
    rng = np.random.default_rng(0)
    k, d = 40, 4
    states = np.zeros((k, d), np.float32)
    states[:, :2] = rng.normal(size=(k, 2))
    right = np.eye(d, dtype=np.complex64)
    right[:, 2] = np.array([0, 1, 1, 0]) / np.sqrt(2)
    right = np.broadcast_to(right, (k, d, d))
    valid = np.arange(k) < k - 1
    zeros = np.zeros((k, d), np.float32)
    fp = FixedPoints(states, zeros[:, 0], valid, np.zeros((k, d, d)), np.zeros((k, d, 1)),
                     zeros.astype(np.complex64), right, right, zeros[:, 0].astype(int), zeros, valid.sum())  # fmt: skip
    overlap = np.asarray(mode_overlap(fp))
    np.testing.assert_allclose(overlap[:-1], np.broadcast_to([1, 1, 2**-0.5, 0], (k - 1, d)), atol=1e-5)
    assert np.isnan(overlap[-1]).all()


def _known_spectrum():
    """4 × 4 matrices similar to blocks with eigenvalues 0.9·e^{±0.3i}, −0.5, 0.1 (a random basis each)."""
    c, s = 0.9 * np.cos(0.3), 0.9 * np.sin(0.3)
    block = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, -0.5, 0], [0, 0, 0, 0.1]])
    bases = np.random.default_rng(0).standard_normal((3, 4, 4)) + 2 * np.eye(4)
    return np.stack([b @ block @ np.linalg.inv(b) for b in bases]).astype(np.float32)


def test_eigenvalues_alone_match_the_decomposition_and_the_known_spectrum():
    """``eigenvalues`` (no eigenvectors) gives ``decompose``'s eigenvalues, sorted by |λ|, under jit and
    vmap; ``decompose``'s vectors satisfy J R = R Λ and Lᴴ R = I."""
    jac = jnp.asarray(_known_spectrum())
    w = jax.jit(jax.vmap(eigenvalues))(jac)
    expected = np.array([0.9 * np.exp(0.3j), 0.9 * np.exp(-0.3j), -0.5, 0.1])
    for wi in np.asarray(w):
        np.testing.assert_allclose(np.abs(wi), np.abs(expected), atol=1e-4)
        np.testing.assert_allclose(np.sort_complex(wi), np.sort_complex(expected), atol=1e-4)
    full, right, left = jax.jit(decompose)(jac)
    np.testing.assert_allclose(w, full, atol=1e-5)
    with jax.numpy_dtype_promotion("standard"):
        np.testing.assert_allclose(jac @ right, right * full[:, None, :], atol=1e-4)
        np.testing.assert_allclose(
            jnp.conj(jnp.swapaxes(left, -1, -2)) @ right, np.broadcast_to(np.eye(4), jac.shape), atol=1e-4
        )


@pytest.mark.parametrize("xla", [False, True], ids=["host-solve", "xla-solve"])
def test_a_singular_newton_system_skips_that_point_only(xla, monkeypatch):
    """F(h) = A h + b, except h' = h + c where h₀ > 2: there J − I = 0 exactly (the Newton system is
    singular, like a GRU whose update gates saturate) and q = ½‖c‖² > 0, so no fixed point.  Those
    points' Newton steps are skipped; the others' are kept, and the one fixed point h* = (I − A)⁻¹ b is
    found to float precision from an Adam descent far too short to reach it (Newton on a linear map is
    exact in one step).  Both solvers: the host's (CPU) and XLA's (GPU)."""
    import popdyn.analyses.dynamics as dyn

    monkeypatch.setattr(dyn, "_xla_solve", lambda: xla)
    a = np.array([[0.5, 0.2], [-0.1, 0.3]], np.float32)
    b = np.array([0.3, -0.2], np.float32)
    c = jnp.array([0.1, 0.0], jnp.float32)

    def step(p, h, x):  # a new function per case: nothing traced for the other solver is reused
        return jnp.where(h[0] > 2.0, h + c, p["A"] @ h + p["b"]) + 0.0 * jnp.sum(x)

    h_star = np.linalg.solve(np.eye(2) - a, b)
    rng = np.random.default_rng(3)
    near = h_star + 0.5 * rng.standard_normal((16, 2))
    flat = np.column_stack([rng.uniform(3.0, 4.0, 8), rng.uniform(-1.0, 1.0, 8)])  # the singular region
    h0 = jnp.asarray(np.concatenate([flat[:4], near, flat[4:]]), jnp.float32)
    p = {"A": jnp.asarray(a), "b": jnp.asarray(b)}
    opts = FixedPointOptions(steps=3, max_points=16, exclude_distance_outliers=False)
    fp = find(step, p, jnp.zeros(1), h0, opts)
    assert int(fp.count) == 1
    np.testing.assert_allclose(valid(fp, "states")[0], h_star, atol=1e-6)
    assert valid(fp, "q")[0] < 1e-12


def test_xla_lapack_on_one_cpu_device_equals_the_host_callbacks():
    """Traced under ``one_cpu_device`` (the group analysis's second program on a CPU), ``decompose`` and
    ``eigenvalues`` are XLA's own LAPACK kernels, with no host callback left in the program (what lets
    JAX's persistent cache keep it), and give the host callbacks' numbers — the same geev — on the
    matrices ``wanted``; the others λ = 0, R = L = I, as on the host."""
    rng = np.random.default_rng(0)
    jac = jnp.asarray(rng.standard_normal((2, 5, 6, 6)) / 3, jnp.float32)
    wanted = jnp.asarray(rng.random((2, 5)) < 0.6)

    def both(a, w):
        return decompose(a, w), eigenvalues(a, w)

    host = jax.jit(jax.vmap(lambda a, w: both(a, w)))
    with dynamics.one_cpu_device():
        lowered = jax.jit(jax.vmap(lambda a, w: both(a, w))).lower(jac, wanted)
    assert "callback" in host.lower(jac, wanted).as_text()
    assert "callback" not in lowered.as_text()
    (w_x, r_x, l_x), alone_x = lowered.compile()(jac, wanted)
    (w_h, r_h, l_h), alone_h = host(jac, wanted)
    for x, h in ((w_x, w_h), (r_x, r_h), (l_x, l_h), (alone_x, alone_h)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(h), atol=1e-5)
    off = ~np.asarray(wanted)
    assert np.all(np.asarray(w_x)[off] == 0) and np.all(np.asarray(alone_x)[off] == 0)
    np.testing.assert_array_equal(np.asarray(r_x)[off], np.broadcast_to(np.eye(6), (off.sum(), 6, 6)))
    np.testing.assert_array_equal(np.asarray(l_x)[off], np.broadcast_to(np.eye(6), (off.sum(), 6, 6)))
    on = np.asarray(wanted)
    with jax.numpy_dtype_promotion("standard"):  # and the wanted ones are eigenpairs: J R = R Λ
        j, r, w = np.asarray(jac)[on], np.asarray(r_x)[on], np.asarray(w_x)[on]
        np.testing.assert_allclose(j @ r, r * w[..., None, :], atol=1e-4)
