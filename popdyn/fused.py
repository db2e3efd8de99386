"""The lstm time loop as one compiled CPU kernel (``popdyn/kernels/lstm.cc``), called from JAX through
XLA's FFI.

XLA runs a time loop as separate ops per step, and for the lstm on a CPU the element-wise ops and the
stacking of saved arrays cost as much as the step's matmuls again (benchmarks/README.md, "Where the lstm's
time goes").  The kernel runs the whole loop in one call —
per step one OpenBLAS sgemm and one pass over the gates — forward and backward, with the weight gradients
as one sgemm over every step afterwards, exactly as ``popdyn.recurrence`` arranges them.  Same equations,
same stacked kernel ``[W; U; b]``, same 0/1 mask; results agree with the XLA loop to float32 rounding.

The kernel is compiled on first use with the machine's C++ compiler (``-O3 -march=native``: built for the CPU
it runs on) against the OpenBLAS of the ``scipy-openblas32`` wheel, into a cache folder
(``$POPDYN_KERNEL_CACHE``, default ``~/.cache/popdyn/kernels``) named by a hash of the source, the flags,
the CPU and the jaxlib headers; later processes load it.  It is built automatically only where that is
known to work, Linux with a C++ compiler; elsewhere (macOS, Windows: a compiler shim may open an
installer, Apple clang may refuse ``-march=native``), and on Linux without a compiler, popdyn logs one
INFO line, calls no compiler and uses the XLA loop.  Where a build fails (a broken compiler, an
unwritable cache) it logs one warning and uses the XLA loop: the kernel speeds up the CPU path, it is
never a requirement.  ``POPDYN_FUSED``: ``auto`` (unset: as above), ``1`` (try to build on any platform),
``0`` (off).

Used by ``Model(kernel="auto")`` (the default) on the CPU backend, float32, for the cells whose spec
declares it (``CellSpec.fused``: lstm, slstm).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from popdyn._compile_cache import cache_root, cpu_id

log = logging.getLogger("popdyn")

SOURCE = Path(__file__).with_name("kernels") / "lstm.cc"
# -fno-trapping-math lets GCC vectorise the loops with a select (tanh's two branches) and a division; it
# changes no result (it only allows evaluating both sides of a branch)
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c++17")
LINK = ("-shared", "-fPIC")
_TARGETS = {"popdyn_lstm_forward": "PopdynLstmForward", "popdyn_lstm_backward": "PopdynLstmBackward"}


MODES = ("auto", "1", "0")  # POPDYN_FUSED: build where known to work, try everywhere, off


class KernelUnavailable(RuntimeError):
    """The fused kernel could not be built or loaded here (the message says why)."""


class NoCompiler(KernelUnavailable):
    """No C++ compiler found: the XLA loop runs, as on a platform where the kernel is not built."""


def cache_dir() -> Path:
    root = os.environ.get("POPDYN_KERNEL_CACHE")
    if root:
        return Path(root)
    return cache_root() / "kernels"


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise NoCompiler("no C++ compiler (g++, c++ or clang++; or set CXX)")
    return cxx


def _build() -> Path:
    """The path of the compiled kernel, compiling it into the cache if it is not there yet."""
    try:
        import scipy_openblas32 as blas
    except ImportError as e:  # a dependency of popdyn; only a broken install lacks it
        raise KernelUnavailable(f"scipy-openblas32 is not installed ({e})") from e
    cxx = _compiler()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise KernelUnavailable(f"the C++ compiler {cxx!r} does not run: {e}") from e
    include = [jax.ffi.include_dir(), blas.get_include_dir()]
    libdir = blas.get_lib_dir()
    # everything the built file depends on
    ident = [SOURCE.read_text(), *FLAGS, *LINK, version, cpu_id(), jax.__version__, *include, libdir]
    key = hashlib.sha256("\n".join(ident).encode()).hexdigest()[:16]
    out = cache_dir() / f"lstm-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # compile next to the target and rename: processes building at once each land a whole file
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [
        cxx, *FLAGS, *LINK, "-w",
        *(f"-isystem{d}" for d in include),
        str(SOURCE), "-o", tmp,
        f"-L{libdir}", f"-l{blas.get_library()}", f"-Wl,-rpath,{libdir}",
    ]  # fmt: skip
    log.info("popdyn: compiling the fused lstm kernel into %s", out)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise KernelUnavailable(f"compiling {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
        os.chmod(tmp, 0o755)  # mkstemp's 0600 would hide the file from other users of a shared cache
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):  # a failed or interrupted build leaves nothing behind
            os.unlink(tmp)
    return out


@functools.cache
def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_build()))
    for target, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return lib


def _mode() -> str:
    mode = os.environ.get("POPDYN_FUSED", "auto") or "auto"
    if mode not in MODES:
        raise ValueError(f"POPDYN_FUSED={mode!r} is unknown; allowed: {', '.join(MODES)}")
    return mode


def supported() -> bool:
    """Whether the kernel is built without being asked (``POPDYN_FUSED=auto``): on Linux."""
    return sys.platform.startswith("linux")


@functools.cache
def available() -> bool:
    """Whether the kernel is built and registered (builds it on the first call); logs once why not."""
    mode = _mode()
    if mode == "0":
        return False
    if mode == "auto" and not supported():
        log.info("popdyn: the fused lstm kernel is built on Linux only (here: %s; POPDYN_FUSED=1 tries), "
                 "using the XLA time loop", sys.platform)  # fmt: skip
        return False
    try:
        _load()
    except NoCompiler as e:
        log.info("popdyn: the fused lstm kernel is not built, using the XLA time loop (%s)", e)
        return False
    except (KernelUnavailable, OSError) as e:
        log.warning("popdyn: the fused lstm kernel is unavailable, using the XLA time loop (%s)", e)
        return False
    return True


def usable(dtype) -> bool:
    """Whether the kernel can run the time loop here: float32, JAX's CPU backend, kernel built (the cells
    that declare it, ``popdyn/cells/lstm.py``, say so in their spec)."""
    on_cpu = jax.default_backend() == "cpu"
    return jnp.dtype(dtype) == jnp.float32 and on_cpu and available()


def lstm(
    kernels: Float[Array, "rows gates"],
    x: Float[Array, "batch time n_in"],
    state0: tuple[Array, Array],
    mask: Float[Array, "batch time"] | None,
    activation: str,
) -> tuple[Array, Array]:
    """``(h, c)``, each [batch, time, units], of the lstm with stacked kernel ``[W; U; b]`` ([N + M + 1, 4N])
    from ``state0 = (h0, c0)``; ``mask`` as in ``popdyn.recurrence.recurrence``.  Differentiable (reverse
    mode) in ``kernels``, ``x`` and ``state0``."""
    if activation not in ("relu", "tanh"):
        raise ValueError(f"unknown activation {activation!r}; allowed: relu, tanh")
    _load()
    mask = jnp.ones(x.shape[:2], x.dtype) if mask is None else mask.astype(x.dtype)
    return _lstm(activation == "relu", kernels, x, state0, mask)


def _forward(relu, kernels, x, state0, mask):
    h0, c0 = state0
    (b, t, m), n = x.shape, h0.shape[-1]
    # hs, cs [b, t, n]; residuals acts [t, b, 4n], zs = [h_{t-1}, x_t, 1] [t, b, n + m + 1], tc [t, b, n]
    shapes = [(b, t, n), (b, t, n), (t, b, 4 * n), (t, b, n + m + 1), (t, b, n)]
    out = [jax.ShapeDtypeStruct(s, x.dtype) for s in shapes]
    call = jax.ffi.ffi_call("popdyn_lstm_forward", out, vmap_method="broadcast_all")
    hs, cs, acts, zs, tc = call(kernels, x, mask, h0, c0, relu=np.int32(relu))
    return (hs, cs), (kernels, x, mask, c0, cs, acts, zs, tc)


def _backward(relu, residuals, g):
    kernels, x, mask, c0, cs, acts, zs, tc = residuals
    gh, gc = g
    n = c0.shape[-1]
    out = [jax.ShapeDtypeStruct(a.shape, x.dtype) for a in (kernels, c0, c0, acts)]  # δK, δh0, δc0, δa
    call = jax.ffi.ffi_call("popdyn_lstm_backward", out, vmap_method="broadcast_all")
    dk, dh0, dc0, da = call(kernels, x, mask, c0, cs, acts, zs, tc, gh, gc, relu=np.int32(relu))
    # δx_t = U δa_t: left to XLA, which drops it where nothing asks for it (training never does)
    dx = jnp.einsum("tbj,mj->btm", da, kernels[n : n + x.shape[-1]])
    return dk, dx, (dh0, dc0), jnp.zeros_like(mask)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(relu, kernels, x, state0, mask):
    return _forward(relu, kernels, x, state0, mask)[0]


_lstm.defvjp(_forward, _backward)
