"""[V]'s memory curves after training (config section ``memory``; the maths in :mod:`popdyn.memory`).

For each trained network: the singular values ``σ_i(τ)`` of its normalised mean state gradient
``Ḡ_τ D`` for τ = 0 … ``memory.max_delay`` over the first ``memory.probes`` probe sequences
(:func:`popdyn.memory.network_memory`), and the memory curve ``m(τ) = Σ_i σ_i(τ)`` ([V] Fig. 3).
Loaded as ``memory_singular_values`` (member × delay × rank) and ``memory`` (member × delay).
"""

from __future__ import annotations

import jax.numpy as jnp

from popdyn import analyses
from popdyn.memory import MemoryOptions, network_memory


def network(model, task, options: MemoryOptions, params: dict, probes) -> dict:
    sv = network_memory(model, options, params, probes)
    return {"singular_values": sv, "memory": jnp.sum(sv, axis=-1)}


def check(options: MemoryOptions, task) -> None:
    if options.max_delay >= task.T:
        raise ValueError(
            f"memory.max_delay = {options.max_delay} must be below the task's T = {task.T} (sequence length)"
        )


def summary(out: dict) -> str:
    m = out["memory"]
    return f"memory Σσ at delay 0 / {m.shape[1] - 1}: median {_median(m[:, 0]):.3g} / {_median(m[:, -1]):.3g}"


def _median(a) -> float:
    import numpy as np

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
        check=check, summary=summary, figures={"memory_curves": _curves}, doc=__doc__,
    )
)  # fmt: skip
