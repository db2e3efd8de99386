"""[V] §4.2.1 (Verwimp et al.) the repetition language, the task ``repetition``: next-token prediction on
a stream of cycles ``A B B … B  C A A … A  …  <eos>`` (:func:`sample_repetition`).

Inputs are token ids ``1 … vocab+1`` (0 is ``<pad>``, unused; ``vocab+1`` is the end of sentence) embedded
by the model (``embedding`` > 0), or one-hot ``[batch, T, vocab+1]`` without an embedding ([V]'s choice);
targets one-hot next tokens ``[batch, T, vocab+1]``, softmax cross-entropy at every step (``lm``).
Probes: ``sample(key(probe_seed), n_probe)``; fixed points at x = 0.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from popdyn.tasks import Task, TaskError, TaskSpec, integer, register


class RepetitionTask(TaskSpec):
    names = ("repetition",)
    # embedding 0: one-hot inputs ([V]'s choice there), > 0: a learned embedding of that size
    defaults = {
        "repetition": {
            "T": 200, "vocab": 10, "repeats": 15, "min_cycles": 5, "max_cycles": 10, "embedding": 0,
            "n_probe": 32, "probe_seed": 0,
        },
    }  # fmt: skip

    def build(self, name, values):
        for key, low in (
            ("vocab", 3),
            ("repeats", 1),
            ("min_cycles", 1),
            ("max_cycles", 1),
            ("embedding", 0),
        ):
            integer("repetition", key, values[key], low)
        if values["max_cycles"] < values["min_cycles"]:
            raise TaskError(
                f"repetition: max_cycles must be ≥ min_cycles = {values['min_cycles']}, got {values['max_cycles']}"
            )
        return values["embedding"] or values["vocab"] + 1, values["vocab"] + 1, values["T"]

    def default_loss(self, name: str) -> str:
        return "lm"  # softmax over the next token at every step

    def words(self, task: Task) -> tuple[str, ...]:  # token ids: <pad> (unused), the words, end of sentence
        return ("<pad>", *(f"w{i}" for i in range(task.param("vocab"))), "<eos>")

    def vocab(self, task: Task) -> int:
        return task.param("vocab") + 2 if task.param("embedding") else 0

    def sample(self, task: Task, key, batch, data=None):
        p = dict(task.params)
        r = sample_repetition(key, batch, task.T, p["vocab"], p["repeats"], p["min_cycles"], p["max_cycles"])
        n = p["vocab"] + 1
        inputs = r.inputs + 1 if p["embedding"] else jax.nn.one_hot(r.inputs, n, dtype=jnp.float32)
        return inputs, jax.nn.one_hot(r.targets, n, dtype=jnp.float32)


class Repetition(NamedTuple):
    """A batch of the repetition language-modelling task: token ids, next-token targets and each input's
    place in its cycle (0 = a new token, 1 … repeats = the k-th repetition, −1 = end of sentence; the
    'counting' labels of [V] Fig. 2)."""

    inputs: Int[Array, "batch time"]
    targets: Int[Array, "batch time"]
    count: Int[Array, "batch time"]


def sample_repetition(
    key: PRNGKeyArray,
    batch: int,
    length: int = 200,
    vocab: int = 10,
    repeats: int = 15,
    min_cycles: int = 5,
    max_cycles: int = 10,
) -> Repetition:
    """``batch`` windows of the repetition stream of [V] §4.2.1: ``inputs[b, t]`` = token t of stream b and
    ``targets[b, t]`` = token t+1 (language modelling).  Token ids ``0 … vocab−1``, end of sentence ``vocab``
    (so ``vocab + 1`` one-hot inputs; [V] feeds one-hot vectors without an embedding layer).

    A cycle is a new token followed by ``repeats`` copies of the previous cycle's new token::

        A B B … B  C A A … A  D C C … C  …  <eos>  G F F … F  …

    A line is ``min_cycles … max_cycles`` cycles (uniform) and an end-of-sentence token; the stream runs on
    across lines, so the first cycle of a line repeats the last new token of the line before ([V]: "the
    dependencies span across sentence boundaries").  Each new token is uniform over the vocabulary minus
    the token it is about to be followed by and the token being repeated before it ([V] App. 8: "C cannot be
    equal to A or to B", P = 1/8 with 10 tokens).  Defaults are [V]'s: 10 tokens, 15 repetitions, 5–10
    cycles per line.

    Where [V] is silent: each row is an independent stream from its very beginning (the first cycle repeats
    a uniformly drawn token B ≠ A, and that first repetition cannot be predicted); ``length`` = 200, the
    unroll length of [V] §4.3.1, so that every window (≥ 81, ≤ 161 tokens a line) crosses an end of
    sentence and carries a dependency across it.  Pure JAX: ``jit`` and ``vmap`` over keys work; the sizes
    are static.
    """
    _check_int("batch", batch, 1)
    _check_int("length", length, 1)
    _check_int("vocab", vocab, 3, "a new token must differ from the two tokens before it")
    _check_int("repeats", repeats, 1)
    _check_int("min_cycles", min_cycles, 1)
    _check_int("max_cycles", max_cycles, int(min_cycles), "min_cycles")
    return _repetition(
        key, int(batch), int(length), int(vocab), int(repeats), int(min_cycles), int(max_cycles)
    )


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _repetition(key, batch, length, vocab, repeats, min_cycles, max_cycles) -> Repetition:
    n = length + 1  # one more token than the window: the last target
    # One flat draw of random words for everything, the loop below is integer logic only: per position one
    # word for a new token and one for the length of the line an end of sentence would start (plus one
    # each for the first cycle).  Flat because XLA:CPU compiles multi-dimensional threefry draws slowly;
    # a word modulo k is uniform on 0 … k−1 up to a bias below k/2³² (< 3e-9 here).
    bits = jax.random.bits(key, (2 * batch * (n + 1),)).reshape(batch, 2, n + 1)
    stream = partial(_stream, vocab=vocab, repeats=repeats, min_cycles=min_cycles, max_cycles=max_cycles)
    tokens, counts = jax.vmap(stream)(bits[:, 0], bits[:, 1])
    return Repetition(tokens[:, :-1], tokens[:, 1:], counts[:, :-1])


def _stream(
    token_bits, line_bits, *, vocab, repeats, min_cycles, max_cycles
) -> tuple[Int[Array, " n"], Int[Array, " n"]]:
    """The tokens of one stream and their cycle counts, a state machine scanned over the positions.

    Carry: ``single`` (the last new token, repeated in the next cycle), ``rep`` (the token being repeated
    now; −1 before the first cycle), ``phase`` (0 = new token, 1 … repeats, repeats + 1 = end of
    sentence) and ``left`` (cycles left in the line).  ``token_bits[0]``/``line_bits[0]`` draw the first
    cycle's repeated token B and the first line's cycles.
    """
    eos, ids = vocab, jnp.arange(vocab)
    n_lines = max_cycles - min_cycles + 1

    def uniform_below(word, k):
        return (word % k.astype(jnp.uint32)).astype(jnp.int32)

    def position(carry, words):
        single, rep, phase, left = carry
        token_word, line_word = words
        allowed = (ids != single) & (ids != rep)
        r = uniform_below(token_word, allowed.sum())
        new = jnp.argmax(jnp.cumsum(allowed) > r)  # the r-th allowed token
        is_new, is_eos, ends_cycle = phase == 0, phase == repeats + 1, phase == repeats
        token = jnp.where(is_eos, eos, jnp.where(is_new, new, rep))
        count = jnp.where(is_eos, -1, phase)

        rep = jnp.where(is_new, single, rep)
        single = jnp.where(is_new, new, single)
        left = jnp.where(ends_cycle, left - 1, left)
        phase = jnp.where(is_eos, 0, jnp.where(ends_cycle, jnp.where(left == 0, repeats + 1, 0), phase + 1))
        left = jnp.where(is_eos, min_cycles + uniform_below(line_word, jnp.int32(n_lines)), left)
        return (single, rep, phase, left), (token.astype(jnp.int32), count.astype(jnp.int32))

    carry = (
        uniform_below(token_bits[0], jnp.int32(vocab)),
        jnp.int32(-1),
        jnp.int32(0),
        min_cycles + uniform_below(line_bits[0], jnp.int32(n_lines)),
    )
    _, (tokens, counts) = jax.lax.scan(position, carry, (token_bits[1:], line_bits[1:]))
    return tokens, counts


def _check_int(name: str, value, lo: int, why: str = "") -> None:
    try:
        integer("repetition", name, value, lo)
    except TaskError:
        reason = f" ({why})" if why else ""
        raise ValueError(f"repetition: {name} must be an integer ≥ {lo}{reason}, got {value!r}") from None


register(RepetitionTask())
