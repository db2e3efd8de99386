"""``kill -9`` in the middle of a tiny sweep, then the same command again: the same numbers, bit for bit, as
a run never interrupted, and no finished group computed twice."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from popdyn import store
from popdyn.config import build_sweep

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "sweep.py")
STEPS, CHUNK = 100, 20
PER_PHASE = STEPS // CHUNK  # chunks of one phase
PER_GROUP = 2 * PER_PHASE  # a group trains its search, then its seeds
# train.checkpoint_seconds=0: a checkpoint after every chunk but a phase's last (30 s by default, which a
# tiny run never reaches)
ARGS = ["+grid=tiny", "analyze=false", "progress=false", f"train.steps={STEPS}", f"train.chunk={CHUNK}",
        "train.checkpoint_seconds=0"]  # fmt: skip

# The run to be killed is scripts/sweep.py under a small harness: on the kill_at-th chunk call (the chunks
# before it done and saved) it writes `marker` and waits there for the signal.
HARNESS = """
import os, runpy, sys, time
from pathlib import Path

from popdyn.train import GroupTrainer

kill_at, marker, script = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real_chunk, calls = GroupTrainer.chunk, [0]


def chunk(self, hp, state):
    calls[0] += 1
    if calls[0] == kill_at:
        marker.with_name("tmp").write_text(str(os.getpid()))
        os.replace(marker.with_name("tmp"), marker)
        time.sleep(600)
    return real_chunk(self, hp, state)


GroupTrainer.chunk = chunk
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""

# Where to kill: before the k-th chunk call (1-based; k - 1 chunks done), one k at random in the search of
# the first group, one in its seeds, one anywhere in the second group (the first one finished by then).
# The first chunk of a phase is a kill before that phase has saved anything.
_rng = random.Random(0)
KILL_AT = [
    _rng.randint(1, PER_PHASE),
    PER_PHASE + _rng.randint(1, PER_PHASE),
    PER_GROUP + _rng.randint(1, PER_GROUP),
]


def sweep(run_dir: Path, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *ARGS, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of every sweep here: one JAX compilation cache for all of them, filled by the clean
    run, so that the others load its programs instead of compiling them again (a tiny run is mostly
    compilation: this saves minutes)."""
    cache = tmp_path_factory.mktemp("jax-cache")
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory, env):
    """A run never interrupted, and its group names in training order."""
    run_dir = tmp_path_factory.mktemp("clean") / "run"
    r = sweep(run_dir, run_dir.parent, env)
    assert r.returncode == 0, r.stderr
    names = [g.name for g in build_sweep(store.read_config(run_dir)).groups]
    assert len(names) == 2  # KILL_AT assumes two groups
    return run_dir, names


def kill_at_chunk(k: int, run_dir: Path, tmp_path: Path, env: dict) -> None:
    """Start the sweep into ``run_dir`` and ``kill -9`` it before its ``k``-th chunk."""
    marker = tmp_path / "waiting"
    with open(tmp_path / "killed.log", "w") as out:
        cmd = [sys.executable, "-c", HARNESS, str(k), str(marker), SCRIPT, *ARGS, f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
        try:
            deadline = time.monotonic() + 300
            while not marker.exists():
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()
                assert time.monotonic() < deadline, "the sweep never reached its chunk"
                time.sleep(0.05)
            assert int(marker.read_text()) == proc.pid
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()  # no-op once it is dead; never leave it behind when an assert fails
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def snapshot(d: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def assert_same_results(got: Path, want: Path, names: list[str]) -> None:
    for g in names:
        for name in ("params.npz", "losses.npz"):
            with np.load(store.group_dir(got, g) / name) as a, np.load(store.group_dir(want, g) / name) as b:
                assert sorted(a.files) == sorted(b.files), (g, name)
                for k in b.files:
                    assert a[k].dtype == b[k].dtype, (g, name, k)
                    np.testing.assert_array_equal(a[k], b[k], err_msg=f"{g}/{name}: {k}")
    tables = [
        store.group_dir(got, g).relative_to(got) / t for g in names for t in (store.MEMBERS, store.TRIALS)
    ]
    for table in [*tables, Path(store.MEMBERS), Path(store.TRIALS)]:
        pd.testing.assert_frame_equal(pd.read_csv(got / table), pd.read_csv(want / table), check_exact=True)


@pytest.mark.slow
@pytest.mark.parametrize("k", KILL_AT)
def test_kill_9_mid_sweep_then_resume_gives_the_clean_run(clean, env, tmp_path, k):
    want, names = clean
    run_dir = tmp_path / "run"
    kill_at_chunk(k, run_dir, tmp_path, env)

    # where it died: `gi` groups finished, `j` chunks of group `gi` done (the first PER_PHASE: its search)
    gi, j = divmod(k - 1, PER_GROUP)
    assert [g for g in names if store.group_done(run_dir, g)] == names[:gi]
    assert not (run_dir / store.MEMBERS).exists()
    gdir = store.group_dir(run_dir, names[gi])
    assert (gdir / store.TRIALS).exists() == (j >= PER_PHASE)
    if j % PER_PHASE:  # mid-phase: the last finished chunk was saved
        with np.load(gdir / "checkpoint.npz") as z:
            assert str(z["phase"]) == ("search" if j < PER_PHASE else "seeds")
    finished = {p: v for g in names[:gi] for p, v in snapshot(store.group_dir(run_dir, g)).items()}
    results = {"params.npz", "losses.npz", store.MEMBERS, store.TRIALS}
    for g in names[:gi]:
        assert results <= {p.name for p in finished if p.parent.name == g}

    r = sweep(run_dir, tmp_path, env)  # the same command again, unpatched: it resumes
    assert r.returncode == 0, r.stderr
    log = r.stdout + r.stderr
    for g in names[:gi]:
        assert f"{g}: already done, skipped" in log
    if j % PER_PHASE:  # continued from the checkpoint, not from scratch
        phase = "search" if j < PER_PHASE else "seeds"
        assert log.count("resuming from step") == 1
        assert f"{names[gi]} {phase}: resuming from step {(j % PER_PHASE) * CHUNK}" in log
    else:
        assert "resuming from step" not in log

    assert_same_results(run_dir, want, names)
    assert not list(run_dir.rglob("*.tmp-*")) and not list(run_dir.rglob("checkpoint.npz"))
    # a group finished before the kill is not recomputed: not a byte, not a timestamp changed
    after = snapshot(run_dir)
    for p, (content, mtime) in finished.items():
        assert after[p] == (content, mtime), p
