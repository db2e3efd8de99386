"""State gradients of [V] (Verwimp et al., *State gradients for analyzing memory in LSTM language models*):
how strongly, and along which embedding directions, an RNN's state still depends on an input τ steps back;
checked on the synthetic repetition dataset of [V] §4.2.1 (the task ``repetition``,
``popdyn.tasks.repetition``).

Time convention.  One sequence ``e_0 … e_{T−1}`` drives ``s_t = F(s_{t−1}, e_t)`` from ``s_{−1} = state0``
(``F`` = ``Model.step`` on the full state, lstm ``[h; c]``), so ``s_t`` is the state after reading ``e_t``
and delay 0 is the current input ([V] §3: "the input for a delay of 0 is *mat* itself").

- state gradient ([V] §3): ``G_{t,τ} = ∂s_t/∂e_{t−τ} = A_t A_{t−1} ⋯ A_{t−τ+1} B_{t−τ}`` with
  ``A_t = ∂F/∂s`` and ``B_t = ∂F/∂e`` at ``(s_{t−1}, e_t)``; ``Ḡ_τ`` its average over t.
- normalisation ([V] §4.1, eqs. 6–10): ``Ḡ_τ D`` with ``cov(e) = D Dᵀ`` (lower Cholesky factor), the
  gradient with respect to whitened embeddings ``g = D⁻¹ e``, so that no embedding direction counts more
  for having a larger variance.
- SVD ``Ḡ_τ D = U Σ Vᵀ`` ([V] eq. 1); memory curve ``m(τ) = Σ_i σ_i(τ)`` ([V] Fig. 3), selectivity
  ``σ_1/Σσ`` ([V] §4.3.2).

Every function is written for one network (and one sequence where it says so) and is pure JAX: ``jit`` it
and ``vmap`` it over sequences or members at the call site.  The products of Jacobians and the whitening
are traced with float32 matmuls (``popdyn.precision.full_precision``) like the other analyses: a GPU's default
TF32 would compound its ~1e-3 error over τ factors.  :func:`population_memory` does this for a
group of members (params with a leading member axis) and returns an ``xarray.Dataset``.

Registered as the analysis ``memory`` (config section ``memory``, :class:`MemoryOptions`; computed when
``memory.max_delay > 0``): :func:`network_memory` of every trained network and its memory curve, into
``groups/<g>/memory.npz``, loaded as ``memory_singular_values`` (member × delay × rank) and ``memory``
(member × delay).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Bool, Float

from popdyn import analyses
from popdyn.precision import full_precision

if TYPE_CHECKING:
    from popdyn.model import Model

Step = Callable[[dict, Array, Array], Array]

PARTS = ("state", "hidden", "cell")


# ------------------------------------------------------------------------------------------------------
# state gradients ([V] §3)
@full_precision
def state_gradient_sums(
    step: Step,
    cell_params: dict,
    embeddings: Float[Array, "time emb"],
    state0: Float[Array, " state"],
    max_delay: int,
    source_mask: Bool[Array, " time"] | None = None,
    step_mask: Bool[Array, " time"] | None = None,
) -> tuple[Float[Array, "delay state emb"], Float[Array, " delay"]]:
    """``Σ_t G_{t,τ}`` and the number of terms, for τ = 0 … ``max_delay``, over one sequence.

    The sum runs over t = τ … T−1 (every t with t−τ ≥ 0), restricted to those whose source ``t−τ`` has
    ``source_mask[t−τ]`` when a mask is given.  With ``step_mask``, the dynamics are those of the masked
    training recurrence (``popdyn.recurrence``): ``s_t = m_t · F(s_{t−1}, e_t)``, so a step with
    ``m_t = 0`` (left padding) sets the state to zero and its Jacobians are zero.  Sums rather than means
    so that a batch can pool its terms (:func:`mean_state_gradients`).  Cost: ``T·(S + E)``
    Jacobian-vector products for the step Jacobians ``A_t, B_t``, then ``max_delay`` batched products
    ``A_t · P_{t−1}`` ([T, S, S] @ [T, S, E]); memory ``O(T·S·(S + E))``.
    """
    T = embeddings.shape[0]
    _check_delay(max_delay, T)
    dtype = jnp.result_type(state0, embeddings)
    m = jnp.ones((T,), dtype) if step_mask is None else jnp.asarray(step_mask, dtype)

    def forward(s, xs):
        e, m_t = xs
        return m_t * step(cell_params, s, e), s

    # the state each step starts from: s_{t−1}, with s_{−1} = state0
    _, previous = jax.lax.scan(forward, state0, (embeddings, m))
    A, B = jax.vmap(jax.jacfwd(step, argnums=(1, 2)), in_axes=(None, 0, 0))(cell_params, previous, embeddings)
    A, B = A * m[:, None, None], B * m[:, None, None]

    weights = jnp.ones((T,), B.dtype) if source_mask is None else jnp.asarray(source_mask, B.dtype)

    def shift(x):  # x[t] ← x[t−1], zero at t = 0: the delay grows by one
        return jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]])

    def delay(carry, _):
        # P[t] = ∂s_t/∂e_{t−τ} (zero for t < τ); w[t] = weight of the source t−τ
        P, w = carry
        P = jnp.einsum("tij,tjk->tik", A, shift(P))
        w = shift(w)
        return (P, w), (jnp.einsum("t,tik->ik", w, P), w.sum())

    total0, count0 = jnp.einsum("t,tik->ik", weights, B), weights.sum()
    _, (totals, counts) = jax.lax.scan(delay, (B, weights), None, length=max_delay)
    return (
        jnp.concatenate([total0[None], totals]),
        jnp.concatenate([count0[None], counts]),
    )


def state_gradients(
    step: Step,
    cell_params: dict,
    embeddings: Float[Array, "time emb"],
    state0: Float[Array, " state"],
    max_delay: int,
    source_mask: Bool[Array, " time"] | None = None,
) -> Float[Array, "delay state emb"]:
    """``Ḡ_τ = mean_t ∂s_t/∂e_{t−τ}`` for τ = 0 … ``max_delay`` over ONE sequence ([V] §3).

    ``step(cell_params, s, e) -> s'`` is the one-step map (``Model.step``); ``s_t = F(s_{t−1}, e_t)``
    from ``s_{−1} = state0``.  For delay τ the mean is over t = τ, τ+1, …, T−1 — every step whose source
    ``t−τ`` lies in the sequence, ``T−τ`` terms — or, with ``source_mask``, over those t with
    ``source_mask[t−τ]`` true (e.g. only the new tokens of the repetition task, [V] Fig. 3).  A delay with
    no term is NaN.  ``max_delay`` is static and must be in [0, T−1].
    """
    total, count = state_gradient_sums(step, cell_params, embeddings, state0, max_delay, source_mask)
    return total / count[:, None, None]


def mean_state_gradients(
    step: Step,
    cell_params: dict,
    embeddings: Float[Array, "batch time emb"],
    state0: Float[Array, " state"],
    max_delay: int,
    source_mask: Bool[Array, "batch time"] | None = None,
    chunk: int | None = None,
    step_mask: Bool[Array, "batch time"] | None = None,
) -> Float[Array, "delay state emb"]:
    """``Ḡ_τ`` pooled over a batch of sequences: the mean of ``∂s_t/∂e_{t−τ}`` over every (sequence, t)
    pair that :func:`state_gradient_sums` would count ([V] §4.1, "average G over the whole dataset").

    Every sequence starts from ``state0``; ``source_mask`` and ``step_mask`` as there, per sequence.
    ``chunk`` sequences are differentiated at a time (``vmap`` inside, a ``lax.scan`` over chunks) to bound
    memory at ``chunk·T·S·(S + E)`` floats; ``None`` takes the whole batch at once.  ``chunk`` must divide
    the batch.
    """
    batch = embeddings.shape[0]
    _check_chunk(chunk, batch)
    chunk = batch if chunk is None else chunk
    sums = jax.vmap(partial(state_gradient_sums, step, cell_params), in_axes=(0, None, None, 0, 0))

    def add(carry, xs):
        e, mask, steps = xs
        total, count = sums(e, state0, max_delay, mask, steps)
        return (carry[0] + total.sum(0), carry[1] + count.sum(0)), None

    def chunks(x):
        return None if x is None else x.reshape(batch // chunk, chunk, *x.shape[1:])

    S, E = state0.shape[0], embeddings.shape[-1]
    dtype = jnp.result_type(state0, embeddings)
    zero = (jnp.zeros((max_delay + 1, S, E), dtype), jnp.zeros((max_delay + 1,), dtype))
    mask, steps = (None if m is None else jnp.asarray(m, bool) for m in (source_mask, step_mask))
    (total, count), _ = jax.lax.scan(add, zero, (chunks(embeddings), chunks(mask), chunks(steps)))
    return total / count[:, None, None]


# ------------------------------------------------------------------------------------------------------
# normalisation, SVD, memory curve ([V] §3, §4.1)
@full_precision
def embedding_cholesky(
    embeddings: Float[Array, "samples emb"], ridge: float = 1e-5
) -> Float[Array, "emb emb"]:
    """The lower-triangular ``D`` with ``D Dᵀ = cov(e) + ridge·(tr cov/E)·I``, ``cov(e) = (1/n) Σ (e − ē)(e − ē)ᵀ``
    ([V] eqs. 6–7).

    [V] estimates the covariance over the vocabulary, each word's embedding once (pass the embedding
    matrix's rows for that); passing every input of a batch instead weights each word by its frequency.
    The ridge, relative to the mean variance, keeps a singular covariance factorisable: one-hot inputs
    (the repetition task, [V] §4.2.1, has no embedding layer) have covariance ``diag(p) − p pᵀ``, whose
    null direction ``1`` no input ever moves along.
    """
    if isinstance(ridge, numbers.Real) and not ridge >= 0:
        raise ValueError(f"ridge must be a non-negative number, got {ridge!r}")
    e = embeddings - embeddings.mean(axis=0)
    cov = e.T @ e / e.shape[0]
    E = cov.shape[0]
    return jnp.linalg.cholesky(cov + ridge * jnp.trace(cov) / E * jnp.eye(E, dtype=cov.dtype))


@full_precision
def normalise(
    gradients: Float[Array, "delay state emb"], cholesky: Float[Array, "emb emb"]
) -> Float[Array, "delay state emb"]:
    """``G_norm = G D`` ([V] eq. 10): the state gradient with respect to whitened embeddings ``D⁻¹ e``."""
    return gradients @ cholesky


def singular_values(gradients: Float[Array, "delay state emb"]) -> Float[Array, "delay rank"]:
    """``σ_1 ≥ σ_2 ≥ … ≥ σ_r`` of each delay's matrix, r = min(S, E) ([V] eq. 1)."""
    return jnp.linalg.svd(gradients, compute_uv=False)


def memory_curve(gradients: Float[Array, "delay state emb"]) -> Float[Array, " delay"]:
    """``m(τ) = Σ_i σ_i(Ḡ_τ)``, the memory curve of [V] Fig. 3 (pass normalised gradients for [V]'s)."""
    return singular_values(gradients).sum(axis=-1)


# ------------------------------------------------------------------------------------------------------
# a population ([V] §4.3.2 compares seeds, cells and sizes by these curves)
def population_memory(
    model: Model,
    params: dict,
    inputs: Float[Array, "batch time n_in"],
    max_delay: int,
    *,
    cholesky: Float[Array, "n_in n_in"] | None = None,
    normalised: bool = True,
    part: str = "state",
    source_mask: Bool[Array, "batch time"] | None = None,
    chunk: int | None = None,
    members: Sequence | None = None,
) -> xr.Dataset:
    """Memory of every member of one group (``model``: a ``popdyn.model.Model``; ``params``: its
    parameter dict with a leading member axis) on the same ``inputs``, in one ``jit(vmap(...))``.

    Per member: ``Ḡ_τ`` pooled over the batch (:func:`mean_state_gradients`, from ``h0 = 0`` as
    ``Model.states``), rows of ``part`` kept, times ``D`` when ``normalised``, SVD.  ``D`` is ``cholesky``
    when given, else :func:`embedding_cholesky` of every input in the batch (shared by all members).
    ``part``: ``state`` (the full state; lstm ``[h; c]``), ``hidden`` (h) or ``cell`` (lstm c only — the
    state [V] analyses by default).  ``source_mask`` [batch, time] restricts the average to sources where
    it is true (:func:`state_gradients`); ``chunk`` bounds memory at members·chunk·T·S·(S + E) floats
    (:func:`mean_state_gradients`).  Returns a Dataset with coords ``member`` (``members`` or 0 … M−1),
    ``delay`` (0 … max_delay), ``rank`` and variables ``singular_values`` (member, delay, rank),
    ``memory`` = Σσ and ``selectivity`` = σ_1/Σσ (member, delay).
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim != 3 or inputs.shape[-1] != model.n_in:
        raise ValueError(f"inputs must be [batch, time, {model.n_in}], got shape {tuple(inputs.shape)}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; allowed: {', '.join(PARTS)}")
    if part == "cell" and model.state_size != 2 * model.units:
        raise ValueError(f"part='cell' needs an lstm (state [h; c]); {model.arch} has only h")
    _check_delay(max_delay, inputs.shape[1])
    _check_chunk(chunk, inputs.shape[0])
    if normalised:
        D = embedding_cholesky(inputs.reshape(-1, model.n_in)) if cholesky is None else jnp.asarray(cholesky)
    else:
        D = jnp.eye(model.n_in, dtype=inputs.dtype)
    sv = np.asarray(_population(model, params["cell"], inputs, source_mask, D, max_delay, part, chunk))
    n_members, n_delays, rank = sv.shape
    total = sv.sum(-1)
    coords = {
        "member": np.arange(n_members) if members is None else np.asarray(members),
        "delay": np.arange(n_delays),
        "rank": np.arange(rank),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        selectivity = sv[..., 0] / total
    return xr.Dataset(
        {
            "singular_values": (("member", "delay", "rank"), sv),
            "memory": (("member", "delay"), total),
            "selectivity": (("member", "delay"), selectivity),
        },
        coords=coords,
        attrs={
            "arch": model.arch,
            "activation": model.activation,
            "units": model.units,
            "part": part,
            "normalised": int(bool(normalised)),
        },
    )


@partial(jax.jit, static_argnames=("model", "max_delay", "part", "chunk"))
def _population(model, cell_params, inputs, source_mask, cholesky, max_delay, part, chunk):
    """Singular values ``[member, delay, rank]`` of every member's normalised ``Ḡ_τ``."""
    n = model.units
    rows = {"state": slice(None), "hidden": slice(0, n), "cell": slice(n, 2 * n)}[part]
    state0 = jnp.zeros((model.state_size,), inputs.dtype)

    def one(cell_params):
        G = mean_state_gradients(model.step, cell_params, inputs, state0, max_delay, source_mask, chunk)
        return singular_values(normalise(G[:, rows], cholesky))

    return jax.vmap(one)(cell_params)


# ------------------------------------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_delay(max_delay, T: int) -> None:
    if not _is_int(max_delay) or not 0 <= max_delay <= T - 1:
        raise ValueError(
            f"max_delay must be an integer in [0, {T - 1}] (sequence length {T}), got {max_delay!r}"
        )


def _check_chunk(chunk, batch: int) -> None:
    if chunk is not None and (not _is_int(chunk) or chunk < 1 or batch % chunk):
        raise ValueError(f"chunk must be a positive integer dividing the batch ({batch}), got {chunk!r}")


# ------------------------------------------------------------------------------------------------------
# the analysis of a run (config section ``memory``)
@dataclass(frozen=True)
class MemoryOptions:
    """Memory curves of every trained network ([V]): state gradients up to ``max_delay`` (0: not
    computed) over the first ``probes`` probe sequences, rows ``part`` of the state (:data:`PARTS`)."""

    max_delay: int = 0
    probes: int = 8
    part: str = "state"

    def __post_init__(self):
        for name, value, low in (("max_delay", self.max_delay, 0), ("probes", self.probes, 1)):
            if not _is_int(value) or value < low:
                raise ValueError(f"memory.{name} must be an integer ≥ {low}, got {value!r}")
        if self.part not in PARTS:
            raise ValueError(f"memory.part: unknown part {self.part!r}; allowed: {', '.join(PARTS)}")


def network_memory(
    model: Model, options: MemoryOptions, params: dict, inputs: Array
) -> Float[Array, "delay rank"]:
    """Singular values of one network's normalised ``Ḡ_τ D`` for τ = 0 … ``max_delay`` on ``inputs``
    (the task's probe sequences).  With an embedding (``model.vocab``), ``inputs`` are token ids: the
    gradients are taken with respect to this network's embedded inputs, averaged over sources that are
    not ``<pad>``, and the ``<pad>`` steps leave the state at zero as in training (``step_mask``);
    ``D`` is the Cholesky factor of the covariance of its embedding vectors over the vocabulary ([V] §4.1:
    each word once).  Otherwise ``D`` is that of the inputs themselves."""
    n = model.units
    rows = {"state": slice(None), "hidden": slice(0, n), "cell": slice(n, 2 * n)}[options.part]
    if model.vocab:
        table = params["embedding"]["embedding"]
        e, mask, cholesky = table[inputs], inputs != 0, embedding_cholesky(table[1:])
    else:
        e = jnp.asarray(inputs, jnp.float32)
        mask, cholesky = None, embedding_cholesky(e.reshape(-1, e.shape[-1]))
    state0 = jnp.zeros((model.state_size,), e.dtype)
    g = mean_state_gradients(model.step, params["cell"], e, state0, options.max_delay, mask, step_mask=mask)
    return singular_values(normalise(g[:, rows], cholesky))


# ------------------------------------------------------------------------------------------------------
# registered as the analysis ``memory``: loaded as ``memory_singular_values`` (member × delay × rank) and
# ``memory`` (member × delay)
def network(model, task, options: MemoryOptions, params: dict, probes) -> dict:
    """The singular values ``σ_i(τ)`` of one network (:func:`network_memory`) and its memory curve
    ``m(τ) = Σ_i σ_i(τ)`` ([V] Fig. 3)."""
    sv = network_memory(model, options, params, probes)
    return {"singular_values": sv, "memory": jnp.sum(sv, axis=-1)}


def check(options: MemoryOptions, task) -> None:
    if options.max_delay >= task.T:
        raise ValueError(
            f"memory.max_delay = {options.max_delay} must be below the task's T = {task.T} (sequence length)"
        )


def summary(out: dict, options: MemoryOptions) -> str:
    m = out["memory"]
    return f"memory Σσ at delay 0 / {m.shape[1] - 1}: median {_median(m[:, 0]):.3g} / {_median(m[:, -1]):.3g}"


def _median(a) -> float:
    a = np.asarray(a, np.float64)
    return float(np.median(a[np.isfinite(a)])) if np.isfinite(a).any() else float("nan")


def _curves(ds, prefix):
    from popdyn.figures import memory_curves

    return memory_curves(ds, prefix)


analyses.register(
    analyses.Analysis(
        "memory", MemoryOptions, network,
        dims={"singular_values": ("delay", "rank"), "memory": ("delay",)},
        inputs=lambda task, options: task.probe_inputs[: options.probes],
        applies=lambda options, task: options.max_delay > 0,
        check=check, summary=summary, figures={"memory_curves": _curves},
        doc="[V]'s memory curves after training (config section ``memory``, settings ``memory.yaml``).",
    )
)  # fmt: skip
