"""CKA distance (linear, Kornblith et al. 2019): ``d = 1 − ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` of the
centred states.

With ``K = XXᵀ``, ``‖YᵀX‖²_F = ⟨K_x, K_y⟩`` and ``‖XᵀX‖_F = ‖K_x‖_F``, so CKA is the dot product of the
two normalised Gram matrices: each network is prepared once (``K_x / ‖K_x‖_F``, packed to its upper
triangle with the off-diagonal entries × √2), and all pairs are one matmul per block of rows.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from popdyn.precision import full_precision
from popdyn.similarity import MetricSpec, register

__all__ = ["cka", "packed_gram"]


@jax.jit
@full_precision
def packed_gram(states: Float[Array, "S N"]) -> Float[Array, " G"]:
    """``K_x / ‖K_x‖_F`` of the centred states, upper triangle, off-diagonal entries × √2
    (G = S(S+1)/2): the dot product of two is their linear CKA."""
    x = states - jnp.mean(states, axis=0)
    s = x.shape[0]
    gram = x @ x.T
    gram /= jnp.linalg.norm(gram)
    i, j = np.triu_indices(s)
    return gram[i, j] * jnp.where(i == j, 1.0, math.sqrt(2.0))


@full_precision
def cka(x: Float[Array, "S N1"], y: Float[Array, "S N2"]) -> Float[Array, ""]:
    """Linear CKA ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` of the centred states."""
    return jnp.dot(packed_gram(x), packed_gram(y))


@partial(jax.jit, static_argnames=("rows",))
@full_precision
def _rows(grams: Float[Array, "P G"], start: Int[Array, ""], rows: int) -> Float[Array, "R P"]:
    """CKA of networks ``start … start + rows`` with every network: one matmul of normalised Grams."""
    return jax.lax.dynamic_slice_in_dim(grams, start, rows) @ grams.T


def _pairs(grams, block: int, progress=None, rows: int = 256) -> np.ndarray:
    """``rows`` networks at a time against all (the last block starts early instead of being padded)."""
    p = int(grams.shape[0])
    rows = min(rows, p)
    grams = jnp.asarray(grams)
    sim = np.zeros((p, p), np.float32)
    for i in range(0, p, rows):
        n, start = min(rows, p - i), min(i, p - rows)
        sim[i : i + n] = np.asarray(_rows(grams, start, rows))[i - start : i - start + n]
        if progress is not None:
            progress(sum(p - a for a in range(i, i + n)))
    return sim


register(MetricSpec(
    name="cka", short="CKA", label="CKA distance (1 − linear CKA)", color="#66CCEE",
    prepare=lambda states, options: packed_gram(states), pairs=_pairs, rank=1,
))  # fmt: skip
