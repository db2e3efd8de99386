"""Fixed points, their linearisation, and each task's topology ([U] §2.3, SPEC §4).

Written for ONE network; a population is ``vmap`` (or ``lax.map``) of the same functions over its members,
so every array has a fixed shape: at most ``max_points`` fixed points per condition, with a ``valid`` mask.

Fixed points minimise ``q(h) = ½‖F(h, x*) − h‖²`` (Sussillo & Barak 2013; Golub & Sussillo 2018's
FixedPointFinder), from many initial states at once:

1. Adam on every initial state jointly (each point's q depends on that point only), learning rate
   ``lr · lr_decay^(step/steps)``, until ``steps`` or until the mean q changes by less than ``dq_tol``;
   after ``compact_after`` steps only the points still moving (``q ≥ settled_q``) go on, ``compact_chunk``
   at a time with their Adam moments — Adam is elementwise, so they follow the very same paths, and the
   rest of the descent costs the moving points (17–28 % of a trained 64-unit vanilla flip-flop
   network's 1,024, under 10 % of a GRU's), not ``n_initial``;
2. optionally (``rerun_q_outliers``) the points whose q exceeds ``outlier_q_scale`` × the median q are
   optimised again;
3. the descents that ended within ``unique_tol`` of each other are merged (the lowest q kept), and
   ``newton_steps`` Newton steps on ``F(h) − h = 0`` refine each distinct candidate, each step kept only
   where it lowers q (true fixed points are then found to float precision; slow points stay where Adam
   left them; a point whose ``J − I`` is singular skips that step, the others are unaffected) — so that with many initial states the cost follows the distinct points, not their number;
4. points with ``q ≥ q_tol`` are dropped, as are (``exclude_distance_outliers``) points farther from the
   centroid of the initial states than ``outlier_distance_scale`` × their mean distance to it;
5. duplicates closer than ``unique_tol`` (Euclidean) are merged again, keeping the lowest q, and at most
   ``max_points`` points are kept, lowest q first; ``n_found`` says how many distinct points there were,
   so that a cut set is never silent.

The Jacobians, eigenvalues and flip-flop transition runs are computed for the valid points only, a chunk
at a time in a ``while_loop`` (:func:`over_rows`): fixed shapes, cost that follows the points found.

For each kept point: ``J = ∂F/∂h`` and ``∂F/∂x`` by ``jax.jacobian``; eigen-decomposition of the non-normal
J with right and left eigenvectors (``J = R Λ Lᴴ``, ``Lᴴ R = I``), sorted by |λ| (largest first);
``n_unstable = #{|λ| > 1}``; time constants ``τ = 1/|log|λ||`` steps.

Eigen-decomposition: through ``jax.pure_callback`` to SciPy's geev on the host, one matrix per thread of a
host pool (XLA's GPU geev was no faster per matrix than one CPU thread on an H200; XLA's CPU LAPACK
kernels, batched and on 2 host devices at once, deadlock; TPUs have none). Newton solves: XLA's on GPUs,
the host's elsewhere. Code traced for a program on one CPU device (:func:`one_cpu_device`: the group
analysis's second program) uses XLA's own CPU kernels for both instead — the same LAPACK routines, no
deadlock on one device, faster than the callbacks there, and a program without host callbacks is one
that JAX's persistent compilation cache keeps (:mod:`popdyn._compile_cache`).

Registered as the analysis ``dynamics`` (config section ``dynamics``: :class:`FixedPointOptions` and
:class:`TopologyOptions` fields; settings ``dynamics.yaml``): every group's members as two sharded programs
(:func:`analyze_group`), empty point slots cut (:func:`trim_points`), into ``groups/<g>/dynamics.npz``
with each array's dimensions (:func:`dims`; the task's own from ``TaskSpec.topology_dims``), loaded by
``store.load`` under the keys' own names.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
from jaxtyping import Array, Bool, Complex, Float, Int
from threadpoolctl import threadpool_limits

from popdyn import analyses
from popdyn._random import flat
from popdyn.precision import full_precision

StepFn = Callable[[dict, Array, Array], Array]  # F(params, h, x) -> h'


def _bounded(default, low=0, low_ok=False, high=None, high_ok=False, null=None):
    """A numeric setting's field, its allowed range declared: above ``low`` (or at it, ``low_ok``), below
    ``high`` (or at it, ``high_ok``) when given; ``null``: what None means, where None is allowed."""
    return field(default=default, metadata={"range": (low, low_ok, high, high_ok), "null": null})


def _check_bounds(options) -> None:
    """``ValueError`` naming the first field of ``options`` outside its declared range (:func:`_bounded`)."""
    for f in fields(options):
        if "range" not in f.metadata:
            continue
        v, null = getattr(options, f.name), f.metadata["null"]
        low, low_ok, high, high_ok = f.metadata["range"]
        if v is None and null is not None:
            continue
        if (v < low if low_ok else v <= low) or (high is not None and (v > high if high_ok else v >= high)):
            if high is None:
                allowed = f"≥ {low}" if low_ok else f"> {low}"
            else:
                allowed = f"in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
            if null is not None:
                allowed += f" (or null: {null})"
            raise ValueError(f"dynamics.{f.name} = {v!r} is impossible; it must be {allowed}")


@dataclass(frozen=True)
class FixedPointOptions:
    """Settings of the fixed-point search; config section ``dynamics`` uses the same names."""

    n_initial: int = _bounded(1024)  # initial states per condition (trained 64-unit flip-flop networks:
    # 128 found 11–20 of their 21–27 fixed points, 1024 found 18–27; benchmarks/README.md)
    noise: float = _bounded(0.05, low_ok=True)  # std of the Gaussian noise added to the visited states
    # they are drawn from
    steps: int = _bounded(1000)  # Adam steps at most
    lr: float = _bounded(0.05)  # Adam's initial learning rate
    lr_decay: float = _bounded(0.1, high=1, high_ok=True)  # learning rate after `steps` steps: lr · this
    dq_tol: float = _bounded(1e-14, low_ok=True)  # stop when the mean q changes by less than this in one step
    compact_after: int | None = _bounded(250, null="never")  # after this many steps only the points still
    # moving descend on (q ≥ settled_q), compact_chunk at a time: the cost follows the moving points
    settled_q: float = _bounded(1e-10)  # a point whose q is below this after compact_after steps stops there
    compact_chunk: int = _bounded(64)
    newton_steps: int = _bounded(4, low_ok=True)  # Newton refinement steps (0: none)
    q_tol: float = _bounded(1e-8)  # keep points with q below this
    rerun_q_outliers: bool = False  # optimise points with q > outlier_q_scale · median(q) again
    outlier_q_scale: float = _bounded(10.0)
    exclude_distance_outliers: bool = True
    outlier_distance_scale: float = _bounded(10.0)  # × mean distance of the initial states to their centroid
    unique_tol: float = _bounded(1e-3)  # points closer than this are one point
    max_points: int | None = _bounded(128, null="every distinct point")  # fixed points kept per condition
    # (the K of every array; more found are flagged, fp_truncated); None: as many as there are initial
    # states, so that none is ever cut

    def __post_init__(self):
        _check_bounds(self)


class FixedPoints(NamedTuple):
    """Fixed points of one network at one condition x*; K = ``max_points``, D = state size, M = inputs."""

    states: Float[Array, "K D"]
    q: Float[Array, " K"]
    valid: Bool[Array, " K"]
    jacobians: Float[Array, "K D D"]  # ∂F/∂h
    input_jacobians: Float[Array, "K D M"]  # ∂F/∂x
    eigenvalues: Complex[Array, "K D"]  # sorted by |λ|, largest first
    right: Complex[Array, "K D D"]  # columns: right eigenvectors
    left: Complex[Array, "K D D"]  # columns: left eigenvectors, Lᴴ R = I
    n_unstable: Int[Array, " K"]  # #{|λ| > 1}; 0 where not valid
    time_constants: Float[Array, "K D"]  # 1/|log|λ|| in steps
    n_found: Int[Array, ""]  # distinct points that passed every test, before the cut to K (> K: truncated)

    @property
    def count(self) -> Int[Array, ""]:
        return jnp.sum(self.valid)


_ONE_CPU_DEVICE = contextvars.ContextVar("popdyn_one_cpu_device", default=False)


@contextlib.contextmanager
def one_cpu_device():
    """Code traced inside runs in a program on one CPU device (per process): its eig and solve become
    XLA's own CPU LAPACK kernels rather than host callbacks.

    Not the default, because batched over points and run on 2 host devices at once those kernels
    deadlock XLA's thread pool on a 2-core machine (jaxlib 0.10.2), as the batched QR of the orthogonal
    init did (popdyn.train); so do host callbacks there.  On one device they are the same LAPACK
    routines as SciPy's, and faster than the callbacks (a group of 8 vanilla 64-unit networks: 0.66
    against 1.05 s), and the program is one that JAX's persistent compilation cache can keep (it never
    keeps programs with host callbacks)."""
    token = _ONE_CPU_DEVICE.set(True)
    try:
        yield
    finally:
        _ONE_CPU_DEVICE.reset(token)


def _xla_eig() -> bool:
    """Whether eigen-decompositions run as XLA's own kernels (traced under :func:`one_cpu_device`) rather
    than through a host callback."""
    return _ONE_CPU_DEVICE.get()


def _xla_solve() -> bool:
    """Whether the Newton solves run as XLA's own kernels (GPU, or :func:`_xla_eig`) rather than through
    a host callback."""
    return jax.default_backend() in ("gpu", "cuda", "rocm") or _xla_eig()


def speed(step: StepFn, params: dict, h: Float[Array, " D"], x: Float[Array, " M"]) -> Float[Array, ""]:
    """``q(h) = ½‖F(h, x) − h‖²``."""
    return 0.5 * jnp.sum((step(params, h, x) - h) ** 2)


_CPU_CHUNK = 256  # Adam's rows at a time on a CPU: 64-unit vanilla, 2-core Xeon: 263 ns per point-step
# at 256 rows against 443 at 1,024 (and 320 at 64); accelerators take every point at once


def _optimise(step, params, x_star, h, active, opt: FixedPointOptions):
    """Adam on ``Σ q`` over the points where ``active``; the others stay put.

    After ``compact_after`` steps only the points still moving (``q ≥ settled_q``) go on, gathered
    ``compact_chunk`` at a time with their Adam moments (:func:`over_rows`): each point's descent depends
    on that point alone (Adam is elementwise), so a point that goes on follows the very same path, and
    the rest of the descent costs the moving points, not ``n_initial``.  The stopping rule (the chunk's
    Σ q / n changes by less than ``dq_tol`` in a step) applies from then on, per chunk."""
    schedule = optax.exponential_decay(opt.lr, opt.steps, opt.lr_decay)
    adam = optax.adam(schedule)
    q_all = jax.vmap(speed, (None, None, 0, None))
    n = h.shape[0]

    def descend(h, active, start, stop, moments=None, dq_stop=True):
        """Steps ``start`` … ``stop`` of the descent of ``h`` (rows with their Adam ``moments``, fresh
        ones at step 0): ``(h, moments)``."""
        state = adam.init(h)
        if moments is not None:  # optax's Adam state: the per-row moments and scalar step counts
            leaves, tree = jax.tree.flatten(state)
            rows = iter(moments)
            state = jax.tree.unflatten(
                tree, [next(rows) if a.ndim else jnp.full_like(a, start) for a in leaves]
            )

        def total(h):
            q = q_all(step, params, h, x_star)
            return jnp.sum(jnp.where(active, q, 0.0)), q

        def cond(carry):
            i, _, _, q_prev, q_now = carry
            return (i < stop) & ((jnp.abs(q_prev - q_now) >= opt.dq_tol) | (not dq_stop))

        def body(carry):
            i, h, state, _, q_now = carry
            (total_q, _), g = jax.value_and_grad(total, has_aux=True)(h)
            updates, state = adam.update(g, state, h)
            h = jnp.where(active[:, None], optax.apply_updates(h, updates), h)
            return i + 1, h, state, q_now, total_q / n

        inf = jnp.float32(jnp.inf)
        _, h, state, *_ = jax.lax.while_loop(cond, body, (jnp.int32(start), h, state, inf, -inf))
        return h, [a for a in jax.tree.leaves(state) if a.ndim]

    if opt.compact_after is None or opt.compact_after >= opt.steps:
        return descend(h, active, 0, opt.steps)[0]
    # every active point for compact_after steps, a CPU-sized chunk at a time
    chunk = min(n, _CPU_CHUNK) if jax.default_backend() == "cpu" else n
    first = over_rows(lambda r: descend(*r, 0, opt.compact_after, dq_stop=False), (h, active), active, chunk)
    h = jnp.where(active[:, None], first[0], h)
    # then the points still moving, compact_chunk at a time, each chunk with its own stopping rule
    moving = active & (q_all(step, params, h, x_star) >= opt.settled_q)
    rows = (h, moving, *first[1])
    on = over_rows(
        lambda r: descend(*r[:2], opt.compact_after, opt.steps, r[2:])[0], rows, moving, opt.compact_chunk
    )
    return jnp.where(moving[:, None], on, h)


def _newton(step, params, x_star, h, opt: FixedPointOptions, where=None):
    """Newton steps on G(h) = F(h) − h, each kept where it lowers q; only at the points ``where`` (default
    all), a chunk at a time (:func:`over_rows`), so that the cost follows those points."""
    d = h.shape[-1]

    def one(h):
        def body(_, h):
            g = step(params, h, x_star) - h
            j = jax.jacobian(step, argnums=1)(params, h, x_star) - jnp.eye(d, dtype=h.dtype)
            new = h - _solve(j, g)
            better = jnp.all(jnp.isfinite(new)) & (speed(step, params, new, x_star) < 0.5 * jnp.sum(g**2))
            return jnp.where(better, new, h)

        return jax.lax.fori_loop(0, opt.newton_steps, body, h)

    if where is None:
        return jax.vmap(one)(h)
    return jnp.where(where[:, None], over_rows(jax.vmap(one), h, where), h)


def over_rows(f, x, rows, chunk: int = 32):
    """``f`` (batched over the leading axis of the pytree ``x``) of the rows where ``rows``, ``chunk`` at a
    time in a ``while_loop`` that stops after the last such row; other rows of the result are 0.  Fixed
    shapes whose cost follows the rows that matter (found fixed points, not ``max_points`` slots)."""
    k = jax.tree.leaves(x)[0].shape[0]
    chunk = min(chunk, k)
    order = jnp.argsort(~rows, stable=True)  # the rows wanted first
    order = jnp.concatenate([order, jnp.full(-k % chunk, order[-1])])
    n = jnp.sum(rows)
    shapes = jax.eval_shape(f, jax.tree.map(lambda a: a[:chunk], x))
    init = jax.tree.map(lambda s: jnp.zeros((order.shape[0], *s.shape[1:]), s.dtype), shapes)

    def body(carry):
        i, out = carry
        idx = jax.lax.dynamic_slice_in_dim(order, i * chunk, chunk)
        y = f(jax.tree.map(lambda a: a[idx], x))
        out = jax.tree.map(lambda o, v: jax.lax.dynamic_update_slice_in_dim(o, v, i * chunk, 0), out, y)
        return i + 1, out

    _, out = jax.lax.while_loop(lambda c: c[0] * chunk < n, body, (jnp.int32(0), init))
    return jax.tree.map(lambda o: jnp.zeros((k, *o.shape[1:]), o.dtype).at[order[:k]].set(o[:k]), out)


def _unique(states, q, keep, tol, block: int = 32):
    """Greedy merge in order of increasing q: a point is kept unless a kept point lies within ``tol``.

    ``block`` points at a time: their distances to every point at once, then the greedy rule along the
    block; only as far as the last point to ``keep`` (the cost follows those, not the array)."""
    order = jnp.argsort(jnp.where(keep, q, jnp.inf))
    n = states.shape[0]
    pad = -n % block
    s = jnp.concatenate([states[order], jnp.zeros((pad, states.shape[1]), states.dtype)])
    k = jnp.concatenate([keep[order], jnp.zeros(pad, bool)])

    def one_block(carry):
        b, kept = carry
        rows = jax.lax.dynamic_slice_in_dim(s, b * block, block)
        close = jnp.linalg.norm(rows[:, None] - s[None], axis=-1) < tol  # [block, n]

        def one(kept, j):
            i = b * block + j
            return kept.at[i].set(k[i] & ~jnp.any(kept & close[j])), None

        return b + 1, jax.lax.scan(one, kept, jnp.arange(block))[0]

    wanted = jnp.sum(k)
    _, kept = jax.lax.while_loop(
        lambda c: c[0] * block < wanted, one_block, (jnp.int32(0), jnp.zeros_like(k))
    )
    return order, kept[:n]


@functools.cache
def _host_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="popdyn-eig")


def _host_eig(a: np.ndarray, wanted: np.ndarray, vectors: bool = True):
    """LAPACK geev through SciPy on the host, over any leading axes, one matrix per pool thread (LAPACK
    releases the GIL); matrices not ``wanted`` are skipped (λ = 0, R = L = I).  ``vectors=False``: the
    eigenvalues alone (geev without eigenvectors: 41 against 73 ms for 400 × 400 here)."""
    lead, d = a.shape[:-2], a.shape[-1]
    flat = np.asarray(a).reshape(-1, d, d)
    todo = np.flatnonzero(np.broadcast_to(wanted, lead).reshape(-1))
    w = np.zeros((flat.shape[0], d), np.complex64)
    if not vectors:
        with threadpool_limits(1):
            for i, wi in zip(todo, _host_pool().map(lambda i: scipy.linalg.eigvals(flat[i]), todo)):
                w[i] = wi
        return w.reshape(*lead, d)
    vl = np.broadcast_to(np.eye(d, dtype=np.complex64), flat.shape).copy()
    vr = vl.copy()
    with threadpool_limits(1):  # one BLAS thread per matrix: the pool is the parallelism
        parts = _host_pool().map(lambda i: scipy.linalg.eig(flat[i], left=True, right=True), todo)
        for i, (wi, li, ri) in zip(todo, parts):
            w[i], vl[i], vr[i] = wi, li, ri
    return w.reshape(*lead, d), vl.reshape(a.shape), vr.reshape(a.shape)


def _host_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a⁻¹ b`` over any leading axes; NaN for each singular system alone (``np.linalg.solve`` raises
    for the whole batch if one matrix is singular — a GRU whose update gates saturate has J − I = 0
    along the saturated units), so that only that point's Newton step is rejected."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0].astype(np.float32)
    except np.linalg.LinAlgError:
        pass
    lead = b.shape[:-1]
    flat_a, flat_b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, b.shape[-1])
    out = np.full(flat_b.shape, np.nan, np.float32)
    for i in range(len(flat_b)):
        try:
            out[i] = np.linalg.solve(flat_a[i], flat_b[i])
        except np.linalg.LinAlgError:
            continue
    return out.reshape(*lead, b.shape[-1])


def _solve(a, b):
    """``a⁻¹ b`` for one square system (vmapped by the caller); NaN (or ±inf from XLA's LU) where ``a``
    is singular, which the caller's finiteness test rejects."""
    if _xla_solve():
        return jnp.linalg.solve(a, b)

    out = jax.ShapeDtypeStruct(b.shape, jnp.float32)
    return jax.pure_callback(_host_solve, out, a, b, vmap_method="broadcast_all")


def _eig(a, wanted):
    """Eigen-decomposition on the host on every backend, of the matrices ``wanted`` only: on an H200,
    XLA's GPU geev took 5.9 s for 4,096 64 × 64 Jacobians (1.5 ms each, no faster than one CPU thread),
    so a pool of host threads wins; TPUs have no eig at all; XLA's CPU kernel deadlocks on 2 host devices
    and is used only under :func:`one_cpu_device`."""
    if _xla_eig():
        return _xla_geev(a, wanted, vectors=True)
    c = jax.ShapeDtypeStruct(a.shape[:-1], jnp.complex64), jax.ShapeDtypeStruct(a.shape, jnp.complex64)
    return jax.pure_callback(_host_eig, (c[0], c[1], c[1]), a, wanted, vmap_method="expand_dims")


def _xla_geev(a, wanted, vectors: bool):
    """:func:`_host_eig` as XLA's CPU kernel, over any leading axes: the ``wanted`` matrices only, a chunk
    at a time (:func:`over_rows`), the others λ = 0 and R = L = I."""
    lead, d = a.shape[:-2], a.shape[-1]
    flat_a = a.reshape(-1, d, d)
    want = jnp.broadcast_to(wanted, lead).reshape(-1)

    def geev(m):
        out = jax.lax.linalg.eig(m, compute_left_eigenvectors=vectors, compute_right_eigenvectors=vectors)
        return tuple(out) if vectors else out[0]

    out = over_rows(geev, jnp.where(want[:, None, None], flat_a, 0.0), want)
    if not vectors:
        return jnp.where(want[:, None], out, 0.0).reshape(*lead, d)
    w, vl, vr = out
    eye, mask = jnp.eye(d, dtype=jnp.complex64), want[:, None, None]
    return (
        jnp.where(want[:, None], w, 0.0).reshape(*lead, d),
        jnp.where(mask, vl, eye).reshape(a.shape),
        jnp.where(mask, vr, eye).reshape(a.shape),
    )


def _by_modulus(w):
    """The order that sorts eigenvalues by |λ|, largest first."""
    return jnp.argsort(-jnp.abs(w), axis=-1)


def eigenvalues(
    jacobians: Float[Array, "K D D"], wanted: Bool[Array, " K"] | None = None
) -> Complex[Array, "K D"]:
    """Eigenvalues alone, sorted by |λ| (largest first), on the host like :func:`decompose` but without
    eigenvectors (1.8× cheaper for a 400 × 400 Jacobian); matrices not ``wanted`` give λ = 0."""
    if wanted is None:
        wanted = jnp.ones(jacobians.shape[:-2], bool)
    if _xla_eig():
        w = _xla_geev(jacobians, wanted, vectors=False)
    else:
        out = jax.ShapeDtypeStruct(jacobians.shape[:-1], jnp.complex64)
        w = jax.pure_callback(
            partial(_host_eig, vectors=False), out, jacobians, wanted, vmap_method="expand_dims"
        )
    return jnp.take_along_axis(w, _by_modulus(w), axis=-1)


def decompose(jacobians: Float[Array, "K D D"], wanted: Bool[Array, " K"] | None = None):
    """Eigenvalues (sorted by |λ|, largest first), right and left eigenvectors with ``Lᴴ R = I``.

    Matrices not ``wanted`` (default: all are) are not decomposed: λ = 0 and R = L = I there."""
    if wanted is None:
        wanted = jnp.ones(jacobians.shape[:-2], bool)
    w, vl, vr = _eig(jacobians, wanted)
    order = _by_modulus(w)
    w = jnp.take_along_axis(w, order, axis=-1)
    vl = jnp.take_along_axis(vl, order[..., None, :], axis=-1)
    vr = jnp.take_along_axis(vr, order[..., None, :], axis=-1)
    # scale each left vector so that l_iᴴ r_i = 1 (LAPACK normalises both to unit length instead)
    overlap = jnp.sum(jnp.conj(vl) * vr, axis=-2)
    vl = vl / jnp.conj(overlap)[..., None, :]
    return w, vr, vl


def linearise(step: StepFn, params: dict, states, valid, x_star, vectors: bool = True) -> FixedPoints:
    """Jacobians, eigen-decomposition, stability and time constants at given points (``q`` left NaN);
    the Jacobians of points not ``valid`` are not decomposed (λ = 0, R = L = I).  ``vectors=False``:
    eigenvalues alone, ``right`` and ``left`` empty ``[K, D, 0]`` (analyses that need no eigenvectors
    save their cost and the memory of two complex ``[K, D, D]`` arrays)."""

    def jacobians(h):
        both = jax.jacobian(step, argnums=(1, 2))
        return jax.vmap(lambda h: both(params, h, x_star))(h)

    jac, jac_x = over_rows(jacobians, states, valid)  # the valid points only: D JVPs each
    if vectors:
        w, right, left = decompose(jac, valid)
    else:
        w = eigenvalues(jac, valid)
        right = left = jnp.zeros((*jac.shape[:-1], 0), jnp.complex64)
    return _assemble(states, jnp.full(states.shape[:1], jnp.nan), valid, jac, jac_x, w, right, left)


def _assemble(states, q, valid, jac, jac_x, w, right, left) -> FixedPoints:
    mod = jnp.abs(w)
    n_unstable = jnp.where(valid, jnp.sum(mod > 1.0, axis=-1), 0).astype(jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
        tau = 1.0 / jnp.abs(jnp.log(mod))
    return FixedPoints(states, q, valid, jac, jac_x, w, right, left, n_unstable, tau, jnp.sum(valid))


@full_precision
def find_fixed_points(
    step: StepFn,
    params: dict,
    x_star: Float[Array, " M"],
    initial_states: Float[Array, "n D"],
    options: FixedPointOptions = FixedPointOptions(),
) -> FixedPoints:
    """Fixed points of ``h ↦ step(params, h, x_star)`` from ``initial_states`` (module docstring).

    Pure and fixed-shape: ``jax.vmap`` it over networks (``params``) or conditions (``x_star``).
    Equal to :func:`refine` of :func:`descend`: callers that can run the two on different devices do.
    """
    h = descend(step, params, x_star, initial_states, options)
    return refine(step, params, x_star, initial_states, h, options)


@full_precision
def descend(
    step: StepFn,
    params: dict,
    x_star: Float[Array, " M"],
    initial_states: Float[Array, "n D"],
    options: FixedPointOptions = FixedPointOptions(),
) -> Float[Array, "n D"]:
    """Step 1 of the search, Adam from every initial state: the bulk of the work, and pure XLA (no host
    callback), so that it may run sharded over several host devices."""
    everyone = jnp.ones(initial_states.shape[0], bool)
    return _optimise(step, params, x_star, initial_states, everyone, options)


@full_precision
def refine(
    step: StepFn,
    params: dict,
    x_star: Float[Array, " M"],
    initial_states: Float[Array, "n D"],
    h: Float[Array, "n D"],
    options: FixedPointOptions = FixedPointOptions(),
    vectors: bool = True,
) -> FixedPoints:
    """Steps 2–5 of the search from the points :func:`descend` reached, then the linearisation
    (``vectors``: with eigenvectors, :func:`linearise`)."""
    opt = options
    h0 = initial_states
    q_all = jax.vmap(speed, (None, None, 0, None))
    q = q_all(step, params, h, x_star)
    if opt.rerun_q_outliers:
        outliers = q > opt.outlier_q_scale * jnp.median(q)
        h = _optimise(step, params, x_star, h, outliers, opt)
        q = q_all(step, params, h, x_star)
    # many descents end at the same point: Newton refines one of each cluster (the lowest q), so that its
    # cost follows the distinct candidates rather than n_initial
    finite = jnp.isfinite(q) & jnp.all(jnp.isfinite(h), axis=-1)
    order, first = _unique(h, q, finite, opt.unique_tol)
    candidate = jnp.zeros_like(first).at[order].set(first)
    if opt.newton_steps:
        h = _newton(step, params, x_star, h, opt, where=candidate)
        q = q_all(step, params, h, x_star)

    keep = candidate & jnp.isfinite(q) & (q < opt.q_tol) & jnp.all(jnp.isfinite(h), axis=-1)
    if opt.exclude_distance_outliers:
        centre = jnp.mean(h0, axis=0)
        scale = jnp.mean(jnp.linalg.norm(h0 - centre, axis=-1))
        keep &= jnp.linalg.norm(h - centre, axis=-1) <= opt.outlier_distance_scale * jnp.maximum(scale, 1e-6)
    order, kept = _unique(h, q, keep, opt.unique_tol)
    # the kept points first (in order of increasing q), then the rest, cut to max_points
    k = opt.max_points or h.shape[0]
    first = jnp.argsort(~kept, stable=True)[:k]
    idx = order[first]
    valid = kept[first]
    if first.shape[0] < k:  # fewer initial states than max_points: pad with invalid slots
        pad = k - first.shape[0]
        idx = jnp.concatenate([idx, jnp.zeros(pad, idx.dtype)])
        valid = jnp.concatenate([valid, jnp.zeros(pad, bool)])
    states = jnp.where(valid[:, None], h[idx], 0.0)
    fp = linearise(step, params, states, valid, x_star, vectors)
    return fp._replace(q=jnp.where(valid, q[idx], jnp.nan), n_found=jnp.sum(kept).astype(jnp.int32))


# --------------------------------------------------------------------------------------------------
# one trained network of popdyn: initial states, every condition, and the task's topology (SPEC §4)


@dataclass(frozen=True)
class TopologyOptions:
    """Settings of the per-task analyses; config section ``dynamics`` (with :class:`FixedPointOptions`)."""

    transition_runs: int = _bounded(100)  # flip-flop: autonomous runs from each fixed point ([U] §3.1: 100)
    transition_radius: float = _bounded(0.05)  # their initial displacement (Euclidean norm)
    transition_steps: int = _bounded(300)  # steps each run is followed before its end point is read
    readout_decimals: int = _bounded(1, low_ok=True)  # fixed points are ordered by their readout rounded
    # to this many decimals
    graph_size: int = _bounded(16)  # cdi: nearest-neighbour graphs resampled to this many nodes
    burn_in: float = _bounded(0.5, low_ok=True, high=1)  # sine: the orbit's centre is the mean state over
    # the trial after this fraction

    def __post_init__(self):
        _check_bounds(self)


def initial_states(model, task, params: dict, key: Array, options: FixedPointOptions):
    """``[C, n_initial, D]``: per condition of ``task.x_star``, states visited on that condition's probe
    trials (drawn uniformly over trials and steps, with replacement) plus Gaussian noise of std ``noise``."""
    states = model.states(params, task.probe_inputs)  # [P, T, D]
    p, t, d = states.shape
    flat_states = states.reshape(p * t, d)
    cond = jnp.repeat(task.probe_condition, t)
    n_cond = task.x_star.shape[0]

    def draw(c, k):
        k_pick, k_noise = jax.random.split(k)
        mask = (cond == c).astype(jnp.float32)
        idx = jax.random.choice(k_pick, p * t, (options.n_initial,), p=mask / jnp.sum(mask))
        return flat_states[idx] + options.noise * flat(jax.random.normal, k_noise, (options.n_initial, d))

    return jax.vmap(draw)(jnp.arange(n_cond), jax.random.split(key, n_cond))


def _readout_order(y: Float[Array, "K n_out"], valid, decimals: int):
    """Valid points first, lexicographically by their readout rounded to ``decimals``, then q order."""
    r = jnp.round(y, decimals)
    keys = [r[:, j] for j in reversed(range(r.shape[1]))] + [~valid]
    return jnp.lexsort(keys)


def _reorder(fp: FixedPoints, order) -> FixedPoints:
    return jax.tree.map(lambda a: a[order] if a.ndim else a, fp)


_SETTLE_EVERY = 20  # transition runs: steps between the tests of whether every run has settled


def transitions(step, params, fp: FixedPoints, x_star, key, topo: TopologyOptions, chunk: int | None = None):
    """``P[i, j]``: the fraction of autonomous runs started near fixed point i that end at stable point j.

    Each run starts at a displacement of norm ``transition_radius`` in a random direction (the same
    ``transition_runs`` directions around every point) and follows
    ``F(·, x*)`` for ``transition_steps``, or until every run of a chunk lies within
    ``transition_radius / 10`` of a stable point (tested every 20 steps); its end is the nearest stable
    fixed point (the nearest valid one where a network has none).  Rows of invalid points are 0.  The runs of ``chunk`` valid points go
    at a time (default: 2 on a CPU — 200 rows, 41 against 93 ms for 8 on a 2-core Xeon —, 8 elsewhere),
    until every valid point is done: the cost follows the points found, not ``max_points``."""
    k, d = fp.states.shape
    chunk = chunk or (2 if jax.default_backend() == "cpu" else 8)
    # one set of directions for every point: each point's runs are as random as before, and threefry's
    # compile time grows with the number of draws (0.8 s for [128, 100, 64] on a CPU)
    direction = flat(jax.random.normal, key, (topo.transition_runs, d))
    direction /= jnp.linalg.norm(direction, axis=-1, keepdims=True)
    start = fp.states[:, None] + topo.transition_radius * direction[None]  # [K, runs, D]
    run = jax.vmap(step, (None, 0, None))
    stable = fp.valid & (fp.n_unstable == 0)
    targets = jnp.where(jnp.any(stable), stable, fp.valid)

    def nearest(h):  # the target point nearest each state, and its distance
        dist = jnp.where(targets[None], jnp.linalg.norm(h[:, None, :] - fp.states[None], axis=-1), jnp.inf)
        return jnp.argmin(dist, axis=-1), jnp.min(dist, axis=-1)

    def ends(rows):  # [chunk, runs, D] → the stable point each run ends at, [chunk, runs]
        start, valid = rows
        wanted = jnp.repeat(valid, start.shape[1])

        def cond(carry):
            t, _, settled = carry
            return (t < topo.transition_steps) & ~settled

        def body(carry):
            t, h, _ = carry
            n = jnp.minimum(_SETTLE_EVERY, topo.transition_steps - t)
            h = jax.lax.fori_loop(0, n, lambda _, h: run(params, h, x_star), h)
            # every run within a tenth of the start radius of a stable point stays there: stop
            settled = jnp.any(stable) & jnp.all(~wanted | (nearest(h)[1] < 0.1 * topo.transition_radius))
            return t + n, h, settled

        _, h, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), start.reshape(-1, d), jnp.bool_(False)))
        return nearest(h)[0].reshape(start.shape[:2])

    ends = over_rows(ends, (start, fp.valid), fp.valid, chunk)
    p = jax.nn.one_hot(ends, k).mean(axis=1)
    return jnp.where(fp.valid[:, None] & targets[None], p, 0.0)


def _oscillation(fp: FixedPoints, centre):
    """Sine: the valid point nearest the orbit's centre and its oscillatory pair's angle and modulus."""
    dist = jnp.where(fp.valid, jnp.linalg.norm(fp.states - centre, axis=-1), jnp.inf)
    i = jnp.argmin(dist)
    w = fp.eigenvalues[i]
    complex_ = jnp.abs(w.imag) > 1e-6
    j = jnp.argmax(jnp.where(complex_, jnp.abs(w), -1.0))
    ok = fp.valid[i] & jnp.any(complex_)
    freq = jnp.abs(jnp.angle(w[j])) / (2 * jnp.pi)
    return jnp.where(ok, freq, jnp.nan), jnp.where(ok, jnp.abs(w[j]), jnp.nan), fp.states[i], fp.valid[i]


def _nn_graph(states, valid, size: int):
    """Adjacency of each valid point to its nearest valid neighbour (symmetrised), points in the given
    order, resampled to ``size`` nodes by nearest index (``linspace(0, n−1, size)``)."""
    k = states.shape[0]
    n = jnp.sum(valid)
    dist = jnp.linalg.norm(states[:, None] - states[None], axis=-1)
    allowed = valid[:, None] & valid[None] & ~jnp.eye(k, dtype=bool)
    nearest = jnp.argmin(jnp.where(allowed, dist, jnp.inf), axis=-1)
    a = jax.nn.one_hot(nearest, k) * (valid & (n > 1))[:, None]
    a = jnp.maximum(a, a.T)
    idx = jnp.round(jnp.linspace(0.0, jnp.maximum(n - 1, 0).astype(jnp.float32), size)).astype(jnp.int32)
    return jnp.where(n > 0, a[idx][:, idx], 0.0)


def linear_response(fp: FixedPoints, readout_kernel, input_index: int, horizon: int):
    """CDI mode ablation: the readout of the linearised system ``horizon − 1`` steps after a unit pulse on
    input ``input_index``, keeping the m largest-|λ| modes, for m = 1..D: ``[K, D]`` (NaN where invalid).

    ``y_m = Re Σ_{k ≤ m} (R r_k) λ_k^(horizon−1) (l_kᴴ b)``, b = ``∂F/∂x[:, input_index]``."""
    d = fp.states.shape[-1]
    n_out = readout_kernel.shape[-1]
    r_out = jnp.zeros((n_out, d)).at[:, : readout_kernel.shape[0]].set(readout_kernel.T)
    b = fp.input_jacobians[:, :, input_index]  # [K, D]
    into = jnp.einsum("kdm,kd->km", jnp.conj(fp.left), b)  # l_mᴴ b
    out = jnp.einsum("od,kdm->kom", r_out, fp.right)[:, 0]  # first readout: R r_m
    terms = out * fp.eigenvalues ** (horizon - 1) * into
    return jnp.where(fp.valid[:, None], jnp.cumsum(terms, axis=-1).real, jnp.nan)


def mode_overlap(fp: FixedPoints, fraction: float = 0.95) -> Float[Array, "K D"]:
    """How much of each mode lies in the fixed-point manifold ([A] Fig. 2): ``‖P r_a‖ / ‖r_a‖`` for the
    right eigenvector ``r_a`` of every mode at every point, ``P`` the projection onto the manifold's
    principal subspace — the fewest PCA directions of the valid points holding ``fraction`` of their
    variance ([A] does not say how many; 95 % is its dimension threshold).  NaN at points not valid."""
    w = fp.valid.astype(fp.states.dtype)
    n = jnp.maximum(w.sum(), 1.0)
    centred = (fp.states - (w @ fp.states) / n) * w[:, None]
    mu, vecs = jnp.linalg.eigh(centred.T @ centred / n)
    mu, vecs = mu[::-1], vecs[:, ::-1]
    explained = jnp.cumsum(mu) / jnp.maximum(mu.sum(), 1e-30)
    dim = jnp.searchsorted(explained, fraction - 1e-6) + 1
    basis = jnp.where(jnp.arange(mu.shape[0]) < dim, vecs, 0.0)  # [D, D]: the first `dim` columns
    with jax.numpy_dtype_promotion("standard"):
        inside = jnp.linalg.norm(jnp.einsum("dj,kda->kja", basis, fp.right), axis=1)
        ratio = inside / jnp.linalg.norm(fp.right, axis=1)
    return jnp.where(fp.valid[:, None], ratio, jnp.nan)


@full_precision
def analyze_one(model, task, fp_opts: FixedPointOptions, topo: TopologyOptions, params: dict, key: Array):
    """Every analysis of one trained network: a dict of fixed-shape arrays (C conditions, K points).

    Equal to :func:`analyze_finish` of :func:`analyze_descend` (the split ``popdyn.analysis`` runs)."""
    return analyze_finish(
        model, task, fp_opts, topo, params, key, *analyze_descend(model, task, fp_opts, params, key)
    )


@full_precision
def analyze_descend(model, task, fp_opts: FixedPointOptions, params: dict, key: Array):
    """Initial states and their Adam descent for every condition, ``([C, n, D], [C, n, D])``: pure XLA."""
    k_init, _ = jax.random.split(key)
    h0 = initial_states(model, task, params, k_init, fp_opts)
    h = jax.vmap(lambda x, h: descend(model.step, params["cell"], x, h, fp_opts))(task.x_star, h0)
    return h0, h


@full_precision
def analyze_finish(model, task, fp_opts, topo, params: dict, key: Array, h0, h):
    """The rest of :func:`analyze_one` from :func:`analyze_descend`'s output (LAPACK work: host callbacks
    on a CPU, XLA's kernels when traced under :func:`one_cpu_device`)."""
    _, k_trans = jax.random.split(key)
    cell = params["cell"]
    vectors = task.classification or task.spec.vectors  # mode_overlap, linear_response
    fps = jax.vmap(lambda x, a, b: refine(model.step, cell, x, a, b, fp_opts, vectors))(task.x_star, h0, h)
    y = model.readout(params, fps.states)  # [C, K, n_out]
    order = jax.vmap(partial(_readout_order, decimals=topo.readout_decimals))(y, fps.valid)
    fps = jax.vmap(_reorder)(fps, order)
    y = jnp.take_along_axis(y, order[..., None], axis=1)
    out = {
        "fp_states": fps.states,
        "fp_q": fps.q,
        "fp_valid": fps.valid,
        "fp_readout": jnp.where(fps.valid[..., None], y, jnp.nan),
        "fp_n_unstable": fps.n_unstable,
        "fp_eigenvalues": jnp.where(fps.valid[..., None], fps.eigenvalues, jnp.nan),
        "n_fixed_points": jnp.sum(fps.valid, axis=-1),
        "n_stable": jnp.sum(fps.valid & (fps.n_unstable == 0), axis=-1),
        # never cut silently: how many distinct points passed every test, and whether max_points cut them
        "fp_n_found": fps.n_found,
        "fp_truncated": fps.n_found > fps.valid.shape[-1],
    }
    if task.classification:  # [A] Fig. 2: each mode's time constant and its share in the manifold
        out["fp_time_constants"] = jnp.where(fps.valid[..., None], fps.time_constants, jnp.nan)
        out["fp_mode_overlap"] = jax.vmap(mode_overlap)(fps)
    hook = task.spec.topology  # the task's own topology ([U]: flipflop, sine, cdi); none: nothing more
    if hook is not None:
        out.update(hook(model, task, params, fps, topo, k_trans))
    return out


# --------------------------------------------------------------------------------------------------
# the analysis of a run: every group's members, as two sharded programs (config section ``dynamics``)


@dataclass(frozen=True)
class DynamicsOptions:
    """The ``dynamics`` section: the search's and the per-task analyses' settings (one section, one
    ``dynamics.yaml``; ``popdyn.config`` parses it into ``Sweep.fixed_points`` and ``Sweep.topology``)."""

    fixed_points: FixedPointOptions = FixedPointOptions()
    topology: TopologyOptions = TopologyOptions()


def member_keys(seed: int, members: np.ndarray) -> np.ndarray:
    """One raw key per member id, from the config's seed: independent of grouping and devices."""
    from popdyn.population import member_key

    return np.stack([jax.random.key_data(member_key(seed, f"dynamics/{m}")) for m in members])


def analyze_group(sweep, gp, devices=None) -> dict[str, np.ndarray]:
    """Every member of one group, as two compiled programs: ``{name: [members, ...]}``.

    The Adam descent (:func:`analyze_descend`, most of the time, pure XLA) is sharded over every
    device; the rest (:func:`analyze_finish`) as well on accelerators, but on one host device per
    process on a CPU (``hosts.finish_devices``), where its LAPACK work (eig, solve) runs as XLA's own CPU
    kernels (:func:`one_cpu_device`): sharded over 2 host devices on 2 cores, those kernels (and host
    callbacks alike) wait forever for an XLA pool thread (jaxlib 0.10.2).  The programs are
    built once per (model, task, settings, devices) and reused by every group of that kind (compiling
    them takes seconds on a CPU: ≈ 7 s for a 64-unit flip-flop group on 2 cores)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from popdyn.hosts import finish_devices, to_host
    from popdyn.population import padded_size

    devices = tuple(devices or jax.devices())
    n = len(gp.member)
    keys = member_keys(sweep.seed, gp.member)
    descend, finish = _group_programs(
        gp.model, sweep.task, sweep.fixed_points, sweep.topology, devices, sweep.member_batch
    )

    def run(program, devs, *args):
        size = padded_size(n, len(devs))
        idx = np.concatenate([np.arange(n), np.zeros(size - n, int)])
        sharding = NamedSharding(Mesh(np.array(devs), ("member",)), PartitionSpec("member"))
        out = program(
            *(jax.device_put(jax.tree.map(lambda a: np.asarray(a)[idx], a), sharding) for a in args)
        )
        return jax.tree.map(lambda v: v[:n], to_host(out))

    h0, h = run(descend, devices, gp.params, keys)
    return run(finish, finish_devices(devices), gp.params, keys, h0, h)


@functools.cache
def _group_programs(model, task, fp_opts, topo, devices: tuple, member_batch):
    """The two jitted population programs of :func:`analyze_group` (descend on ``devices``, finish on
    ``finish_devices(devices)``), shared by every group of that model, task and settings."""
    from jax.sharding import Mesh

    from popdyn.hosts import finish_devices
    from popdyn.population import population_program

    descend = partial(analyze_descend, model, task, fp_opts)
    finish = partial(analyze_finish, model, task, fp_opts, topo)

    def descend_member(params, raw_key):
        return descend(params, jax.random.wrap_key_data(raw_key))

    finish_devs = finish_devices(devices)
    # on a CPU one device per process: XLA's own LAPACK kernels, no host callbacks (one_cpu_device)
    lapack = one_cpu_device if finish_devs[0].platform == "cpu" else contextlib.nullcontext

    def finish_member(params, raw_key, h0, h):
        with lapack():
            return finish(params, jax.random.wrap_key_data(raw_key), h0, h)

    def program(f, devs):
        return population_program(f, Mesh(np.array(devs), ("member",)), member_batch, unbatched_one=True)

    return program(descend_member, devices), program(finish_member, finish_devs)


# each stored array's dimensions after `member` (groups/<g>/dynamics.npz)
DIMS = {
    "n_fixed_points": ("condition",),
    "n_stable": ("condition",),
    "fp_q": ("condition", "fixed_point"),
    "fp_valid": ("condition", "fixed_point"),
    "fp_n_unstable": ("condition", "fixed_point"),
    "fp_readout": ("condition", "fixed_point", "output"),
    "fp_eigenvalues": ("condition", "fixed_point", "mode"),
    "fp_n_found": ("condition",),
    "fp_truncated": ("condition",),
}
CLASSIFICATION_DIMS = {  # [A] Fig. 2, classification tasks only
    "fp_time_constants": ("condition", "fixed_point", "mode"),
    "fp_mode_overlap": ("condition", "fixed_point", "mode"),
}
FILE_ONLY = {"fp_states": ("condition", "fixed_point", "state")}  # in dynamics.npz, not in store.load


def dims(task) -> dict[str, tuple[str, ...]]:
    """The dimensions of what :func:`analyze_finish` returns for ``task``: the fixed points', [A]'s
    per-mode arrays for a classifier, and the task's own topology arrays (``TaskSpec.topology_dims``)."""
    return {**DIMS, **(CLASSIFICATION_DIMS if task.classification else {}), **task.spec.topology_dims}


def trim_points(arrays: dict[str, np.ndarray], dims: Mapping[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """A group's analysis with every ``fixed_point`` axis (``dims``) cut to the most valid points any
    member has at any condition (valid points come first in every slot order), at least one: the arrays
    are sized for ``max_points`` slots, most of them empty."""
    if "fp_valid" not in arrays:
        return arrays
    keep = max(1, int(np.asarray(arrays["fp_valid"]).sum(axis=-1).max(initial=0)))
    out = {}
    for k, a in arrays.items():
        if "fixed_point" in dims.get(k, ()):
            cut = [slice(None)] * a.ndim
            for i, d in enumerate(dims[k]):
                if d in ("fixed_point", "fixed_point_to"):
                    cut[i + 1] = slice(0, keep)
            a = a[tuple(cut)]
        out[k] = a
    return out


def summary(out: dict, options: DynamicsOptions) -> str:
    """The log line of a group (and a warning where ``max_points`` cut some network's set)."""
    import logging

    cut = np.asarray(out["fp_truncated"]).any(axis=1)
    if cut.any():
        k = options.fixed_points.max_points
        logging.getLogger("popdyn").warning(
            "%d of %d networks found more distinct fixed points than dynamics.max_points = %d (up to %d) and "
            "kept only the lowest-q %d: their sets are incomplete (fp_truncated); raise dynamics.max_points "
            "to keep every point", int(cut.sum()), len(cut), k, int(np.nanmax(out["fp_n_found"])), k,
        )  # fmt: skip
    return (f"fixed points per condition median {_nanmedian(out['n_fixed_points'], axis=0).tolist()}, "
            f"stable {_nanmedian(out['n_stable'], axis=0).tolist()}")  # fmt: skip


def _nanmedian(a, axis=None):
    """``np.nanmedian`` without the warning of an all-NaN slice (NaN there)."""
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(a, np.float64), axis=axis)


def _plain(options: DynamicsOptions) -> dict:
    return {**asdict(options.fixed_points), **asdict(options.topology)}


analyses.register(
    analyses.Analysis(
        "dynamics", DynamicsOptions, None, dims=dims,
        group=lambda sweep, options, gp, devices, results: analyze_group(sweep, gp, devices),
        prefix="", options_of=lambda sweep: DynamicsOptions(sweep.fixed_points, sweep.topology),
        settings=_plain, legacy_ok=True, file_only=FILE_ONLY, finish=trim_points, summary=summary,
        doc=__doc__,
    )
)  # fmt: skip
