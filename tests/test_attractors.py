"""Attractors, contractivity, the loss line, the [R] cells and datasets (SPEC §6) against known answers."""

from __future__ import annotations

import math
from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from popdyn.analyses.record import (
    CLASSES,
    SLSTM_RECURRENT_CAPS,
    SYMBOLS,
    bifurcation,
    contractivity,
    loss_line,
    orthogonal,
    project_contractive,
    relevant_symbols,
    sine_generation,
)
from popdyn.model import Model

# --------------------------------------------------------------------------------------------------
# networks with known orbits


def random_params(model: Model, rng, recurrent_scale=1.0, input_scale=1.0) -> dict:
    """Gaussian parameters in popdyn's layout (vanilla or lstm), without compiling ``model.init``;
    recurrent entries have std ``recurrent_scale / √N``."""
    n, m, blocks = model.units, model.n_in, {"vanilla": 1, "lstm": 4}[model.arch]

    def normal(shape, std):
        return jnp.asarray(std * rng.standard_normal(shape), jnp.float32)

    return {
        "cell": {
            "recurrent": normal((n, blocks * n), recurrent_scale / math.sqrt(n)),
            "input": normal((m, blocks * n), input_scale),
            "bias": normal((blocks * n,), 0.5),
        },
        "readout": {
            "kernel": normal((n, model.n_out), 1.0 / math.sqrt(n)),
            "bias": normal((model.n_out,), 0.5),
        },
    }


def cycle_network(k: int, scale: float = 1.0):
    """A relu vanilla cell whose orbit from h = 0 under x = 1 is the period-k cycle e_0 → e_1 → … → e_{k−1}.

    ``h' = relu(W h + e_0)`` with ``W e_j = e_{j+1} − e_0`` (j < k−1) and ``W e_{k−1} = 0``: every step is
    exact in float32. Readout ``y = scale · (j + 1) + 0.5`` on ``e_j``, so
    ``y_t = scale·((t−1) mod k + 1) + 0.5``.
    """
    model = Model("vanilla", "relu", k, 1, 1)
    w = np.zeros((k, k), np.float32)
    for j in range(k - 1):
        w[j + 1, j], w[0, j] = 1.0, -1.0
    params = {
        "cell": {
            "recurrent": jnp.asarray(w.T),  # popdyn multiplies h @ K, K = Wᵀ
            "input": jnp.zeros((1, k)).at[0, 0].set(1.0),
            "bias": jnp.zeros((k,)),
        },
        "readout": {"kernel": scale * jnp.arange(1.0, k + 1)[:, None], "bias": jnp.array([0.5])},
    }
    return model, params


def cycle_outputs(k: int, steps: int, scale: float = 1.0) -> np.ndarray:
    """y_0 … y_steps of :func:`cycle_network` (y_0 = the readout bias)."""
    t = np.arange(steps + 1)
    return np.where(t == 0, 0.5, scale * ((t - 1) % k + 1) + 0.5)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_bifurcation_of_a_period_k_cycle_is_exactly_the_cycle(k):
    steps, burn_in = 23, 7
    model, params = cycle_network(k)
    y, dy = jax.jit(bifurcation, static_argnums=(0, 3, 4))(model, params, jnp.ones(1), steps, burn_in)
    expected = cycle_outputs(k, steps)
    assert y.shape == dy.shape == (steps - burn_in, 1)
    np.testing.assert_array_equal(np.asarray(y)[:, 0], expected[burn_in + 1 :])
    np.testing.assert_array_equal(np.asarray(dy)[:, 0], np.diff(expected)[burn_in:])
    assert len(np.unique(np.asarray(y))) == k  # a period-k attractor shows k points in the diagram


def test_bifurcation_transient_to_a_fixed_point_from_a_given_state():
    """h' = relu(a h + c), c > 0, h ≥ 0: h_t = aᵗ h_0 + c (1 − aᵗ)/(1 − a), converging to c/(1 − a)."""
    a, units, steps, burn_in = 0.5, 3, 30, 2
    model = Model("vanilla", "relu", units, 2, 2)
    rng = np.random.default_rng(0)
    u = rng.uniform(0.1, 1.0, (2, units)).astype(np.float32)
    b = rng.uniform(0.1, 1.0, units).astype(np.float32)
    r = rng.standard_normal((units, 2)).astype(np.float32)
    d = rng.standard_normal(2).astype(np.float32)
    x = np.array([0.3, 0.7], np.float32)
    h0 = rng.uniform(0.0, 2.0, units).astype(np.float32)
    params = {
        "cell": {"recurrent": a * jnp.eye(units), "input": jnp.asarray(u), "bias": jnp.asarray(b)},
        "readout": {"kernel": jnp.asarray(r), "bias": jnp.asarray(d)},
    }
    y, dy = bifurcation(model, params, jnp.asarray(x), steps, burn_in, state0=jnp.asarray(h0))
    c = x @ u + b
    t = np.arange(steps + 1)[:, None]
    h = a**t * h0 + c * (1 - a**t) / (1 - a)
    y_all = h @ r + d
    np.testing.assert_allclose(y, y_all[burn_in + 1 :], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dy, np.diff(y_all, axis=0)[burn_in:], rtol=1e-4, atol=1e-5)  # y ~ 3: ulp 2e-7
    np.testing.assert_allclose(y[-1], (c / (1 - a)) @ r + d, rtol=1e-5)


def test_bifurcation_serves_a_population_by_vmap_and_compiles_once():
    k, steps, burn_in = 3, 12, 4
    members = [cycle_network(k, scale)[1] for scale in (1.0, 2.0, -3.0)]
    population = jax.tree.map(lambda *p: jnp.stack(p), *members)
    model = cycle_network(k)[0]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def diagram(population, x):
        return jax.vmap(lambda p: bifurcation(model, p, x, steps, burn_in))(population)

    y, dy = diagram(population, jnp.ones(1))
    diagram(jax.tree.map(lambda a: a + 0.0, population), jnp.ones(1))  # new values: no retrace
    assert y.shape == dy.shape == (3, steps - burn_in, 1)
    for i, scale in enumerate((1.0, 2.0, -3.0)):
        np.testing.assert_array_equal(y[i, :, 0], cycle_outputs(k, steps, scale)[burn_in + 1 :])


@pytest.mark.parametrize("steps, burn_in", [(10, 10), (10, 12), (0, 0), (10, -1), (10.0, 2), (10, True)])
def test_bifurcation_rejects_impossible_lengths(steps, burn_in):
    model, params = cycle_network(2)
    with pytest.raises(ValueError, match="bifurcation"):
        bifurcation(model, params, jnp.ones(1), steps, burn_in)


# --------------------------------------------------------------------------------------------------
# contractivity


def test_contractivity_of_a_linear_cell_is_the_spectrum_of_its_matrix():
    """relu with positive weights, inputs and bias never clips: J = ∂F/∂h = Kᵀ at every state."""
    units, n_in = 5, 2
    rng = np.random.default_rng(1)
    k = rng.uniform(0.0, 0.6, (units, units)).astype(np.float32)  # non-normal: radius < norm
    model = Model("vanilla", "relu", units, n_in, 1)
    params = random_params(model, rng)
    params["cell"] = {
        "recurrent": jnp.asarray(k),
        "input": jnp.asarray(rng.uniform(0.1, 1.0, (n_in, units)), jnp.float32),
        "bias": jnp.asarray(rng.uniform(0.1, 1.0, units), jnp.float32),
    }
    inputs = jnp.asarray(rng.uniform(0.0, 1.0, (3, 5, n_in)), jnp.float32)
    out = jax.jit(contractivity, static_argnums=(0, 3))(model, params, inputs, 4)  # 15 states, chunks of 4
    radius = np.max(np.abs(np.linalg.eigvals(k.astype(np.float64))))
    norm = np.linalg.svd(k.astype(np.float64), compute_uv=False)[0]
    assert radius < norm - 0.05
    np.testing.assert_allclose(out.spectral_radius, radius, rtol=1e-5)
    np.testing.assert_allclose(out.spectral_norm, norm, rtol=1e-5)
    assert out.radii.shape == out.norms.shape == (3, 5)
    np.testing.assert_allclose(out.radii, np.full((3, 5), radius), rtol=1e-5)
    np.testing.assert_allclose(out.norms, np.full((3, 5), norm), rtol=1e-5)


def test_contractivity_takes_each_step_at_the_state_it_leaves():
    """tanh vanilla: the step from s_{t−1} has J_t = diag(1 − s_t²) Kᵀ (s_t the state it lands on)."""
    units, n_in = 4, 3
    model = Model("vanilla", "tanh", units, n_in, 1)
    params = random_params(model, np.random.default_rng(3), recurrent_scale=0.8)
    inputs = jax.random.normal(jax.random.key(4), (2, 6, n_in))
    out = jax.jit(contractivity, static_argnums=(0, 3))(model, params, inputs, 5)
    states = np.asarray(jax.jit(model.states)(params, inputs), np.float64)
    kt = np.asarray(params["cell"]["recurrent"], np.float64).T
    jac = (1 - states**2)[..., :, None] * kt  # [B, T, D, D]
    radii = np.max(np.abs(np.linalg.eigvals(jac)), axis=-1)
    norms = np.linalg.svd(jac, compute_uv=False)[..., 0]
    np.testing.assert_allclose(out.radii, radii, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.norms, norms, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.spectral_norm, norms.max(), rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# loss along a line


def test_loss_line_ends_are_the_loss_at_theta_and_at_zero():
    model = Model("lstm", "tanh", 5, 2, 1)
    params = random_params(model, np.random.default_rng(0))
    inputs = jax.random.normal(jax.random.key(1), (4, 7, 2))
    targets = jax.random.normal(jax.random.key(2), (4, 7, 1))

    @jax.jit
    def loss(p):
        return jnp.mean((model(p, inputs) - targets) ** 2)

    v = jax.jit(loss_line, static_argnums=0)(loss, params, jnp.array([0.0, 0.5, 1.0]))
    zeros = jax.tree.map(jnp.zeros_like, params)
    np.testing.assert_allclose(v[2], loss(params), rtol=1e-6)
    np.testing.assert_allclose(v[0], loss(zeros), rtol=1e-6)
    half = jax.tree.map(lambda p: 0.5 * p, params)
    np.testing.assert_allclose(v[1], loss(half), rtol=1e-6)


def test_loss_line_of_a_quadratic_is_the_parabola():
    """V(θ) = Σ‖θ − τ‖² over a pytree: V(sθ) = s²‖θ‖² − 2s⟨θ, τ⟩ + ‖τ‖²."""
    rng = np.random.default_rng(0)
    theta = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    tau = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    theta32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), theta)

    def loss(p):
        return sum(jnp.sum((p[k] - tau[k]) ** 2) for k in p)

    s = np.linspace(-2.0, 3.0, 11)
    v = loss_line(loss, theta32, jnp.asarray(s, jnp.float32))
    tt = sum(np.sum(theta[k] ** 2) for k in theta)
    tu = sum(np.sum(theta[k] * tau[k]) for k in theta)
    uu = sum(np.sum(tau[k] ** 2) for k in tau)
    np.testing.assert_allclose(v, s**2 * tt - 2 * s * tu + uu, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# oRNN and sLSTM


@pytest.mark.parametrize("seed, n", [(0, 2), (1, 5), (2, 16)])
def test_orthogonal_is_special_orthogonal_and_equals_scipy_expm(seed, n):
    a = np.random.default_rng(seed).standard_normal((n, n))
    q = np.asarray(orthogonal(jnp.asarray(a, jnp.float32)), np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=2e-5)
    np.testing.assert_allclose(q @ q.T, np.eye(n), atol=2e-5)
    np.testing.assert_allclose(np.linalg.det(q), 1.0, atol=1e-4)
    np.testing.assert_allclose(q, scipy.linalg.expm(a - a.T), atol=2e-5)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _wild_lstm(units=8, n_in=3, seed=0):
    """An lstm far outside the contractive region: big recurrent weights, forget bias +1 and more."""
    model = Model("lstm", "tanh", units, n_in, 1)
    cell = random_params(model, np.random.default_rng(seed), recurrent_scale=2.0, input_scale=2.0)["cell"]
    cell["bias"] = cell["bias"].at[units : 2 * units].add(1.0)  # popdyn's forget-gate init on top
    return model, cell


@partial(jax.jit, static_argnums=0)
def _jacobians(model, cell, states, x):
    return jax.vmap(jax.jacfwd(model.step, argnums=1), (None, 0, 0))(cell, states, x)


def _jacobian_norms(model, cell, key, n=400):
    """‖J‖₂ and ‖J‖_∞ of the full-state Jacobian at random states of the invariant box ‖h‖_∞ ≤ 1,
    ‖c‖_∞ ≤ 1/(1 − σ(0.405)), and random inputs with ‖x‖_∞ ≤ 1, computed in NumPy."""
    units, n_in = model.units, model.n_in
    c_max = 1.0 / (1.0 - _sigmoid(0.155 + 0.25))
    k_h, k_c, k_x = jax.random.split(key, 3)
    h = jax.random.uniform(k_h, (n, units), minval=-1.0, maxval=1.0)
    c = jax.random.uniform(k_c, (n, units), minval=-c_max, maxval=c_max)
    x = jax.random.uniform(k_x, (n, n_in), minval=-1.0, maxval=1.0)
    jac = _jacobians(model, cell, jnp.concatenate([h, c], -1), x)
    jac = np.asarray(jac, np.float64)
    return np.linalg.norm(jac, 2, axis=(1, 2)), np.abs(jac).sum(axis=2).max(axis=1)


def test_project_contractive_makes_the_state_jacobian_a_contraction():
    model, cell = _wild_lstm()
    before, _ = _jacobian_norms(model, cell, jax.random.key(1))
    assert before.max() > 1.0  # the test has teeth: the unprojected network expands somewhere
    projected = jax.jit(project_contractive)(cell)
    norm2, norm_inf = _jacobian_norms(model, projected, jax.random.key(1))
    assert norm2.max() < 0.979 + 1e-4  # the bound of the docstring
    assert norm_inf.max() < 0.9933 + 1e-4
    # and along real trajectories (one-hot inputs), through contractivity()
    params = {**random_params(model, np.random.default_rng(0)), "cell": projected}
    inputs = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (4, 30), 0, 3), 3)
    assert float(contractivity(model, params, inputs).spectral_norm) < 1.0


def test_project_contractive_enforces_the_stated_caps():
    model, cell = _wild_lstm(units=6, n_in=4, seed=3)
    out = project_contractive(cell)
    n = model.units
    k = np.asarray(out["recurrent"], np.float64)
    for g, cap in enumerate(SLSTM_RECURRENT_CAPS):
        w = k[:, g * n : (g + 1) * n].T  # as in W h
        assert np.abs(w).sum(axis=1).max() <= cap * (1 + 1e-6)  # ‖W‖_∞
        assert np.abs(w).sum(axis=0).max() <= cap * (1 + 1e-6)  # ‖W‖_1
        assert np.linalg.norm(w, 2) <= cap * (1 + 1e-6)
    u_f = np.asarray(out["input"], np.float64)[:, n : 2 * n].T
    assert np.abs(u_f).sum(axis=1).max() <= 0.25 * (1 + 1e-6)
    assert np.asarray(out["bias"])[n : 2 * n].max() <= 0.0
    # the blocks it does not constrain are untouched
    for name, free in (("input", np.r_[0:n, 2 * n : 4 * n]), ("bias", np.r_[0:n, 2 * n : 4 * n])):
        np.testing.assert_array_equal(np.asarray(out[name])[..., free], np.asarray(cell[name])[..., free])


def test_project_contractive_is_a_projection():
    """Idempotent, and parameters already in the region come back unchanged."""
    _, cell = _wild_lstm(seed=5)
    once = project_contractive(cell)
    twice = project_contractive(once)
    chex.assert_trees_all_equal(once, twice)
    n = 8
    inside = {
        "recurrent": 0.005 * jax.random.normal(jax.random.key(0), (n, 4 * n)),
        "input": 0.01 * jax.random.normal(jax.random.key(1), (3, 4 * n)),
        "bias": jnp.full((4 * n,), -0.5),
    }
    chex.assert_trees_all_equal(project_contractive(inside), inside)


def test_project_contractive_serves_a_population_and_rejects_other_cells():
    _, cell = _wild_lstm()
    population = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), cell)
    out = jax.vmap(project_contractive)(population)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[0], out), project_contractive(cell))
    vanilla = random_params(Model("vanilla", "tanh", 4, 2, 1), np.random.default_rng(0))["cell"]
    with pytest.raises(ValueError, match=r"\[N, 4N\]"):
        project_contractive(vanilla)
    with pytest.raises(ValueError, match="recurrent_caps"):
        project_contractive(cell, recurrent_caps=(0.1, 0.1, -0.1, 0.1))


# --------------------------------------------------------------------------------------------------
# datasets


def test_sine_generation_defaults_are_rs_dataset():
    inputs, targets = sine_generation(jax.random.key(0))
    assert inputs.shape == targets.shape == (100, 400, 1)
    assert inputs.dtype == targets.dtype == jnp.float32
    omega = np.linspace(math.pi / 16, math.pi / 8, 100)
    np.testing.assert_allclose(inputs[:, :, 0], np.repeat(omega[:, None], 400, axis=1), rtol=1e-6)
    t = np.arange(1, 401)
    np.testing.assert_allclose(targets[:, :, 0], np.sin(omega[:, None] * t[None]), atol=5e-5)


def test_sine_generation_random_frequencies_are_in_range_and_set_by_the_key():
    a, ya = sine_generation(jax.random.key(1), n_sequences=500, length=20, spacing="random")
    b, _ = sine_generation(jax.random.key(1), n_sequences=500, length=20, spacing="random")
    c, _ = sine_generation(jax.random.key(2), n_sequences=500, length=20, spacing="random")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    omega = np.asarray(a[:, 0, 0])
    assert omega.min() >= math.pi / 16 and omega.max() <= math.pi / 8
    assert omega.min() < math.pi / 16 + 0.02 and omega.max() > math.pi / 8 - 0.02  # spread over the interval
    np.testing.assert_allclose(ya[:, :, 0], np.sin(omega[:, None] * np.arange(1, 21)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_sequences": 0}, "n_sequences.*got 0"),
        ({"length": 2.5}, "length.*got 2.5"),
        ({"omega_min": 0.0}, r"omega_min.*\(0, π\].*got 0.0"),
        ({"omega_max": 4.0}, r"omega_max.*\(0, π\].*got 4.0"),
        ({"omega_min": 0.3, "omega_max": 0.2}, "omega_min must be ≤ omega_max"),
        ({"spacing": "log"}, "spacing 'log'.*grid, random"),
    ],
)
def test_sine_generation_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sine_generation(jax.random.key(0), **kwargs)


def test_relevant_symbols_follow_the_position_rules():
    batch, length = 4000, 60
    inputs, targets = relevant_symbols(jax.random.key(0), batch, length)
    assert inputs.shape == (batch, length, len(SYMBOLS)) and targets.shape == (batch, len(CLASSES))
    x = np.asarray(inputs)
    np.testing.assert_array_equal(x.sum(-1), 1.0)  # one symbol per step
    sym = x.argmax(-1)
    relevant = sym < 2  # p or q
    assert (relevant.sum(1) == 2).all()
    t1 = relevant.argmax(1)
    t2 = length - 1 - relevant[:, ::-1].argmax(1)
    assert set(t1) == set(range(10, 19)) and set(t2) == set(range(40, 50))  # the whole ranges, nothing else
    first, second = sym[np.arange(batch), t1], sym[np.arange(batch), t2]
    label = np.asarray(targets).argmax(1)
    np.testing.assert_array_equal(label, 2 * first + second)
    assert [CLASSES[i] for i in label[:3]] == [
        (SYMBOLS[a], SYMBOLS[b]) for a, b in zip(first[:3], second[:3])
    ]
    np.testing.assert_allclose(np.bincount(label, minlength=4) / batch, 0.25, atol=0.03)  # balanced
    distractors = sym[~relevant]
    np.testing.assert_allclose(np.bincount(distractors, minlength=6)[2:] / distractors.size, 0.25, atol=0.01)


def test_relevant_symbols_are_set_by_the_key_and_map_over_keys():
    a = relevant_symbols(jax.random.key(7), 16, 50)
    b = relevant_symbols(jax.random.key(7), 16, 50)
    c = relevant_symbols(jax.random.key(8), 16, 50)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a[0], c[0])
    many = jax.vmap(lambda k: relevant_symbols(k, 16, 50))(jnp.stack([jax.random.key(7), jax.random.key(8)]))
    np.testing.assert_array_equal(many[0][0], a[0])
    np.testing.assert_array_equal(many[1][1], c[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"length": 49}, r"length must be an integer ≥ 50, got 49"),
        ({"batch": 0}, "batch.*got 0"),
        ({"t1": (18, 10)}, r"t1\[1\] must be an integer ≥ 18, got 10"),
        ({"t1": (10, 45)}, r"t1 must lie before t2"),
        ({"t2": (40,)}, "t2 must be a pair"),
        ({"t1": (-1, 5)}, r"t1\[0\].*got -1"),
    ],
)
def test_relevant_symbols_reject_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        relevant_symbols(jax.random.key(0), **kwargs)


# --------------------------------------------------------------------------------------------------
# recording through training (train.record_every, record.*)
def test_bad_record_settings_are_named():
    from popdyn.config import ConfigError, build_sweep
    from tests.test_sweep import config

    with pytest.raises(ConfigError, match="record_every = 30 must be a multiple of train.chunk = 20"):
        build_sweep(config("train.chunk=20", "train.record_every=30", grid="tiny"))
    with pytest.raises(ConfigError, match="x_const must be null or 3 numbers"):
        build_sweep(config("train.record_every=20", "train.chunk=20", "record.x_const=[1.0]", grid="tiny"))
    with pytest.raises(ConfigError, match="burn_in must be below"):
        build_sweep(config("record.steps=10", "record.burn_in=10", grid="tiny"))


@pytest.mark.slow
def test_a_run_records_attractors_through_training(tmp_path):
    """``train.record_every``: the parameters at steps 0, 50, 100 are saved, each is measured
    (bifurcation column, contractivity, V(s·θ)), ``store.load`` labels them by ``record_step`` and the
    figures are drawn; the slstm stays contractive and the ornn's norm stays 1 at every saved step, as
    their constructions promise ([R] §5)."""
    from popdyn import store
    from tests.test_sweep import run_script

    run_dir = tmp_path / "run"
    r = run_script(
        "+grid=sinegen", "grid.arch=[slstm,ornn]", "grid.units=[8]", "grid.seeds=1", "task.T=30",
        "task.n_probe=2", "train.steps=100", "train.chunk=50", "train.record_every=50", "record.steps=60",
        "record.burn_in=30", "record.probes=2", "dynamics.n_initial=16", "dynamics.max_points=8",
        f"hydra.run.dir={run_dir}", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ds = store.load(run_dir)
    assert list(ds.record_step.values) == [0, 50, 100]
    assert ds.bif_y.shape == (2, 3, 30, 1) and ds.loss_line.sizes["scale"] == 9
    slstm, ornn = (ds.arch.values == a for a in ("slstm", "ornn"))
    assert (ds.spectral_norm.values[slstm] < 1).all(), ds.spectral_norm.values
    np.testing.assert_allclose(ds.spectral_norm.values[ornn], 1.0, atol=0.02)  # ‖diag(1−h'²) Q‖₂ ≤ 1
    # the last snapshot is the trained network; V(1·θ) is its loss on the probes, V(0) that of zero params
    steps, params, member = store.load_snapshots(run_dir, "slstm-tanh-8")
    final = store.load_params(run_dir)["slstm-tanh-8"].params
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[-1], b), params, final)
    scales = list(ds.scale.values)
    assert ds.loss_line.values[:, :, scales.index(0.0)].std() < 1e-6  # the same zero network everywhere
    for name in ("bifurcation_training", "contractivity_training", "loss_line"):
        assert (run_dir / "figures" / f"{name}.png").exists(), name
    # issue 18 item 4: training.npz is kept only with the record.* settings that made it (record.yaml)
    assert store.read_yaml(run_dir / store.RECORD_CONFIG)["steps"] == 60
    before = (run_dir / "groups" / "slstm-tanh-8" / store.TRAINING).read_bytes()
    r = run_script(
        f"run_dir={run_dir}", "+record.steps=80", "progress=false", cwd=tmp_path, script="analyze.py"
    )
    assert r.returncode == 2 and "record.steps=60, not 80" in r.stderr, r.stderr
    assert (run_dir / "groups" / "slstm-tanh-8" / store.TRAINING).read_bytes() == before
