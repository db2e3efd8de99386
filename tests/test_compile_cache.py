"""JAX's persistent compilation cache as popdyn's entry points set it up (popdyn/_compile_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from popdyn import _compile_cache

ROOT = Path(__file__).resolve().parents[1]


def test_the_folder_comes_from_the_environment_per_kind_of_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("POPDYN_COMPILATION_CACHE", raising=False)
    tag = _compile_cache.host_tag()
    assert tag == _compile_cache.host_tag() and tag.count("-") >= 1
    assert _compile_cache.cache_dir() == tmp_path / "xdg" / "popdyn" / "jax" / tag
    monkeypatch.setenv("POPDYN_COMPILATION_CACHE", str(tmp_path / "shared"))
    assert _compile_cache.cache_dir() == tmp_path / "shared" / tag
    for off in ("off", "OFF", "none", "0"):
        monkeypatch.setenv("POPDYN_COMPILATION_CACHE", off)
        assert _compile_cache.cache_dir() is None


@pytest.mark.parametrize("value", ["big", "0", "-1", "nan"])
def test_a_bad_size_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("POPDYN_COMPILATION_CACHE_GB", value)
    with pytest.raises(ValueError, match=f"POPDYN_COMPILATION_CACHE_GB.*{value}"):
        _compile_cache.max_bytes()
    monkeypatch.setenv("POPDYN_COMPILATION_CACHE_GB", "0.5")
    assert _compile_cache.max_bytes() == 2**29


def test_a_bad_environment_value_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "POPDYN_COMPILATION_CACHE_GB": "lots"}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), "+grid=tiny",
                        f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode == 2 and "POPDYN_COMPILATION_CACHE_GB" in r.stderr and "'lots'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


ANALYSE = """
import json, sys
import numpy as np
import popdyn
popdyn.setup_host_devices()
import jax
from popdyn import store
from popdyn.analyses.dynamics import analyze_group
from popdyn.config import build_sweep
run = sys.argv[1]
s = build_sweep(store.read_config(run))
gp = store.load_params(run)["gru-tanh-8"]
out = analyze_group(s, gp)
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir,
                  "sums": {k: float(np.nansum(np.abs(v))) for k, v in sorted(out.items())}}))
"""


@pytest.mark.slow
def test_a_second_process_loads_both_analysis_programs_from_the_cache(tiny_run, tmp_path):
    """The group analysis's two programs — the descent and the rest, whose eig and solve are XLA's own
    kernels on a CPU, no host callbacks — are written by the first process and loaded by the next,
    which compiles neither again and computes the same numbers."""
    import json

    env = {**os.environ, "POPDYN_COMPILATION_CACHE": str(tmp_path / "cache")}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tiny programs compile fast
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def analyse():
        r = subprocess.run([sys.executable, "-c", ANALYSE, str(tiny_run)], capture_output=True, text=True,
                           env=env, cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    def programs(folder):
        return sorted(p.name for p in folder.glob("jit_program-*-cache"))

    first = analyse()
    folder = Path(first["dir"])
    assert folder.parent == tmp_path / "cache" and folder.name == _compile_cache.host_tag()
    written = programs(folder)
    assert len(written) == 2  # descend and finish: neither refused for a host callback
    second = analyse()
    assert programs(folder) == written  # nothing compiled anew
    assert second["sums"] == first["sums"]
    assert np.isfinite(list(first["sums"].values())).all()
