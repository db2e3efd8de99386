"""Training dynamics of [R] (Ribeiro et al. 2020, SPEC §6): attractors, contractivity and smoothness.

Every function is written for ONE network (``params`` as :meth:`popdyn.model.Model.init` returns them); a
population is the same dict with a leading member axis, and ``jax.vmap`` at the call site serves it::

    model = Model("lstm", "tanh", 200, 1, 1)
    population = jax.vmap(model.init)(jax.random.split(key, 16))       # every leaf [16, ...]
    y, dy = jax.jit(jax.vmap(lambda p: bifurcation(model, p, jnp.array([0.218]), 1600, 1200)))(population)
    # y, dy: [16, 400, 1] — one bifurcation-diagram column per member at this training step

Stacking the parameters recorded at several epochs instead of several members gives [R] Fig. 4/7 (the
diagram over training) with the same call.

- :func:`bifurcation` — steady-state outputs ``y_t`` and ``y_t − y_{t−1}`` under a constant input ([R] §3.3,
  §5, Figs. 1a, 4, 7).
- :func:`contractivity` — largest |eigenvalue| and spectral norm of ``∂F/∂s`` over visited states ([R] §3.2,
  §4.2 remark on L_f and eigenvalues).
- :func:`loss_line` — the cost along a ray in parameter space, ``V(s·θ)`` ([R] §4.1, Fig. 1b).
- :func:`sine_generation`, :func:`relevant_symbols` — the two synthetic datasets of [R] §5.1 and §5.2
  (``popdyn.tasks.sinegen``, ``popdyn.tasks.symbols``, re-exported; the tasks ``sinegen`` and ``symbols``).
- :func:`orthogonal`, :func:`project_contractive` — the maths of [R]'s two constrained cells, oRNN
  (Lezcano-Casado & Martínez-Rubio 2019) and sLSTM (Miller & Hardt 2019), the archs ``ornn`` and
  ``slstm`` (``popdyn/cells/ornn.py``, ``popdyn/cells/slstm.py``; re-exported).

Registered as the analysis ``record`` (config section ``record``, :class:`RecordOptions`; settings
``record.yaml``): :func:`record_one` of every member at every step saved during training
(``train.record_every``; groups without saved parameters have nothing to record) into
``groups/<g>/training.npz`` over ``record_step`` (and ``scale``), loaded by ``store.load`` under the keys'
own names (``bif_y``, ``spectral_norm``, …).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from popdyn import analyses, store
from popdyn.analyses.dynamics import eigenvalues
from popdyn.cells import (  # noqa: F401  (the constrained cells' maths, re-exported)
    SLSTM_FORGET_BIAS_MAX,
    SLSTM_FORGET_INPUT_CAP,
    SLSTM_RECURRENT_CAPS,
    orthogonal,
    project_contractive,
)
from popdyn.precision import full_precision
from popdyn.tasks.sinegen import SPACINGS, sine_generation  # noqa: F401
from popdyn.tasks.symbols import CLASSES, SYMBOLS, relevant_symbols  # noqa: F401

# --------------------------------------------------------------------------------------------------
# attractors, contractivity, smoothness


@full_precision
def bifurcation(
    model,
    params: dict,
    x_const: Float[Array, " n_in"],
    steps: int,
    burn_in: int,
    state0: Float[Array, " state"] | None = None,
) -> tuple[Float[Array, "kept n_out"], Float[Array, "kept n_out"]]:
    """A column of [R]'s bifurcation diagram: ``s_t = F(s_{t−1}, x̄)``, ``y_t = R h_t + d``, t > burn_in.

    The network is driven from ``state0`` (default ``s_0 = 0``, popdyn's initial state) by the constant
    input ``x_const`` for ``steps`` steps; returns ``y_t`` and ``y_t − y_{t−1}`` for ``t = burn_in+1 …
    steps`` (``y_0 = R h_0 + d``), each ``[steps − burn_in, n_out]``. [R] §4.1 simulates 200 steps and
    discards 100; §5.1 burns in 1200 steps (Fig. 4, x̄ = 0.218), §5.2 400 (Fig. 7, x̄ a one-hot symbol).

    ``model``, ``steps`` and ``burn_in`` are static under ``jit``; vmap over ``params`` (members or
    recorded epochs), ``x_const`` (inputs) or ``state0`` (initial states: [R]'s released code starts 10
    orbits from states of std 100, the paper's text does not say).
    """
    for name, value, low in (("steps", steps, 1), ("burn_in", burn_in, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"bifurcation: {name} must be an integer ≥ {low}, got {value!r}")
    if burn_in >= steps:
        raise ValueError(f"bifurcation: burn_in must be in [0, steps − 1] = [0, {steps - 1}], got {burn_in}")
    cell = params["cell"]
    dtype = params["readout"]["kernel"].dtype
    x = jnp.asarray(x_const, dtype)
    s = jnp.zeros((model.state_size,), dtype) if state0 is None else jnp.asarray(state0, dtype)
    # the burn-in keeps no history: a 1200-step transient of a 200-unit lstm is never stored
    s = jax.lax.fori_loop(0, burn_in, lambda _, s: model.step(cell, s, x), s)

    def body(carry, _):
        s, y_prev = carry
        s = model.step(cell, s, x)
        y = model.readout(params, s)
        return (s, y), (y, y - y_prev)

    _, (y, dy) = jax.lax.scan(body, (s, model.readout(params, s)), None, length=steps - burn_in)
    return y, dy


class Contractivity(NamedTuple):
    """Largest |eigenvalue| and spectral norm of ``J_t = ∂F/∂s (s_{t−1}, x_t)`` over the visited states."""

    spectral_radius: Float[Array, ""]  # max over (trial, t) of max |λ(J_t)|
    spectral_norm: Float[Array, ""]  # max over (trial, t) of σ_max(J_t) = ‖J_t‖₂
    radii: Float[Array, "batch time"]  # max |λ(J_t)| per state
    norms: Float[Array, "batch time"]  # ‖J_t‖₂ per state


@full_precision
def contractivity(
    model, params: dict, inputs: Float[Array, "batch time n_in"], chunk: int = 256
) -> Contractivity:
    """``max_t ρ(J_t)``, ``max_t ‖J_t‖₂`` with ``J_t = ∂F/∂s (s_{t−1}, x_t)``, ``s_0 = 0`` ([R] §3.2, §4.2).

    ``J_t`` is the Jacobian of the step actually taken at time t — the factor that multiplies a state
    perturbation (and, transposed, a back-propagated gradient) there, so ``‖J_t‖₂ < 1`` at every step is
    the contraction of [R] §3.2 along the trajectory and ``ρ(J_t) > 1`` the necessary condition for
    exploding gradients of the §4.2 remark. States are the full state (lstm ``[h; c]``, 2N).

    ``J_t`` by ``jax.jacfwd`` of ``model.step``; eigenvalues through :func:`popdyn.analyses.dynamics.eigenvalues`,
    singular values by ``jnp.linalg.svd``. The ``batch × time`` states are processed ``chunk`` at a time
    (``lax.map``) so that only ``chunk`` D × D Jacobians exist at once (a 200-unit lstm on 100 × 400 steps
    would otherwise hold 26 GB). ``model`` and ``chunk`` are static under ``jit``.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise ValueError(f"contractivity: chunk must be a positive integer, got {chunk!r}")
    cell = params["cell"]
    states = model.states(params, inputs)  # [B, T, D]: s_1 … s_T
    b, t, d = states.shape
    before = jnp.concatenate([jnp.zeros_like(states[:, :1]), states[:, :-1]], axis=1)  # s_0 … s_{T−1}
    x = inputs.astype(states.dtype)

    def one(sx):
        s, xt = sx
        jac = jax.jacfwd(model.step, argnums=1)(cell, s, xt)
        return jnp.abs(eigenvalues(jac)[0]), jnp.linalg.svd(jac, compute_uv=False)[0]

    radii, norms = jax.lax.map(one, (before.reshape(b * t, d), x.reshape(b * t, -1)), batch_size=int(chunk))
    radii, norms = radii.reshape(b, t), norms.reshape(b, t)
    return Contractivity(jnp.max(radii), jnp.max(norms), radii, norms)


def loss_line(loss_fn: Callable[[Any], Array], params: Any, scales: Float[Array, " s"]) -> Float[Array, " s"]:
    """``V(s·θ)`` for every s in ``scales`` ([R] §4.1, Fig. 1b: θ(s) = s·θ_true).

    Every leaf of ``params`` is scaled; to move along part of the parameters only (e.g. the cell, with the
    readout fixed) pass that part and close ``loss_fn`` over the rest. ``loss_fn(params) -> scalar`` must be
    traceable; the scales are ``jax.vmap``-ed, so memory grows with ``len(scales)`` — split long lines.
    """

    def at(s):
        return loss_fn(jax.tree.map(lambda p: jnp.asarray(s, p.dtype) * p, params))

    return jax.vmap(at)(jnp.asarray(scales))


# --------------------------------------------------------------------------------------------------
# recording through training ([R] Figs. 4–7): parameters saved every `train.record_every` steps, then
# measured at every saved step


@dataclass(frozen=True)
class RecordOptions:
    """Settings of the measurements at each saved training step (config section ``record``).

    ``x_const``: the bifurcation diagram's constant input (``None``: zeros; [R] Fig. 4 uses 0.218 for
    sinegen, Fig. 7 a one-hot symbol); ``steps``/``burn_in`` as :func:`bifurcation`; contractivity over
    the states of the first ``probes`` probe trials; ``V(s·θ)`` at ``scales`` on those trials."""

    x_const: tuple[float, ...] | None = None
    steps: int = 600
    burn_in: int = 400
    probes: int = 8
    scales: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)

    def __post_init__(self):
        for name, value, low in (
            ("steps", self.steps, 1),
            ("burn_in", self.burn_in, 0),
            ("probes", self.probes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"record.{name} must be an integer ≥ {low}, got {value!r}")
        if self.burn_in >= self.steps:
            raise ValueError(f"record.burn_in must be below record.steps = {self.steps}, got {self.burn_in}")
        if not self.scales:
            raise ValueError("record.scales must list at least one scale")


def record_one(model, task, options: RecordOptions, params: dict) -> dict[str, Array]:
    """[R]'s measurements of one network at one saved step: the bifurcation column (``bif_y``,
    ``bif_dy`` [kept, n_out]), the largest ``spectral_radius`` and ``spectral_norm`` of ``∂F/∂s`` over the
    probe trials' states, and ``loss_line`` = V(s·θ) [scales] (the task's loss on those trials)."""
    from popdyn.train import task_loss  # the training objective, not a dependency of the analyses above

    x_const = jnp.zeros((task.n_in,)) if options.x_const is None else jnp.asarray(options.x_const)
    y, dy = bifurcation(model, params, x_const, options.steps, options.burn_in)
    inputs, targets = task.probe_inputs[: options.probes], task.probe_targets[: options.probes]
    c = contractivity(model, params, inputs)
    line = loss_line(
        lambda p: task_loss(model, task.loss, p, inputs, targets), params, jnp.asarray(options.scales)
    )
    return {"bif_y": y, "bif_dy": dy, "spectral_radius": c.spectral_radius, "spectral_norm": c.spectral_norm,
            "loss_line": line}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# the analysis of a run: every saved step of every member


class Snapshots(NamedTuple):
    """A group's parameters saved during training: ``params`` leaves ``[steps, members, ...]``."""

    model: Any
    params: dict
    member: Any
    steps: Any


def snapshots(run_dir, group: str, gp) -> Snapshots | None:
    """The group's saved parameters (``store.load_snapshots``; ``gp``: its final ones, for the model),
    or None where it saved none."""
    snaps = store.load_snapshots(run_dir, group)
    if snaps is None:
        return None
    steps, params, member = snaps
    return Snapshots(gp.model, params, member, steps)


def record_group(sweep, options: RecordOptions, snaps: Snapshots, devices, results) -> dict:
    """:func:`record_one` of every member at every saved step: one compiled program per group, vmapped
    over its members and run once per saved step (vmapping the steps too would hold every step's
    Jacobians at once); ``{key: [members, steps, ...]}``."""
    program = jax.jit(jax.vmap(partial(record_one, snaps.model, sweep.task, options)))
    per_step = [program(jax.tree.map(lambda a, i=i: a[i], snaps.params)) for i in range(len(snaps.steps))]
    return {k: np.stack([np.asarray(o[k]) for o in per_step], axis=1) for k in per_step[0]}


def _summary(out: dict, options: RecordOptions) -> str:
    return (f"through training: {out['spectral_norm'].shape[1]} saved steps; final spectral norm median "
            f"{float(np.median(out['spectral_norm'][:, -1])):.3g}, radius "
            f"{float(np.median(out['spectral_radius'][:, -1])):.3g}")  # fmt: skip


analyses.register(
    analyses.Analysis(
        "record", RecordOptions, record_one,
        dims={"bif_y": ("record_step", "bif_t", "output"), "bif_dy": ("record_step", "bif_t", "output"),
              "spectral_radius": ("record_step",), "spectral_norm": ("record_step",),
              "loss_line": ("record_step", "scale")},
        group=record_group, source=snapshots, has_source=store.has_snapshots, results=store.TRAINING,
        settings_name=store.RECORD_CONFIG, prefix="", options_of=lambda sweep: sweep.record, summary=_summary,
        coords=lambda options, snaps: {"record_step": snaps.steps, "scale": np.array(options.scales)},
        doc=__doc__,
    )
)  # fmt: skip
