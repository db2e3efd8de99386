"""The fused lstm kernel (popdyn/fused.py, popdyn/kernels/lstm.cc) against the XLA time loop it replaces."""

import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import cells, fused
from popdyn.model import Model
from popdyn.recurrence import recurrence

needs_kernel = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not fused.available(), reason="the fused kernel runs on a CPU with g++"
)

B, T, M, N = 12, 30, 3, 8


def _inputs(scale: float):
    keys = jax.random.split(jax.random.key(0), 6)
    k = jax.random.normal(keys[0], (N + M + 1, 4 * N)) * scale
    x = jax.random.normal(keys[1], (B, T, M))
    h0, c0 = (0.3 * jax.random.normal(kk, (B, N)) for kk in keys[2:4])
    mask = (jax.random.uniform(keys[4], (B, T)) > 0.25).astype(jnp.float32)
    weights = jax.random.normal(keys[5], (2, B, T, N))
    return k, x, h0, c0, mask, weights


def _rel_err(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


@needs_kernel
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("scale", [0.5, 4.0])  # 4: saturated gates (sigmoid and tanh at |a| ≫ 1)
def test_states_and_gradients_match_the_xla_loop(activation, masked, scale):
    k, x, h0, c0, mask, (wh, wc) = _inputs(scale)
    mask = mask if masked else None

    def loss(loop, *args):
        h, c = loop(*args)
        return jnp.sum(h * wh) + jnp.sum(c * wc)

    def xla(k, x, h0, c0):
        return recurrence(cells.get("lstm").loop, activation, 1, k, x, (h0, c0), mask)

    def kernel(k, x, h0, c0):
        return fused.lstm(k, x, (h0, c0), mask, activation)

    args = (k, x, h0, c0)
    # float32 rounding (another summation order, another exp polynomial); with weights × 4 the relu lstm's
    # 30 steps expand (gradients ~1e6) and amplify it
    tol = 2e-5 if scale < 1 else 3e-4
    want = xla(*args), jax.grad(lambda *a: loss(xla, *a), argnums=(0, 1, 2, 3))(*args)
    got = kernel(*args), jax.grad(lambda *a: loss(kernel, *a), argnums=(0, 1, 2, 3))(*args)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        assert w.shape == g.shape
        assert np.isfinite(np.asarray(g)).all()
        assert _rel_err(w, g) < tol
    if masked:  # a masked step holds the state at 0, as in training on left-padded documents
        h, c = got[0]
        off = np.asarray(mask) == 0
        assert np.all(np.asarray(h)[off] == 0) and np.all(np.asarray(c)[off] == 0)


@needs_kernel
def test_a_vmapped_population_is_bit_for_bit_each_member_alone():
    k, x, h0, c0, _, (wh, _) = _inputs(0.5)
    ks = jnp.stack([k, 0.8 * k, 1.2 * k])

    def grad(kk):
        return jax.grad(lambda kk: jnp.sum(fused.lstm(kk, x, (h0, c0), None, "tanh")[0] * wh))(kk)

    together = jax.jit(jax.vmap(grad))(ks)
    alone = jnp.stack([jax.jit(grad)(kk) for kk in ks])
    np.testing.assert_array_equal(np.asarray(together), np.asarray(alone))


@needs_kernel
def test_the_model_uses_the_kernel_for_lstms_on_the_cpu_unless_told_not_to():
    x = jnp.zeros((2, 5, 3))
    for arch in ("lstm", "slstm", "gru"):
        for kernel in ("auto", "xla"):
            model = Model(arch, "tanh", 4, 3, 3, kernel=kernel)
            params = model.init(jax.random.key(0))
            text = str(jax.make_jaxpr(jax.grad(lambda p, m=model: jnp.sum(m(p, x))))(params))
            uses = "popdyn_lstm_forward" in text and "popdyn_lstm_backward" in text
            assert uses == (kernel == "auto" and arch != "gru"), (arch, kernel)
            # Model.time_loop says which (the run's provenance records it): the traced program agrees
            assert model.time_loop() == ("fused" if uses else "hoisted"), (arch, kernel)
    assert Model("lstm", "tanh", 4, 3, 3, grad="autodiff").time_loop() == "scan"
    assert Model("lstm", "tanh", 4, 3, 3).time_loop(jnp.float64) == "hoisted"  # the kernel is float32 only
    assert Model("leaky", "tanh", 4, 3, 3).time_loop(noisy=True) == "scan"  # training noise: plain scan


@needs_kernel
def test_a_trained_model_matches_the_xla_loop():
    """A few training steps through the whole model (readout, loss, SGD) land on the same parameters."""
    from popdyn.population import HParams
    from popdyn.tasks import make_task
    from popdyn.train import TrainSettings, chunk_one, init_one

    task = make_task("flipflop", T=20, K=3)
    settings = TrainSettings(steps=10, batch=16, chunk=10)
    hp = HParams(*(jnp.float32(v) for v in (0.05, 0.5, 0.9, 1.0, 1e-4)))
    out = {}
    for kernel in ("auto", "xla"):
        model = Model("lstm", "tanh", 16, 3, 3, kernel=kernel)
        state = init_one(model, settings, hp, jax.random.key(3))
        out[kernel] = chunk_one(model, task, settings, hp, state)
    for a, b in zip(jax.tree.leaves(out["auto"]), jax.tree.leaves(out["xla"]), strict=True):
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _in_subprocess(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        timeout=300,
    )


PROBE = """
    import logging
    logging.basicConfig()
    import jax, jax.numpy as jnp
    from popdyn import fused
    from popdyn.model import Model
    x = jnp.ones((2, 5, 3))
    model = Model("lstm", "tanh", 4, 3, 3)
    params = model.init(jax.random.key(0))
    text = str(jax.make_jaxpr(lambda p: model(p, x))(params))
    print("available", fused.available(), "uses", "popdyn_lstm_forward" in text)
"""


@needs_kernel
def test_without_a_compiler_the_xla_loop_runs_and_says_why(tmp_path):
    r = _in_subprocess(PROBE, CXX=str(tmp_path / "no-such-compiler"), POPDYN_KERNEL_CACHE=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "available False uses False" in r.stdout
    assert "fused lstm kernel is unavailable" in r.stderr and "no-such-compiler" in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


@needs_kernel
def test_popdyn_fused_0_turns_the_kernel_off(tmp_path):
    r = _in_subprocess(PROBE, POPDYN_FUSED="0", POPDYN_KERNEL_CACHE=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "available False uses False" in r.stdout
    assert list(tmp_path.iterdir()) == []  # not even built


@needs_kernel
def test_the_kernel_is_built_once_per_cache(tmp_path):
    first = _in_subprocess(PROBE, POPDYN_KERNEL_CACHE=str(tmp_path))
    assert "available True uses True" in first.stdout, first.stderr
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    second = _in_subprocess(PROBE, POPDYN_KERNEL_CACHE=str(tmp_path))
    assert "available True uses True" in second.stdout, second.stderr
    assert list(tmp_path.iterdir()) == built and built[0].stat().st_mtime_ns == stamp


@pytest.fixture
def fresh_available():
    """``fused.available`` re-decided in this test, and again afterwards (its answer is cached)."""
    fused.available.cache_clear()
    yield
    fused.available.cache_clear()


def _no_compiler_call(*args, **kwargs):
    raise AssertionError(f"a compiler was called: {args}")


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_off_linux_the_xla_loop_runs_without_calling_a_compiler(platform, monkeypatch, caplog,
                                                                 fresh_available):  # fmt: skip
    monkeypatch.setattr(fused.sys, "platform", platform)
    monkeypatch.delenv("POPDYN_FUSED", raising=False)
    monkeypatch.setattr(fused.subprocess, "run", _no_compiler_call)
    monkeypatch.setattr(fused, "_compiler", _no_compiler_call)
    with caplog.at_level(logging.INFO, logger="popdyn"):
        assert not fused.available()
        assert not fused.available()  # decided once
    records = [r for r in caplog.records if "fused lstm kernel" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert platform in records[0].getMessage() and "Linux only" in records[0].getMessage()


def test_on_linux_without_a_compiler_one_info_line(monkeypatch, caplog, fresh_available):
    monkeypatch.setattr(fused.sys, "platform", "linux")
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    monkeypatch.setattr(fused.subprocess, "run", _no_compiler_call)
    monkeypatch.setattr(fused, "_load", fused._build)  # not the process's cached kernel
    with caplog.at_level(logging.INFO, logger="popdyn"):
        assert not fused.available()
    records = [r for r in caplog.records if "fused lstm kernel" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert "no C++ compiler" in records[0].getMessage()


def test_popdyn_fused_1_tries_off_linux_and_a_bad_value_is_named(monkeypatch, fresh_available):
    monkeypatch.setattr(fused.sys, "platform", "darwin")
    monkeypatch.setenv("POPDYN_FUSED", "1")
    tried = []
    monkeypatch.setattr(fused, "_load", lambda: tried.append(True))
    assert fused.available() and tried == [True]
    fused.available.cache_clear()
    monkeypatch.setenv("POPDYN_FUSED", "yes")
    with pytest.raises(ValueError, match=r"POPDYN_FUSED='yes'.*allowed: auto, 1, 0"):
        fused.available()
