"""The synthetic text-classification tasks of [A] (Aitken et al. 2020, Appendix D): ``categorical``,
``ordered``, ``multilabel``.

A phrase is ``L`` words from a small vocabulary, fed one-hot (``[batch, L, V]``); every word carries a score
vector, a phrase's score is the sum over its words, and its label follows from the score:

- ``categorical`` (N classes): words ``evid1 … evidN, neutral``; ``evid_i`` scores the unit vector e_i;
  label ``argmax(s)``, ties to the smallest index (App. D.1).
- ``ordered``, ``scheme=sentiment`` (N classes): words ``good, bad, neutral`` scoring +1, −1, 0; the score
  range [−L, L] cut into N equal bins; a score on an edge below 0 goes to the lower bin, on an edge at or
  above 0 to the upper one (eq. 13: Negative s ≤ −L/3, Positive s ≥ L/3).
- ``ordered``, ``scheme=intensity`` (5 classes, one to five stars): words ``awesome, good, okay, bad,
  awful, neutral`` with (sentiment, intensity) scores of eq. 14, labels by eq. 15.
- ``multilabel`` (N labels): words ``good1, bad1, …, goodN, badN, neutral``; label i is ``s_i ≥ 0``
  (eq. 17), trained with a sigmoid cross-entropy per label.

Phrases are drawn ``sampling=score`` — uniformly over every score a phrase of length L can have, then
uniformly over the word counts giving it, in a random order (the main text's choice) — or ``sampling=word``
— every word uniformly from the vocabulary (App. D.3's choice for multi-label, the only one offered there
and for ``intensity``).  ``score`` for categorical is uniform over the compositions of L into N + 1 word
counts (stars and bars); for ``sentiment``, s uniform in −L … L, then the number of ``bad`` words uniform
among those compatible with s.

Targets are ``[batch, n_out]``: one-hot classes (softmax cross-entropy) or 0/1 labels (sigmoid), read out
from the final state only ([A] App. B).  Everything is pure JAX: it traces under ``jit`` and maps under
``vmap``.  Probes: ``sample(key(probe_seed), n_probe)``; fixed points at x = 0 ([A]).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from popdyn.tasks import Task, TaskError, TaskSpec, register

SAMPLINGS = ("score", "word")
SCHEMES = ("sentiment", "intensity")

# (sentiment, intensity) of each word of the intensity scheme, [A] eq. 14
_INTENSITY = {
    "awesome": (2.0, 1.0),
    "good": (1.0, -0.5),
    "okay": (0.0, -2.0),
    "bad": (-1.0, -0.5),
    "awful": (-2.0, 1.0),
    "neutral": (0.0, 0.0),
}


def _shuffled(key: PRNGKeyArray, counts: Array, L: int) -> Array:
    """Word ids of a phrase with ``counts[w]`` copies of word w, in a uniformly random order: ``[L]``."""
    ends = jnp.cumsum(counts)
    words = jnp.searchsorted(ends, jnp.arange(L), side="right")
    return words[jax.random.permutation(key, L)]


def _phrase(spec: TextSpec, N: int, L: int, sampling: str, scheme: str, V: int, key: PRNGKeyArray) -> Array:
    """Word ids of one phrase, ``[L]`` int32."""
    if sampling == "word":
        return jax.random.randint(key, (L,), 0, V)
    k_score, k_order = jax.random.split(key)
    return _shuffled(k_order, spec.score_counts(k_score, N, L), L)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 6))
def sample(
    spec: TextSpec, N: int, L: int, sampling: str, scheme: str, key: PRNGKeyArray, batch: int
) -> tuple[Float[Array, "batch L V"], Float[Array, "batch n_out"]]:
    """``batch`` phrases of dataset ``spec``: one-hot inputs ``[batch, L, V]`` and targets ``[batch, N]``
    (float32)."""
    scores = jnp.asarray(spec.word_scores(N, scheme))
    V = scores.shape[0]
    words = jax.vmap(functools.partial(_phrase, spec, N, L, sampling, scheme, V))(
        jax.random.split(key, batch)
    )
    phrase_score = scores[words].sum(axis=1)
    return jax.nn.one_hot(words, V, dtype=jnp.float32), spec.labels(N, L, scheme, phrase_score)


class TextSpec(TaskSpec):
    """What the three datasets share: phrases of ``L`` one-hot words, labels from the summed word scores.

    Each dataset declares its words (:meth:`vocabulary`, :meth:`word_scores`), its labels
    (:meth:`labels`), whether and how ``sampling=score`` draws word counts (:meth:`scored`,
    :meth:`score_counts`) and its loss (:meth:`default_loss`)."""

    def vocabulary(self, N: int, scheme: str = "sentiment") -> tuple[str, ...]:
        """The words of the dataset, in the order of the one-hot input dimensions."""
        raise NotImplementedError

    def word_scores(self, N: int, scheme: str = "sentiment") -> np.ndarray:
        """The score vector of every word, ``[V, score dims]`` float32 (rows in :meth:`vocabulary` order)."""
        raise NotImplementedError

    def labels(self, N: int, L: int, scheme: str, score: Float[Array, "... dims"]) -> Array:
        """Targets from phrase scores: one-hot classes ``[..., N]`` or 0/1 labels."""
        raise NotImplementedError

    def scored(self, scheme: str) -> bool:
        """Whether ``sampling=score`` is defined ([A] App. D)."""
        return False

    def score_counts(self, key: PRNGKeyArray, N: int, L: int) -> Array:
        """``sampling=score``: the count of each word of one phrase, ``[V]`` summing to L."""
        raise NotImplementedError

    def build(self, name, values):
        scheme = values.get("scheme", "")
        for key, allowed in (("sampling", SAMPLINGS), ("scheme", SCHEMES)):
            if key in values and values[key] not in allowed:
                raise TaskError(f"{name}: unknown {key} {values[key]!r}; allowed: {', '.join(allowed)}")
        if values["N"] < 2:
            raise TaskError(f"{name}: N must be at least 2 (classes or labels), got {values['N']}")
        if scheme == "intensity" and values["N"] != 5:
            raise TaskError(
                f"ordered: scheme=intensity has 5 classes (one to five stars), not N={values['N']}"
            )
        if values["sampling"] == "score" and not self.scored(scheme):
            raise TaskError(
                f"{name}: sampling=score is defined for categorical and ordered sentiment only "
                f"([A] App. D); use sampling=word"
            )
        return len(self.vocabulary(values["N"], scheme)), values["N"], values["L"]

    def default_loss(self, name: str) -> str:
        return "softmax"

    def words(self, task: Task) -> tuple[str, ...]:
        return self.vocabulary(task.param("N"), dict(task.params).get("scheme", ""))

    def sample(self, task: Task, key, batch, data=None):
        p = dict(task.params)
        return sample(self, p["N"], task.T, p["sampling"], p.get("scheme", ""), key, batch)


# [A] App. D; L (phrase length) is not given in [A]: 20; N = 5 is forced by scheme=intensity
_COMMON = {"L": 20, "n_probe": 512, "probe_seed": 0}


class Categorical(TextSpec):
    """``evid1 … evidN, neutral``; ``evid_i`` scores e_i; label ``argmax(s)`` (App. D.1)."""

    names = ("categorical",)
    defaults = {"categorical": {"N": 3, "sampling": "score", **_COMMON}}

    def vocabulary(self, N, scheme="sentiment"):
        return (*(f"evid{i}" for i in range(1, N + 1)), "neutral")

    def word_scores(self, N, scheme="sentiment"):
        return np.concatenate([np.eye(N), np.zeros((1, N))]).astype(np.float32)

    def labels(self, N, L, scheme, score):
        return jax.nn.one_hot(jnp.argmax(score, axis=-1), N, dtype=jnp.float32)

    def scored(self, scheme):
        return True

    def score_counts(self, key, N, L):
        # stars and bars: N bars among L + N slots ↔ N + 1 counts summing to L
        bars = jnp.sort(jnp.argsort(jax.random.uniform(key, (L + N,)))[:N])
        edges = jnp.concatenate([jnp.array([-1]), bars, jnp.array([L + N])])
        return jnp.diff(edges) - 1


class Ordered(TextSpec):
    """``good, bad, neutral`` (sentiment, score bins) or the five-star words of eq. 14 (intensity)."""

    names = ("ordered",)
    defaults = {"ordered": {"N": 3, "scheme": "sentiment", "sampling": "score", **_COMMON}}

    def resolve(self, name, params):
        values = super().resolve(name, params)
        if values.get("scheme") == "intensity" and "N" not in params:
            values["N"] = 5
        return values

    def vocabulary(self, N, scheme="sentiment"):
        return ("good", "bad", "neutral") if scheme == "sentiment" else tuple(_INTENSITY)

    def word_scores(self, N, scheme="sentiment"):
        if scheme == "sentiment":
            return np.array([[1.0], [-1.0], [0.0]], np.float32)
        return np.array(list(_INTENSITY.values()), np.float32)

    def labels(self, N, L, scheme, score):
        if scheme == "sentiment":
            s = score[..., 0]
            edges = [-L + 2.0 * L * k / N for k in range(1, N)]
            cls = sum(jnp.where(e < 0, s > e, s >= e).astype(jnp.int32) for e in edges)
            return jax.nn.one_hot(cls, N, dtype=jnp.float32)
        s, i = score[..., 0], score[..., 1]
        cls = jnp.select(
            [(i < 0) & (jnp.abs(i) > jnp.abs(s)), (i >= 0) & (s > 0), (i < 0) & (s > 0), (i < 0) & (s < 0)],
            [2, 4, 3, 1],
            0,  # i ≥ 0 and s ≤ 0: one star
        )
        return jax.nn.one_hot(cls, 5, dtype=jnp.float32)

    def scored(self, scheme):
        return scheme == "sentiment"

    def score_counts(self, key, N, L):
        # sentiment: s uniform in −L … L, then #bad uniform among the counts giving s
        k_s, k_b = jax.random.split(key)
        s = jax.random.randint(k_s, (), -L, L + 1)
        lo, hi = jnp.maximum(0, -s), (L - s) // 2
        bad = lo + jax.random.randint(k_b, (), 0, hi - lo + 1)
        good = bad + s
        return jnp.stack([good, bad, L - good - bad])


class Multilabel(TextSpec):
    """``good1, bad1, …, goodN, badN, neutral``; label i is ``s_i ≥ 0`` (eq. 17), sigmoid per label."""

    names = ("multilabel",)
    defaults = {"multilabel": {"N": 2, "sampling": "word", **_COMMON}}

    def vocabulary(self, N, scheme="sentiment"):
        return (*(w for i in range(1, N + 1) for w in (f"good{i}", f"bad{i}")), "neutral")

    def word_scores(self, N, scheme="sentiment"):
        pm = np.stack([np.eye(N), -np.eye(N)], axis=1).reshape(2 * N, N)  # good_i, bad_i interleaved
        return np.concatenate([pm, np.zeros((1, N))]).astype(np.float32)

    def labels(self, N, L, scheme, score):
        return (score >= 0).astype(jnp.float32)

    def default_loss(self, name):
        return "sigmoid"


for _spec in (Categorical(), Ordered(), Multilabel()):
    register(_spec)
