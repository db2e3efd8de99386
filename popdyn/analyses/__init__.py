"""Per-network analyses that run after training, one file each, found by name.

An analysis is a function of ONE trained network — ``network(model, task, options, params) -> {key:
array}`` in pure JAX — that the run layer vmaps over each group's members, compiles once per group, and
stores in ``groups/<g>/<name>.npz`` with the dimension names it declares; its settings are the config
section ``<name>`` (a frozen dataclass, validated when the config is read) and are recorded in
``<name>.yaml`` the first time it runs, so that a run directory never mixes results of two settings.
``popdyn.store.load`` assembles every such file from the names stored in it (``member`` first, then
``dims``) into variables ``<name>_<key>`` (``<name>`` itself for the key named like the analysis).

popdyn's own live in this package, one file each, and are imported with it: ``dynamics`` (fixed points and
each task's topology, two sharded programs per group: ``group``), ``geometry`` ([A], host NumPy on the fixed
points: ``needs`` and ``into`` ``dynamics``), ``record`` ([R] through training, from the parameters saved
during training: ``source``) and ``memory`` ([V]).  They run in dependency order (``needs`` first).  A
notebook or a test registers its own the same way::

    @dataclass(frozen=True)
    class SpeedOptions:
        probes: int = 4

    def speed(model, task, options, params, probes):
        h = model.states(params, probes)[:, -1]  # [probes, state]: each probe's final state
        return {"speed": jnp.linalg.norm(model.step(params["cell"], h, task.x_star[0]) - h, axis=-1)}

    analyses.register(analyses.Analysis(
        "speed", SpeedOptions, speed, dims={"speed": ("probe",)},
        inputs=lambda task, options: task.probe_inputs[: options.probes],
    ))

After that, ``speed: {probes: 8}`` is a config section, ``groups/<g>/speed.npz`` holds each member's
speeds, and ``store.load(run)["speed"]`` is a ``member × probe`` array.  With ``needs=("dynamics",)``
the function also receives ``results={"dynamics": {key: this member's array}}`` (its fixed points
``fp_states``, ``fp_valid``, …).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from popdyn._members import import_members


def plain_settings(options) -> dict:
    """A settings dataclass as YAML-safe plain values (tuples as lists): what ``<name>.yaml`` records."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


@dataclass(frozen=True)
class Analysis:
    """What the run layer needs to know about one per-network analysis.

    - ``name``: its results file ``<name>.npz``, settings file ``<name>.yaml`` and config section.
    - ``options``: a frozen dataclass of its settings, built from the section by field name; its
      ``__post_init__`` raises ``ValueError`` for impossible values (the message becomes a config error).
    - ``network(model, task, options, params, data) -> {key: array}``: one network, pure JAX (vmapped
      over members at the call site); ``data`` is what ``inputs`` gave; with ``needs``, also
      ``results={name: {key: this member's array}}`` of the analyses it needs.
    - ``inputs(task, options)``: arrays the analysis reads, made once on the host before the group's
      program is traced (probe sequences, say) and closed over as constants (default: None).
    - ``dims``: for each key, the dimension names after ``member`` — or ``dims(task) -> {key: names}``
      where they depend on the task (a task's own topology arrays, ``TaskSpec.topology_dims``).
    - ``applies(options, task) -> bool``: whether the run computes it (e.g. only when a size is > 0).
    - ``check(options, task)``: raise ``ValueError`` if the options do not fit the task (run at config
      time, before anything is trained).
    - ``summary(arrays, options) -> str``: one log line about a group's results (optional).
    - ``figures``: ``{figure name: draw(ds, prefix) -> [paths]}``, drawn when its variables are loaded.

    Extension points (all optional; popdyn's ``dynamics``, ``geometry`` and ``record`` use them):

    - ``group(sweep, options, gp, devices, results) -> {key: [members, ...]}``: the whole group at once,
      instead of ``network`` vmapped (``dynamics``: two sharded programs; ``geometry``: host NumPy).
    - ``source(run_dir, group, gp)``: the networks to analyse (with ``model``, ``params``, ``member``)
      instead of the group's final parameters ``gp`` (``record``: the parameters saved during training;
      None: nothing for that group); ``has_source(run_dir, group)`` says cheaply whether there is one.
      Results of the final parameters are NaN for members that are no trained network (diverged,
      exploded); those of a source are kept (each saved step is a network).
    - ``needs``: names of the analyses whose results (of the same group) it reads; they run first.
    - ``into``: the name of the analysis whose results file it is stored in (``geometry`` → dynamics.npz),
      computed after it for each group; it then records no settings of its own.
    - ``results``/``settings_name``: file names other than ``<name>.npz``/``<name>.yaml`` (names a run
      directory written before already has: ``training.npz``, ``record.yaml``).
    - ``prefix``: its variables in ``store.load`` are ``<prefix>_<key>`` (default ``name``; ``""``: the
      keys themselves).
    - ``options_of(sweep)``: its options from the ``Sweep``'s own fields, whose section ``popdyn.config``
      parses (``dynamics``, ``record``); default ``sweep.analyses[name]``.  ``settings(options) -> dict``:
      what its settings file records (default :func:`plain_settings`).
    - ``legacy_ok``: results without a settings file are accepted (written before popdyn recorded them).
    - ``file_only``: ``{key: dims}`` kept in the results file but not loaded (``fp_states``).
    - ``finish(arrays, dims) -> arrays``: applied before writing (``dynamics``: empty point slots cut).
    - ``coords(options, gp) -> {name: array}``: coordinates stored beside (``record``: ``record_step``).
    - ``run_results``: ``{file: make(sweep) -> arrays}``, results of the whole run in the run directory,
      each written once (``geometry``: ``lsa.npz``).
    """

    name: str
    options: type
    network: Callable[..., Mapping[str, Any]] | None
    dims: Mapping[str, tuple[str, ...]] | Callable[[Any], Mapping[str, tuple[str, ...]]]
    inputs: Callable[[Any, Any], Any] = lambda task, options: None
    applies: Callable[[Any, Any], bool] = lambda options, task: True
    check: Callable[[Any, Any], None] = lambda options, task: None
    summary: Callable[[Mapping[str, Any], Any], str] | None = None
    figures: Mapping[str, Callable] = field(default_factory=dict)
    doc: str = ""
    group: Callable[..., Mapping[str, Any]] | None = None
    source: Callable[[Any, str, Any], Any] | None = None
    has_source: Callable[[Any, str], bool] = lambda run_dir, group: True
    needs: tuple[str, ...] = ()
    into: str | None = None
    results: str | None = None
    settings_name: str | None = None
    prefix: str | None = None
    options_of: Callable[[Any], Any] | None = None
    settings: Callable[[Any], dict] = plain_settings
    legacy_ok: bool = False
    file_only: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    finish: Callable[[dict, Mapping], dict] = lambda arrays, dims: arrays
    coords: Callable[[Any, Any], Mapping[str, Any]] = lambda options, gp: {}
    run_results: Mapping[str, Callable[[Any], Mapping[str, Any]]] = field(default_factory=dict)

    @property
    def file(self) -> str:
        """Its results file in ``groups/<g>/`` (that of ``into`` when it is stored there)."""
        if self.into is not None:
            return get(self.into).file
        return self.results or f"{self.name}.npz"

    @property
    def settings_file(self) -> str | None:
        """Its settings file in the run directory (None: it records none, stored ``into`` another)."""
        if self.into is not None:
            return None
        return self.settings_name or f"{self.name}.yaml"

    @property
    def var_prefix(self) -> str:
        return self.name if self.prefix is None else self.prefix

    def dims_for(self, task) -> dict[str, tuple[str, ...]]:
        """Its declared dimensions for ``task``."""
        return dict(self.dims(task) if callable(self.dims) else self.dims)

    def variables(self, task=None) -> list[str]:
        """Its variables in ``store.load``: ``<prefix>_<key>`` (``<prefix>`` for the key named like it; the
        keys where the prefix is ``""``); dims that depend on the task need ``task``, else none."""
        dims = {} if callable(self.dims) and task is None else self.dims_for(task)
        p = self.var_prefix
        return [k if not p else p if k == p else f"{p}_{k}" for k in dims]

    def options_for(self, sweep):
        """Its options in ``sweep``."""
        return self.options_of(sweep) if self.options_of is not None else sweep.analyses[self.name]


REGISTRY: dict[str, Analysis] = {}


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis`` under its name (a name already taken is an error); returns it."""
    if analysis.name in REGISTRY:
        raise ValueError(f"an analysis named {analysis.name!r} is already registered")
    if not analysis.name.isidentifier():
        raise ValueError(
            f"analysis name {analysis.name!r} must be a Python identifier (it is a config section)"
        )
    if analysis.network is None and analysis.group is None:
        raise ValueError(f"analysis {analysis.name!r} needs a `network` function (or a `group` program)")
    if analysis.into is not None and analysis.into not in analysis.needs:
        raise ValueError(
            f"analysis {analysis.name!r} is stored into {analysis.into!r}: it must list it in `needs`"
        )
    REGISTRY[analysis.name] = analysis
    return analysis


def unregister(name: str) -> None:
    """Remove a registered analysis (tests and notebooks that register a temporary one)."""
    REGISTRY.pop(name, None)


def get(name: str) -> Analysis:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown analysis {name!r}; registered: {', '.join(REGISTRY) or 'none'}") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def in_order(wanted: list[str] | tuple[str, ...] | None = None) -> list[Analysis]:
    """The registered analyses (or those ``wanted``), each after the analyses it ``needs`` (registry
    order otherwise); a need that is not registered, or a cycle, is an error naming it."""
    todo = list(REGISTRY if wanted is None else wanted)
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out:
            return
        if name in path:
            raise ValueError(f"analyses need each other in a cycle: {' → '.join((*path, name))}")
        for need in get(name).needs:
            if need not in REGISTRY:
                raise ValueError(
                    f"analysis {name!r} needs {need!r}, which is not registered; registered: {', '.join(REGISTRY)}"
                )
            visit(need, (*path, name))
        out.append(name)

    for name in todo:
        visit(name, ())
    return [get(n) for n in out]


import_members(__name__, __path__)  # each file registers itself
