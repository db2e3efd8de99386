"""Procrustes shape distance (Williams et al. 2021; netrep's ``LinearMetric(alpha=1,
score_method="angular")``): ``d(X, Y) = arccos ‖XᵀY‖_*`` of the centred, unit-Frobenius states.

``‖XᵀY‖_* = max_{Q orthogonal} tr(Qᵀ XᵀY)`` (von Neumann; the nuclear norm, sum of singular values) is
the cosine of the smallest angle between X and any rotation or reflection of Y, so d is the angle between
the two networks' orbits under O(n) on the unit sphere of S × n matrices — a metric (symmetric, zero on
a network and its rotations, triangle inequality), invariant to translation (centring), isotropic scaling
(unit norm) and rotations/reflections of the units.

Different widths N1 < N2: netrep pads the narrower with zero columns to n = N2.  That is exact: with
``X̃ = [X, 0]``, ``X̃ᵀY = [XᵀY; 0]`` has the singular values of XᵀY and zeros, so ``‖X̃ᵀY‖_* = ‖XᵀY‖_*``
for any n ≥ max(N1, N2) — the distance needs no padding pairwise, and the blocked pass may pad every
network of a block pair to the same width.  Each network is prepared once as an S × min(S, N) matrix Z
with ``ZZᵀ = XXᵀ`` (X itself when N ≤ S; ``Rᵀ`` of the QR factorisation ``Xᵀ = QR`` otherwise, since
``‖XᵀY‖_* = ‖Q R Y‖_* = ‖(Rᵀ)ᵀ Y‖_*``): exact, no truncation.  Every pair then costs the singular values
of a min(S, N1) × min(S, N2) matrix (networks taken in order of width, each block pair padded to its
wider block's width rounded up to 8).  In float32 the angle of near-identical networks is resolved to
about ``√(2 · 1e-7) ≈ 5e-4``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from popdyn.precision import full_precision
from popdyn.similarity import MetricSpec, register
from popdyn.similarity._pairs import blocked

__all__ = ["Shape", "procrustes", "shape"]


class Shape(NamedTuple):
    """One network's centred, unit-norm states, as S × width (stack them for a population)."""

    z: Float[Array, "S W"]  # Z with ZZᵀ = XXᵀ, zero beyond `width` columns
    width: Int[Array, ""]  # min(S, N): the columns Z uses


@jax.jit
@full_precision
def shape(states: Float[Array, "S N"]) -> Shape:
    """``X = (states − mean) / ‖states − mean‖_F`` as Z (S × min(S, N)) with ``ZZᵀ = XXᵀ``."""
    x = states - jnp.mean(states, axis=0)
    x = x / jnp.maximum(jnp.linalg.norm(x), 1e-30)
    s, n = x.shape
    z = x if n <= s else jnp.linalg.qr(x.T, mode="r").T  # Xᵀ = QR → X Q = Rᵀ (S × S)
    return Shape(z, jnp.int32(min(s, n)))


def _angle(cos: np.ndarray) -> np.ndarray:
    """``d = arccos(s)`` of a cosine ``s = ‖XᵀY‖_*`` (clipped to [−1, 1] against rounding)."""
    return np.arccos(np.clip(cos, -1.0, 1.0))


@full_precision
def procrustes(x: Float[Array, "S N1"], y: Float[Array, "S N2"]) -> Float[Array, ""]:
    """Angular Procrustes distance ``arccos ‖XᵀY‖_*`` of the centred, unit-Frobenius states."""
    nuc = jnp.sum(jnp.linalg.svd(shape(x).z.T @ shape(y).z, compute_uv=False))
    return jnp.arccos(jnp.clip(nuc, -1.0, 1.0))


@jax.jit
@full_precision
def _block(a: Shape, b: Shape) -> Float[Array, "A B"]:
    """``‖Z_aᵀ Z_b‖_*`` of every network of block a with every one of block b."""
    m = jnp.einsum("isk,jsl->ijkl", a.z, b.z)
    return jnp.sum(jnp.linalg.svd(m, compute_uv=False), axis=-1)


def _pairs(tree: Shape, block: int, progress=None) -> np.ndarray:
    cut = lambda t, w: Shape(t.z[..., :w], t.width)  # noqa: E731
    return blocked(Shape(*tree), _block, block, progress, columns=lambda t: t.width, cut=cut)


register(MetricSpec(
    name="procrustes", short="Procrustes",
    label="Procrustes shape distance (angular, arccos ‖XᵀY‖_*; Williams et al. 2021)", color="#AA3377",
    prepare=lambda states, options: shape(states), pairs=_pairs, distance=_angle, rank=4,
))  # fmt: skip
