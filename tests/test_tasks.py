"""Tasks of [U] §3: targets against independent NumPy references, statistics, shapes, jit/vmap, errors."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import tasks
from popdyn.tasks import TASKS, Task, TaskError, make_task, zero_baseline
from popdyn.tasks.flipflop import _flipflop_target
from tests.test_outside import Hold, registered

KEY = jax.random.key(0)
# Every distinct (task settings, batch) compiles a sampler (~0.5 s on CPU), so tests share a few sizes.
B = 8  # every sampled batch; statistics pool many keys (new keys reuse the compiled sampler)
N_KEYS = 64  # → 512 trials for the statistical checks

# Small overrides per task, to check that sizes follow the parameters rather than the defaults.
OVERRIDES = {
    "flipflop": {"K": 5, "T": 17, "p": 0.3, "n_probe": 8},  # n_probe = B: probes reuse the sampler
    "sine": {"T": 23, "n_probe": 5},
    "cdi": {"K": 3, "T": 11, "n_probe": 4},
}


def expected_sizes(name: str, **params) -> tuple[int, int, int]:
    """(T, n_in, n_out) straight from SPEC §2 and the defaults."""
    T = params.get("T", {"flipflop": 100, "sine": 500, "cdi": 30}[name])
    K = params.get("K", {"flipflop": 3, "cdi": 2}.get(name))
    return (
        T,
        {"flipflop": K, "sine": 1, "cdi": 2 * (K or 0)}[name],
        {"flipflop": K, "sine": 1, "cdi": 1}[name],
    )


@functools.cache
def draw(task: Task, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One sampled batch as float64 NumPy arrays (cached: several tests read the same batch)."""
    x, y = task.sample(jax.random.key(seed), batch)
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def draw_many(task: Task, n_keys: int = N_KEYS) -> tuple[np.ndarray, np.ndarray]:
    """``n_keys`` batches of ``B`` trials, stacked along the batch axis."""
    xs, ys = zip(*(draw(task, B, seed) for seed in range(n_keys)))
    return np.concatenate(xs), np.concatenate(ys)


# ---- independent references (plain NumPy loops over time) ----------------------------------------


def ref_flipflop(x: np.ndarray) -> np.ndarray:
    """Per channel the last non-zero input so far, 0 before the first."""
    y = np.zeros_like(x)
    last = np.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        last = np.where(x[:, t] != 0, x[:, t], last)
        y[:, t] = last
    return y


def ref_sine(x: np.ndarray) -> np.ndarray:
    omega = 0.04 * x[:, 0, 0] + 0.01
    t = np.arange(x.shape[1])
    return np.sin(2 * np.pi * omega[:, None] * t[None, :])[..., None]


def ref_cdi(x: np.ndarray) -> np.ndarray:
    K = x.shape[-1] // 2
    context = np.argmax(x[:, 0, :K], axis=-1)
    y = np.zeros(x.shape[:2] + (1,))
    for b in range(x.shape[0]):
        total = 0.0
        for t in range(x.shape[1]):
            total += x[b, t, K + context[b]]
            y[b, t, 0] = total
    return y


REFERENCE = {"flipflop": ref_flipflop, "sine": ref_sine, "cdi": ref_cdi}
REGRESSION = tuple(REFERENCE)  # [U]'s tasks; the text tasks of [A] are tested in test_texttasks.py


# ---- construction ----------------------------------------------------------------------------------


def test_defaults_match_spec():
    # the registry's order is its modules' (sorted file names), no longer a hand-written list
    assert TASKS == tasks.names()
    assert sorted(TASKS) == sorted((
        "flipflop",
        "sine",
        "cdi",
        "categorical",
        "ordered",
        "multilabel",
        "corpus",
        "sinegen",
        "symbols",
        "repetition",
        "discrimination",
    ))  # fmt: skip
    ff, sine, cdi = (make_task(n) for n in REGRESSION)
    assert dict(ff.params) == {
        "K": 3,
        "T": 100,
        "p": 0.05,
        "initial_pulse": True,
        "n_probe": 64,
        "probe_seed": 0,
    }
    assert dict(sine.params) == {"T": 500, "n_probe": 16, "probe_seed": 0}
    assert dict(cdi.params) == {"K": 2, "T": 30, "n_probe": 8, "probe_seed": 0}
    assert (ff.n_in, ff.n_out, ff.T) == (3, 3, 100)
    assert (sine.n_in, sine.n_out, sine.T) == (1, 1, 500)
    assert (cdi.n_in, cdi.n_out, cdi.T) == (4, 1, 30)
    assert ff.param("p") == 0.05
    assert ff.as_dict() == {"name": "flipflop", **dict(ff.params)}


@pytest.mark.parametrize("name", REGRESSION)
def test_task_is_hashable_and_equal_when_built_twice(name):
    a, b = make_task(name), make_task(name, **{k: v for k, v in make_task(name).params})
    assert a == b and hash(a) == hash(b)
    assert list(a.params) == sorted(a.params)
    assert make_task(name, T=7) != a


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("flipflop", "T", 0),
        ("flipflop", "T", -3),
        ("flipflop", "T", 2.5),
        ("flipflop", "T", 100.0),
        ("flipflop", "K", 0),
        ("flipflop", "K", 1.5),
        ("flipflop", "K", True),
        ("flipflop", "p", 1.5),
        ("flipflop", "p", -0.1),
        ("flipflop", "p", float("nan")),
        ("flipflop", "p", "0.1"),
        ("flipflop", "n_probe", 0),
        ("flipflop", "probe_seed", 2**32),
        ("sine", "T", -1),
        ("sine", "n_probe", 0),
        ("cdi", "K", 0),
        ("cdi", "T", "30"),
        ("cdi", "n_probe", -2),
        ("cdi", "probe_seed", -1),
        ("cdi", "probe_seed", 0.5),
    ],
)
def test_bad_values_raise_naming_the_value(name, key, value):
    with pytest.raises(TaskError, match=rf"{name}: {key} must .*got {re.escape(repr(value))}$"):
        make_task(name, **{key: value})


def test_unknown_task_names_the_bad_name_and_the_choices():
    with pytest.raises(TaskError, match=r"'flipflip'; choose one of") as e:
        make_task("flipflip")
    assert all(
        f"'{n}'" in str(e.value) for n in ("flipflop", "sine", "cdi", "discrimination")
    )  # registry order
    assert issubclass(TaskError, ValueError)


@pytest.mark.parametrize(
    "name, bad, allowed",
    [
        ("flipflop", "omega", "K, T, initial_pulse, n_probe, p, probe_seed"),
        ("sine", "K", "T, n_probe, probe_seed"),
        ("cdi", "p", "K, T, n_probe, probe_seed"),
    ],
)
def test_unknown_param_names_it_and_the_allowed(name, bad, allowed):
    with pytest.raises(TaskError, match=f"'{bad}'.*{name}.*{allowed}"):
        make_task(name, **{bad: 1})


def test_numpy_integers_are_accepted():
    task = make_task("flipflop", K=np.int64(2), T=np.int32(9))
    assert (task.n_in, task.T) == (2, 9)
    assert all(type(v) in (int, float, bool) for _, v in task.params)


@pytest.mark.parametrize("name", REGRESSION)
def test_bad_batch_raises(name):
    with pytest.raises(TaskError, match="batch.*0"):
        make_task(name).sample(KEY, 0)


# ---- shapes, dtypes, determinism, jit, vmap -------------------------------------------------------


@pytest.mark.parametrize("name", REGRESSION)
@pytest.mark.parametrize("override", [False, True])
def test_shapes_and_dtypes(name, override):
    params = OVERRIDES[name] if override else {}
    task = make_task(name, **params)
    T, n_in, n_out = expected_sizes(name, **params)
    assert (task.T, task.n_in, task.n_out) == (T, n_in, n_out)
    x, y = task.sample(KEY, B)
    assert x.shape == (B, T, n_in) and y.shape == (B, T, n_out)
    assert x.dtype == jnp.float32 and y.dtype == jnp.float32
    assert np.isfinite(np.asarray(x)).all() and np.isfinite(np.asarray(y)).all()


@pytest.mark.parametrize("name", REGRESSION)
def test_determinism(name):
    task = make_task(name, **OVERRIDES[name])
    x1, y1 = task.sample(jax.random.key(3), B)
    x2, y2 = task.sample(jax.random.key(3), B)
    x3, _ = task.sample(jax.random.key(4), B)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("name", REGRESSION)
def test_jit_and_vmap(name):
    task = make_task(name, **OVERRIDES[name])
    keys = jax.random.split(KEY, 3)
    xv, yv = jax.jit(jax.vmap(lambda k: task.sample(k, B)))(keys)
    assert xv.shape == (3, B, task.T, task.n_in) and yv.shape == (3, B, task.T, task.n_out)
    for i in range(3):
        x, y = task.sample(keys[i], B)
        np.testing.assert_allclose(xv[i], x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(yv[i], y, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(xv[0], xv[1])


def test_task_as_static_jit_argument_compiles_once():
    traces = []

    def mean_target(task, key, batch):
        traces.append(task.name)
        return jnp.mean(task.sample(key, batch)[1])

    f = jax.jit(mean_target, static_argnums=(0, 2))
    f(make_task("sine", T=5), KEY, 4)
    f(make_task("sine", T=5, n_probe=16), jax.random.key(1), 4)  # equal task, new key: no retrace
    assert traces == ["sine"]
    f(make_task("sine", T=6), KEY, 4)
    assert len(traces) == 2


def test_legacy_uint32_keys_work():
    x, _ = make_task("sine", T=5).sample(jax.random.PRNGKey(0), 2)
    assert x.shape == (2, 5, 1)


# ---- targets against independent references -------------------------------------------------------


@pytest.mark.parametrize("name", REGRESSION)
@pytest.mark.parametrize("override", [False, True])
def test_targets_match_reference(name, override):
    task = make_task(name, **(OVERRIDES[name] if override else {}))
    for seed in range(4):  # new keys reuse the compiled sampler
        x, y = draw(task, B, seed)
        # cdi sums 30 float32 terms of size ~2 and sine reaches 25 cycles: float32-level tolerances.
        np.testing.assert_allclose(y, REFERENCE[name](x), atol=1e-4, rtol=1e-5)


def test_flipflop_target_small_hand_example():
    # One channel: 0 0 +1 0 -1 -1 0 +1 → 0 0 +1 +1 -1 -1 -1 +1; a second channel that never pulses.
    x = np.zeros((1, 8, 2), np.float32)
    x[0, :, 0] = [0, 0, 1, 0, -1, -1, 0, 1]
    y = np.asarray(_flipflop_target(jnp.asarray(x)))
    np.testing.assert_array_equal(y[0, :, 0], [0, 0, 1, 1, -1, -1, -1, 1])
    np.testing.assert_array_equal(y[0, :, 1], 0)


# ---- statistics ----------------------------------------------------------------------------------


@pytest.mark.parametrize("override", [False, True])
def test_flipflop_pulse_statistics(override):
    task = make_task("flipflop", **(OVERRIDES["flipflop"] if override else {}))
    p, K = task.param("p"), task.param("K")
    x, _ = draw_many(task)
    assert set(np.unique(x)) <= {-1.0, 0.0, 1.0}
    x = x[:, 1:]  # after t = 0, where every channel pulses (initial_pulse, test_flipflop_initial_pulse)
    pulses = x != 0
    n = pulses.size
    assert abs(pulses.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    for k in range(K):  # every channel pulses at rate p
        assert abs(pulses[..., k].mean() - p) < 5 * np.sqrt(p * (1 - p) / (n / K))
    # signs balanced, and independent of the channel
    frac_pos = (x > 0).sum() / pulses.sum()
    assert abs(frac_pos - 0.5) < 5 * np.sqrt(0.25 / pulses.sum())
    # channels independent: the pulse correlation between two channels is ~0
    assert abs(np.corrcoef(pulses[..., 0].ravel(), pulses[..., 1].ravel())[0, 1]) < 5 / np.sqrt(n / K)


@pytest.mark.parametrize("initial_pulse", [True, False])
def test_flipflop_initial_pulse(initial_pulse):
    """SPEC §2 (Sussillo & Barak 2013): with initial_pulse every channel pulses at t = 0 with a random,
    balanced sign, so every target is ±1 (2^K memory states); without it the first step pulses at rate p
    and targets are 0 until a channel's first pulse."""
    task = make_task("flipflop", initial_pulse=initial_pulse)
    x, y = draw_many(task)
    first = x[:, 0]
    if initial_pulse:
        assert (np.abs(first) == 1).all()
        assert abs((first > 0).mean() - 0.5) < 5 * np.sqrt(0.25 / first.size)
        assert set(np.unique(y)) == {-1.0, 1.0}
    else:
        p = task.param("p")
        assert abs((first != 0).mean() - p) < 5 * np.sqrt(p * (1 - p) / first.size)
        assert 0.0 in set(np.unique(y))
    later = x[:, 1:] != 0  # later steps pulse at rate p either way
    assert abs(later.mean() - task.param("p")) < 5 * np.sqrt(0.05 / later.size)
    np.testing.assert_array_equal(y, ref_flipflop(x))


def test_flipflop_initial_pulse_must_be_boolean():
    with pytest.raises(TaskError, match="initial_pulse must be true or false"):
        make_task("flipflop", initial_pulse=1)


def test_flipflop_always_pulsing():
    x, y = draw(make_task("flipflop", p=1.0), B)
    assert (np.abs(x) == 1).all()
    np.testing.assert_array_equal(y, x)


def test_sine_input_statistics():
    x, _ = draw_many(make_task("sine"))
    assert (x == x[:, :1]).all()  # constant over the trial
    xs = x[:, 0, 0]
    assert xs.min() >= 0.0 and xs.max() < 1.0
    assert abs(xs.mean() - 0.5) < 5 * np.sqrt(1 / 12 / xs.size)
    assert abs(xs.var() - 1 / 12) < 0.02


def test_cdi_statistics():
    task = make_task("cdi", T=2000)
    x, _ = draw_many(task, 32)
    K = 2
    ctx, streams = x[..., :K], x[..., K:]
    assert (ctx == ctx[:, :1]).all() and (ctx.sum(-1) == 1).all() and set(np.unique(ctx)) == {0.0, 1.0}
    mu_hat = streams.mean(axis=1)  # [batch, K], each within 1/sqrt(2000) ≈ 0.022 of μ
    assert np.abs(mu_hat).max() < 1 + 5 / np.sqrt(task.T)
    assert np.abs(mu_hat).max() > 0.9  # spread over the whole of (-1, 1)
    assert abs(mu_hat.var() - 1 / 3) < 0.08
    assert abs(np.corrcoef(mu_hat[:, 0], mu_hat[:, 1])[0, 1]) < 0.25  # independent μ per stream
    resid = streams - mu_hat[:, None, :]
    assert abs(resid.std() - 1.0) < 0.01


def test_cdi_context_uniform():
    task = make_task("cdi", **OVERRIDES["cdi"])
    x, _ = draw_many(task)
    n = x.shape[0]
    context = np.argmax(x[:, 0, :3], -1)
    np.testing.assert_allclose(np.bincount(context, minlength=3) / n, 1 / 3, atol=5 * np.sqrt(2 / 9 / n))


@pytest.mark.parametrize("name", REGRESSION)
def test_zero_baseline(name):
    task = make_task(name)
    base = zero_baseline(task, KEY, batch=B)
    _, y = draw(task, B)
    assert isinstance(base, float)
    np.testing.assert_allclose(base, np.mean(y**2), rtol=1e-4)
    assert base > 0


def test_zero_baseline_known_values():
    # sine: mean sin² over many cycles ≈ 1/2; flipflop with p=1: every target is ±1.
    assert abs(zero_baseline(make_task("sine"), KEY, batch=B) - 0.5) < 0.03
    assert zero_baseline(make_task("flipflop", p=1.0), KEY, batch=B) == 1.0


# ---- probe inputs and x* --------------------------------------------------------------------------


@pytest.mark.parametrize("name", REGRESSION)
@pytest.mark.parametrize("override", [False, True])
def test_probe_shapes_and_targets(name, override):
    params = OVERRIDES[name] if override else {}
    task = make_task(name, **params)
    n = task.param("n_probe")
    n_total = n * task.param("K") if name == "cdi" else n
    assert task.probe_inputs.shape == (n_total, task.T, task.n_in)
    assert task.probe_targets.shape == (n_total, task.T, task.n_out)
    assert task.probe_inputs.dtype == jnp.float32 and task.probe_targets.dtype == jnp.float32
    assert task.probe_condition.shape == (n_total,)
    np.testing.assert_allclose(
        task.probe_targets, REFERENCE[name](np.asarray(task.probe_inputs, np.float64)), atol=1e-4
    )


@pytest.mark.parametrize("name", REGRESSION)
def test_probe_inputs_deterministic(name):
    a, b = make_task(name), make_task(name)
    np.testing.assert_array_equal(a.probe_inputs, b.probe_inputs)
    np.testing.assert_array_equal(a.probe_inputs, a.probe_inputs)
    np.testing.assert_array_equal(a.x_star, b.x_star)


def test_flipflop_probe_is_seeded_sample():
    task = make_task("flipflop", probe_seed=7)
    x, _ = task.sample(jax.random.key(7), 64)
    np.testing.assert_array_equal(task.probe_inputs, x)
    assert not np.array_equal(task.probe_inputs, make_task("flipflop").probe_inputs)


def test_sine_probe_and_x_star():
    task = make_task("sine", n_probe=5, T=10)
    x_expected = np.linspace(0, 1, 5, dtype=np.float32)
    np.testing.assert_allclose(task.x_star, x_expected[:, None])
    np.testing.assert_allclose(task.probe_inputs, np.broadcast_to(x_expected[:, None, None], (5, 10, 1)))
    np.testing.assert_array_equal(task.probe_condition, np.arange(5))
    # probe i's static input is condition i's x*
    np.testing.assert_array_equal(task.probe_inputs[:, 0, :], task.x_star[task.probe_condition])


def test_cdi_probe_and_x_star():
    task = make_task("cdi", K=2, n_probe=3, T=4)
    p = np.asarray(task.probe_inputs)
    mu = np.linspace(-1, 1, 3, dtype=np.float32)
    # context-major: rows 0..2 cue stream 0, rows 3..5 cue stream 1; the other stream is 0
    np.testing.assert_array_equal(p[:3, :, :2], np.broadcast_to([1.0, 0.0], (3, 4, 2)))
    np.testing.assert_array_equal(p[3:, :, :2], np.broadcast_to([0.0, 1.0], (3, 4, 2)))
    np.testing.assert_allclose(p[:3, :, 2], np.broadcast_to(mu[:, None], (3, 4)))
    np.testing.assert_array_equal(p[:3, :, 3], 0.0)
    np.testing.assert_allclose(p[3:, :, 3], np.broadcast_to(mu[:, None], (3, 4)))
    np.testing.assert_array_equal(p[3:, :, 2], 0.0)
    np.testing.assert_allclose(task.probe_targets[:3, -1, 0], 4 * mu)
    np.testing.assert_array_equal(task.x_star, [[1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(task.probe_condition, [0, 0, 0, 1, 1, 1])
    # each probe's static (context) dims equal its condition's x*
    np.testing.assert_array_equal(p[:, 0, :2], np.asarray(task.x_star)[task.probe_condition, :2])


@pytest.mark.parametrize("name, shape", [("flipflop", (1, 3)), ("sine", (16, 1)), ("cdi", (2, 4))])
def test_x_star_default_shapes(name, shape):
    task = make_task(name)
    assert task.x_star.shape == shape and task.x_star.dtype == jnp.float32
    if name == "flipflop":
        assert not np.asarray(task.x_star).any()
    assert make_task("flipflop", K=5).x_star.shape == (1, 5)
    assert make_task("cdi", K=3).x_star.shape == (3, 6)


@pytest.mark.parametrize("name", ["sine", "cdi"])  # flipflop's probe is task.sample, tested above
def test_probes_read_inside_jit_are_not_kept_as_tracers(name):
    task = make_task(name, **OVERRIDES[name])

    @jax.jit
    def total(z):
        return z + jnp.sum(task.probe_inputs) + jnp.sum(task.x_star) + jnp.sum(task.probe_targets)

    expected = np.sum(task.probe_inputs) + np.sum(task.x_star) + np.sum(task.probe_targets)
    np.testing.assert_allclose(total(0.0), expected, rtol=1e-5)
    assert not isinstance(task.probe_inputs, jax.core.Tracer)


# ---------------------------------------------------------------------------------------------- [R] tasks
def test_sinegen_draws_from_the_set_of_waves():
    """[R] §5.1: constant input ω from the n_sequences frequencies evenly spaced in [π/16, π/8], target
    sin(ω (t+1)); probes and fixed-point conditions one per probe frequency."""
    task = make_task("sinegen", T=50, n_sequences=5)
    assert (task.n_in, task.n_out, task.loss) == (1, 1, "mse")
    x, y = task.sample(jax.random.key(0), 64)
    assert x.shape == (64, 50, 1) and y.shape == (64, 50, 1)
    omega = np.asarray(x[:, 0, 0], np.float64)
    grid = np.linspace(np.pi / 16, np.pi / 8, 5)
    assert np.abs(omega[:, None] - grid[None]).min(axis=1).max() < 1e-6
    assert len(np.unique(omega.round(6))) == 5  # every wave of the set drawn
    assert (np.asarray(x) == omega[:, None, None]).all()
    np.testing.assert_allclose(y[:, :, 0], np.sin(omega[:, None] * np.arange(1, 51)), atol=2e-5)
    np.testing.assert_allclose(task.x_star[:, 0], np.linspace(np.pi / 16, np.pi / 8, 16), rtol=1e-6)
    assert (
        task.probe_inputs.shape == (16, 50, 1) and (np.asarray(task.probe_condition) == np.arange(16)).all()
    )


def test_symbols_task_is_relevant_symbol_classification():
    """[R] §5.2: one-hot p q a b c d; p/q exactly at one step in [10, 18] and one in [40, 49]; the class is
    the ordered pair; final-state softmax classification."""
    task = make_task("symbols", T=60)
    assert (task.n_in, task.n_out, task.loss, task.T) == (6, 4, "softmax", 60)
    assert task.words == ("p", "q", "a", "b", "c", "d")
    x, y = task.sample(jax.random.key(1), 256)
    sym = np.asarray(x).argmax(-1)  # [batch, T]
    relevant = sym < 2
    assert (relevant.sum(1) == 2).all()
    steps = np.nonzero(relevant)[1].reshape(-1, 2)
    assert ((steps[:, 0] >= 10) & (steps[:, 0] <= 18) & (steps[:, 1] >= 40) & (steps[:, 1] <= 49)).all()
    pair = sym[relevant].reshape(-1, 2)
    np.testing.assert_array_equal(np.asarray(y).argmax(-1), 2 * pair[:, 0] + pair[:, 1])
    with pytest.raises(TaskError, match="T must be at least 50"):
        make_task("symbols", T=40)
    with pytest.raises(TaskError, match="n_sequences"):
        make_task("sinegen", n_sequences=0)


@pytest.mark.parametrize("grid", ["sinegen", "symbols"])
def test_r_grids_validate_with_the_paper_s_settings(grid):
    """[R] §5: lstm, slstm and ornn of 200 units, Adam, gradient-norm clip 0.25, batch 100."""
    from popdyn.config import build_sweep
    from tests.test_sweep import config

    s = build_sweep(config(grid=grid))
    assert s.task.name == grid and s.grid.arch == ("lstm", "slstm", "ornn") and s.grid.units == (200,)
    assert s.train.optimizer == "adam" and s.train.batch == 100 and s.hparams["clip"] == 0.25


def test_repetition_task_is_next_token_prediction_on_the_repetition_language():
    """[V] §4.2.1 as a task: one-hot inputs (or ids shifted past <pad> with an embedding), targets the
    next token at every step, scored by the per-step softmax cross-entropy."""
    task = make_task("repetition", T=50)
    assert (task.n_in, task.n_out, task.loss, task.vocab) == (11, 11, "lm", 0) and not task.classification
    x, y = task.sample(jax.random.key(0), 4)
    assert x.shape == (4, 50, 11) and y.shape == (4, 50, 11)
    ids, nxt = np.asarray(x).argmax(-1), np.asarray(y).argmax(-1)
    np.testing.assert_array_equal(ids[:, 1:], nxt[:, :-1])  # the target is the next input
    emb = make_task("repetition", T=50, embedding=8)
    assert (emb.n_in, emb.vocab, len(emb.words)) == (8, 12, 12) and emb.words[-1] == "<eos>"
    xe, ye = emb.sample(jax.random.key(0), 4)
    np.testing.assert_array_equal(np.asarray(xe), ids + 1)  # the same stream, ids past <pad>
    np.testing.assert_array_equal(np.asarray(ye), np.asarray(y))
    for bad, named in (({"vocab": 2}, "vocab"), ({"min_cycles": 4, "max_cycles": 3}, "max_cycles")):
        with pytest.raises(TaskError, match=named):
            make_task("repetition", **bad)


# ---- a task registered from outside the package (its sweep: tests/test_outside.py) -------------------


@pytest.fixture
def hold_toy():
    with registered(task=True):
        yield tasks.get("hold_toy")


def test_register_refuses_a_taken_name(hold_toy):
    with pytest.raises(ValueError, match="'hold_toy' is already registered"):
        tasks.register(Hold())
    assert "hold_toy" in tasks.names() and tasks.get("hold_toy") is hold_toy
    # the spec's defaults: probes are sample(key(probe_seed), n_probe), one condition at x* = 0
    task = make_task("hold_toy", T=7)
    assert task.probe_inputs.shape == (4, 7, 1) and task.probe_targets.shape == (4, 7, 1)
    np.testing.assert_array_equal(task.x_star, np.zeros((1, 1)))
    np.testing.assert_array_equal(task.probe_condition, np.zeros(4))
