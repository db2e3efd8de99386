"""One XLA host device per CPU core, so that a population's member axis can be split over the cores.

One XLA CPU program at popdyn's sizes keeps about one core busy; splitting the members over one host
device per core trains them side by side (1.4–2.3× on 2 cores, benchmarks/README.md). This must happen
before JAX creates its backends, so the entry points (``scripts/*.py`` through ``popdyn.cli.main``) call
:func:`setup_host_devices` first; importing popdyn changes nothing. ``POPDYN_CPU_DEVICES=n`` chooses the
count (``1`` turns the split off); an ``--xla_force_host_platform_device_count`` already in ``XLA_FLAGS``
wins. GPU and TPU hosts are unaffected: there the devices are the accelerators. Where JAX already runs
(a notebook that used it first), popdyn uses the devices it finds.

The same call turns on JAX's persistent compilation cache (:mod:`popdyn._compile_cache`), so that a
program compiled by one process is loaded by the next.
"""

from __future__ import annotations

import logging
import os

from popdyn._compile_cache import setup_compilation_cache

log = logging.getLogger("popdyn")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def setup_host_devices() -> None:
    """Ask JAX for one CPU device per core (``POPDYN_CPU_DEVICES``) if its backends have not started yet,
    otherwise log how many devices popdyn will use; and turn on the persistent compilation cache.
    A ``POPDYN_*`` variable that is not a number raises ``ValueError`` naming it."""
    # JAX logs at INFO that it looked for a TPU; under Hydra's INFO logging that is noise in every run
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    setup_compilation_cache()
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    value = os.environ.get("POPDYN_CPU_DEVICES", str(_cores()))
    try:
        n = max(1, int(value))
    except ValueError:
        raise ValueError(f"POPDYN_CPU_DEVICES must be a whole number of devices, got {value!r}") from None
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX's backends started before: keep the devices they have
        log.info(
            "JAX was initialised before popdyn set up its host devices: using the %d %s device(s) it has",
            jax.device_count(), jax.default_backend(),
        )  # fmt: skip
