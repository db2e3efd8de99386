"""The sweep end to end: Hydra configs, bad input, results on disk, reload, resume."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from popdyn import cli, store
from popdyn import sweep as sweep_mod
from popdyn.config import ConfigError, build_sweep
from popdyn.population import member_ids
from popdyn.sweep import run_sweep, train_group

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def config(*overrides, grid="tiny"):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="config", overrides=[f"+grid={grid}", *overrides] if grid else list(overrides)
        )


@pytest.mark.parametrize("grid", [None, "tiny", "flipflop", "sine", "cdi"])
def test_every_grid_config_validates(grid):
    s = build_sweep(config(grid=grid))
    if grid in ("flipflop", "sine", "cdi"):  # the population of [U] §2.2
        assert s.task.name == grid
        assert len(s.grid.groups) * len(s.grid.l2) == 96 and s.grid.n_members == 2880
        assert (s.train.steps, s.train.batch, s.grid.seeds) == (20000, 64, 30)
    assert s.grid.n_members > 0


def test_command_line_overrides_reach_the_sweep():
    s = build_sweep(config("grid.units=[8,16]", "train.steps=17", "task.T=11", "seed=3", "grid.trials=0"))
    assert s.grid.units == (8, 16) and s.train.steps == 17 and s.task.T == 11 and s.seed == 3
    assert len(s.grid.groups) == 4


BAD = [
    ("grid.arch=[gru,transformer]", "transformer"),
    ("grid.activation=[sigmoid]", "sigmoid"),
    ("task.name=copy", "copy"),
    ("grid.units=[8,0]", "units"),
    ("grid.units=[-4]", "units"),
    ("grid.l2=[-0.1]", "l2"),
    ("train.steps=0", "train.steps"),
    ("grid.arch=[]", "empty"),
    ("grid.seeds=0", "grid.seeds"),
    ("task.p=1.5", "1.5"),
    ("task.T=0", "T"),
    ("dynamics.q_tol=-1", "dynamics.q_tol"),
    ("+dynamics.tolerance=1", "tolerance"),
    ("analyze=maybe", "analyze"),
    ("similarity.keep_variance=1.5", "similarity.keep_variance"),
    ("similarity.untrained=[transformer]", "transformer"),
    ("+similarity.metric=dsa", "metric"),
    # issue 18 item 11: values that used to be accepted, and range errors that name the range
    ("train.log_every=41", "at most train.steps = 40"),
    ("train.final_window=41", "train.final_window = 41 must be at most train.steps"),
    ("grid.hparams.momentum=1.0", "grid.hparams.momentum must be in [0, 1), got 1.0"),
    ("grid.hparams.decay=1.5", "grid.hparams.decay must be in (0, 1], got 1.5"),
    ("grid.search.momentum=[0.5,1.2,linear]", "grid.search.momentum high must be in [0.5, 1]"),
    ("grid.search.decay=[1.1,1.2,linear]", "grid.search.decay low must be in (0, 1]"),
    ("dynamics.lr_decay=2", "dynamics.lr_decay = 2.0 is impossible; it must be in (0, 1]"),
    ("dynamics.noise=-1", "dynamics.noise = -1.0 is impossible; it must be ≥ 0"),
    ("dynamics.max_points=0", "it must be > 0 (or null: every distinct point)"),
    ("dynamics.burn_in=1", "it must be in [0, 1)"),
    ("similarity.samples=-1", "it must be ≥ 0 (0: all)"),
]


@pytest.mark.parametrize("override, named", BAD)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, capsys, override, named):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.sweep(config(override), run_dir)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("popdyn: error:") and named in err and err.count("\n") == 1
    assert not run_dir.exists()


def test_more_devices_than_there_are_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.sweep(config(f"train.devices={len(jax.devices()) + 1}"), run_dir)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("popdyn: error: train.devices") and f"1 … {len(jax.devices())}" in err
    assert not run_dir.exists()


def test_bad_names_list_the_allowed_ones():
    with pytest.raises(ConfigError, match="allowed: vanilla, ugrnn, gru, lstm"):
        build_sweep(config("grid.arch=[rnn]"))


def run_script(*args, cwd, script="sweep.py"):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True, cwd=cwd
    )


def test_script_rejects_bad_input_before_compiling(tmp_path):
    run_dir = tmp_path / "run"
    r = run_script("+grid=tiny", "grid.arch=[gru,lstmm]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert r.returncode == 2 and "lstmm" in r.stderr and "Traceback" not in r.stderr
    assert not run_dir.exists()
    r = run_script("+grid=nosuchgrid", cwd=tmp_path)
    assert r.returncode != 0 and "nosuchgrid" in r.stderr and "tiny" in r.stderr


def test_tiny_sweep_writes_and_reloads(tiny_run):
    ds = store.load(tiny_run)
    s = build_sweep(store.read_config(tiny_run))
    assert ds.sizes["member"] == s.grid.n_members == 4
    assert list(ds.member.values) == sorted(member_ids(s.grid).values())
    assert set(ds.arch.values) == {"vanilla", "gru"} and set(ds.seed.values) == {0, 1}
    assert ds.sizes["step"] == s.train.steps // s.train.log_every
    assert np.isfinite(ds.loss).all() and not ds.diverged.any()
    assert (ds.loss.isel(step=-1) < ds.loss.isel(step=0)).all()  # every network learned something
    members = pd.read_csv(tiny_run / "members.csv")
    assert list(members.columns) == store.MEMBER_COLUMNS
    assert (members.status == store.member_status(members.final_loss, members.diverged)).all()
    assert (ds.status.values == members.status.values).all()
    trials = pd.read_csv(tiny_run / "trials.csv")
    assert (trials.status == store.member_status(trials.final_loss, trials.diverged)).all()
    assert len(trials) == 2 * s.grid.trials and trials.chosen.sum() == 2
    # the seeds use the hyper-parameters of the trial with the lowest validation loss
    for g, t in trials.groupby("group"):
        best = t.loc[t.val_loss.idxmin()]
        assert best.chosen
        np.testing.assert_allclose(ds.lr.where(ds.group == g, drop=True), best.lr)
    params = store.load_params(tiny_run)
    for name, gp in params.items():
        out = jax.vmap(gp.model, in_axes=(0, None))(gp.params, s.task.probe_inputs)
        assert out.shape == (len(gp.member), *s.task.probe_targets.shape)
        # provenance: the time loop that trained the group (vanilla, gru on a CPU: XLA's hoisted loop)
        entry = json.loads((store.group_dir(tiny_run, name) / store.MANIFEST).read_text())["params.npz"]
        assert entry["time_loop"] == gp.model.time_loop() == "hoisted"
    assert not list(tiny_run.rglob("*.tmp-*")) and not list(tiny_run.rglob("checkpoint.npz"))
    assert (tiny_run / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_groups_and_changes_nothing(tiny_run):
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tiny_run.rglob("*") if p.is_file()}
    r = run_script("+grid=tiny", f"hydra.run.dir={tiny_run}", "progress=false", cwd=tiny_run)
    assert r.returncode == 0, r.stderr
    assert "is finished: nothing to do" in r.stdout + r.stderr
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tiny_run.rglob("*") if p.is_file()} == before


def test_same_dir_with_other_config_is_refused(tiny_run, capsys):
    before = (tiny_run / "members.csv").read_bytes()
    with pytest.raises(SystemExit):
        cli.sweep(config("train.steps=41"), tiny_run)
    assert "different config" in capsys.readouterr().err
    assert (tiny_run / "members.csv").read_bytes() == before


def test_a_second_process_on_the_same_directory_is_refused(tmp_path):
    run_dir = tmp_path / "busy"
    with store.locked(run_dir):  # as a running sweep holds it
        r = run_script("+grid=tiny", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert r.returncode == 2 and "in use by another popdyn process" in r.stderr
        assert "Traceback" not in r.stderr
        assert [p.name for p in run_dir.iterdir()] == [store.LOCK]  # nothing written, our lock kept
        r = run_script(f"run_dir={run_dir}", cwd=tmp_path, script="analyze.py")
        assert r.returncode == 2 and "Traceback" not in r.stderr
    with store.locked(run_dir):  # released when its holder is done: free again
        pass


def test_unwritable_or_full_results_dir_is_refused_before_training(tmp_path, monkeypatch):
    s = build_sweep(config())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # (root may write anyway)
            with pytest.raises(store.RunDirError, match="cannot write"):
                run_sweep(s, locked / "run", progress=False)
    finally:
        locked.chmod(0o700)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(store.RunDirError, match="cannot write"):
        run_sweep(s, tmp_path / "a_file" / "run", progress=False)
    full = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(store.files.shutil, "disk_usage", lambda path: full)
    with pytest.raises(store.RunDirError, match="GiB free"):
        run_sweep(s, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_load_refuses_missing_and_unfinished_dirs(tmp_path):
    with pytest.raises(store.RunDirError, match="no run directory"):
        store.load(tmp_path / "nothing")
    with pytest.raises(store.RunDirError, match="not a popdyn run directory"):
        store.load(tmp_path)
    s = build_sweep(config("grid.trials=0"))
    store.prepare_run(tmp_path, s.config)
    with pytest.raises(store.RunDirError, match="not finished"):
        store.load(tmp_path)


def test_same_config_and_seed_give_identical_results(tmp_path):
    s = build_sweep(config("grid.arch=[ugrnn]", "train.steps=20"))
    a = store.load(run_sweep(s, tmp_path / "a", progress=False))
    b = store.load(run_sweep(s, tmp_path / "b", progress=False))
    assert a.identical(b.assign_attrs(run_dir=a.run_dir))


def test_one_compilation_per_group_and_resume_mid_group(tmp_path, monkeypatch):
    # an unusual width so that no other test has compiled this group's program in this process
    s = build_sweep(
        config(
            "grid.arch=[lstm]",
            "grid.units=[5]",
            "train.steps=60",
            "grid.seeds=3",
            "train.checkpoint_seconds=0",
        )
    )
    group = s.grid.groups[0]
    trainer = train_group(s, group, tmp_path / "full", progress=False)
    assert trainer.traces == 1  # search and seed phases, three chunks each: one program

    # interrupt the seed phase after its first chunk (checkpoint_seconds=0: one after every chunk)
    real_chunk, calls = type(trainer).chunk, {"n": 0}

    def dying_chunk(self, hp, state):
        calls["n"] += 1
        if calls["n"] == 3 + 2:  # 3 search chunks, then 1 seed chunk, then die
            raise KeyboardInterrupt
        return real_chunk(self, hp, state)

    monkeypatch.setattr(type(trainer), "chunk", dying_chunk)
    with pytest.raises(KeyboardInterrupt):
        train_group(s, group, tmp_path / "cut", progress=False)
    gdir = store.group_dir(tmp_path / "cut", group.name)
    assert (gdir / "checkpoint.npz").exists() and not store.group_done(tmp_path / "cut", group.name)
    monkeypatch.setattr(type(trainer), "chunk", real_chunk)
    train_group(s, group, tmp_path / "cut", progress=False)
    for name in ("params.npz", "losses.npz"):
        with np.load(store.group_dir(tmp_path / "full", group.name) / name) as a, np.load(gdir / name) as b:
            for k in a.files:
                np.testing.assert_array_equal(a[k], b[k])


def test_choice_is_the_best_non_diverged_trial_or_the_smallest_lr(caplog):
    s = build_sweep(config("grid.l2=[0.0,0.1]", "grid.trials=3"))
    group = s.grid.groups[0]
    rows = [dict(l2=l2, trial=t, lr=lr) for l2 in (0.0, 0.1) for t, lr in enumerate((0.1, 0.01, 0.05))]
    val = np.array([0.2, 0.5, 0.1, 0.3, 0.2, 0.9])
    diverged = np.array([False, False, True, True, True, True])
    chosen = sweep_mod._choose(group, s, rows, val, diverged)
    assert chosen[0.0] is rows[0]  # trial 2 has the lowest val_loss but diverged
    assert chosen[0.1] is rows[4]  # every trial diverged: the smallest learning rate
    assert "every trial diverged" in caplog.text


def test_tiny_sweep_analyses_the_dynamics(tiny_run):
    """After training, every group's fixed points and flip-flop transitions join the store, per member."""
    ds = store.load(tiny_run)
    assert (tiny_run / "dynamics.yaml").exists()
    assert ds.n_fixed_points.dims == ("member", "condition") and ds.sizes["condition"] == 1
    assert ds.transition.dims == ("member", "fixed_point", "fixed_point_to")
    assert ds.fp_eigenvalues.sizes["mode"] == 8 and ds.topology_ok.dtype == bool
    n = ds.n_fixed_points.values[:, 0]
    assert (n >= 1).all()  # every network has at least the point its states settle to
    assert (ds.fp_valid.sum("fixed_point").values[:, 0] == n).all()
    rows = ds.transition.sum("fixed_point_to").values
    for m in range(ds.sizes["member"]):  # each valid point's runs end somewhere: rows sum to 1
        np.testing.assert_allclose(rows[m][: n[m]], 1.0, atol=1e-5)


def test_tiny_sweep_compares_every_network(tiny_run):
    """SVCCA / CKA between trained members and untrained vanilla twins, topology, MDS: in the store."""
    ds = store.load(tiny_run)
    for m in ("svcca", "cka"):
        d = ds[f"{m}_distance"]
        assert d.dims == ("member", "member_to") and d.shape == (4, 4)
        np.testing.assert_array_equal(d.values, d.values.T)
        assert (np.diag(d.values) == 0).all() and ((d.values >= 0) & (d.values <= 1)).all()
        assert np.isfinite(ds[f"mds_{m}"].values).all() and ds[f"mds_{m}"].dims == ("member", "mds")
    assert ds.topology_distance.dims == ("member", "member_to")
    # the grouped topology compares every non-diverged network that has a fixed point
    has_points = (ds.n_fixed_points.values.sum(axis=1) > 0) & ~ds.diverged.values
    assert (ds.topology_compared.values == has_points).all() and has_points.all()
    # how much each grid factor explains each distance: arch has two values here, the other axes one
    table = ds.statistics
    assert table.dims == ("metric", "factor", "statistic")
    assert list(table.metric.values) == ["svcca", "cka", "topology", "procrustes"]  # registry order
    assert list(table.factor.values) == ["arch", "activation", "units", "l2", "trained"]
    arch = table.sel(factor="arch")
    assert np.isfinite(arch.sel(statistic=["R2", "pseudo_F", "p_value", "nn_accuracy"]).values).all()
    assert (arch.sel(statistic="n").values == 4).all()
    assert np.isnan(table.sel(factor="units").values).all()  # one width: nothing to explain
    assert np.isfinite(table.sel(metric="svcca", factor="trained", statistic="R2").item())  # twins
    full = store.load_similarity(tiny_run)
    assert full.sizes["network"] == 6 and int((~full.trained).sum()) == 2
    assert set(full.arch.values[~full.trained.values]) == {"vanilla"}
    # the trained block of the full matrix is the members' matrix, labelled the same way
    t = full.where(full.trained, drop=True).svcca_distance.values[:, :4]
    np.testing.assert_array_equal(t, ds.svcca_distance.values)
    assert np.isfinite(full.svcca_distance.values).all() and np.isfinite(full.mds_all_svcca.values).all()


def test_similarity_preparation_is_the_same_in_any_blocks(tiny_run):
    from popdyn.analysis import _prepare_group, sample_rows

    s = build_sweep(store.read_config(tiny_run))
    model = store.load_params(tiny_run)["gru-tanh-8"].model
    params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 5))
    rows = sample_rows(s)
    whole, ok = _prepare_group(s, model, params, rows, block=64)
    blocks, ok2 = _prepare_group(s, model, params, rows, block=2)  # 2 + 2 + 1 (padded)
    assert ok.all() and ok2.all() and whole["svcca"].k.shape == (5,)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(blocks), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_corrupt_similarity_file_is_a_named_error_and_the_analysis_mends_it(tiny_run, tmp_path):
    """A cut similarity.npz: reading the run names it; the comparison the message advises makes it again
    (it does not read the damaged file on the way), to the very same numbers."""
    from popdyn import analysis

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = run / store.SIMILARITY
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(store.RunDirError, match="similarity.npz"):
        store.load(run)
    analysis.compare_run(build_sweep(store.read_config(run)), run, progress=False)
    mended, original = store.load(run), store.load(tiny_run)
    for m in ("svcca_distance", "cka_distance", "topology_distance", "statistics"):
        np.testing.assert_array_equal(mended[m].values, original[m].values)


def test_resume_clears_what_a_kill_mid_write_left(tiny_run, tmp_path):
    """A temp file of a write never renamed, a checkpoint of a group killed just after finishing: gone."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    gdir = run / "groups" / "gru-tanh-8"
    (gdir / ".params.npz.tmp-99999").write_bytes(b"half")
    store.write_npz(gdir / "checkpoint.npz", {"phase": np.array("seeds")})
    r = run_script("+grid=tiny", f"hydra.run.dir={run}", "progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not list(run.rglob("*.tmp-*")) and not (gdir / "checkpoint.npz").exists()
    assert "checkpoint.npz" not in json.loads((gdir / store.MANIFEST).read_text())


def test_altered_files_and_another_config_are_named_never_read(tiny_run, tmp_path):
    """Every file is checked against its directory's manifest (sha256, config hash) when read."""
    manifest = json.loads((tiny_run / "groups" / "gru-tanh-8" / store.MANIFEST).read_text())
    assert {"params.npz", "losses.npz", "members.csv", "dynamics.npz"} <= set(manifest)
    assert manifest["params.npz"]["jax"] == jax.__version__ and manifest["params.npz"]["config_sha256"]
    cases = {
        "members": ("groups/gru-tanh-8/members.csv", lambda b: b.replace(b"0.0001", b"0.0002", 1)),
        "params": ("groups/vanilla-tanh-8/params.npz", lambda b: b[:-10]),
        "config": ("config.yaml", lambda b: b.replace(b"seed: 0", b"seed: 1", 1)),
    }
    for name, (rel, change) in cases.items():
        run = tmp_path / name
        shutil.copytree(tiny_run, run)
        (run / rel).write_bytes(change((run / rel).read_bytes()))
        expect = "another config" if name == "config" else f"{Path(rel).name} is truncated or altered"
        with pytest.raises(store.RunDirError, match=expect):
            store.load(run) if name != "params" else store.load_params(run)


def test_group_analysis_over_two_devices_equals_each_member_alone(tiny_run):
    """The sharded descent + one-device finish of ``analyze_group`` is ``analyze_one`` per member."""
    from functools import partial

    from popdyn.analyses.dynamics import analyze_group, analyze_one, member_keys

    s = build_sweep(store.read_config(tiny_run))
    gp = store.load_params(tiny_run)["gru-tanh-8"]
    assert len(jax.devices()) == 2
    group = analyze_group(s, gp, jax.devices())
    one = jax.jit(partial(analyze_one, gp.model, s.task, s.fixed_points, s.topology))
    for i, raw in enumerate(member_keys(s.seed, gp.member)):
        alone = one(jax.tree.map(lambda a, i=i: a[i], gp.params), jax.random.wrap_key_data(raw))
        assert int(alone["n_fixed_points"][0]) == int(group["n_fixed_points"][i, 0]) >= 1
        for k in ("fp_states", "fp_valid", "fp_n_unstable", "transition"):
            np.testing.assert_allclose(group[k][i], np.asarray(alone[k]), rtol=1e-4, atol=1e-5, err_msg=k)
    # a second group of the same kind reuses the compiled programs (compiling them takes seconds)
    from popdyn.analyses.dynamics import _group_programs

    programs = _group_programs(
        gp.model, s.task, s.fixed_points, s.topology, tuple(jax.devices()), s.member_batch
    )
    sizes = [p._cache_size() for p in programs]
    again = analyze_group(s, gp, jax.devices())
    assert [p._cache_size() for p in programs] == sizes == [1, 1]
    jax.tree.map(np.testing.assert_array_equal, again, group)


def test_analyze_script_resumes_refuses_other_settings_and_missing_dirs(tiny_run, tmp_path):
    before = {p: p.read_bytes() for p in tiny_run.rglob("*.npz")}
    # the run's own (tiny) dynamics settings are the defaults: nothing to redo
    r = run_script(f"run_dir={tiny_run}", "progress=false", cwd=tmp_path, script="analyze.py")
    assert r.returncode == 0, r.stderr
    assert {p: p.read_bytes() for p in tiny_run.rglob("*.npz")} == before  # already analysed: untouched
    r = run_script(f"run_dir={tiny_run}", "dynamics.n_initial=64", cwd=tmp_path, script="analyze.py")
    assert r.returncode == 2 and "dynamics.n_initial=32" in r.stderr and "Traceback" not in r.stderr
    assert {p: p.read_bytes() for p in tiny_run.rglob("*.npz")} == before
    missing = tmp_path / "nope"
    r = run_script(f"run_dir={missing}", cwd=tmp_path, script="analyze.py")
    assert r.returncode == 2 and "not a popdyn run directory" in r.stderr and "Traceback" not in r.stderr
    assert not missing.exists()


def test_a_finite_but_astronomical_loss_is_named_exploded():
    """status: non-finite loss (or the training's flag) → diverged; finite but above EXPLODED_LOSS →
    exploded (a network that outputs 0 scores ≤ 1); else trained."""
    big = store.EXPLODED_LOSS
    loss = np.array([0.05, np.nan, 1e30, 2 * big, big, np.inf, 0.3])
    diverged = np.array([False, True, False, False, False, False, True])
    t, d, e = store.TRAINED, store.DIVERGED, store.EXPLODED
    assert store.member_status(loss, diverged).tolist() == [t, d, e, e, t, d, d]


def _mark(run: Path, status: dict[int, str]) -> None:
    """Rewrite the run's members.csv (through the store, so that the manifests vouch for them) with the
    members ``status`` diverged (final loss NaN) or exploded (final loss 1e30), weights untouched: a
    diverged member is frozen at finite weights, which look like a trained network's."""
    for g in (run / "groups").iterdir():
        frame = pd.read_csv(g / store.MEMBERS)
        for m, s in status.items():
            row = frame.member == m
            frame.loc[row, "final_loss"] = np.nan if s == store.DIVERGED else 1e30
            frame.loc[row, "diverged"] = s == store.DIVERGED
        frame["status"] = store.member_status(frame.final_loss, frame.diverged)
        store.write_csv(g / store.MEMBERS, frame)
    store.write_tables(run, [g.name for g in (run / "groups").iterdir()])
    for name in (store.SIMILARITY, store.SIMILARITY_CONFIG, store.DYNAMICS_CONFIG):
        (run / name).unlink(missing_ok=True)
    for g in (run / "groups").iterdir():
        (g / store.DYNAMICS).unlink(missing_ok=True)
    shutil.rmtree(run / "figures", ignore_errors=True)


@pytest.mark.slow
def test_diverged_and_exploded_members_are_nan_in_every_analysis_and_comparison(tiny_run, tmp_path, caplog):
    """A mixed population — one member diverged, one exploded, two trained — analysed, compared and drawn:
    the two have no fixed points, distances, MDS coordinates or share in any statistic (NaN), the log
    counts them and its median distance is over the trained pairs alone; then every member
    non-trained (the degenerate run): NaN everywhere, and the run still completes with its figures."""
    import logging
    import re

    from popdyn import analysis, figures

    s = build_sweep(store.read_config(tiny_run))
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    bad = {1: store.DIVERGED, 2: store.EXPLODED}  # one of each group (0, 1: vanilla; 2, 3: gru)
    _mark(run, bad)
    with caplog.at_level(logging.INFO, logger="popdyn"):
        analysis.analyze_run(s, run, progress=False)
        analysis.compare_run(s, run, progress=False)
    assert figures.draw_all(run)
    ds = store.load(run)
    assert ds.status.values.tolist() == ["trained", "diverged", "exploded", "trained"]
    out, ok = ds.member.isin(list(bad)).values, ~ds.member.isin(list(bad)).values
    assert np.isnan(ds.n_fixed_points.values[out]).all() and not ds.fp_valid.values[out].any()
    assert np.isnan(ds.transition.values[out]).all() and not ds.topology_ok.values[out].any()
    assert (ds.n_fixed_points.values[ok] >= 1).all() and ds.topology_ok.values[ok].all()
    for m in ("svcca", "cka", "topology"):
        d = ds[f"{m}_distance"].values
        assert np.isnan(d[out]).all() and np.isnan(d[:, out]).all()
        assert np.isfinite(d[np.ix_(ok, ok)]).all()
        assert np.isnan(ds[f"mds_{m}"].values[out]).all() and np.isfinite(ds[f"mds_{m}"].values[ok]).all()
    # two trained networks are too few for any statistic over the trained members (n counts only them)
    n = ds.statistics.sel(statistic="n").drop_sel(factor="trained").values
    assert not (n > ok.sum()).any()
    # the untrained twins of the vanilla members (the diverged one's too) are compared
    full = store.load_similarity(run)
    twins = ~full.trained.values
    assert np.isfinite(full.svcca_distance.values[np.ix_(twins, twins)]).all()
    assert "1 diverged networks left out" in caplog.text and "1 exploded networks left out" in caplog.text
    assert "1 (diverged)" in caplog.text and "2 (exploded)" in caplog.text  # the dynamics log names them
    compared = full.svcca_distance.values[np.ix_(~np.isin(full.member, list(bad)) | twins,
                                                 ~np.isin(full.member, list(bad)) | twins)]  # fmt: skip
    median = float(np.median(compared[np.triu_indices(len(compared), 1)]))
    logged = re.search(r"median SVCCA distance ([0-9.]+)", caplog.text).group(1)
    assert logged == f"{median:.3f}"

    # every member diverged or exploded: nothing is compared, and the run completes
    run2 = tmp_path / "run2"
    shutil.copytree(tiny_run, run2)
    _mark(run2, {0: store.DIVERGED, 1: store.EXPLODED, 2: store.DIVERGED, 3: store.DIVERGED})
    analysis.analyze_run(s, run2, progress=False)
    analysis.compare_run(s, run2, progress=False)
    assert figures.draw_all(run2)
    ds = store.load(run2)
    assert np.isnan(ds.n_fixed_points.values).all()
    for m in ("svcca", "cka", "topology"):
        assert np.isnan(ds[f"mds_{m}"].values).all() and not ds.topology_compared.values.any()
    assert np.isnan(ds.statistics.drop_sel(factor="trained").values).all()
