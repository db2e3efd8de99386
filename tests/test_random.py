"""popdyn._random.flat: a draw made flat and reshaped gives jax.random's very numbers (so that the
compile-time saving changes no result)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn._random import flat


@pytest.mark.parametrize("shape", [(64, 100, 3), (7, 5), (3, 1, 4, 2), (11,), ()])
@pytest.mark.parametrize(
    "draw, kwargs",
    [(jax.random.uniform, {"dtype": jnp.float32}), (jax.random.normal, {}), (jax.random.bits, {})],
)
def test_flat_draw_is_the_shaped_draw(shape, draw, kwargs):
    key = jax.random.key(3)
    a = draw(key, shape, **kwargs)
    b = flat(draw, key, shape, **kwargs)
    assert b.shape == a.shape and b.dtype == a.dtype
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_flat_draw_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(0), 4)

    def shaped(k):
        return jax.random.normal(k, (16, 8))

    def flattened(k):
        return flat(jax.random.normal, k, (16, 8))

    a = jax.jit(jax.vmap(shaped))(keys)
    b = jax.jit(jax.vmap(flattened))(keys)
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    assert not np.array_equal(np.asarray(b[0]), np.asarray(b[1]))  # each key its own numbers
