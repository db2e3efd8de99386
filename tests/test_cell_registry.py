"""The cell registry (``popdyn.cells``): its conventions, the ``leaky`` cell's equation and noise, per-cell
options from the config, and a cell defined outside the package that steps and gets a colour (its sweep,
with the other outside members: tests/test_outside.py)."""

from __future__ import annotations

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import cells, figures, store
from popdyn.config import ConfigError, build_sweep
from popdyn.model import Model
from popdyn.population import HParams
from popdyn.sweep import run_sweep
from popdyn.tasks import make_task
from popdyn.train import TrainSettings, chunk_one, init_one
from tests.test_outside import registered
from tests.test_sweep import config

N, M, N_OUT = 6, 3, 2


# ---------------------------------------------------------------------------------------------- registry
def test_registry_lists_every_cell_in_order_and_refuses_duplicates_and_unknown_names():
    assert cells.names()[:6] == ("vanilla", "ugrnn", "gru", "lstm", "slstm", "ornn")
    assert "leaky" in cells.names() and cells.ARCHS == cells.names()
    assert all(cells.get(n).name == n for n in cells.names())
    with pytest.raises(ValueError, match="already"):
        cells.register(cells.get("gru"))
    with pytest.raises(ValueError, match=r"unknown arch 'rnn'; allowed: vanilla, ugrnn, gru, lstm"):
        cells.get("rnn")


def test_specs_declare_what_the_rest_of_popdyn_reads():
    blocks = {n: cells.get(n).blocks for n in cells.names()}
    assert blocks == {"vanilla": 1, "ugrnn": 2, "gru": 3, "lstm": 4, "slstm": 4, "ornn": 1, "leaky": 1}
    assert [cells.get(n).state_size(5) for n in ("vanilla", "lstm", "slstm", "leaky")] == [5, 10, 10, 5]
    assert cells.get("slstm").constrain is cells.project_contractive
    assert cells.get("leaky").loop is None and cells.get("leaky").stochastic
    assert cells.get("lstm").fused is not None and cells.get("gru").fused is None
    # [U]'s figure colours and markers (Okabe–Ito) are unchanged; leaky gets the palette's next ones
    assert figures.ARCH_COLORS["gru"] == "#009E73" and figures.ARCH_MARKERS["ornn"] == "P"
    assert figures.ARCH_COLORS["leaky"] not in [figures.ARCH_COLORS[a] for a in cells.names()[:6]]
    assert figures.ARCH_MARKERS["leaky"] == "X" and figures.ARCH_COLORS.get("nope", "tab:gray") == "tab:gray"


# ---------------------------------------------------------------------------------------------- leaky
def _relu_np(z):
    return np.maximum(z, 0.0)


@pytest.mark.parametrize("activation", cells.ACTIVATIONS)
def test_leaky_step_is_the_equation_without_noise(activation):
    """``h' = (1 − α) h + α f(W h + U x + b)`` (α = 0.5 here, an option), in the paper's column convention."""
    model = Model("leaky", activation, N, M, N_OUT, options=(("alpha", 0.5),))
    rng = np.random.default_rng(0)
    p = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape), model.init(jax.random.key(0)))
    cell = {k: np.asarray(v, np.float64) for k, v in p["cell"].items()}
    h, x = rng.standard_normal(N), rng.standard_normal(M)
    f = {"relu": _relu_np, "tanh": np.tanh}[activation]
    want = 0.5 * h + 0.5 * f(cell["recurrent"].T @ h + cell["input"].T @ x + cell["bias"])
    got = model.step(p["cell"], jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    # no key: the unrolled states are the step applied T times (analyses see the noiseless map)
    u = jnp.asarray(rng.standard_normal((2, 4, M)), jnp.float32)
    s, states = jnp.zeros((2, N)), []
    for t in range(4):
        s = jax.vmap(model.step, (None, 0, 0))(p["cell"], s, u[:, t])
        states.append(s)
    np.testing.assert_allclose(model.states(p, u), jnp.stack(states, 1), rtol=1e-5, atol=1e-6)


def _saturated(model):
    """Parameters whose pre-activations stay far above 0: relu is the identity there, so the noise passes
    through ``α f(·)`` linearly."""
    p = model.init(jax.random.key(1))
    cell = {**p["cell"], "recurrent": jnp.zeros_like(p["cell"]["recurrent"]), "bias": jnp.full((N,), 10.0)}
    return {**p, "cell": cell}


def test_leaky_noise_has_mean_zero_and_variance_two_alpha_sigma_squared():
    """With f linear, ``h' − h'_noiseless = α · σ √(2/α) ξ``: mean 0, variance ``α² · σ² · 2/α = 2ασ²``."""
    alpha, sigma = 0.2, 0.05
    model = Model("leaky", "relu", N, M, N_OUT, options=(("alpha", alpha), ("sigma_rec", sigma)))
    p = _saturated(model)
    u = jnp.zeros((20_000, 1, M))
    d = np.asarray(model.states(p, u, jax.random.key(7)) - model.states(p, u), np.float64).ravel()
    var = 2 * alpha * sigma**2
    assert abs(d.mean()) < 4 * math.sqrt(var / d.size)
    np.testing.assert_allclose(d.var(), var, rtol=0.03)  # s.e. of a variance: var·√(2/n) ≈ 0.4 %
    # ξ is independent across units and steps
    d2 = np.asarray(model.states(p, jnp.zeros((20_000, 2, M)), jax.random.key(7)) - model.states(p, u[:, :1]))
    assert abs(np.corrcoef(d2[:, 0, 0], d2[:, 0, 1])[0, 1]) < 0.05


def test_leaky_noise_is_deterministic_given_the_key():
    model = Model("leaky", "tanh", N, M, N_OUT)
    p = model.init(jax.random.key(2))
    u = jnp.asarray(np.random.default_rng(3).standard_normal((4, 5, M)), jnp.float32)
    a, b = model.states(p, u, jax.random.key(9)), model.states(p, u, jax.random.key(9))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, model.states(p, u, jax.random.key(10)))
    assert not np.allclose(a, model.states(p, u))
    quiet = Model("leaky", "tanh", N, M, N_OUT, options=(("sigma_rec", 0.0),))
    np.testing.assert_array_equal(quiet.states(p, u, jax.random.key(9)), model.states(p, u))


def test_training_draws_the_noise_from_the_members_key_and_step():
    """chunk_one gives a stochastic cell a key: the same member key trains the same twice; with σ_rec = 0
    the noise is gone, so the runs differ exactly by the noise."""
    task = make_task("flipflop", T=10, K=2)
    settings = TrainSettings(steps=5, batch=4, chunk=5)
    hp = HParams(*(jnp.float32(v) for v in (0.05, 0.5, 0.9, 1.0, 1e-4)))

    def train(model, seed=3):
        state = init_one(model, settings, hp, jax.random.key(seed))
        return jax.jit(lambda s: chunk_one(model, task, settings, hp, s))(state)

    noisy = Model.for_task("leaky", "tanh", 8, task, options=(("sigma_rec", 0.5),))
    quiet = Model.for_task("leaky", "tanh", 8, task, options=(("sigma_rec", 0.0),))
    (s1, l1), (s2, l2), (_, l3) = train(noisy), train(noisy), train(quiet)
    np.testing.assert_array_equal(l1, l2)
    jax.tree.map(np.testing.assert_array_equal, s1.params, s2.params)
    assert not np.allclose(l1, l3)


def test_cell_options_come_from_the_config_and_are_checked():
    s = build_sweep(
        config(
            "grid.arch=[leaky]", "+grid.cell_options.leaky.alpha=0.1", "+grid.cell_options.leaky.sigma_rec=0"
        )
    )
    (g,) = s.grid.groups
    assert g.options == (("alpha", 0.1), ("sigma_rec", 0.0))
    assert build_sweep(config("grid.arch=[leaky]")).grid.groups[0].options == ()  # the spec's defaults
    for override, needle in [
        ("+grid.cell_options.leaky.alpha=1.5", r"alpha.*\(0, 1\]"),
        ("+grid.cell_options.leaky.sigma_rec=-1", "sigma_rec"),
        ("+grid.cell_options.leaky.tau=3", "unknown option 'tau'.*alpha, sigma_rec"),
        ("+grid.cell_options.leaky.alpha=fast", "number"),
        ("+grid.cell_options.gru.alpha=0.5", "unknown option 'alpha' of cell 'gru'; allowed: none"),
        ("+grid.cell_options.rnn.alpha=0.5", "unknown arch 'rnn'"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            build_sweep(config("grid.arch=[leaky]", override))


def _run(tmp_path, *overrides):
    """A tiny sweep trained and analysed in this process (figures not drawn); the loaded Dataset."""
    cfg = config("train.steps=200", "grid.seeds=1", "grid.trials=0", *overrides)
    with mock.patch.object(figures, "draw_all", lambda *a, **k: []), \
            mock.patch.object(figures, "loss_curves", lambda *a, **k: []):  # fmt: skip
        return store.load(run_sweep(build_sweep(cfg), tmp_path / "run", progress=False))


@pytest.mark.slow
def test_a_leaky_sweep_trains_on_flipflop_and_finds_fixed_points(tmp_path):
    ds = _run(tmp_path, "grid.arch=[leaky]", "grid.activation=[tanh]")
    assert set(ds.arch.values) == {"leaky"}
    loss = ds.loss.values  # [member, logged step]
    assert np.isfinite(loss).all() and (loss[:, -5:].mean(1) < 0.8 * loss[:, :5].mean(1)).all()
    assert (ds.fp_n_found.values > 0).all() and ds.fp_valid.values.any()


# ---------------------------------------------------------------------------------------------- outside
@pytest.fixture
def indrnn():
    """The cell defined outside the package (tests/test_outside.py, whose sweep trains it), registered for
    the test and removed after it."""
    with registered(cell=True):
        yield cells.get("indrnn")


def test_a_cell_from_outside_steps_and_gets_a_colour(indrnn):
    model = Model("indrnn", "tanh", N, M, N_OUT)
    p = model.init(jax.random.key(0))
    h, x = jnp.linspace(-1, 1, N), jnp.ones(M)
    want = jnp.tanh(p["cell"]["recurrent"] * h + x @ p["cell"]["input"] + p["cell"]["bias"])
    np.testing.assert_allclose(model.step(p["cell"], h, x), want, rtol=1e-6)
    assert len(model.weight_matrices(p)) == 2  # input and readout kernels: the vector u is not a matrix
    assert figures.ARCH_COLORS["indrnn"] not in [figures.ARCH_COLORS[a] for a in cells.names()[:-1]]
    assert "indrnn" in figures.ARCHS
