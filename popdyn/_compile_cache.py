"""JAX's persistent compilation cache, on for popdyn's entry points: a program compiled once is loaded
from disk by every later process that builds the same one.

XLA:CPU compiles slowly — a group's fixed-point analysis is two programs of ≈ 3 s each on 2 cores, more
than the analysis itself — and every process compiles anew: a second ``sweep.py`` of the same grid, the
untrained twins, each job of a Hydra multirun on a cluster.  With the cache those find the executables
XLA wrote the first time (JAX keys them by the program, the devices, the compiler options and the
jax/jaxlib version, so a changed program never loads a stale one; programs with host callbacks, and
those that compile in under a second, ``jax_persistent_cache_min_compile_time_secs``, are not kept).

``POPDYN_COMPILATION_CACHE`` chooses the folder (default ``$XDG_CACHE_HOME/popdyn/jax``, else
``~/.cache/popdyn/jax``; a folder shared by a cluster's nodes lets every job use it) or turns it off
(``off``); a ``JAX_COMPILATION_CACHE_DIR`` (or ``jax_compilation_cache_dir`` set by the caller) wins.
Executables go into a subfolder per kind of host CPU (:func:`host_tag`: its model and instruction-set
flags), so that nodes of different CPUs sharing a home directory never load one another's machine code.
The folder is kept under ``POPDYN_COMPILATION_CACHE_GB`` (default 2) GiB, least recently used first out
(JAX's LRU cache, with ``filelock``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path

log = logging.getLogger("popdyn")

OFF = ("off", "none", "false", "0", "no")


def cache_root() -> Path:
    """popdyn's cache folder: ``$XDG_CACHE_HOME/popdyn``, else ``~/.cache/popdyn`` (compiled programs,
    the fused kernel)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "popdyn"


def cpu_id() -> str:
    """The CPU model and instruction-set flags (machine code built for them runs only where they hold)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def host_tag() -> str:
    """This host's kind of CPU: its architecture and a hash of :func:`cpu_id`."""
    return f"{platform.machine() or 'cpu'}-{hashlib.sha256(cpu_id().encode()).hexdigest()[:12]}"


def cache_dir() -> Path | None:
    """The folder popdyn gives JAX's cache (None: off): ``POPDYN_COMPILATION_CACHE``'s (default
    ``~/.cache/popdyn/jax``), then :func:`host_tag`."""
    value = os.environ.get("POPDYN_COMPILATION_CACHE", "").strip()
    if value.lower() in OFF:
        return None
    base = Path(value).expanduser() if value else cache_root() / "jax"
    return base / host_tag()


def max_bytes() -> int:
    """The cache's size bound from ``POPDYN_COMPILATION_CACHE_GB`` (a positive number of GiB)."""
    value = os.environ.get("POPDYN_COMPILATION_CACHE_GB", "2")
    try:
        gb = float(value)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise ValueError(f"POPDYN_COMPILATION_CACHE_GB must be a positive number of GiB, got {value!r}")
    return int(gb * 2**30)


def setup_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir`, unless one is set already or it is
    off; the folder in use (None: none)."""
    import jax

    size = max_bytes()  # a bad value is refused whatever folder is in use
    current = jax.config.jax_compilation_cache_dir
    if current:  # JAX_COMPILATION_CACHE_DIR, or the caller's own choice
        return Path(current)
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: compile every time, as JAX does without a cache
        log.warning("compilation cache %s cannot be created (%s): programs are compiled anew", path, e)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", size)
    return path
