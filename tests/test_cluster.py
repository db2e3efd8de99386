"""A grid split into shards of whole groups, run as a Hydra multirun (submitit_local: the SLURM code path
as local processes), gathered back into one dataset by ``popdyn.store.load``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from popdyn import hosts, store
from popdyn.config import ConfigError, build_sweep
from popdyn.population import shard_of_groups
from tests.test_sweep import ROOT, config, run_script


def test_shards_are_whole_groups_balanced_by_cost():
    s = build_sweep(config(grid="flipflop"))  # 24 groups: 4 archs × 2 activations × 3 widths
    of = shard_of_groups(s.grid.groups, 8)
    assert of == shard_of_groups(s.grid.groups, 8)  # deterministic: every job computes the same split
    cost = np.zeros(8)
    for g, k in zip(s.grid.groups, of):
        cost[k] += {"vanilla": 1, "ugrnn": 2, "gru": 3, "lstm": 4}[g.arch] * g.units**2
    assert cost.max() / cost.mean() < 1.25
    parts = [build_sweep(config(f"shard={k}", "num_shards=8", grid="flipflop")).groups for k in range(8)]
    names = [g.name for p in parts for g in p]
    assert sorted(names) == sorted(g.name for g in s.grid.groups)  # each group in exactly one shard


@pytest.mark.parametrize(
    ("overrides", "named"),
    [(["shard=2", "num_shards=2"], "shard"), (["num_shards=3"], "num_shards"), (["shard=-1"], "shard")],
)
def test_impossible_shards_are_refused(overrides, named):
    with pytest.raises(ConfigError, match=named):
        build_sweep(config(*overrides))  # tiny: 2 groups


def test_a_multirun_with_one_bad_job_sends_none(tmp_path):
    """Every job's config is checked before the first is sent: the bad last one is named, nothing trains
    and nothing is written (no sweep directory, no multirun.yaml)."""
    sweep = tmp_path / "multirun"
    r = run_script("-m", "+grid=tiny", "train.steps=20,0", f"hydra.sweep.dir={sweep}", "progress=false",
                   cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "job #1 of 2" in r.stderr and "train.steps=0" in r.stderr and "no job was sent" in r.stderr
    assert not sweep.exists()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_run):
    """The tiny grid run in one process (conftest's ``tiny_run``) and as 2 shards through submitit_local."""
    root = tmp_path_factory.mktemp("cluster")
    single, sweep = tiny_run, root / "multirun"
    r = run_script("-m", "+grid=tiny", "hydra/launcher=submitit_local", "shard=range(2)", "num_shards=2",
                   f"hydra.sweep.dir={sweep}", "progress=false", cwd=root)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return single, sweep


@pytest.mark.slow
def test_multirun_shards_gather_to_the_single_process_run(runs):
    single, sweep = runs
    found = store.shards(sweep)
    assert sorted(found) == [0, 1] and all(not (d / store.SIMILARITY).exists() for d in found.values())
    a, b = store.load(sweep), store.load(single)
    assert a.sizes["member"] == b.sizes["member"] == 4
    for k in ("loss", "final_loss", "val_loss", "diverged", "n_fixed_points", "transition", "fp_eigenvalues"):
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
    pa, pb = store.load_params(sweep), store.load_params(single)
    assert pa.keys() == pb.keys()
    for g in pa:
        jax.tree.map(np.testing.assert_array_equal, pa[g].params, pb[g].params)
    # comparisons need every network: they run on the gathered sweep, and equal the single run's
    r = run_script(f"run_dir={sweep}", "progress=false", cwd=sweep, script="analyze.py")
    assert r.returncode == 0, r.stderr
    a = store.load(sweep)
    for k in ("svcca_distance", "cka_distance", "topology_distance"):
        np.testing.assert_allclose(a[k].values, b[k].values, atol=1e-6, err_msg=k)
    r = run_script(f"run_dir={sweep}", "progress=false", cwd=sweep, script="figures.py")
    assert r.returncode == 0, r.stderr
    assert (sweep / "figures" / "mds_svcca.png").exists()


@pytest.mark.slow
def test_missing_duplicated_or_foreign_shards_are_named(runs, tmp_path):
    single, sweep = runs
    found = store.shards(sweep)
    broken = tmp_path / "missing"
    shutil.copytree(sweep, broken)
    shutil.rmtree(broken / found[1].name)
    with pytest.raises(store.RunDirError, match=r"shard\(s\) 1 of 2 missing"):
        store.load(broken)
    twice = tmp_path / "twice"
    shutil.copytree(sweep, twice)
    shutil.copytree(found[0], twice / "copy")
    with pytest.raises(store.RunDirError, match="shard 0 is there twice"):
        store.load(twice)
    foreign = tmp_path / "foreign"
    shutil.copytree(sweep, foreign)
    shutil.copytree(single, foreign / "other")
    with pytest.raises(store.RunDirError, match="different configs"):
        store.load(foreign)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(run_dir, cwd, *overrides):
    """``scripts/sweep.py +grid=tiny`` as the 2 processes of one run (one host device each)."""
    port = _free_port()
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / "sweep.py"),
                "+grid=tiny",
                "progress=false",
                f"hydra.run.dir={run_dir}",
                "distributed.enabled=true",
                f"distributed.coordinator=127.0.0.1:{port}",
                "distributed.num_processes=2",
                f"distributed.process_id={i}",
                *overrides,
            ],
            cwd=cwd,
            env={**os.environ, "POPDYN_CPU_DEVICES": "1"},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(2)
    ]


@pytest.mark.slow
def test_two_processes_train_and_analyse_like_one(runs, tmp_path):
    """``distributed.enabled=true``: 2 processes (jax.distributed over gloo, one host device each) train and
    analyse the tiny grid together — each group's members split over both — into one run directory that
    only process 0 writes; the results equal the one-process run's (2 host devices)."""
    single, _ = runs
    multi = tmp_path / "multi"
    procs = _two_processes(multi, tmp_path)
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert "process 0 of 2: 1 local and 2 devices in all" in outs[0][0] + outs[0][1]
    a, b = store.load(multi), store.load(single)  # every file checked against process 0's manifests
    for k in ("loss", "final_loss", "val_loss", "diverged", "n_fixed_points", "transition", "fp_eigenvalues"):
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
    for k in ("svcca_distance", "cka_distance", "topology_distance"):
        np.testing.assert_allclose(a[k].values, b[k].values, atol=1e-6, err_msg=k)
    pa, pb = store.load_params(multi), store.load_params(single)
    for g in pa:
        jax.tree.map(np.testing.assert_array_equal, pa[g].params, pb[g].params)
    assert not list(multi.rglob(".*.tmp-*")) and (multi / "figures" / "mds_svcca.png").exists()


@pytest.mark.slow
def test_a_process_failing_alone_stops_the_other_within_seconds(tmp_path):
    """Process 0 alone fails (it is the only writer, and ``members.csv`` is a directory: clearing the
    run's tables before the first group trains fails) while process 1 goes on into training's
    collectives: process 0 logs its error and ends, and process 1 stops within seconds — not after JAX's
    5-minute shutdown barrier — both with a non-zero status, and nothing of the directory is lost."""
    run_dir = tmp_path / "run"
    (run_dir / "members.csv").mkdir(parents=True)
    start = time.monotonic()
    procs = _two_processes(run_dir, tmp_path)
    try:
        outs = [p.communicate(timeout=280) for p in procs]
    finally:
        for p in procs:
            p.kill()
    elapsed = time.monotonic() - start
    assert all(p.returncode != 0 for p in procs), [err[-2000:] for _, err in outs]
    log0 = "".join(outs[0])  # Hydra's console log is stdout
    assert "process 0 of 2 failed" in log0 and "IsADirectoryError" in log0 and "members.csv" in log0
    assert elapsed < 150, f"{elapsed:.0f} s"  # start-up and training take ~30 s; the barrier would add 300
    assert (run_dir / "members.csv").is_dir()  # what was there is kept


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"enabled": "yes"}, "distributed.enabled"),
        ({"enabled": True, "num_processes": 2, "process_id": 2}, "process_id"),
        ({"enabled": True, "num_processes": -1}, "num_processes"),
        ({"enabled": True, "nodes": 2}, "nodes"),
        ({"enabled": True, "coordinator": "notahost", "num_processes": 1, "process_id": 0}, "host:port"),
        ({"enabled": True, "coordinator": "node1:port", "num_processes": 1, "process_id": 0}, "'node1:port'"),
    ],
)
def test_bad_distributed_settings_are_refused_before_joining(section, named):
    with pytest.raises(hosts.DistributedError, match=named):
        hosts.initialize(section)
    assert not jax.distributed.is_initialized()
