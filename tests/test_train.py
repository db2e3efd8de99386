"""Training: the population equals its members trained alone, divergence is isolated, runs are
deterministic, one compilation serves every chunk, and a trained network really solves flip-flop."""

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn.model import Model
from popdyn.population import HParams
from popdyn.tasks import make_task, zero_baseline
from popdyn.train import GroupTrainer, TrainSettings, make_optimizer, objective, train_one

TASK = make_task("flipflop", T=12)
SETTINGS = TrainSettings(steps=24, batch=8, chunk=8, val_batch=16, final_window=4)
ROWS = [
    dict(lr=0.05, decay=0.5, momentum=0.9, clip=1.0, l2=1e-4),
    dict(lr=0.01, decay=0.8, momentum=0.5, clip=0.3, l2=0.0),
    dict(lr=0.1, decay=0.2, momentum=0.0, clip=5.0, l2=1e-2),
]


def population(model, rows, keys, devices=None, settings=SETTINGS):
    trainer = GroupTrainer(model, TASK, settings, len(rows), devices)
    hp, k = trainer.pad(HParams.stack(rows), keys)
    state = trainer.init(hp, k)
    losses = np.full((trainer.size, settings.steps), np.nan, np.float32)
    state, losses = trainer.run(hp, state, losses)
    n = len(rows)
    return jax.tree.map(lambda a: np.asarray(a)[:n], state), losses[:n], trainer


@pytest.fixture(scope="module", params=["vanilla-relu", "gru-tanh", "lstm-tanh", "ugrnn-relu"])
def model(request):
    arch, act = request.param.split("-")
    return Model(arch, act, 6, TASK.n_in, TASK.n_out)


def test_population_equals_each_member_alone(model):
    keys = jax.random.split(jax.random.key(1), len(ROWS))
    state, losses, trainer = population(model, ROWS, keys)
    alone = jax.jit(partial(train_one, model, TASK, SETTINGS))
    for i, row in enumerate(ROWS):
        s1, l1 = alone(HParams.of(row), keys[i])
        np.testing.assert_allclose(losses[i], np.asarray(l1), rtol=2e-4, atol=1e-6)
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(s1.params)):
            np.testing.assert_allclose(a[i], b, rtol=1e-3, atol=1e-5)
    assert trainer.traces == 1  # three chunks, one compilation


def test_training_lowers_the_loss(model):
    keys = jax.random.split(jax.random.key(2), len(ROWS))
    _, losses, _ = population(model, ROWS[:1], keys[:1], settings=TrainSettings(steps=60, batch=16, chunk=20))
    assert losses[0, -10:].mean() < losses[0, :5].mean()


SHARDED = """
import jax, numpy as np, popdyn
popdyn.setup_host_devices()  # as an entry point does: importing popdyn no longer does
from popdyn.model import Model
from tests.test_train import ROWS, TASK, population
assert len(jax.devices()) == 2
model = Model("gru", "tanh", 6, TASK.n_in, TASK.n_out)
keys = jax.random.split(jax.random.key(3), 4)
rows = (ROWS + ROWS)[:4]
one, l_one, _ = population(model, rows, keys, devices=jax.devices()[:1])
many, l_many, t_many = population(model, rows, keys)
assert t_many.sharding.mesh.size == 2
np.testing.assert_allclose(l_one, l_many, rtol=1e-5, atol=1e-7)
for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
print("sharded ok")
"""


def test_sharded_over_two_host_devices_equals_one_device():
    # its own process: the device count is fixed when JAX starts (POPDYN_CPU_DEVICES, popdyn/_devices.py)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "POPDYN_CPU_DEVICES": "2", "PYTHONPATH": str(root)}
    r = subprocess.run(
        [sys.executable, "-c", SHARDED], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and "sharded ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("member_batch", [1, 2])
def test_member_loop_equals_vmap(member_batch):
    model = Model("ugrnn", "tanh", 6, TASK.n_in, TASK.n_out)
    keys = jax.random.split(jax.random.key(6), 3)
    a, la, _ = population(model, ROWS, keys)
    trainer = GroupTrainer(model, TASK, SETTINGS, 3, member_batch=member_batch)
    hp, k = trainer.pad(HParams.stack(ROWS), keys)
    losses = np.full((trainer.size, SETTINGS.steps), np.nan, np.float32)
    _, lb = trainer.run(hp, trainer.init(hp, k), losses)
    np.testing.assert_allclose(la, lb[:3], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("member_batch,unbatched_one", [(None, False), (1, False), (1, True), (2, True)])
def test_every_member_layout_gives_each_member_alone(member_batch, unbatched_one):
    """``population_program``: a function with a data-dependent while loop (vmap turns it into one loop
    over the batch, running until the last member is done) gives every member its own result, whether
    the members are vmapped, looped in vmapped blocks, or looped one by one without vmap."""
    from jax.sharding import Mesh

    from popdyn.population import population_program

    def halve_until_small(x, limit):
        return jax.lax.while_loop(lambda c: c[0] > limit, lambda c: (c[0] / 2, c[1] + 1), (x, 0))

    x = jnp.asarray([1.0, 100.0, 7.0, 1e6, 3.0, 0.5], jnp.float32)
    limit = jnp.asarray([0.5, 2.0, 0.1, 1.0, 3.0, 1.0], jnp.float32)
    mesh = Mesh(np.array(jax.devices()), ("member",))
    program = population_program(halve_until_small, mesh, member_batch, unbatched_one=unbatched_one)
    got = program(x, limit)
    alone = [halve_until_small(a, b) for a, b in zip(x, limit)]
    np.testing.assert_array_equal(np.asarray(got[1]), [int(a[1]) for a in alone])
    np.testing.assert_array_equal(np.asarray(got[0]), [float(a[0]) for a in alone])


def test_deterministic():
    model = Model("lstm", "relu", 6, TASK.n_in, TASK.n_out)
    keys = jax.random.split(jax.random.key(4), 3)
    a, la, _ = population(model, ROWS, keys)
    b, lb, _ = population(model, ROWS, keys)
    np.testing.assert_array_equal(la, lb)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_diverged_member_is_frozen_and_isolated():
    model = Model("vanilla", "relu", 6, TASK.n_in, TASK.n_out)
    keys = jax.random.split(jax.random.key(5), 4)
    calm = [ROWS[0], ROWS[1], ROWS[0], ROWS[2]]
    wild = list(calm)
    wild[2] = dict(lr=1e4, decay=0.9, momentum=0.9, clip=1e9, l2=0.0)
    s_calm, l_calm, _ = population(model, calm, keys)
    s_wild, l_wild, _ = population(model, wild, keys)

    assert bool(s_wild.diverged[2]) and not s_wild.diverged[[0, 1, 3]].any()
    assert np.isnan(l_wild[2, -1]) and np.isfinite(l_wild[2, 0])
    for leaf in jax.tree.leaves(s_wild.params):
        assert np.isfinite(leaf[2]).all()  # frozen at its last finite values
    for i in (0, 1, 3):  # neighbours: bit-for-bit what they were without it
        np.testing.assert_array_equal(l_wild[i], l_calm[i])
        for a, b in zip(jax.tree.leaves(s_wild.params), jax.tree.leaves(s_calm.params)):
            np.testing.assert_array_equal(a[i], b[i])


def test_l2_penalises_weight_matrices_only():
    model = Model("gru", "tanh", 4, TASK.n_in, TASK.n_out)
    params = model.init(jax.random.key(0))
    x, y = TASK.sample(jax.random.key(1), 4)
    total, mse = objective(model, params, 0.5, x, y)
    cell = params["cell"]
    weights = cell["recurrent"], cell["candidate"], cell["input"], params["readout"]["kernel"]
    np.testing.assert_allclose(total - mse, 0.5 * sum(float(jnp.sum(w**2)) for w in weights), rtol=1e-5)


def test_optimizer_is_clipped_momentum_sgd_with_exponential_decay():
    hp = HParams(*(jnp.float32(v) for v in (0.1, 0.5, 0.9, 1.0, 0.0)))
    opt = make_optimizer(hp, decay_steps=10)
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    g = {"w": jnp.array([3.0, 4.0])}  # norm 5 → clipped to norm 1: [0.6, 0.8]
    trace = np.zeros(2)
    for step in range(3):
        upd, state = opt.update(g, state, params)
        trace = np.array([0.6, 0.8]) + 0.9 * trace
        np.testing.assert_allclose(upd["w"], -0.1 * 0.5 ** (step / 10) * trace, rtol=1e-5)


@pytest.mark.slow
def test_trained_gru_solves_flipflop():
    task = make_task("flipflop", T=50)
    model = Model("gru", "tanh", 32, task.n_in, task.n_out)
    settings = TrainSettings(steps=800, batch=64, chunk=200)
    hp = HParams.of(dict(lr=0.05, decay=0.5, momentum=0.9, clip=1.0, l2=1e-5))
    state, _ = jax.jit(partial(train_one, model, task, settings))(hp, jax.random.key(0))
    params = state.params
    x, y = task.sample(jax.random.key(123), 256)
    test_mse = float(jnp.mean((model(params, x) - y) ** 2))
    baseline = zero_baseline(task, jax.random.key(123), 256)
    assert test_mse < 0.2 * baseline, (test_mse, baseline)
    # it holds each channel's last pulse: the sign of the output matches the target after a pulse
    out = np.asarray(model(params, x))
    held = np.asarray(y) != 0
    assert (np.sign(out[held]) == np.asarray(y)[held]).mean() > 0.95
