"""How many XLA host devices JAX gets on a CPU — set before JAX creates its backends.

A population's member axis is split over every local device. On a GPU or TPU host those are the
accelerators. On a CPU, XLA can pretend to have one device per core (``jax_num_cpu_devices``), so that the
members train on both cores at once; but with jax/jaxlib 0.10.2 a sharded training program of realistic
size (GRU-64, 8 members over 2 host devices) **deadlocks**: every execution waits in
``PjRtCpuLoadedExecutable::Execute`` and no core works (py-spy), with or without async dispatch and
multi-threaded Eigen. Small programs run. So popdyn keeps one CPU device unless asked:
``POPDYN_CPU_DEVICES=n`` gives n host devices (at your own risk on CPU); an
``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` wins over both.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def setup_host_devices() -> None:
    # JAX logs at INFO that it looked for a TPU; under Hydra's INFO logging that is noise in every run
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    n = os.environ.get("POPDYN_CPU_DEVICES")
    if n is None:
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", max(1, int(n)))
    except RuntimeError:
        # JAX was used before popdyn was imported: keep whatever devices it already has
        log.warning("POPDYN_CPU_DEVICES ignored: JAX was initialised before popdyn was imported")
