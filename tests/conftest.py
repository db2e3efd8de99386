"""Fixtures shared by the cell and model tests — every arch × activation at one small size — and the
tiny grid run once for every test file that reads it."""

import fcntl
import os
import shutil
import tempfile

# One persistent JAX compilation cache for the whole test run — every pytest-xdist worker and every script
# a test starts (they inherit the environment): the suite compiles the same small programs dozens of times
# (each `scripts/sweep.py +grid=tiny` is a fresh process), and XLA:CPU compilation is most of a tiny run's
# time.  A cache hit returns the very executable a compilation would build (same numbers, bit for bit).
# Set before JAX is imported; a directory the caller chose is kept, ours is removed at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"popdyn-tests-jax-cache-{os.getpid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from popdyn import cells, setup_host_devices  # noqa: E402
from popdyn.cells import ACTIVATIONS  # noqa: E402
from popdyn.model import Model  # noqa: E402

setup_host_devices()  # one host device per core, as the entry points do (importing popdyn does not)


def pytest_sessionfinish(session):
    if _OWN_CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller (or the only process)
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


N, M, N_OUT = 6, 3, 2  # units, inputs, outputs: one size everywhere, so that initialisation compiles once


@pytest.fixture(scope="module", params=cells.names())
def arch(request):
    return request.param


@pytest.fixture(scope="module", params=ACTIVATIONS)
def activation(request):
    return request.param


@pytest.fixture(scope="module")
def model(arch, activation):
    return Model(arch, activation, N, M, N_OUT)


@pytest.fixture(scope="module")
def init_params(model):
    return model.init(jax.random.key(0))


@pytest.fixture(scope="module")
def params(init_params):
    """Initial parameters plus noise on every leaf, so that zero biases cannot hide a mis-sliced block."""
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(leaf + 0.3 * rng.standard_normal(leaf.shape), jnp.float32), init_params
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``scripts/sweep.py +grid=tiny`` run once (trained, analysed, compared, drawn); tests only read it,
    or rerun commands that must leave it unchanged, or copy it before changing anything.

    Once per test run, not per pytest-xdist worker: the first worker to need it runs it into the directory
    every worker shares (under a file lock), each worker then reads its own copy (nothing a run stores
    names its directory but Hydra's record and the log)."""
    from tests.test_sweep import run_script

    def run(run_dir):
        r = run_script("+grid=tiny", f"hydra.run.dir={run_dir}", "progress=false", cwd=run_dir)
        assert r.returncode == 0, r.stderr

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = tmp_path_factory.mktemp("tiny")
        run(run_dir)
        return run_dir
    shared = tmp_path_factory.getbasetemp().parent / "tiny-shared"  # every worker's basetemp's parent
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / "done").exists():
            shutil.rmtree(shared / "run", ignore_errors=True)  # a worker that failed before
            (shared / "run").mkdir()
            run(shared / "run")
            (shared / "done").touch()
    run_dir = tmp_path_factory.mktemp("tiny")
    shutil.copytree(shared / "run", run_dir, dirs_exist_ok=True)
    return run_dir
