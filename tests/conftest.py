"""Fixtures shared by the cell and model tests — every arch × activation at one small size — and the
tiny grid run once for every test file that reads it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import cells
from popdyn.cells import ACTIVATIONS
from popdyn.model import Model

N, M, N_OUT = 6, 3, 2  # units, inputs, outputs: one size everywhere, so that initialisation compiles once


@pytest.fixture(scope="module", params=cells.names())
def arch(request):
    return request.param


@pytest.fixture(scope="module", params=ACTIVATIONS)
def activation(request):
    return request.param


@pytest.fixture(scope="module")
def model(arch, activation):
    return Model(arch, activation, N, M, N_OUT)


@pytest.fixture(scope="module")
def init_params(model):
    return model.init(jax.random.key(0))


@pytest.fixture(scope="module")
def params(init_params):
    """Initial parameters plus noise on every leaf, so that zero biases cannot hide a mis-sliced block."""
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(leaf + 0.3 * rng.standard_normal(leaf.shape), jnp.float32), init_params
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``scripts/sweep.py +grid=tiny`` run once (trained, analysed, compared, drawn); tests only read it,
    or rerun commands that must leave it unchanged, or copy it before changing anything."""
    from tests.test_sweep import run_script

    run_dir = tmp_path_factory.mktemp("tiny")
    r = run_script("+grid=tiny", f"hydra.run.dir={run_dir}", "progress=false", cwd=run_dir)
    assert r.returncode == 0, r.stderr
    return run_dir
