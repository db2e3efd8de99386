"""One run over several processes — one SLURM job on several nodes — through JAX's multi-process runtime.

With ``distributed.enabled=true`` every process runs the same command; :func:`initialize` joins them
(``jax.distributed.initialize``: coordinator, process count and index from the config, or detected from
SLURM / Open MPI), after which ``jax.devices()`` lists the devices of every process and a group's member
axis is split over all of them exactly as over one host's devices.  Each process computes; only
process 0 (:func:`writer`) writes files, takes the run directory's lock and draws figures, and
:func:`barrier` keeps the others from reading what it has not written yet.  Arrays spread over several
processes come back to the host with :func:`to_host` (an all-gather: every process gets all of it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

log = logging.getLogger("popdyn")

KEYS = ("enabled", "coordinator", "num_processes", "process_id")


class DistributedError(ValueError):
    """A ``distributed.*`` setting popdyn cannot start with; the message names it."""


def initialize(section: Mapping | None) -> None:
    """Join the other processes of the run if ``section["enabled"]``; before any JAX computation.

    ``coordinator`` (``host:port`` of process 0), ``num_processes`` and ``process_id`` may be null, where
    JAX detects them (SLURM, Open MPI, …)."""
    section = dict(section or {})
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise DistributedError(f"unknown distributed key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise DistributedError(f"distributed.enabled must be true or false, got {enabled!r}")
    if not enabled:
        return
    n, i = section.get("num_processes"), section.get("process_id")
    for key, value in (("num_processes", n), ("process_id", i)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise DistributedError(f"distributed.{key} must be null or a non-negative integer, got {value!r}")
    if n is not None and (n < 1 or (i is not None and i >= n)):
        raise DistributedError(f"distributed.process_id must be in 0 … num_processes − 1, got {i} of {n}")
    coordinator = section.get("coordinator")
    if coordinator is not None:
        host, _, port = str(coordinator).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedError(
                f"distributed.coordinator must be null or host:port of process 0 (e.g. node001:12345), "
                f"got {coordinator!r}"
            )
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(coordinator, n, i)
    if jax.process_index() != 0:  # one log of the run: process 0's
        log.setLevel(logging.WARNING)
    log.info(
        "process %d of %d: %d local and %d devices in all",
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
    )  # fmt: skip


def abandon() -> None:
    """End this process at once after an unexpected error, its traceback logged, if it is one of several.

    The others stop within seconds — JAX's coordination service sees it gone and ends them — instead of
    waiting in their next collective for a process that will never join, and then 5 minutes at JAX's
    shutdown barrier (measured with 2 CPU processes: ~300 s, then an abort).  Call from an ``except``
    block; returns in a one-process run, where the caller re-raises."""
    if jax.process_count() == 1:
        return
    log.exception(
        "process %d of %d failed; ending it so that the others stop too",
        jax.process_index(),
        jax.process_count(),
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def writer() -> bool:
    """Whether this process writes the run's files (process 0; the only process of a one-process run)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the run reaches ``barrier(name)`` (nothing in a one-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process, for decisions that every process must take together."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.bool_(flag)))


def same_everywhere(text: str, what: str) -> None:
    """``DistributedError`` unless every process of the run has the same ``text`` (e.g. its run directory)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint32)
    every = np.asarray(multihost_utils.process_allgather(digest)).reshape(jax.process_count(), -1)
    if not (every == every[0]).all():
        raise DistributedError(
            f"the processes of this run disagree on the {what} (this one: {text}); give it explicitly, "
            "the same for every process (e.g. hydra.run.dir=...)"
        )


def to_host(tree: Any) -> Any:
    """NumPy copies of the arrays of ``tree``, whole on every process even where they are spread over
    several."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(a, "is_fully_addressable", True) for a in leaves):
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def finish_devices(devices: tuple) -> tuple:
    """For programs with LAPACK work on a CPU (host callbacks or XLA's own kernels,
    ``popdyn.analyses.dynamics``): one device per process — two host devices of one process deadlock
    there — or every device on accelerators."""
    if devices[0].platform != "cpu":
        return devices
    first = {}
    for d in devices:
        first.setdefault(d.process_index, d)
    return tuple(first.values())
