"""The three regression tasks of [U] (Maheswaranathan et al. 2019, §3.1–3.3), and the synthetic text
classification datasets of [A] (``popdyn.texttasks``).

A :class:`Task` is a frozen, hashable description (name, sizes, every parameter) — it can close over a
training function or be a static ``jax.jit`` argument. ``task.sample(key, batch)`` draws a batch of
``(inputs [batch, T, n_in], targets [batch, T, n_out])`` in pure JAX, so it traces under ``jit`` and maps
under ``vmap`` over keys. ``task.probe_inputs`` is the one fixed set of inputs that every network is driven
with when hidden states are compared, and ``task.x_star`` holds the static condition inputs at which
fixed points are sought ([U] §2.3: time-varying input dimensions set to 0).

Build tasks with :func:`make_task`, which fills in the defaults of SPEC §2 and validates every value::

    task = make_task("flipflop", K=3, T=100, p=0.05)
    inputs, targets = jax.jit(task.sample, static_argnums=1)(jax.random.key(0), 64)
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from popdyn import corpora, memory, rtasks, texttasks
from popdyn.corpora import DATASETS, CorpusError
from popdyn.texttasks import SAMPLINGS, SCHEMES, TEXT_TASKS

TASKS = ("flipflop", "sine", "cdi", *TEXT_TASKS, "corpus", "sinegen", "symbols", "repetition")

# Every parameter a task accepts, with its default (SPEC §2). `n_probe` is per condition for cdi
# (per context) and the number of probe frequencies for sine; `probe_seed` only draws random probes
# (flipflop) but every task accepts it so that configs can set it uniformly.
DEFAULTS: dict[str, dict[str, Any]] = {
    # initial_pulse: every channel pulses at t = 0 (Sussillo & Barak 2013, [U]): targets always ±1, 2^K
    # memory states; false: no pulse at t = 0 and target 0 until a channel's first pulse (3^K states)
    "flipflop": {"K": 3, "T": 100, "p": 0.05, "initial_pulse": True, "n_probe": 64, "probe_seed": 0},
    "sine": {"T": 500, "n_probe": 16, "probe_seed": 0},
    "cdi": {"K": 2, "T": 30, "n_probe": 8, "probe_seed": 0},
    # [A] App. D; L (phrase length) is not given in [A]: 20; N = 5 is forced by scheme=intensity
    "categorical": {"N": 3, "L": 20, "sampling": "score", "n_probe": 512, "probe_seed": 0},
    "ordered": {"N": 3, "L": 20, "scheme": "sentiment", "sampling": "score", "n_probe": 512, "probe_seed": 0},
    "multilabel": {"N": 2, "L": 20, "sampling": "word", "n_probe": 512, "probe_seed": 0},
    # [A] App. B–C's natural datasets (popdyn.corpora): read from `path`; L = tokens kept per document
    # (not given in [A]), n_words = the most common words the per-word analyses report
    # [R] §5.1: the set of n_sequences sine waves of length T, ω evenly spaced in [π/16, π/8] rad/step;
    # §5.2: relevant-symbol classification, sequences of length T ≥ 50 (p/q at t1 ∈ [10,18], t2 ∈ [40,49])
    "sinegen": {"T": 400, "n_sequences": 100, "n_probe": 16, "probe_seed": 0},
    "symbols": {"T": 100, "n_probe": 512, "probe_seed": 0},
    # [V] §4.2.1: the repetition language (popdyn.memory.sample_repetition), next-token prediction;
    # embedding 0: one-hot inputs ([V]'s choice there), > 0: a learned embedding of that size
    "repetition": {
        "T": 200, "vocab": 10, "repeats": 15, "min_cycles": 5, "max_cycles": 10, "embedding": 0,
        "n_probe": 32, "probe_seed": 0,
    },
    "corpus": {
        "dataset": "ag_news", "path": "", "classes": (), "vocab_size": 32768, "L": 100, "embedding": 128,
        "balance": False, "max_docs": 0, "n_words": 256, "n_probe": 512, "probe_seed": 0,
    },
}  # fmt: skip
# how a task's network is scored: MSE at every step ([U]), or cross-entropy of a bias-free readout of the
# final state ([A] App. B): softmax over classes, or a sigmoid per label
LOSSES = {
    "flipflop": "mse",
    "sine": "mse",
    "cdi": "mse",
    "categorical": "softmax",
    "ordered": "softmax",
    "multilabel": "sigmoid",
    "corpus": "softmax",  # goemotions: sigmoid (Task.loss)
    "sinegen": "mse",
    "symbols": "softmax",
    "repetition": "lm",  # softmax over the next token at every step
}

# Sine task of [U] §3.2: ω = SINE_SLOPE · x + SINE_OFFSET cycles per step.
SINE_SLOPE = 0.04
SINE_OFFSET = 0.01


class TaskError(ValueError):
    """A task name, parameter name or parameter value that popdyn cannot build a task from."""


@dataclass(frozen=True)
class Task:
    """One task of [U]: static settings only, hashable, so it can be a static ``jit`` argument.

    Build it with :func:`make_task`, which validates (the constructor does not). ``params`` holds sorted
    ``(name, value)`` pairs of every parameter, defaults included, so two tasks built from the same
    settings compare and hash equal.
    """

    name: str
    n_in: int
    n_out: int
    T: int
    params: tuple[tuple[str, Any], ...]

    # ----------------------------------------------------------------------------------------------
    # parameters
    def param(self, key: str) -> Any:
        """The value of one parameter (``task.param("K")``)."""
        for k, v in self.params:
            if k == key:
                return v
        raise TaskError(f"task {self.name!r} has no parameter {key!r}; it has {_names(self.params)}")

    def as_dict(self) -> dict[str, Any]:
        """``{"name": ..., **params}``: plain values, ready for YAML or a CSV row."""
        return {"name": self.name, **dict(self.params)}

    @property
    def loss(self) -> str:
        """``mse`` (every step, [U]), ``softmax`` or ``sigmoid`` (cross-entropy of the final state, [A])."""
        if self.name == "corpus" and self.param("dataset") == "goemotions":
            return "sigmoid"
        return LOSSES[self.name]

    @property
    def classification(self) -> bool:
        """Scored on its final state (softmax or sigmoid classes, [A], [R] §5.2)."""
        return self.loss in ("softmax", "sigmoid")

    @property
    def words(self) -> tuple[str, ...]:
        """The vocabulary of a text task, one word per input dimension — per token id for ``corpus`` —
        (empty for the others)."""
        if self.name == "corpus":
            return self.corpus.vocabulary
        if self.name == "symbols":
            return rtasks.SYMBOLS
        if self.name == "repetition":  # token ids: <pad> (unused), the words, end of sentence
            return ("<pad>", *(f"w{i}" for i in range(self.param("vocab"))), "<eos>")
        if not self.classification:
            return ()
        return texttasks.vocabulary(self.name, self.param("N"), dict(self.params).get("scheme", ""))

    @property
    def vocab(self) -> int:
        """Token ids a ``corpus`` task's inputs take (0: inputs are vectors, no embedding)."""
        if self.name == "repetition" and self.param("embedding"):
            return self.param("vocab") + 2
        return len(self.corpus.vocabulary) if self.name == "corpus" else 0

    @property
    def corpus(self) -> corpora.Corpus:
        """The tokenised dataset of a ``corpus`` task (read once per process and kept)."""
        p = dict(self.params)
        keys = ("dataset", "path", "classes", "vocab_size", "L", "balance", "max_docs")
        return corpora.load_corpus(*(p[k] for k in keys), seed=p["probe_seed"])

    @property
    def data(self) -> dict[str, Array] | None:
        """Arrays the training program takes as an argument rather than as constants: a ``corpus``
        task's training split ``{"ids", "targets"}``; ``None`` for the generated tasks."""
        if self.name != "corpus":
            return None
        return {"ids": self.corpus.train_ids, "targets": self.corpus.train_targets}

    # ----------------------------------------------------------------------------------------------
    # training data
    def sample(
        self, key: PRNGKeyArray, batch: int, data: dict[str, Array] | None = None
    ) -> tuple[Float[Array, "batch time n_in"], Float[Array, "batch time n_out"]]:
        """Draw ``batch`` independent trials: inputs ``[batch, T, n_in]``, targets ``[batch, T, n_out]``.

        Pure JAX and float32; ``batch`` must be static under ``jit``. Loss in [U] is the MSE over every
        step and output.  ``corpus``: ``batch`` documents of the training split drawn uniformly with
        replacement from ``data`` (default :attr:`data`): token ids ``[batch, L]`` and targets
        ``[batch, n_out]``.
        """
        if not isinstance(batch, numbers.Integral) or isinstance(batch, bool) or batch < 1:
            raise TaskError(f"batch must be a positive integer, got {batch!r}")
        params = dict(self.params)
        if self.name == "corpus":
            data = self.data if data is None else data
            idx = jax.random.randint(key, (int(batch),), 0, data["ids"].shape[0])
            return jnp.asarray(data["ids"])[idx], jnp.asarray(data["targets"])[idx]
        if self.name == "sinegen":  # a batch of the set's sequences, drawn with replacement
            pick = jax.random.randint(key, (int(batch),), 0, params["n_sequences"])
            omega = jnp.asarray(_sinegen_omegas(params["n_sequences"]))[pick]
            return _sinegen_trials(omega, self.T)
        if self.name == "symbols":
            return rtasks.relevant_symbols(key, int(batch), self.T)
        if self.name == "repetition":  # inputs: ids 1 … vocab+1 (0 is <pad>), or one-hot without an embedding
            p = params
            r = memory.sample_repetition(key, int(batch), self.T, p["vocab"], p["repeats"], p["min_cycles"],
                                         p["max_cycles"])  # fmt: skip
            n = p["vocab"] + 1
            inputs = r.inputs + 1 if p["embedding"] else jax.nn.one_hot(r.inputs, n, dtype=jnp.float32)
            return inputs, jax.nn.one_hot(r.targets, n, dtype=jnp.float32)
        if self.classification:  # targets [batch, n_out]: one label (set) per phrase
            return texttasks.sample(
                self.name, params["N"], self.T, params["sampling"], params.get("scheme", ""), key, int(batch)
            )
        return _sample(self.name, self.T, params.get("K", 1), params.get("p", 0.0), key, int(batch),
                       params.get("initial_pulse", False))  # fmt: skip

    # ----------------------------------------------------------------------------------------------
    # analysis inputs. Recomputed on every read rather than cached on the Task: the first read may happen
    # inside a trace, and a cached tracer would outlive it. The computation itself is compiled once.
    @property
    def probe_inputs(self) -> Float[Array, "n_probe time n_in"]:
        """The fixed probe set shared by every network, ``[n_probe_total, T, n_in]`` float32.

        - flipflop: the trials of ``sample(jax.random.key(probe_seed), n_probe)`` → ``[n_probe, T, K]``.
        - sine: ``x = linspace(0, 1, n_probe)`` (ends included), constant in time → ``[n_probe, T, 1]``.
        - cdi: context-major; for context k and ``μ in linspace(-1, 1, n_probe)``: context k on, cued
          stream k held at the noise-free constant μ, every other stream 0 → ``[K·n_probe, T, 2K]``
          (the "probe inputs" of [U] Fig. 3a, which sweep the integrated value along the line attractor).
        """
        return self._probes()[0]

    @property
    def probe_targets(self) -> Float[Array, "n_probe time n_out"]:
        """Targets of :attr:`probe_inputs`, ``[n_probe_total, T, n_out]`` float32."""
        return self._probes()[1]

    @property
    def probe_condition(self) -> Int[Array, " n_probe"]:
        """For each probe trial, the row of :attr:`x_star` it belongs to, ``[n_probe_total]`` int32.

        flipflop: all 0; sine: ``i`` (probe i has frequency x_star[i]); cdi: its context ``i // n_probe``.
        """
        n = self.param("n_probe")
        if self.name == "corpus":
            n = min(n, len(self.corpus.test_ids))
        if self.name in ("flipflop", "repetition") or self.classification:
            cond = np.zeros(n, np.int32)
        elif self.name in ("sine", "sinegen"):
            cond = np.arange(n, dtype=np.int32)
        else:
            cond = np.repeat(np.arange(self.param("K"), dtype=np.int32), n)
        return jnp.asarray(cond)

    @property
    def x_star(self) -> Float[Array, "conditions n_in"]:
        """Static condition inputs x* for fixed points ([U] §2.3), ``[C, n_in]`` float32.

        Time-varying dimensions are 0. flipflop: one condition, all zeros → ``[1, K]``; sine: one row
        per probe frequency, the probe's x → ``[n_probe, 1]``; cdi: one per context, one-hot context and
        zero noise → ``[K, 2K]``.
        """
        if self.name in ("flipflop", "repetition") or self.classification:  # [A]: fixed points at x = 0
            xs = np.zeros((1, self.n_in), np.float32)
        elif self.name == "sine":
            xs = np.linspace(0.0, 1.0, self.param("n_probe"), dtype=np.float32)[:, None]
        elif self.name == "sinegen":
            xs = _sinegen_omegas(self.param("n_probe"))[:, None]
        else:
            k = self.param("K")
            xs = np.concatenate([np.eye(k, dtype=np.float32), np.zeros((k, k), np.float32)], axis=1)
        return jnp.asarray(xs)

    def validation(self, key: PRNGKeyArray, batch: int) -> tuple[Array, Array]:
        """A held-out batch for choosing hyper-parameters: ``sample`` (a fresh draw) for the generated
        tasks; ``batch`` documents of the test split for ``corpus`` (all of them if it has fewer)."""
        if self.name != "corpus":
            return self.sample(key, batch)
        return self._test_documents(np.random.default_rng(np.asarray(jax.random.key_data(key))), batch)

    def _test_documents(self, rng: np.random.Generator, batch: int) -> tuple[Array, Array]:
        """``batch`` documents of a corpus's test split drawn without replacement (all if fewer), in order;
        host NumPy, so that probes read inside a trace stay constants."""
        c = self.corpus
        n = len(c.test_ids)
        idx = np.sort(rng.choice(n, min(batch, n), replace=False))
        return jnp.asarray(c.test_ids[idx]), jnp.asarray(c.test_targets[idx])

    def _probes(self) -> tuple[Array, Array]:
        if self.name == "repetition":
            return self.sample(jax.random.key(self.param("probe_seed")), self.param("n_probe"))
        if self.name == "corpus":  # n_probe documents of the test split, drawn from probe_seed
            return self._test_documents(
                np.random.default_rng(self.param("probe_seed")), self.param("n_probe")
            )
        if self.name == "flipflop" or self.classification:
            return self.sample(jax.random.key(self.param("probe_seed")), self.param("n_probe"))
        return _probe(self)


# --------------------------------------------------------------------------------------------------
# the maths of each task, one trial batch at a time


# Compiled once per (task settings, batch): eager callers (probes, baselines, notebooks) would otherwise
# dispatch and compile every small op one by one; inside an outer jit or vmap it simply inlines. Only the
# settings that shape the trials are static, so changing n_probe or probe_seed does not recompile.
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 5, 6))
def _sample(
    name: str, T: int, K: int, p: float, key: PRNGKeyArray, batch: int, initial_pulse: bool = False
) -> tuple[Array, Array]:
    if name == "flipflop":
        inputs = _flipflop_inputs(key, batch, T, K, p, initial_pulse)
        return inputs, _flipflop_target(inputs)
    if name == "sine":
        x = jax.random.uniform(key, (batch,), dtype=jnp.float32)
        return _sine_inputs(x, T), _sine_target(x, T)
    if name == "cdi":
        inputs = _cdi_inputs(key, batch, T, K)
        return inputs, _cdi_target(inputs)
    raise TaskError(f"unknown task {name!r}; choose one of {TASKS}")


@functools.partial(jax.jit, static_argnums=0)
def _probe(task: Task) -> tuple[Array, Array]:
    """Noise-free probes of sine and cdi (see ``Task.probe_inputs``); jitted for the reason ``_sample`` is."""
    n, T = task.param("n_probe"), task.T
    if task.name == "sine":
        x = jnp.linspace(0.0, 1.0, n, dtype=jnp.float32)
        return _sine_inputs(x, T), _sine_target(x, T)
    if task.name == "sinegen":
        return _sinegen_trials(jnp.asarray(_sinegen_omegas(n)), T)
    k = task.param("K")
    context = jnp.repeat(jnp.arange(k), n)  # context-major
    mu = jnp.tile(jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32), k)
    eye = jnp.eye(k, dtype=jnp.float32)[context]  # [k·n, k]
    streams = jnp.broadcast_to((eye * mu[:, None])[:, None, :], (k * n, T, k))
    contexts = jnp.broadcast_to(eye[:, None, :], (k * n, T, k))
    inputs = jnp.concatenate([contexts, streams], axis=-1)
    return inputs, _cdi_target(inputs)


def _sinegen_omegas(n: int) -> np.ndarray:
    """[R] §5.1's angular frequencies: ``n`` evenly spaced in [π/16, π/8] rad/step, ends included (host
    NumPy: constants, also when read inside a trace)."""
    return np.linspace(np.pi / 16, np.pi / 8, n).astype(np.float32)


def _sinegen_trials(omega: Float[Array, " b"], T: int) -> tuple[Array, Array]:
    """Input ``x_t = ω`` (constant), target ``sin(ω (t+1))`` ([R] §5.1; ``popdyn.rtasks.sine_generation``)."""
    steps = jnp.arange(1, T + 1, dtype=jnp.float32)
    inputs = jnp.broadcast_to(omega[:, None, None], (omega.shape[0], T, 1))
    return inputs, jnp.sin(omega[:, None] * steps)[..., None]


def _flipflop_inputs(
    key: PRNGKeyArray, batch: int, T: int, K: int, p: float, initial_pulse: bool = True
) -> Float[Array, "b t k"]:
    """Pulses of ±1 on each channel with probability p per step; with ``initial_pulse`` every channel
    also pulses at t = 0 with a random sign (Sussillo & Barak 2013; FixedPointFinder's ``FlipFlopData``),
    so that every target is ±1 from the first step."""
    # One uniform draw gives both events: u < p is a pulse, and its sign is −1 for u < p/2, else +1 —
    # each with probability p/2, independent across channels and steps. One draw, not two, because
    # compiling threefry dominates the cost of sampling. At t = 0 with initial_pulse the same draw's
    # sign alone is used: −1 for u < 1/2.
    u = jax.random.uniform(key, (batch, T, K), dtype=jnp.float32)
    x = jnp.where(u < p, jnp.where(u < 0.5 * p, -1.0, 1.0), 0.0)
    if initial_pulse:
        x = x.at[:, 0].set(jnp.where(u[:, 0] < 0.5, -1.0, 1.0))
    return x.astype(jnp.float32)


def _flipflop_target(inputs: Float[Array, "b t k"]) -> Float[Array, "b t k"]:
    """y_t = x_s with s = max{s ≤ t : x_s ≠ 0}, else 0 — [U] §3.1.

    The running max of "step index where a pulse happened" is the index of the last pulse; no scan needed.
    """
    steps = jnp.arange(inputs.shape[1])[None, :, None]
    last = jax.lax.cummax(jnp.where(inputs != 0, steps, -1), axis=1)
    held = jnp.take_along_axis(inputs, jnp.maximum(last, 0), axis=1)
    return jnp.where(last >= 0, held, 0.0).astype(inputs.dtype)


def _sine_inputs(x: Float[Array, " b"], T: int) -> Float[Array, "b t 1"]:
    return jnp.broadcast_to(x[:, None, None], (x.shape[0], T, 1)).astype(jnp.float32)


def _sine_target(x: Float[Array, " b"], T: int) -> Float[Array, "b t 1"]:
    """y_t = sin(2π ω t), ω = 0.04 x + 0.01 cycles per step, t = 0..T−1 — [U] §3.2."""
    omega = SINE_SLOPE * x + SINE_OFFSET
    t = jnp.arange(T, dtype=jnp.float32)
    # Reduce the phase to one cycle before the 2π multiply: keeps float32 error independent of T.
    cycles = jnp.mod(omega[:, None] * t[None, :], 1.0)
    return jnp.sin(2.0 * jnp.pi * cycles)[..., None].astype(jnp.float32)


def _cdi_inputs(key: PRNGKeyArray, batch: int, T: int, K: int) -> Float[Array, "b t two_k"]:
    k_trial, k_noise = jax.random.split(key)
    # One uniform row per trial gives the cued context (first entry) and the K stream means μ_k.
    u = jax.random.uniform(k_trial, (batch, K + 1), dtype=jnp.float32)
    context = jnp.minimum(jnp.floor(u[:, 0] * K).astype(jnp.int32), K - 1)
    mu = 2.0 * u[:, None, 1:] - 1.0
    streams = mu + jax.random.normal(k_noise, (batch, T, K), dtype=jnp.float32)
    contexts = jnp.broadcast_to(jax.nn.one_hot(context, K, dtype=jnp.float32)[:, None, :], (batch, T, K))
    return jnp.concatenate([contexts, streams], axis=-1)


def _cdi_target(inputs: Float[Array, "b t two_k"]) -> Float[Array, "b t 1"]:
    """y_t = Σ_{s≤t} x_{k,s} for the cued stream k — [U] §3.3.

    Read from the inputs (context one-hot · streams) so probes and samples share one definition.
    """
    K = inputs.shape[-1] // 2
    cued = jnp.sum(inputs[..., :K] * inputs[..., K:], axis=-1)
    return jnp.cumsum(cued, axis=1)[..., None]


# --------------------------------------------------------------------------------------------------
# construction and validation (plain Python, no JAX)


def make_task(name: str, **params: Any) -> Task:
    """Build a task with the defaults of SPEC §2, overridden by ``params``; validate every value.

    flipflop: K=3, T=100, p=0.05, initial_pulse=True, n_probe=64; sine: T=500, n_probe=16; cdi: K=2, T=30, n_probe=8 (per
    context); all: probe_seed=0. Raises :class:`TaskError` for an unknown task or parameter name, or an
    impossible value.
    """
    if name not in DEFAULTS:
        raise TaskError(f"unknown task {name!r}; choose one of {TASKS}")
    allowed = DEFAULTS[name]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TaskError(
            f"unknown parameter {unknown[0]!r} for task {name!r}; allowed: {', '.join(sorted(allowed))}"
        )
    values = {**allowed, **params}
    if values.get("scheme") == "intensity" and "N" not in params:
        values["N"] = 5
    for key in ("K", "T", "N", "L", "n_probe"):
        if key in values:
            values[key] = _positive_int(name, key, values[key])
    values["probe_seed"] = _seed(name, values["probe_seed"])
    if "p" in values:
        values["p"] = _probability(name, "p", values["p"])
    if "initial_pulse" in values and not isinstance(values["initial_pulse"], (bool, np.bool_)):
        raise TaskError(f"{name}: initial_pulse must be true or false, got {values['initial_pulse']!r}")
    if "initial_pulse" in values:
        values["initial_pulse"] = bool(values["initial_pulse"])

    if name in TEXT_TASKS:
        return _text_task(name, values)
    if name == "corpus":
        return _corpus_task(values)
    if name == "repetition":
        return _repetition_task(values)
    if name == "sinegen":
        values["n_sequences"] = _positive_int(name, "n_sequences", values["n_sequences"])
        return Task(name, 1, 1, values["T"], tuple(sorted(values.items())))
    if name == "symbols":
        if values["T"] < 50:
            raise TaskError(
                f"symbols: T must be at least 50 (the second symbol falls in steps 40–49), got {values['T']}"
            )
        return Task(
            name, len(rtasks.SYMBOLS), len(rtasks.CLASSES), values["T"], tuple(sorted(values.items()))
        )
    K = values.get("K", 1)
    n_in, n_out = {"flipflop": (K, K), "sine": (1, 1), "cdi": (2 * K, 1)}[name]
    return Task(name=name, n_in=n_in, n_out=n_out, T=values["T"], params=tuple(sorted(values.items())))


def _text_task(name: str, values: dict[str, Any]) -> Task:
    scheme = values.get("scheme", "")
    for key, allowed in (("sampling", SAMPLINGS), ("scheme", SCHEMES)):
        if key in values and values[key] not in allowed:
            raise TaskError(f"{name}: unknown {key} {values[key]!r}; allowed: {', '.join(allowed)}")
    if values["N"] < 2:
        raise TaskError(f"{name}: N must be at least 2 (classes or labels), got {values['N']}")
    if scheme == "intensity" and values["N"] != 5:
        raise TaskError(f"ordered: scheme=intensity has 5 classes (one to five stars), not N={values['N']}")
    if values["sampling"] == "score" and (name == "multilabel" or scheme == "intensity"):
        raise TaskError(
            f"{name}: sampling=score is defined for categorical and ordered sentiment only "
            f"([A] App. D); use sampling=word"
        )
    n_in = len(texttasks.vocabulary(name, values["N"], scheme))
    return Task(name, n_in, values["N"], values["L"], tuple(sorted(values.items())))


def _corpus_task(values: dict[str, Any]) -> Task:
    if values["dataset"] not in DATASETS:
        raise TaskError(f"corpus: unknown dataset {values['dataset']!r}; allowed: {', '.join(DATASETS)}")
    if not isinstance(values["path"], str) or not values["path"]:
        raise TaskError("corpus: set task.path to the folder holding the dataset's files")
    classes = values["classes"]
    if isinstance(classes, (str, int)) or not isinstance(classes, (list, tuple)):
        raise TaskError(f"corpus: classes must be a list of class names or numbers, got {classes!r}")
    values["classes"] = tuple(str(c) for c in classes)
    for key in ("vocab_size", "embedding", "n_words"):
        values[key] = _positive_int("corpus", key, values[key])
    if values["vocab_size"] < 3:
        raise TaskError(
            f"corpus: vocab_size must be at least 3 (<pad>, <unk> and a word), got {values['vocab_size']}"
        )
    if (
        isinstance(values["max_docs"], bool)
        or not isinstance(values["max_docs"], numbers.Integral)
        or values["max_docs"] < 0
    ):
        raise TaskError(f"corpus: max_docs must be 0 (all) or a positive integer, got {values['max_docs']!r}")
    if not isinstance(values["balance"], bool):
        raise TaskError(f"corpus: balance must be true or false, got {values['balance']!r}")
    task = Task("corpus", values["embedding"], 0, values["L"], tuple(sorted(values.items())))
    try:
        n_out = len(task.corpus.classes)
    except CorpusError as e:
        raise TaskError(f"corpus: {e}") from None
    return Task("corpus", values["embedding"], n_out, values["L"], task.params)


def _repetition_task(values: dict[str, Any]) -> Task:
    for key, low in (("vocab", 3), ("repeats", 1), ("min_cycles", 1), ("max_cycles", 1), ("embedding", 0)):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise TaskError(f"repetition: {key} must be an integer ≥ {low}, got {v!r}")
    if values["max_cycles"] < values["min_cycles"]:
        raise TaskError(
            f"repetition: max_cycles must be ≥ min_cycles = {values['min_cycles']}, got {values['max_cycles']}"
        )
    n_in = values["embedding"] or values["vocab"] + 1
    return Task("repetition", n_in, values["vocab"] + 1, values["T"], tuple(sorted(values.items())))


def zero_baseline(task: Task, key: PRNGKeyArray, batch: int = 1024) -> float:
    """MSE of predicting 0 everywhere, mean(y²) over a sampled batch: the loss a network must beat."""
    _, targets = task.sample(key, batch)
    return float(jnp.mean(jnp.square(targets)))


def _positive_int(task: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise TaskError(f"{task}: {key} must be a positive integer, got {value!r}")
    return int(value)


def _seed(task: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**32:
        raise TaskError(f"{task}: probe_seed must be an integer in [0, 2**32), got {value!r}")
    return int(value)


def _probability(task: str, key: str, value: Any) -> float:
    # `not 0 <= v <= 1` also rejects NaN.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise TaskError(f"{task}: {key} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _names(params: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(k for k, _ in params)
