"""The two synthetic datasets of [R] (Ribeiro et al. 2020, §5.1–5.2), also popdyn tasks (``sinegen``,
``symbols`` in ``popdyn.tasks``): sine generation and relevant-symbol classification.  Pure JAX."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

SPACINGS = ("grid", "random")
SYMBOLS = ("p", "q", "a", "b", "c", "d")  # one-hot input dimensions, in this order
CLASSES = (("p", "p"), ("p", "q"), ("q", "p"), ("q", "q"))  # class k = 2·[first is q] + [second is q]


def _int(where: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"[{low}, {high}]" if high is not None else f"≥ {low}"
        raise ValueError(f"{where}: {name} must be an integer {allowed}, got {value!r}")
    return int(value)


def sine_generation(
    key: PRNGKeyArray,
    n_sequences: int = 100,
    length: int = 400,
    omega_min: float = math.pi / 16,
    omega_max: float = math.pi / 8,
    spacing: str = "grid",
) -> tuple[Float[Array, "n time 1"], Float[Array, "n time 1"]]:
    """[R] §5.1: input ``x_t = ω`` (constant), target ``y_t = sin(ω (t+1))``, t = 0 … length−1.

    ω is the angular frequency in radians per step, ``ω ∈ [omega_min, omega_max]`` ([R]: [π/16, π/8], 100
    sequences of length 400). The network receives ω itself as its one input — "the input is a constant
    [that specifies] the frequency" — as in [R]'s code, where Fig. 4's constant input 0.218 is such an ω.
    The phase after t+1 steps (``cumsum`` of the input in [R]'s code), so ``y_0 = sin ω``.

    ``spacing="grid"``: ω evenly spaced over the interval, ends included (``linspace``, [R]'s code; "uniformly
    picked" in the text; ``key`` unused); ``"random"``: ω i.i.d. uniform on the interval, from ``key``.
    Returns ``(inputs, targets)``, both ``[n_sequences, length, 1]`` float32.
    """
    where = "sine_generation"
    n_sequences = _int(where, "n_sequences", n_sequences, 1)
    length = _int(where, "length", length, 1)
    for name, value in (("omega_min", omega_min), ("omega_max", omega_max)):
        # ω > π aliases to a lower frequency; the `not` form also rejects NaN
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value <= math.pi:
            raise ValueError(f"{where}: {name} must be a frequency in (0, π] rad/step, got {value!r}")
    if omega_min > omega_max:
        raise ValueError(
            f"{where}: omega_min must be ≤ omega_max, got omega_min={omega_min!r} > omega_max={omega_max!r}"
        )
    if spacing not in SPACINGS:
        raise ValueError(f"{where}: unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    return _sine(key, n_sequences, length, float(omega_min), float(omega_max), spacing)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _sine(key, n: int, length: int, lo: float, hi: float, spacing: str):
    if spacing == "grid":
        omega = jnp.linspace(lo, hi, n, dtype=jnp.float32)
    else:
        omega = jax.random.uniform(key, (n,), jnp.float32, lo, hi)
    steps = jnp.arange(1, length + 1, dtype=jnp.float32)
    inputs = jnp.broadcast_to(omega[:, None, None], (n, length, 1))
    return inputs, jnp.sin(omega[:, None] * steps[None, :])[..., None]


def relevant_symbols(
    key: PRNGKeyArray,
    batch: int = 1000,
    length: int = 100,
    t1: tuple[int, int] = (10, 18),
    t2: tuple[int, int] = (40, 49),
) -> tuple[Float[Array, "batch time 6"], Float[Array, "batch 4"]]:
    """[R] §5.2 (Hochreiter & Schmidhuber 1997): classify a sequence by its two relevant symbols.

    Symbols :data:`SYMBOLS` = (p, q, a, b, c, d), one-hot. Each step holds a distractor drawn uniformly from
    {a, b, c, d}, except two steps ``t1`` and ``t2`` (0-based step indices, drawn uniformly from the
    inclusive ranges, [R]: t1 ∈ [10, 18], t2 ∈ [40, 49]) that hold p or q, each with probability ½.
    The class is the ordered pair, :data:`CLASSES` = ((p,p), (p,q), (q,p), (q,q)) → 0 … 3, so the classes
    are balanced in expectation.

    Lengths: one ``length`` for the whole batch — [R]: "all sequences have the same length", each length
    of Table 1 (50, 100, 200, 300, 500) a separate dataset; default 100 (the length of Fig. 7). Make it a
    config axis for a sweep rather than mixing lengths in a batch. ``batch`` defaults to [R]'s 1000 training
    (or validation) sequences. Returns ``(inputs [batch, length, 6], targets [batch, 4])`` float32, targets
    one-hot (``argmax`` gives the class), for a readout of the final state as popdyn's other classifiers.
    """
    where = "relevant_symbols"
    batch = _int(where, "batch", batch, 1)
    ranges = []
    for name, r in (("t1", t1), ("t2", t2)):
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise ValueError(f"{where}: {name} must be a pair (first, last) of step indices, got {r!r}")
        lo = _int(where, f"{name}[0]", r[0], 0)
        hi = _int(where, f"{name}[1]", r[1], lo)
        ranges.append((lo, hi))
    (lo1, hi1), (lo2, hi2) = ranges
    if hi1 >= lo2:
        raise ValueError(
            f"{where}: t1 must lie before t2 (t1[1] < t2[0]), got t1={tuple(t1)}, t2={tuple(t2)}"
        )
    length = _int(where, "length", length, hi2 + 1)
    return _symbols(key, batch, length, lo1, hi1, lo2, hi2)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _symbols(key, batch: int, length: int, lo1: int, hi1: int, lo2: int, hi2: int):
    k_distract, k_t1, k_t2, k_pq = jax.random.split(key, 4)
    seq = jax.random.randint(k_distract, (batch, length), 2, 6)  # a … d
    t1 = jax.random.randint(k_t1, (batch, 1), lo1, hi1 + 1)
    t2 = jax.random.randint(k_t2, (batch, 1), lo2, hi2 + 1)
    pq = jax.random.randint(k_pq, (batch, 2), 0, 2)  # p = 0, q = 1
    steps = jnp.arange(length)[None, :]
    seq = jnp.where(steps == t1, pq[:, :1], jnp.where(steps == t2, pq[:, 1:], seq))
    label = 2 * pq[:, 0] + pq[:, 1]
    return jax.nn.one_hot(seq, len(SYMBOLS), dtype=jnp.float32), jax.nn.one_hot(label, 4, dtype=jnp.float32)
