"""The all-pairs machinery every ``"states"`` metric shares: prepare one network, stack a population of
any widths, and score every pair in blocks (one compiled program per block shape, memory bounded by the
block size)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import numpy as np
from jaxtyping import Array, Float

from popdyn import similarity as _pkg


def prepare(states: Float[Array, "S N"], options, metrics: tuple[str, ...] | None = None) -> dict:
    """``{metric: its pytree}`` for ONE network's states (jit- and vmap-able); ``metrics`` default: the
    ``"states"`` metrics ``options`` ask for."""
    metrics = _pkg.enabled(options, "states") if metrics is None else metrics
    return {m: _pkg.get(m).prepare(states, options) for m in metrics}


def _pad_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` [n, ...] zero-padded on its trailing axes to ``shape`` (those after the first)."""
    if a.shape[1:] == tuple(shape):
        return a
    return np.pad(a, [(0, 0)] + [(0, s - n) for n, s in zip(a.shape[1:], shape)])


def stack(parts: list[dict]) -> dict:
    """Concatenate prepared populations (each ``{metric: pytree with a leading network axis}``; a single
    network: add the axis with ``jax.tree.map(lambda a: a[None], …)``) along the network axis, every
    leaf zero-padded on its trailing axes to the largest shape, then each metric's ``compact``."""
    out = {}
    for m in parts[0]:
        trees = [jax.tree.map(np.asarray, p[m]) for p in parts]
        leaves = [jax.tree.leaves(t) for t in trees]
        cat = []
        for i in range(len(leaves[0])):
            arrays = [lv[i] for lv in leaves]
            shape = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))  # the widest
            cat.append(np.concatenate([_pad_to(a, shape) for a in arrays]))
        tree = jax.tree.unflatten(jax.tree.structure(trees[0]), cat)
        compact = _pkg.get(m).compact
        out[m] = compact(tree) if compact is not None else tree
    return out


def take(prepared: dict, index: np.ndarray) -> dict:
    """The prepared networks ``index`` (reorder or select), every metric."""
    return {m: jax.tree.map(lambda a: np.asarray(a)[index], t) for m, t in prepared.items()}


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for i in range(0, n, size):
        for j in range(i, n, size):
            yield i, j


def _pad_rows(a: np.ndarray, multiple: int) -> np.ndarray:
    pad = -a.shape[0] % multiple
    return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) if pad else a


def blocked(
    tree,
    score: Callable,
    block: int = 64,
    progress=None,
    columns: Callable | None = None,
    cut: Callable | None = None,
) -> np.ndarray:
    """Similarity ``[P, P]`` (upper triangle filled, mirrored) of every pair of a stacked population: blocks
    of ``block`` networks against blocks of ``block`` (i ≤ j; the last block padded with copies of the
    last network), ``score(block_a, block_b) → [A, B]``.

    ``columns(tree) → [P]``: how many columns of its padded arrays each network uses.  Networks are then
    taken in that order, and ``cut(block_tree, w)`` trims each block pair to the larger count of the two
    blocks rounded up to a multiple of 8 (one compiled program per such width).  ``progress``: told the
    number of pairs done after each block pair."""
    host = jax.tree.map(np.asarray, tree)
    p = int(jax.tree.leaves(host)[0].shape[0])
    size = min(block, p)
    order = np.argsort(columns(host), kind="stable") if columns is not None else np.arange(p)
    padded = jax.tree.map(lambda a: _pad_rows(a[order], size), host)
    used = _pad_rows(np.asarray(columns(host))[order], size) if columns is not None else None
    sim = np.zeros((p, p), np.float32)
    for i, j in _blocks(p, size):
        a = jax.tree.map(lambda x, i=i: x[i : i + size], padded)
        b = jax.tree.map(lambda x, j=j: x[j : j + size], padded)
        if cut is not None:
            w = -(-max(int(used[i : i + size].max()), int(used[j : j + size].max())) // 8) * 8
            a, b = cut(a, w), cut(b, w)
        s = score(a, b)
        ni, nj = min(size, p - i), min(size, p - j)
        sim[i : i + ni, j : j + nj] = np.asarray(s)[:ni, :nj]
        if progress is not None:
            progress(ni * nj if i != j else ni * (ni + 1) // 2)
    sim = np.triu(sim) + np.triu(sim, 1).T  # only blocks i ≤ j were computed
    out = np.empty_like(sim)
    out[np.ix_(order, order)] = sim  # back to the given order
    return out


def all_pairs(
    prepared: dict,
    metrics: tuple[str, ...] | None = None,
    block: int = 64,
    progress=None,
    **options,
) -> dict[str, np.ndarray]:
    """``{metric: [P, P] distance}`` for a stacked population (:func:`prepare` per network, :func:`stack`);
    symmetric, zero diagonal.  ``metrics``: default every metric ``prepared`` holds.  Each metric's pass
    is its spec's ``pairs`` or :func:`blocked` over its ``score``; ``options`` named ``<metric>_<key>``
    go to that metric's pass as ``key`` (``cka_rows=256``).  ``progress``: a callable told the number of
    pairs done (counted once per metric; total ``len(metrics) · P(P+1)/2``)."""
    metrics = tuple(prepared) if metrics is None else tuple(metrics)
    for m in metrics:
        spec = _pkg.get(m)
        if spec.kind != "states":
            raise ValueError(f"similarity metric {m!r} is not computed from states; allowed: "
                             f"{', '.join(_pkg.names('states'))}")  # fmt: skip
        if m not in prepared:
            raise ValueError(f"similarity metric {m!r} was not prepared; prepared: {', '.join(prepared)}")
    out = {}
    for m in metrics:
        spec = _pkg.get(m)
        kw = {k[len(m) + 1 :]: v for k, v in options.items() if k.startswith(m + "_")}
        if spec.pairs is not None:
            sim = spec.pairs(prepared[m], block, progress, **kw)
        else:
            sim = blocked(prepared[m], spec.score, block, progress, **kw)
        d = np.triu(spec.distance(sim), 1)  # one of (i, j) and (j, i), mirrored: symmetric, zero diagonal
        out[m] = np.clip(d + d.T, 0.0, None)  # 1 − similarity of near-identical networks: −1e-7 → 0
    return out
