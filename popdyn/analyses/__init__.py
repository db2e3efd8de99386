"""Per-network analyses that run after training, one file each, found by name.

An analysis is a function of ONE trained network — ``network(model, task, options, params) -> {key:
array}`` in pure JAX — that the run layer vmaps over each group's members, compiles once per group, and
stores in ``groups/<g>/<name>.npz`` with the dimension names it declares; its settings are the config
section ``<name>`` (a frozen dataclass, validated when the config is read) and are recorded in
``<name>.yaml`` the first time it runs, so that a run directory never mixes results of two settings.
``popdyn.store.load`` assembles every such file from the names stored in it (``member`` first, then
``dims``) into variables ``<name>_<key>`` (``<name>`` itself for the key named like the analysis).

Register one from any module — popdyn's own live in this package, one file each, and are imported with
it; a notebook or a test registers its own the same way::

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
speeds, and ``store.load(run)["speed"]`` is a ``member × probe`` array.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from popdyn._members import import_members


@dataclass(frozen=True)
class Analysis:
    """What the run layer needs to know about one per-network analysis.

    - ``name``: its results file ``<name>.npz``, settings file ``<name>.yaml`` and config section.
    - ``options``: a frozen dataclass of its settings, built from the section by field name; its
      ``__post_init__`` raises ``ValueError`` for impossible values (the message becomes a config error).
    - ``network(model, task, options, params, data) -> {key: array}``: one network, pure JAX (vmapped
      over members at the call site); ``data`` is what ``inputs`` gave.
    - ``inputs(task, options)``: arrays the analysis reads, made once on the host before the group's
      program is traced (probe sequences, say) and closed over as constants (default: None).
    - ``dims``: for each key, the dimension names after ``member``.
    - ``applies(options, task) -> bool``: whether the run computes it (e.g. only when a size is > 0).
    - ``check(options, task)``: raise ``ValueError`` if the options do not fit the task (run at config
      time, before anything is trained).
    - ``summary(arrays) -> str``: one log line about a group's results (optional).
    - ``figures``: ``{figure name: draw(ds, prefix) -> [paths]}``, drawn when its variables are loaded.
    """

    name: str
    options: type
    network: Callable[..., Mapping[str, Any]]
    dims: Mapping[str, tuple[str, ...]]
    inputs: Callable[[Any, Any], Any] = lambda task, options: None
    applies: Callable[[Any, Any], bool] = lambda options, task: True
    check: Callable[[Any, Any], None] = lambda options, task: None
    summary: Callable[[Mapping[str, Any]], str] | None = None
    figures: Mapping[str, Callable] = field(default_factory=dict)
    doc: str = ""

    @property
    def file(self) -> str:
        return f"{self.name}.npz"

    @property
    def settings_file(self) -> str:
        return f"{self.name}.yaml"


REGISTRY: dict[str, Analysis] = {}


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis`` under its name (a name already taken is an error); returns it."""
    if analysis.name in REGISTRY:
        raise ValueError(f"an analysis named {analysis.name!r} is already registered")
    if not analysis.name.isidentifier():
        raise ValueError(
            f"analysis name {analysis.name!r} must be a Python identifier (it is a config section)"
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


import_members(__name__, __path__)  # each file registers itself
