"""The entry points as a user meets them: Hydra's own errors, refused commands, Ctrl-C, finished runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from popdyn import cli, store
from popdyn.train import GroupTrainer
from tests.test_sweep import ROOT, config, run_script


def _state(run_dir: Path) -> dict:
    """Every path under ``run_dir`` with its bytes (files) and modification time: what 'unchanged' means."""
    return {
        p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
        for p in [run_dir, *sorted(run_dir.rglob("*"))]
    }


def _one_line_error(r, *named):
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("popdyn: error:") and r.stderr.count("\n") == 1, r.stderr
    for word in named:
        assert word in r.stderr, (word, r.stderr)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["task=sin"], ["'sin'", "sine", "flipflop"]),
        (["+grid=flipflp"], ["'flipflp'", "flipflop", "tiny"]),
        (["+grid=tiny", "train.step=10"], ["train.step", "steps", "batch"]),
        (["+grid=tiny", "grid.units=[8,"], ["grid.units=[8,"]),
        (["+grid=tiny", "+sed=3"], ["'sed'", "seed", "train"]),  # a misspelt key added with + is not ignored
        (["+grid=tiny", "progress=abc"], ["progress", "'abc'"]),
        (["+grid=tiny", f"seed={2**63}"], [str(2**63), str(2**63 - 1)]),
    ],
)
def test_hydra_config_errors_are_one_line_exit_2_and_create_nothing(tmp_path, overrides, named):
    new = tmp_path / "results" / "x" / "run"
    r = run_script(*overrides, f"hydra.run.dir={new}", cwd=tmp_path)
    _one_line_error(r, *named)
    assert not (tmp_path / "results").exists()


def test_analyze_and_figures_refuse_bad_run_dirs_and_keys_in_one_line(tmp_path):
    """No run_dir, a run_dir that is a file, an empty config.yaml, a key the script does not have: one line,
    exit 2, nothing made or changed."""
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("")
    for script in ("analyze.py", "figures.py"):
        _one_line_error(run_script(cwd=tmp_path, script=script), "run_dir=PATH")
        _one_line_error(run_script(f"run_dir={a_file}", cwd=tmp_path, script=script), str(a_file), "a file")
        _one_line_error(
            run_script(f"run_dir={empty}", cwd=tmp_path, script=script), "config.yaml", "no config"
        )
        _one_line_error(
            run_script(f"run_dir={empty}", "+dpi=3", cwd=tmp_path, script=script), "'dpi'", "run_dir"
        )
    _one_line_error(run_script("+grid=tiny", f"hydra.run.dir={a_file}", cwd=tmp_path), "a file")
    assert a_file.read_text() == "mine" and (empty / "config.yaml").read_text() == ""


def test_refused_new_run_leaves_no_directory_nor_empty_parents(tmp_path):
    new = tmp_path / "results" / "tiny" / "run"
    r = run_script("+grid=tiny", "grid.arch=[gru,lstmm]", f"hydra.run.dir={new}", cwd=tmp_path)
    _one_line_error(r, "lstmm")
    assert not (tmp_path / "results").exists()


def test_refused_commands_change_nothing_in_an_existing_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _state(run)
    r = run_script("+grid=tiny", "train.steps=41", f"hydra.run.dir={run}", "progress=false", cwd=tmp_path)
    _one_line_error(r, "different config")
    r = run_script("+grid=tiny", "grid.arch=[lstmm]", f"hydra.run.dir={run}", cwd=tmp_path)
    _one_line_error(r, "lstmm")
    r = run_script("+grid=tiny", "dynamics.n_initial=64", f"hydra.run.dir={run}", cwd=tmp_path)
    _one_line_error(r, "dynamics.n_initial=32")
    assert _state(run) == before


def test_rerunning_a_finished_run_touches_nothing(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert (run / ".hydra" / "overrides.yaml").exists()  # popdyn's record of the command that made it
    before = _state(run)
    r = run_script("+grid=tiny", f"hydra.run.dir={run}", "progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "finished" in r.stdout + r.stderr
    assert _state(run) == before


def _as_a_user() -> list[str]:
    """A command prefix under which permissions hold: none for a user; for root, root without the powers
    that ignore them (``setpriv``), or the test is skipped."""
    if os.geteuid() != 0:
        return []
    drop = "-dac_override,-dac_read_search,-fowner"
    prefix = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
    if not shutil.which("setpriv") or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("root writes into read-only directories, and setpriv cannot drop that")
    return prefix


def test_read_only_directories_are_one_line_or_need_no_writes(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    paths = [run, *run.rglob("*")]
    for p in paths:
        p.chmod(p.stat().st_mode & ~0o222)
    sweep = [
        *_as_a_user(),
        sys.executable,
        str(ROOT / "scripts" / "sweep.py"),
        "+grid=tiny",
        "progress=false",
    ]
    try:
        before = _state(run)
        r = subprocess.run([*sweep, f"hydra.run.dir={run}"], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert "finished" in r.stdout
        assert _state(run) == before
        new = run / "new" / "run"
        r = subprocess.run([*sweep, f"hydra.run.dir={new}"], capture_output=True, text=True, cwd=tmp_path)
        _one_line_error(r, "cannot write", str(new))
        assert _state(run) == before
        # the analysis of an analysed run needs no write either; drawing figures there is one line
        user = _as_a_user()

        def script(name):
            command = [
                *user,
                sys.executable,
                str(ROOT / "scripts" / name),
                f"run_dir={run}",
                "progress=false",
            ]
            return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)

        r = script("analyze.py")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert _state(run) == before
        r = script("figures.py")
        _one_line_error(r, "cannot write the figures", str(run))
        assert _state(run) == before
    finally:
        for p in paths:
            p.chmod(p.stat().st_mode | 0o200)


def test_ctrl_c_is_one_line_saying_where_and_exit_130_and_resumes_there(
    tmp_path, capsys, caplog, monkeypatch
):
    cfg = config("grid.arch=[vanilla]", "grid.trials=0", "train.steps=60", "analyze=false", "progress=false")
    real_chunk, calls = GroupTrainer.chunk, {"n": 0}

    def interrupted_chunk(self, hp, state):
        calls["n"] += 1
        if calls["n"] == 3:  # after two chunks of 20 steps
            raise KeyboardInterrupt
        return real_chunk(self, hp, state)

    monkeypatch.setattr(GroupTrainer, "chunk", interrupted_chunk)
    with pytest.raises(SystemExit) as exit_:
        cli.sweep(cfg, tmp_path / "run")
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("popdyn: interrupted"), err
    assert "vanilla-tanh-8" in err and "step 40 of 60" in err and "same command" in err
    assert "resumes from step 40" in err
    monkeypatch.setattr(GroupTrainer, "chunk", real_chunk)
    with caplog.at_level("INFO", logger="popdyn"):
        cli.sweep(cfg, tmp_path / "run")  # the same command
    assert "seeds: resuming from step 40" in caplog.text
    assert store.group_done(tmp_path / "run", "vanilla-tanh-8")


IMPORT_PROBE = """
import os, matplotlib
flags = os.environ.get("XLA_FLAGS")
import popdyn, popdyn.sweep, popdyn.figures, popdyn.analysis, popdyn.store, popdyn.cli
import jax
from jax._src import xla_bridge
print("imported: backend", matplotlib.get_backend(), "flags", os.environ.get("XLA_FLAGS") == flags,
      "cpu_devices", jax.config.jax_num_cpu_devices, "started", xla_bridge.backends_are_initialized())
popdyn.cli.main(lambda: None)  # what scripts/*.py do first
print("entry point: backend", matplotlib.get_backend(), "devices", len(jax.devices()))
"""


def _probe(code: str, **env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "POPDYN_CPU_DEVICES")} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)  # fmt: skip


def test_importing_popdyn_changes_no_global_state_and_the_entry_point_sets_it_up():
    """Importing keeps a notebook's backend (svg here: not Agg) and JAX's device count as they were, and
    starts no JAX backend (issue 20); the entry point then asks for the host devices and Agg."""
    r = _probe(IMPORT_PROBE, MPLBACKEND="svg", POPDYN_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    assert r.returncode == 0, r.stderr
    assert "imported: backend svg flags True cpu_devices -1 started False" in r.stdout, r.stdout
    assert "entry point: backend agg devices 2" in r.stdout.lower(), r.stdout


def test_where_jax_started_first_popdyn_uses_its_devices_and_says_how_many():
    code = "import logging, jax\nlogging.basicConfig(level=logging.INFO)\njax.devices()\n"
    code += "import popdyn\npopdyn.setup_host_devices()\nprint('devices', len(jax.devices()))"
    r = _probe(code, POPDYN_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    assert r.returncode == 0, r.stderr
    assert "devices 1" in r.stdout and "using the 1 cpu device(s) it has" in r.stderr, r.stderr
