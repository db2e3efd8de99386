"""[R] §5.2 (Ribeiro et al. 2020; Hochreiter & Schmidhuber 1997) relevant-symbol classification, the
task ``symbols``: a sequence of T ≥ 50 one-hot symbols holds distractors a–d except at t1 ∈ [10, 18] and
t2 ∈ [40, 49], which hold p or q; the class is the ordered pair ((p,p), (p,q), (q,p), (q,q)) → 0 … 3.

Inputs ``[batch, T, 6]``, targets one-hot ``[batch, 4]``, softmax cross-entropy of the final state.
Probes: ``sample(key(probe_seed), n_probe)``; fixed points at x = 0.  Pure JAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn.tasks import Task, TaskError, TaskSpec, bounded_int, register

SYMBOLS = ("p", "q", "a", "b", "c", "d")  # one-hot input dimensions, in this order
CLASSES = (("p", "p"), ("p", "q"), ("q", "p"), ("q", "q"))  # class k = 2·[first is q] + [second is q]


class RelevantSymbols(TaskSpec):
    names = ("symbols",)
    defaults = {"symbols": {"T": 100, "n_probe": 512, "probe_seed": 0}}

    def build(self, name, values):
        if values["T"] < 50:
            raise TaskError(
                f"symbols: T must be at least 50 (the second symbol falls in steps 40–49), got {values['T']}"
            )
        return len(SYMBOLS), len(CLASSES), values["T"]

    def default_loss(self, name: str) -> str:
        return "softmax"

    def words(self, task: Task) -> tuple[str, ...]:
        return SYMBOLS

    def sample(self, task: Task, key, batch, data=None):
        return relevant_symbols(key, batch, task.T)


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
    batch = bounded_int(where, "batch", batch, 1)
    ranges = []
    for name, r in (("t1", t1), ("t2", t2)):
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise ValueError(f"{where}: {name} must be a pair (first, last) of step indices, got {r!r}")
        lo = bounded_int(where, f"{name}[0]", r[0], 0)
        hi = bounded_int(where, f"{name}[1]", r[1], lo)
        ranges.append((lo, hi))
    (lo1, hi1), (lo2, hi2) = ranges
    if hi1 >= lo2:
        raise ValueError(
            f"{where}: t1 must lie before t2 (t1[1] < t2[0]), got t1={tuple(t1)}, t2={tuple(t2)}"
        )
    length = bounded_int(where, "length", length, hi2 + 1)
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


register(RelevantSymbols())
