"""Numerical precision the analyses are traced with (one decorator, imported by every analysis that
multiplies matrices: fixed points, memory, attractors, similarity)."""

from __future__ import annotations

from functools import wraps

import jax


def full_precision(f):
    """Trace ``f`` with float32 matmuls: on GPUs JAX's default is TF32 (10-bit mantissa), which leaves
    q = ½‖F(h) − h‖² no smaller than ~1e-6 and the fixed points visibly off (seen on an H200)."""

    @wraps(f)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return f(*args, **kwargs)

    return wrapped
