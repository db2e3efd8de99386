"""Results on disk without training: small run directories written by ``popdyn.store`` itself, then
damaged the ways a user or a file system damages them (a manifest deleted, a file swapped, edited, cut or
removed), and what reading, resuming and analysing them does."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from popdyn import cli, figures, store
from popdyn import sweep as sweep_mod
from popdyn.config import build_sweep
from popdyn.population import member_ids
from tests.test_sweep import config

GROUPS = ("vanilla-tanh-8", "gru-tanh-8")  # the tiny grid's, two members each


def _members(s, group) -> pd.DataFrame:
    ids = member_ids(s.grid)
    rows = [
        {"member": ids[(group.arch, group.activation, group.units, l2, seed)], "group": group.name,
         "arch": group.arch, "activation": group.activation, "units": group.units, "l2": l2, "seed": seed,
         "lr": 0.01, "decay": 0.9, "momentum": 0.9, "clip": 1.0, "final_loss": 0.5, "val_loss": 0.6,
         "diverged": False, "status": store.TRAINED}
        for l2 in group.l2 for seed in range(s.grid.seeds)
    ]  # fmt: skip
    return pd.DataFrame(rows)[store.MEMBER_COLUMNS]


def write_run(run, *overrides, analysed=True):
    """A finished tiny run as popdyn writes it (made-up numbers): config, every group's files, the tables,
    and (``analysed``) every group's dynamics.npz, dynamics.yaml and similarity.npz."""
    s = build_sweep(config("grid.trials=0", *overrides))
    store.prepare_run(run, s.config, sweep_mod.describe(s))
    for g in s.grid.groups:
        members = _members(s, g)
        member = members["member"].to_numpy()
        params = {"cell": {"recurrent": np.full((len(member), 8, 8), 0.1, np.float32)}}
        loss = np.linspace(1, 0.5, 4, dtype=np.float32)[None].repeat(len(member), 0)
        store.write_group(run, g.name, params, members, loss, np.arange(1, 5) * 10)
        if analysed:
            n_fp = np.full((len(member), 1), 3)
            store.write_npz(
                store.group_dir(run, g.name) / store.DYNAMICS, {"member": member, "n_fixed_points": n_fp}
            )
    store.write_tables(run, [g.name for g in s.grid.groups])
    if analysed:
        store.write_text(run / store.DYNAMICS_CONFIG, yaml.safe_dump({"n_initial": 32}))
        store.write_npz(run / store.SIMILARITY, _similarity(np.arange(s.grid.n_members)))
    return s


def _similarity(network):
    n = len(network)
    return {"network": network, "trained": np.ones(n, bool), "k": np.ones(n, int),
            "svcca": np.zeros((n, n)), "cka": np.zeros((n, n)),
            "mds_svcca": np.zeros((n, 2)), "mds_cka": np.zeros((n, 2))}  # fmt: skip


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "run"
    write_run(path)
    assert store.load(path).sizes["member"] == 4  # readable as written
    return path


def _swap_dynamics(run, group):
    """``dynamics.npz`` replaced by other numbers written without popdyn (as a user's copy would be)."""
    path = run / "groups" / group / store.DYNAMICS
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["n_fixed_points"] = arrays["n_fixed_points"] + 4
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# ----------------------------------------------------------------------------- item 2: deleted manifest
def test_deleted_manifest_does_not_turn_the_checks_off(run):
    """Without groups/<g>/manifest.json, a swapped dynamics.npz or an edited members.csv is an error
    naming the file, never numbers."""
    gdir = run / "groups" / GROUPS[1]
    (gdir / store.MANIFEST).unlink()
    _swap_dynamics(run, GROUPS[1])
    with pytest.raises(store.RunDirError, match=rf"{GROUPS[1]}/members.csv has no entry in its manifest"):
        store.load(run)
    with pytest.raises(store.RunDirError, match=rf"{GROUPS[1]}/params.npz has no entry"):
        store.load_params(run)
    csv = gdir / store.MEMBERS
    csv.write_text(csv.read_text().replace("0.5", "0.25"))
    with pytest.raises(store.RunDirError, match=r"members.csv has no entry"):
        store.load(run)


def test_a_file_popdyn_did_not_write_beside_its_manifest_is_named(run):
    """The manifest is there but says nothing of the file: a file put there by hand is not read."""
    _swap_dynamics(run, GROUPS[0])  # written with np.savez: its manifest entry still holds the old content
    with pytest.raises(store.RunDirError, match=r"dynamics.npz is truncated or altered"):
        store.load(run)
    manifest = json.loads((run / "groups" / GROUPS[0] / store.MANIFEST).read_text())
    del manifest[store.DYNAMICS]
    (run / "groups" / GROUPS[0] / store.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(store.RunDirError, match=rf"{GROUPS[0]}/dynamics.npz has no entry in its manifest"):
        store.load(run)


def test_a_run_written_before_manifests_is_read_after_adopt(run):
    """No manifest anywhere (as popdyn wrote before it kept them): refused with a message naming
    ``store.adopt``; after it the files are checked against what they held when adopted."""
    for m in run.rglob(store.MANIFEST):
        m.unlink()
    with pytest.raises(store.RunDirError, match=r"written before popdyn kept manifests.*popdyn.store.adopt"):
        store.load(run)
    store.adopt(run)
    ds = store.load(run)
    assert ds.sizes["member"] == 4 and (ds.n_fixed_points == 3).all()
    assert {"params.npz", "members.csv", "dynamics.npz"} <= set(
        json.loads((run / "groups" / GROUPS[0] / store.MANIFEST).read_text())
    )
    _swap_dynamics(run, GROUPS[0])
    with pytest.raises(store.RunDirError, match="dynamics.npz is truncated or altered"):
        store.load(run)


def test_a_sweep_refuses_a_run_written_before_manifests_and_keeps_it(tmp_path):
    """Re-running the sweep on such a run retrains nothing and deletes nothing: it points to adopt."""
    run = tmp_path / "run"
    s = write_run(run)
    for m in run.rglob(store.MANIFEST):
        m.unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(store.RunDirError, match=r"no manifest.json anywhere.*popdyn.store.adopt"):
        sweep_mod.run_sweep(s, run, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != store.LOCK} == before


def test_adopt_refuses_a_run_that_has_manifests(run):
    """adopt is for runs older than manifests, not a way to bless a file altered in a newer one."""
    (run / "groups" / GROUPS[0] / store.MANIFEST).unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(store.RunDirError, match=r"written before popdyn kept manifests.*has them"):
        store.adopt(run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written


# ---------------------------------------------------------------- item 5: every read goes through the check
def test_write_tables_refuses_an_altered_group_table(run):
    before = (run / store.MEMBERS).read_bytes()
    csv = run / "groups" / GROUPS[0] / store.MEMBERS
    csv.write_text(csv.read_text().replace("0.5", "0.25"))
    with pytest.raises(store.RunDirError, match=rf"{GROUPS[0]}/members.csv is truncated or altered"):
        store.write_tables(run, list(GROUPS))
    assert (run / store.MEMBERS).read_bytes() == before


def test_example_states_reads_no_swapped_fixed_points(run, monkeypatch):
    ds = store.load(run).assign(fp_valid=lambda d: d.n_fixed_points > 0)
    monkeypatch.setattr(figures.networks, "_states", lambda model, params, inputs: np.zeros((1, 2, 8)))
    manifest = run / "groups" / GROUPS[0] / store.MANIFEST
    kept = manifest.read_bytes()
    manifest.unlink()
    with pytest.raises(store.RunDirError, match=rf"{GROUPS[0]}/params.npz has no entry"):
        figures.example_states(run, ds, 0)
    manifest.write_bytes(kept)
    path = run / "groups" / GROUPS[0] / store.DYNAMICS
    with open(path, "wb") as f:
        np.savez(f, member=np.array([0, 1]), fp_states=np.zeros((2, 1, 1, 8)))
    with pytest.raises(store.RunDirError, match="dynamics.npz is truncated or altered"):
        figures.example_states(run, ds, 0)


def _analyze_cfg(run):
    return OmegaConf.create({"run_dir": str(run), "progress": False, "dynamics": {}, "similarity": {}})


def test_analyze_reads_no_altered_settings(run, capsys):
    (run / store.DYNAMICS_CONFIG).write_text(yaml.safe_dump({"n_initial": 64}))
    with pytest.raises(SystemExit) as e:
        cli.analyze(_analyze_cfg(run))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "dynamics.yaml is truncated or altered" in err and "Traceback" not in err


# --------------------------------------------- items 3 and 12: a re-run recomputes what it must, nothing else
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small group trained for real (no analysis), and the settings that made it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    s = build_sweep(config("grid.arch=[vanilla]", "train.steps=10", "train.chunk=10", "train.log_every=5",
                           "grid.seeds=1", "analyze=false"))  # fmt: skip
    sweep_mod.run_sweep(s, run, progress=False)
    return s, run


def _copy(trained, tmp_path, analysed=True):
    s, run = trained
    out = tmp_path / "run"
    shutil.copytree(run, out)
    gdir = out / "groups" / "vanilla-tanh-8"
    if analysed:  # stand-ins for the analysis, made from the parameters there now
        member = pd.read_csv(gdir / store.MEMBERS)["member"].to_numpy()
        store.write_npz(gdir / store.DYNAMICS, {"member": member, "n_fixed_points": np.full((1, 1), 3)})
        store.write_npz(gdir / store.MEMORY, {"member": member, "singular_values": np.ones((1, 2, 2))})
        store.write_npz(out / store.SIMILARITY, _similarity(member))
    return s, out, gdir


def test_resume_reads_no_altered_search(trained, tmp_path, caplog):
    """The seeds of a group whose search is done resume from its trials.csv: an altered one is not used to
    choose them, the group is searched again."""
    s, run, gdir = _copy(trained, tmp_path, analysed=False)
    trials = pd.read_csv(gdir / store.TRIALS)
    lr = trials.lr[trials.chosen].item()
    for name in (store.MEMBERS, "params.npz", "losses.npz"):  # as if killed in the seeds phase
        store.remove(gdir / name)
    trials.loc[trials.chosen, "lr"] = 0.5
    trials.to_csv(gdir / store.TRIALS, index=False)
    caplog.set_level("WARNING", logger="popdyn")
    sweep_mod.run_sweep(s, run, progress=False)
    assert "trials.csv is truncated or altered" in caplog.text
    assert store.load(run).lr.item() == pytest.approx(lr) != 0.5
    store.verify(gdir / store.TRIALS)


def test_missing_group_table_retrains_the_group_and_drops_its_analysis(trained, tmp_path, caplog):
    s, run, gdir = _copy(trained, tmp_path)
    params = (gdir / "params.npz").read_bytes()
    (gdir / store.MEMBERS).unlink()
    caplog.set_level("WARNING", logger="popdyn")
    sweep_mod.run_sweep(s, run, progress=False)
    assert "vanilla-tanh-8" in caplog.text and "members.csv is missing" in caplog.text
    # what was made from the old parameters is gone; what is there checks
    assert not (gdir / store.DYNAMICS).exists() and not (gdir / store.MEMORY).exists()
    assert not (run / store.SIMILARITY).exists()
    assert (gdir / "params.npz").read_bytes() == params  # the same settings train the same numbers
    store.load(run)
    store.load_params(run)


def test_rewritten_parameters_drop_the_analysis_made_from_the_old(trained, tmp_path):
    """Even with members.csv and its manifest entry both gone (the group looks never finished)."""
    s, run, gdir = _copy(trained, tmp_path)
    store.remove(gdir / store.MEMBERS)
    sweep_mod.run_sweep(s, run, progress=False)
    assert not (gdir / store.DYNAMICS).exists() and not (run / store.SIMILARITY).exists()
    store.load(run)


def test_truncated_parameters_the_advice_given_works(trained, tmp_path, caplog):
    """Item 12: the error says to re-run the sweep; the re-run retrains that group, then it loads."""
    s, run, gdir = _copy(trained, tmp_path, analysed=False)
    path = gdir / "params.npz"
    good = path.read_bytes()
    path.write_bytes(good[:-10])
    with pytest.raises(store.RunDirError, match=r"params.npz is truncated.*re-run the sweep") as e:
        store.load_params(run)
    assert "retrains group vanilla-tanh-8" in str(e.value)
    caplog.set_level("WARNING", logger="popdyn")
    sweep_mod.run_sweep(s, run, progress=False)
    assert "params.npz is truncated or altered" in caplog.text
    assert path.read_bytes() == good
    store.load_params(run)


def test_a_sound_run_is_not_retrained(trained, tmp_path):
    s, run, gdir = _copy(trained, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*.npz")}
    stamp = (gdir / "params.npz").stat().st_mtime_ns
    time.sleep(0.01)
    sweep_mod.run_sweep(s, run, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*.npz")} == before
    assert (gdir / "params.npz").stat().st_mtime_ns == stamp


def test_analysis_advice_names_analyze_and_it_recomputes(trained, tmp_path, monkeypatch, capsys):
    """A truncated analysis file: the error says to run scripts/analyze.py; it recomputes that file (and
    never reports success on a directory whose files fail their check)."""
    from popdyn import analysis
    from popdyn.analyses import dynamics

    s, run, gdir = _copy(trained, tmp_path)
    path = gdir / store.DYNAMICS
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(store.RunDirError, match=r"dynamics.npz is truncated.*scripts/analyze.py run_dir="):
        store.load(run)
    calls = []

    def fake_group(sweep, gp, devices=None):
        calls.append(gp.member.tolist())
        n = len(gp.member)
        return {
            "n_fixed_points": np.full((n, 1), 2),
            "n_stable": np.ones((n, 1)),
            "fp_truncated": np.zeros((n, 1), bool),
        }

    monkeypatch.setattr(dynamics, "analyze_group", fake_group)
    monkeypatch.setattr(analysis, "compare_run", lambda sweep, run_dir, progress=True: run_dir)
    cli.analyze(_analyze_cfg(run))
    assert calls == [[0]] and (store.load(run).n_fixed_points == 2).all()
    # a file analysis does not rewrite, failing its check: the analysis fails, naming it
    csv = run / store.MEMBERS
    csv.write_text(csv.read_text().replace("vanilla", "gru"))
    with pytest.raises(SystemExit) as e:
        cli.analyze(_analyze_cfg(run))
    assert e.value.code == 2 and "members.csv is truncated or altered" in capsys.readouterr().err


# ------------------------------------------------------------- storage sits near the ground (issues 19, 20)
# what popdyn.store may not import, not even inside a function: config, task, training and analysis code
NOT_BELOW_STORE = (
    "popdyn.config", "popdyn.tasks", "popdyn.train", "popdyn.sweep", "popdyn.cli", "popdyn.figures",
    "popdyn.analysis", "popdyn.analyses", "popdyn.similarity", "popdyn.dynamics", "popdyn.geometry",
    "popdyn.attractors", "popdyn.memory", "popdyn.statistics",
)  # fmt: skip


def test_store_imports_no_config_task_or_analysis_code():
    """Every module of the package, its imports inside functions too; and each imports only the store
    modules above it (names → files → layout → read → portable), so that its layers keep one order."""
    import ast
    import pkgutil

    order = ["names", "files", "layout", "read", "portable"]
    modules = sorted(m.name for m in pkgutil.iter_modules(store.__path__))
    assert modules == sorted(order)  # a new module takes its place in the order
    names = []
    for path in [Path(store.__file__), *(Path(store.__path__[0]) / f"{m}.py" for m in order)]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module, f"{path.name}: a relative import"
                names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                below = node.module.removeprefix("popdyn.store.")
                if path.stem in order and below in order:
                    assert order.index(below) < order.index(path.stem), f"{path.name} imports {node.module}"
    bad = [n for n in names if any(n == m or n.startswith(m + ".") for m in NOT_BELOW_STORE)]
    assert not bad, bad
    assert "fcntl" not in names  # Windows has none: the lock is filelock's
    assert "popdyn.store.files" in names and "popdyn.store.read.load" in names  # it saw the modules


def test_reading_a_run_imports_no_config_and_starts_no_jax_backend(tiny_run):
    """store.load, load_similarity, members and load_params of a finished run, in a fresh process:
    none of the config, task or analysis modules is imported, and JAX is not imported by reading (where
    ``import popdyn`` imports it, as to set up host devices without XLA_FLAGS, it has no backend)."""
    import os
    import subprocess
    import sys

    code = f"""
import sys
import popdyn
jax_before = "jax" in sys.modules
from popdyn import store
run = {str(tiny_run)!r}
ds, sim, table = store.load(run), store.load_similarity(run), store.members(run)
assert ds.sizes["member"] == 4 and sim.sizes["network"] >= 4 and len(table) == 4
loaded = sorted(m for m in sys.modules if m.startswith("popdyn."))
bad = [m for m in loaded if any(m == n or m.startswith(n + ".") for n in {NOT_BELOW_STORE!r})]
assert not bad, bad
if not jax_before:
    assert "jax" not in sys.modules, "reading imported jax"
else:
    from jax._src import xla_bridge
    assert not xla_bridge._backends, "reading started a JAX backend"
store.load_params(run)  # builds Models (flax), still no config or task code
bad = [m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in {NOT_BELOW_STORE!r})]
assert not bad, bad
print("ok", jax_before)
"""
    for flags in ("", "--xla_force_host_platform_device_count=1"):  # popdyn sets up devices / leaves them
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert r.returncode == 0 and "ok" in r.stdout, r.stderr
        assert not flags or "ok False" in r.stdout  # devices left alone: jax not imported at all


def test_store_imports_where_there_is_no_fcntl():
    """As on Windows: ``popdyn.store`` imports, and its lock works through filelock."""
    import subprocess
    import sys

    code = "import sys; sys.modules['fcntl'] = None\nfrom popdyn import store\nprint(store.LOCK)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and store.LOCK in r.stdout, r.stderr


def test_a_run_written_before_groups_yaml_reads_the_same_and_gains_it(tiny_run, tmp_path):
    """Without groups.yaml (a run older than it), the groups, shards and models come from config.yaml
    and the parameters: load, members and load_params give what they give with it; the next sweep
    command on the run records it again, the same, and changes nothing else."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    written = (run / store.DESCRIPTION).read_bytes()
    store.remove(run / store.DESCRIPTION)
    assert store.description(run)["groups"][0]["name"] == "vanilla-tanh-8"
    assert store.load(run).identical(store.load(tiny_run).assign_attrs(run_dir=str(run)))
    pd.testing.assert_frame_equal(store.members(run), store.members(tiny_run))
    old, new = store.load_params(run), store.load_params(tiny_run)
    assert list(old) == list(new) == list(GROUPS)
    for g in GROUPS:
        assert old[g].model == new[g].model
        np.testing.assert_array_equal(old[g].member, new[g].member)
    before = {p: p.read_bytes() for p in run.rglob("*.npz")}
    sweep_mod.run_sweep(build_sweep(store.read_config(run)), run, progress=False)
    assert (run / store.DESCRIPTION).read_bytes() == written
    assert {p: p.read_bytes() for p in run.rglob("*.npz")} == before
    store.check_run(run)


def test_the_description_keeps_the_condition_coordinates_exactly():
    """groups.yaml round-trips sine's ω (float32) bit for bit, and each group's Model."""
    s = build_sweep(config(grid="sine"))
    d = yaml.safe_load(yaml.safe_dump(sweep_mod.describe(s), sort_keys=False))
    want = s.task.spec.condition_coords(s.task)["omega"]
    got = np.asarray(d["conditions"]["omega"]["values"], d["conditions"]["omega"]["dtype"])
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert [g["name"] for g in d["groups"]] == [g.name for g in s.grid.groups]
    for g, row in zip(s.grid.groups, d["groups"]):
        model = sweep_mod.Model.for_task(g.arch, g.activation, g.units, s.task, s.unroll, g.options)
        assert row["model"] == store.model_description(model)


def test_every_manifest_entry_records_what_wrote_it(run):
    import importlib.metadata as md

    entry = json.loads((run / "groups" / GROUPS[0] / store.MANIFEST).read_text())["params.npz"]
    for name in store.PROVENANCE_PACKAGES:
        assert entry[name] == md.version(name)
    assert entry["popdyn"] and entry["platform"] and entry["backend"] == "cpu" and entry["device"]
    if (Path(store.files.__file__).parents[2] / ".git").exists():  # run from a checkout
        assert len(entry["git_commit"]) == 40 and isinstance(entry["git_dirty"], bool)
