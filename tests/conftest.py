"""Fixtures shared by the cell and model tests: every arch × activation at one small size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn.cells import ACTIVATIONS, ARCHS
from popdyn.model import Model

N, M, N_OUT = 6, 3, 2  # units, inputs, outputs: one size everywhere, so that initialisation compiles once


@pytest.fixture(scope="module", params=ARCHS)
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
