"""The delayed-discrimination task (popdyn/tasks/discrimination.py): trial structure against the
definition, the |f1 − f2| ≥ gap rule on every trial, the delay range, the probe grid, determinism, and a
tiny sweep that trains, finds fixed points at x* = 0 and reads back with store.load."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from popdyn.tasks import TaskError, make_task
from popdyn.tasks.discrimination import RESPONSE, STIMULUS, probe_pairs

TASK = make_task("discrimination")
N = 4096


@pytest.fixture(scope="module")
def batch():
    x, y = TASK.sample(jax.random.key(0), N)
    return np.asarray(x), np.asarray(y)


def _delays(x: np.ndarray) -> np.ndarray:
    """The delay of each trial read from its go cue: onset = 2·STIMULUS + D."""
    return np.argmax(x[:, :, 1] > 0, axis=1) - 2 * STIMULUS


def test_sizes_and_defaults():
    assert (TASK.n_in, TASK.n_out, TASK.T, TASK.loss) == (2, 1, 100, "mse")
    assert dict(TASK.params) == {
        "T": 100,
        "min_delay": 20,
        "max_delay": 50,
        "gap": 0.2,
        "n_probe": 8,
        "probe_seed": 0,
    }
    np.testing.assert_array_equal(TASK.x_star, np.zeros((1, 2), np.float32))


def test_trial_structure_follows_the_definition(batch):
    x, y = batch
    assert x.shape == (N, 100, 2) and y.shape == (N, 100, 1) and x.dtype == y.dtype == np.float32
    D = _delays(x)
    f1, f2 = x[:, 0, 0], x[np.arange(N), STIMULUS + D, 0]
    t = np.arange(100)[None]
    s2, go = STIMULUS + D[:, None], 2 * STIMULUS + D[:, None]
    stim = np.where(t < STIMULUS, f1[:, None], 0) + np.where((t >= s2) & (t < go), f2[:, None], 0)
    cue = ((t >= go) & (t < go + RESPONSE)).astype(np.float32)
    np.testing.assert_array_equal(x[..., 0], stim)
    np.testing.assert_array_equal(x[..., 1], cue)
    np.testing.assert_array_equal(y[..., 0], cue * np.where(f1 > f2, 1.0, -1.0)[:, None])
    assert (np.abs(y[..., 0]).sum(1) == RESPONSE).all()  # ±1 on exactly the response steps, 0 elsewhere


def test_gap_always_holds_and_values_cover_the_range(batch):
    x, _ = batch
    D = _delays(x)
    f1, f2 = x[:, 0, 0], x[np.arange(N), STIMULUS + D, 0]
    assert (np.abs(f1 - f2) >= 0.2).all()
    assert (np.abs(f1) <= 1).all() and (np.abs(f2) <= 1).all()
    assert f1.min() < -0.95 and f1.max() > 0.95 and f2.min() < -0.95 and f2.max() > 0.95
    assert 0.45 < np.mean(f1 > f2) < 0.55  # both answers, balanced


def test_every_delay_in_the_range_occurs(batch):
    assert set(_delays(batch[0]).tolist()) == set(range(20, 51))
    x, _ = make_task("discrimination", min_delay=3, max_delay=5, T=40).sample(jax.random.key(1), 256)
    assert set(_delays(np.asarray(x)).tolist()) == {3, 4, 5}


def test_probes_are_the_grid_of_pairs_at_the_longest_delay():
    x, y = np.asarray(TASK.probe_inputs), np.asarray(TASK.probe_targets)
    f = np.linspace(-1, 1, 8).astype(np.float32)
    pairs = [(a, b) for a in f for b in f if abs(a - b) >= 0.2]
    assert x.shape == (len(pairs), 100, 2) == (56, 100, 2)
    np.testing.assert_array_equal(np.stack(probe_pairs(8, 0.2), 1), np.array(pairs, np.float32))
    np.testing.assert_array_equal(x[:, 0, 0], [a for a, _ in pairs])
    np.testing.assert_array_equal(x[:, STIMULUS + 50, 0], [b for _, b in pairs])
    assert (_delays(x) == 50).all()
    np.testing.assert_array_equal(y[:, 2 * STIMULUS + 50, 0], [1.0 if a > b else -1.0 for a, b in pairs])
    np.testing.assert_array_equal(TASK.probe_condition, np.zeros(56, np.int32))


def test_same_key_same_trials_other_key_other_trials():
    a, b = TASK.sample(jax.random.key(3), 8), TASK.sample(jax.random.key(3), 8)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], TASK.sample(jax.random.key(4), 8)[0])
    np.testing.assert_array_equal(TASK.probe_inputs, make_task("discrimination").probe_inputs)


@pytest.mark.parametrize(
    "params, named",
    [({"T": 79}, "T"), ({"min_delay": 0}, "min_delay"), ({"max_delay": 10}, "max_delay"),
     ({"gap": 2.0}, "gap"), ({"gap": "x"}, "gap"), ({"delay": 3}, "delay")],
)  # fmt: skip
def test_impossible_settings_are_refused(params, named):
    with pytest.raises(TaskError, match=named):
        make_task("discrimination", **params)


@pytest.mark.slow
def test_a_tiny_sweep_trains_finds_fixed_points_at_zero_input_and_loads(tmp_path):
    from popdyn import store
    from popdyn.config import build_sweep
    from popdyn.sweep import run_sweep
    from tests.test_sweep import config

    cfg = config(
        "task=discrimination", "task.T=40", "task.min_delay=4", "task.max_delay=8", "task.n_probe=4",
        "grid.arch=[gru]", "grid.seeds=1", "grid.trials=0", "train.steps=40", "train.chunk=20",
        "dynamics.n_initial=16", "dynamics.steps=200", "progress=false",
    )  # fmt: skip
    run_sweep(build_sweep(cfg), tmp_path, progress=False)
    ds = store.load(tmp_path)
    assert ds.attrs["task"] == "discrimination"
    assert np.isfinite(ds.loss.values).all()
    assert (ds.n_fixed_points.values >= 1).all()  # at x* = 0, one condition
    assert ds.fp_valid.sizes["condition"] == 1
    assert "transition" not in ds and "cdi_graph" not in ds and "sine_frequency" not in ds  # no other task's
