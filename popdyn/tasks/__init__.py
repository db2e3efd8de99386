"""popdyn's tasks: a registry of task families, one file each (SPEC §2).

A :class:`Task` is a frozen, hashable description (name, sizes, every parameter) — it can close over a
training function or be a static ``jax.jit`` argument. ``task.sample(key, batch)`` draws a batch of
``(inputs [batch, T, n_in], targets [batch, T, n_out])`` in pure JAX, so it traces under ``jit`` and maps
under ``vmap`` over keys. ``task.probe_inputs`` is the one fixed set of inputs that every network is driven
with when hidden states are compared, and ``task.x_star`` holds the static condition inputs at which
fixed points are sought ([U] §2.3: time-varying input dimensions set to 0).

What a task *is* lives in its :class:`TaskSpec`, registered under its names when its module is imported;
every method and property of :class:`Task` delegates to ``get(task.name)``. This package imports every
module in it, so a new task family is one new file (``flipflop.py`` is the shortest example); code outside
the package registers its own spec with :func:`register`.

Build tasks with :func:`make_task`, which fills in the spec's defaults and validates every value::

    task = make_task("flipflop", K=3, T=100, p=0.05)
    inputs, targets = jax.jit(task.sample, static_argnums=1)(jax.random.key(0), 64)
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from popdyn._members import import_members


class TaskError(ValueError):
    """A task name, parameter name or parameter value that popdyn cannot build a task from."""


@dataclass(frozen=True)
class Task:
    """One task: static settings only, hashable, so it can be a static ``jit`` argument.

    Build it with :func:`make_task`, which validates (the constructor does not). ``params`` holds sorted
    ``(name, value)`` pairs of every parameter, defaults included, so two tasks built from the same
    settings compare and hash equal. Everything else is the registered :class:`TaskSpec`'s.
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
    def spec(self) -> TaskSpec:
        """The registered :class:`TaskSpec` of this task's name."""
        return get(self.name)

    @property
    def loss(self) -> str:
        """``mse`` (every step, [U]), ``softmax`` or ``sigmoid`` (cross-entropy of the final state, [A]),
        ``lm`` (softmax over the next token at every step, [V])."""
        return self.spec.loss(self)

    @property
    def classification(self) -> bool:
        """Scored on its final state (softmax or sigmoid classes, [A], [R] §5.2)."""
        return self.loss in ("softmax", "sigmoid")

    @property
    def words(self) -> tuple[str, ...]:
        """The vocabulary of a text task, one word per input dimension — per token id for ``corpus`` —
        (empty for the others)."""
        return self.spec.words(self)

    @property
    def vocab(self) -> int:
        """Token ids the inputs take (0: inputs are vectors, no embedding)."""
        return self.spec.vocab(self)

    @property
    def corpus(self) -> Any:
        """The tokenised dataset of a ``corpus`` task (read once per process and kept)."""
        return self.spec.corpus(self)

    @property
    def data(self) -> dict[str, Array] | None:
        """Arrays the training program takes as an argument rather than as constants: a ``corpus``
        task's training split ``{"ids", "targets"}``; ``None`` for the generated tasks."""
        return self.spec.data(self)

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
        return self.spec.sample(self, key, int(batch), data)

    # ----------------------------------------------------------------------------------------------
    # analysis inputs. Recomputed on every read rather than cached on the Task: the first read may happen
    # inside a trace, and a cached tracer would outlive it. The computation itself is compiled once.
    @property
    def probe_inputs(self) -> Float[Array, "n_probe time n_in"]:
        """The fixed probe set shared by every network, ``[n_probe_total, T, n_in]`` float32 (each spec's
        :meth:`TaskSpec.probes` says which)."""
        return self.spec.probes(self)[0]

    @property
    def probe_targets(self) -> Float[Array, "n_probe time n_out"]:
        """Targets of :attr:`probe_inputs`, ``[n_probe_total, T, n_out]`` float32."""
        return self.spec.probes(self)[1]

    @property
    def probe_condition(self) -> Int[Array, " n_probe"]:
        """For each probe trial, the row of :attr:`x_star` it belongs to, ``[n_probe_total]`` int32."""
        return jnp.asarray(self.spec.probe_condition(self))

    @property
    def x_star(self) -> Float[Array, "conditions n_in"]:
        """Static condition inputs x* for fixed points ([U] §2.3), ``[C, n_in]`` float32."""
        return jnp.asarray(self.spec.x_star(self))

    def validation(self, key: PRNGKeyArray, batch: int) -> tuple[Array, Array]:
        """A held-out batch for choosing hyper-parameters: ``sample`` (a fresh draw) for the generated
        tasks; ``batch`` documents of the test split for ``corpus`` (all of them if it has fewer)."""
        return self.spec.validation(self, key, batch)


class TaskSpec:
    """What a task family is: subclass it in one file of this package (or anywhere) and :func:`register`
    an instance.

    ``names`` are the config values it answers to; ``defaults[name]`` every parameter it accepts with its
    default. The methods receive the built :class:`Task`. The defaults below fit a task with one
    condition: probes are ``sample(key(probe_seed), n_probe)`` and fixed points are sought at x* = 0.

    Hooks of the analyses and figures (``None``: that analysis or figure is not made for the task):

    - ``topology(task, fps, states, probe_states, topo, cell)`` → dict of extra per-network arrays
      (``popdyn.analyses.dynamics.analyze_one``); ``vectors`` says whether it needs the fixed points'
      eigenvectors; ``topology_dims`` names each array's dimensions after ``member`` (stored in
      dynamics.npz, read back by ``store.load``).
    - ``topology_graph(ds, rule, ok)`` → ``(flat [P, E], ok [P])``: each network's fixed-point graph as a
      flat vector (NaN: undefined there) from ``store.load``'s Dataset, and which networks of ``ok`` it
      compares under ``similarity.topology=rule`` (``"grouped"`` or ``"modal"``); ``None``: no
      ``topology`` distance for the task ([U] §2.4, ``popdyn.similarity.topology``).
    - ``condition_coords(task)`` → ``{name: values [C]}``, coordinates of the ``condition`` axis that
      ``store.load`` adds (sine: each condition's ω).
    - ``state_style``: how [U]'s state figures (trajectories, example trials, trained vs untrained states,
      ``popdyn.figures``) draw the task — ``"bits"`` (flip-flop: grey probes, fixed points by unstable
      modes, one row per channel), ``"frequency"`` (sine: coloured by each condition's ω), ``"context"``
      (cdi: the first context's probes by μ); ``None``: those figures are not drawn.
    - ``figures``: names of further figures of its own that ``popdyn.figures`` draws (``"sine_eigenvalues"``).
    """

    names: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    topology: ClassVar[Any] = None
    topology_dims: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    condition_coords: ClassVar[Any] = None
    vectors: ClassVar[bool] = False
    topology_graph: ClassVar[Any] = None
    state_style: ClassVar[str | None] = None
    figures: ClassVar[tuple[str, ...]] = ()

    # construction
    def resolve(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The full parameter set: defaults overridden by ``params`` (already checked for names)."""
        return {**self.defaults[name], **params}

    def build(self, name: str, values: dict[str, Any]) -> tuple[int, int, int]:
        """Validate the task's own parameters (``values`` may be normalised in place); → (n_in, n_out, T)."""
        raise NotImplementedError

    # training
    def default_loss(self, name: str) -> str:
        """The loss of task ``name`` before its parameters are known (a stored run's figures)."""
        return "mse"

    def loss(self, task: Task) -> str:
        return self.default_loss(task.name)

    def sample(self, task: Task, key: PRNGKeyArray, batch: int, data: dict | None) -> tuple[Array, Array]:
        raise NotImplementedError

    def validation(self, task: Task, key: PRNGKeyArray, batch: int) -> tuple[Array, Array]:
        return task.sample(key, batch)

    def words(self, task: Task) -> tuple[str, ...]:
        return ()

    def vocab(self, task: Task) -> int:
        return 0

    def corpus(self, task: Task) -> Any:
        raise TaskError(f"task {task.name!r} reads no corpus")

    def data(self, task: Task) -> dict[str, Array] | None:
        return None

    # analysis
    def probes(self, task: Task) -> tuple[Array, Array]:
        return task.sample(jax.random.key(task.param("probe_seed")), task.param("n_probe"))

    def probe_condition(self, task: Task) -> np.ndarray:
        return np.zeros(task.param("n_probe"), np.int32)

    def x_star(self, task: Task) -> np.ndarray:
        return np.zeros((1, task.n_in), np.float32)


# --------------------------------------------------------------------------------------------------
# the registry

REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Register ``spec`` under each of its ``names``; a name already registered is an error."""
    if not spec.names:
        raise ValueError(f"{type(spec).__name__} declares no names")
    taken = [n for n in spec.names if n in REGISTRY]
    if taken:
        raise ValueError(f"task {taken[0]!r} is already registered (by {type(REGISTRY[taken[0]]).__name__})")
    missing = [n for n in spec.names if n not in spec.defaults]
    if missing:
        raise ValueError(f"{type(spec).__name__} declares no defaults for task {missing[0]!r}")
    for n in spec.names:
        REGISTRY[n] = spec
    return spec


def names() -> tuple[str, ...]:
    """Every registered task name, in registration order."""
    return tuple(REGISTRY)


def get(name: str) -> TaskSpec:
    """The spec registered under ``name``; :class:`TaskError` (a ValueError) naming the allowed ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise TaskError(f"unknown task {name!r}; choose one of {names()}") from None


def loss_of(name: str) -> str:
    """The loss of a task name (``mse`` for a name not registered): what a stored run's figures label."""
    spec = spec_of(name)
    return spec.default_loss(name) if spec is not None else "mse"


def spec_of(name: str) -> TaskSpec | None:
    """The spec of ``name``, or ``None`` for a name not registered (e.g. a stored run's old task)."""
    return REGISTRY.get(name) if isinstance(name, str) else None


# --------------------------------------------------------------------------------------------------
# construction and shared validators (plain Python, no JAX)


def make_task(name: str, **params: Any) -> Task:
    """Build a task with its spec's defaults (SPEC §2), overridden by ``params``; validate every value.

    Raises :class:`TaskError` for an unknown task or parameter name, or an impossible value. The
    parameters every task names the same (``K``, ``T``, ``N``, ``L``, ``n_probe``, ``probe_seed``, ``p``,
    ``initial_pulse``) are checked here, the rest by the spec's ``build``.
    """
    spec = get(name)
    allowed = spec.defaults[name]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TaskError(
            f"unknown parameter {unknown[0]!r} for task {name!r}; allowed: {', '.join(sorted(allowed))}"
        )
    values = spec.resolve(name, params)
    for key in ("K", "T", "N", "L", "n_probe"):
        if key in values:
            values[key] = positive_int(name, key, values[key])
    values["probe_seed"] = seed(name, values["probe_seed"])
    if "p" in values:
        values["p"] = probability(name, "p", values["p"])
    if "initial_pulse" in values:
        values["initial_pulse"] = boolean(name, "initial_pulse", values["initial_pulse"])
    n_in, n_out, T = spec.build(name, values)
    return Task(name=name, n_in=n_in, n_out=n_out, T=T, params=tuple(sorted(values.items())))


def zero_baseline(task: Task, key: PRNGKeyArray, batch: int = 1024) -> float:
    """MSE of predicting 0 everywhere, mean(y²) over a sampled batch: the loss a network must beat."""
    _, targets = task.sample(key, batch)
    return float(jnp.mean(jnp.square(targets)))


def positive_int(task: str, key: str, value: Any) -> int:
    """``value`` as an int ≥ 1, else :class:`TaskError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise TaskError(f"{task}: {key} must be a positive integer, got {value!r}")
    return int(value)


def integer(task: str, key: str, value: Any, low: int) -> int:
    """``value`` as an int ≥ ``low``, else :class:`TaskError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise TaskError(f"{task}: {key} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def bounded_int(where: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (no upper bound: ``high=None``), else ``ValueError`` (a dataset
    function's argument rather than a task parameter)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"[{low}, {high}]" if high is not None else f"≥ {low}"
        raise ValueError(f"{where}: {name} must be an integer {allowed}, got {value!r}")
    return int(value)


def seed(task: str, value: Any) -> int:
    """``probe_seed`` as an int in [0, 2³²), else :class:`TaskError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**32:
        raise TaskError(f"{task}: probe_seed must be an integer in [0, 2**32), got {value!r}")
    return int(value)


def probability(task: str, key: str, value: Any) -> float:
    """``value`` as a float in [0, 1], else :class:`TaskError`."""
    # `not 0 <= v <= 1` also rejects NaN.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise TaskError(f"{task}: {key} must be a probability in [0, 1], got {value!r}")
    return float(value)


def boolean(task: str, key: str, value: Any) -> bool:
    """``value`` as a bool (Python or NumPy), else :class:`TaskError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise TaskError(f"{task}: {key} must be true or false, got {value!r}")
    return bool(value)


def _names(params: tuple[tuple[str, Any], ...]) -> str:
    return ", ".join(k for k, _ in params)


# every module of the package registers its tasks when imported (sorted: a stable order of names())
import_members(__name__, __path__)

TASKS = names()  # the tasks of this package; names() also lists those registered from outside later
