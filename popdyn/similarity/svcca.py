"""SVCCA distance ([U] §2.3, Raghu et al. 2017): ``d = 1 − mean canonical correlation`` of the two
networks' top principal components.

For states ``X`` (S × N1), ``Y`` (S × N2) over the same probe samples, columns centred: keep each matrix's
top principal components reaching ``keep_variance`` of its variance (``X ≈ U_x Σ_x V_xᵀ``, k_x columns);
the canonical correlations of the two reduced sets are the singular values of ``U_xᵀ U_y``; similarity
= their sum over min(k_x, k_y).  Each network is prepared once (the basis ``U_x``, zero beyond k); every
pair then costs one small matmul and its singular values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from popdyn.precision import full_precision
from popdyn.similarity import MetricSpec, register
from popdyn.similarity._pairs import blocked

__all__ = ["Basis", "SVCCAOptions", "principal_basis", "svcca"]


@dataclass(frozen=True)
class SVCCAOptions:
    """SVCCA's settings (config keys ``similarity.<field>``)."""

    keep_variance: float = 0.95  # principal components kept per network reach this variance fraction

    def __post_init__(self):
        if not 0 < self.keep_variance <= 1:
            raise ValueError(
                f"similarity.keep_variance = {self.keep_variance!r} is impossible; it must be in (0, 1]"
            )


class Basis(NamedTuple):
    """One network's principal directions over samples (stack them for a population)."""

    basis: Float[Array, "S R"]  # U_x: orthonormal principal directions over samples, zero beyond k
    k: Int[Array, ""]  # components kept


@partial(jax.jit, static_argnames=("keep_variance", "width"))
@full_precision
def principal_basis(
    states: Float[Array, "S N"], keep_variance: float = 0.95, width: int | None = None
) -> Basis:
    """Centred states' top principal directions ``U_x`` reaching ``keep_variance`` of the variance;
    ``width`` pads the basis to that many columns (default min(S, N)).  The eigen-decomposition is of
    the smaller of XᵀX (N × N) and XXᵀ (S × S)."""
    x = states - jnp.mean(states, axis=0)
    s, n = x.shape
    if n <= s:
        lam, v = jnp.linalg.eigh(x.T @ x)
        lam, v = lam[::-1], v[:, ::-1]
        scale = jnp.where(lam > lam[0] * 1e-10, 1.0 / jnp.sqrt(jnp.maximum(lam, 1e-30)), 0.0)
        u = (x @ v) * scale
    else:
        lam, u = jnp.linalg.eigh(x @ x.T)
        lam, u = lam[::-1][:n], u[:, ::-1][:, :n]
    lam = jnp.maximum(lam, 0.0)
    frac = jnp.cumsum(lam) / jnp.sum(lam)
    k = jnp.minimum(jnp.sum(frac < keep_variance - 1e-6) + 1, lam.shape[0])
    u = jnp.where(jnp.arange(u.shape[1]) < k, u, 0.0)
    width = width or u.shape[1]
    if width > u.shape[1]:
        u = jnp.pad(u, ((0, 0), (0, width - u.shape[1])))
    return Basis(u[:, :width], k.astype(jnp.int32))


def _similarity(a: Basis, b: Basis) -> Float[Array, ""]:
    rho = jnp.linalg.svd(a.basis.T @ b.basis, compute_uv=False)
    return jnp.sum(rho) / jnp.minimum(a.k, b.k)


@full_precision
def svcca(x: Float[Array, "S N1"], y: Float[Array, "S N2"], keep_variance: float = 0.95) -> Float[Array, ""]:
    """Mean canonical correlation of the top-``keep_variance`` principal components of x and y."""
    return _similarity(principal_basis(x, keep_variance), principal_basis(y, keep_variance))


@jax.jit
@full_precision
def _block(a: Basis, b: Basis) -> Float[Array, "A B"]:
    """SVCCA similarity of every network of block a with every one of block b."""
    m = jnp.einsum("isk,jsl->ijkl", a.basis, b.basis)
    rho = jnp.linalg.svd(m, compute_uv=False)
    return jnp.sum(rho, axis=-1) / jnp.minimum(a.k[:, None], b.k[None, :])


def _pairs(tree: Basis, block: int, progress=None):
    """Networks in order of k: each block pair pads its bases only to the larger k of its two blocks."""
    cut = lambda t, w: Basis(t.basis[..., :w], t.k)  # noqa: E731
    return blocked(Basis(*tree), _block, block, progress, columns=lambda t: t.k, cut=cut)


register(MetricSpec(
    name="svcca", short="SVCCA", label="SVCCA distance (1 − mean canonical correlation)", color="#4477AA",
    prepare=lambda states, options: principal_basis(states, options.of("svcca").keep_variance),
    pairs=_pairs,
    compact=lambda t: Basis(t.basis[..., : max(int(t.k.max()), 1)], t.k),  # nothing beyond the largest k
    options=SVCCAOptions, outputs=lambda t: {"k": t.k}, rank=0,  # k: the components kept per network
))  # fmt: skip
