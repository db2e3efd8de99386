"""Random draws that XLA's CPU compiler builds quickly: the same numbers as ``jax.random``'s, drawn flat.

A threefry draw of shape ``(64, 100, 3)`` takes 0.6 s to compile on a 2-core CPU, the same draw of
``(19200,)`` reshaped 0.2 s (jaxlib 0.10.2: XLA's loop emitter vectorises the rounds of a 1-D operand
well and those of a small last axis badly). Threefry's bits are a function of each element's index in
the flattened array, so the two give bit-identical numbers (``tests/test_random.py``); the programs that
draw inside them (task sampling, fixed-point initial states) compile faster and compute the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from jax import Array


def flat(draw: Callable, key: Array, shape: Sequence[int], *args, **kwargs) -> Array:
    """``draw(key, shape, *args, **kwargs)`` (``jax.random.uniform``, ``normal``, ``bits``, …), drawn as
    one flat vector and reshaped: the same numbers, cheaper to compile."""
    shape = tuple(shape)
    return draw(key, (math.prod(shape),), *args, **kwargs).reshape(shape)
