"""ornn ([R] §5, Lezcano-Casado & Martínez-Rubio 2019): a vanilla cell, ``h' = f(W h + U x + b)``, whose
recurrent matrix is orthogonal, ``W = expm(A − Aᵀ)`` (:func:`orthogonal`) of an unconstrained parameter
``skew`` = A; ``input`` [M, N], ``bias`` [N] as vanilla's.  L2 applies to ``skew`` (the stored matrix)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from popdyn.cells import CellSpec, register, vanilla

__all__ = ["orthogonal"]


def orthogonal(skew: Float[Array, "units units"]) -> Float[Array, "units units"]:
    """``Q = expm(A − Aᵀ)``: orthogonal with ``det Q = 1`` for any A (the exponential map onto SO(N));
    the ornn's recurrent matrix, differentiable in A ([R] §5; Lezcano-Casado & Martínez-Rubio 2019)."""
    return jax.scipy.linalg.expm(skew - skew.T)


def _rotation_skew(key, shape, dtype=jnp.float32):
    """A with ``expm(A − Aᵀ)`` block-diagonal 2×2 rotations by angles uniform in [−π, π] (expRNN's
    "Henaff" initialisation): an orthogonal matrix spread over the unit circle."""
    n = shape[0]
    theta = jax.random.uniform(key, (n // 2,), dtype, -jnp.pi, jnp.pi)
    return jnp.zeros(shape, dtype).at[2 * jnp.arange(n // 2), 2 * jnp.arange(n // 2) + 1].set(theta)


def params(declare, units: int, n_in: int) -> dict:
    n = units
    return {
        "skew": declare("skew", _rotation_skew, (n, n)),
        "input": declare("input", nn.initializers.lecun_normal(), (n_in, n)),
        "bias": declare("bias", nn.initializers.zeros, (n,)),
    }


def weights(p: dict) -> dict:
    """The equations' arrays: ``recurrent = orthogonal(skew)``."""
    return {**p, "recurrent": orthogonal(p["skew"])}


SPEC = register(
    CellSpec(
        "ornn",
        blocks=1,
        params=params,
        recur=vanilla.recur,
        weights=weights,
        loop=vanilla.LOOP,
        color="#56B4E9",
        marker="P",
        base="vanilla",
        rank=5,
    )  # fmt: skip
)
