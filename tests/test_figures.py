"""The paper's figures from a run directory: every expected file as valid PNG and PDF; the script's errors."""

import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

from popdyn import figures
from popdyn.statistics import STATISTICS

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
FLIPFLOP = [
    "mds_svcca", "distance_svcca", "mds_cka", "distance_cka", "mds_topology", "distance_topology",
    "mds_procrustes", "distance_procrustes", "statistics", "fixed_points", "trajectories", "example_trials", "trained_untrained",
    "trained_untrained_states",
]  # fmt: skip


def run_script(*args, cwd, script):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True, cwd=cwd
    )


def assert_drawn(paths, prefix):
    png, pdf = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".pdf")
    assert png in paths and pdf in paths
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000


def test_draw_all_writes_every_flipflop_figure(tiny_run):
    """Every flip-flop figure of the shared tiny run (conftest), drawn again in this process: byte for byte
    what the sweep's own process drew."""
    before = {p: p.read_bytes() for p in (tiny_run / figures.FIGURES).iterdir()}
    paths = figures.draw_all(tiny_run)
    assert len(paths) == 2 * len(FLIPFLOP)
    for name in FLIPFLOP:
        assert_drawn(paths, tiny_run / figures.FIGURES / name)
    assert {p: p.read_bytes() for p in paths} == before


def test_figures_script_refuses_a_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    r = run_script(f"run_dir={missing}", cwd=tmp_path, script="figures.py")
    assert r.returncode == 2 and "popdyn: error" in r.stderr and "Traceback" not in r.stderr
    assert not missing.exists()


def sine_dataset() -> xr.Dataset:
    """Six networks of [U] Fig. 2f by hand: near-identity frequencies, one NaN, one diverged member."""
    rng = np.random.default_rng(0)
    omega = 0.04 * np.linspace(0.0, 1.0, 6) + 0.01
    freq = omega + 0.003 * rng.standard_normal((6, 6))
    freq[1, 2] = np.nan  # no oscillatory pair at that condition
    return xr.Dataset(
        {"sine_frequency": (("member", "condition"), freq),
         "diverged": ("member", [False, False, False, False, False, True])},
        coords={"member": np.arange(6), "omega": ("condition", omega),
                "arch": ("member", ["vanilla", "vanilla", "gru", "gru", "vanilla", "vanilla"]),
                "activation": ("member", ["tanh", "tanh", "tanh", "tanh", "relu", "relu"])},
        attrs={"task": "sine"},
    )  # fmt: skip


def assert_reproducible(draw, prefix):
    """``draw(prefix)`` writes valid files, and drawing again changes no byte of them."""
    paths = draw(prefix)
    assert_drawn(paths, prefix)
    before = [p.read_bytes() for p in paths]
    assert draw(prefix) == paths
    assert [p.read_bytes() for p in paths] == before  # a re-run changes no file


def test_sine_figure_from_a_hand_built_dataset_is_reproducible(tmp_path):
    assert_reproducible(partial(figures.sine_frequency, sine_dataset()), tmp_path / "sine_frequency")


def test_a_full_disk_leaves_every_figure_whole_and_is_one_error(tmp_path, monkeypatch, capsys):
    """Issue 18 item 9: a figure is written under a temporary name and renamed, so a write that fails
    half-way (here: matplotlib's PDF writer dies in zlib with the disk full, as seen on a real full disk)
    leaves the figure drawn before intact under its real name and no temporary file; the error says that
    the disk is full, and ``scripts/figures.py`` prints it as one ``popdyn: error:`` line, exit 2."""
    import shutil
    import zlib

    from matplotlib.figure import Figure
    from omegaconf import OmegaConf

    from popdyn import cli, store

    prefix = tmp_path / "figures" / "sine_frequency"
    paths = figures.sine_frequency(sine_dataset(), prefix)
    before = {p: p.read_bytes() for p in paths}
    real_savefig = Figure.savefig

    def dies_half_way(fig, fname, **kwargs):
        real_savefig(fig, fname, **kwargs)
        Path(fname).write_bytes(Path(fname).read_bytes()[:100])  # what reached the disk
        raise zlib.error("Error -2 while flushing: inconsistent stream state")

    full = shutil.disk_usage(tmp_path)._replace(free=4096)
    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    monkeypatch.setattr(store.files.shutil, "disk_usage", lambda path: full)
    with pytest.raises(store.RunDirError, match="no space left on the device to write .*sine_frequency.png"):
        figures.sine_frequency(sine_dataset(), prefix)
    assert {p: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in prefix.parent.iterdir()) == sorted(p.name for p in paths)  # no temp file

    run_dir = tmp_path / "run"  # the same through the figures script's entry point
    (run_dir / figures.FIGURES).mkdir(parents=True)
    monkeypatch.setattr(store, "read_config", lambda run_dir: {})
    monkeypatch.setattr(
        figures,
        "draw_all",
        lambda run_dir, progress: figures.sine_frequency(
            sine_dataset(), Path(run_dir) / figures.FIGURES / "sine_frequency"
        ),
    )
    with pytest.raises(SystemExit) as exit_:
        cli.figures(OmegaConf.create({"run_dir": str(run_dir), "progress": False}))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("popdyn: error: no space left") and err.count("\n") == 1
    assert not list((run_dir / figures.FIGURES).iterdir())


def statistics_dataset() -> xr.Dataset:
    """``ds.statistics`` by hand: four metrics × five factors, activation and l2 with one value (NaN), no
    topology for ``trained`` (as popdyn.analysis.universality leaves it)."""
    rng = np.random.default_rng(0)
    metrics, factors = ["svcca", "cka", "dsa", "topology"], ["arch", "activation", "units", "l2", "trained"]
    table = np.full((len(metrics), len(factors), len(STATISTICS)), np.nan)
    s = {name: i for i, name in enumerate(STATISTICS)}
    for m in range(len(metrics)):
        for f in (0, 2, 4):
            if metrics[m] == "topology" and factors[f] == "trained":
                continue
            r2, nn = rng.uniform(0.05, 0.7), rng.uniform(0.3, 1.0)
            table[m, f, [s["R2"], s["R2_low"], s["R2_high"]]] = r2, r2 - 0.05, r2 + 0.08
            table[m, f, [s["nn_accuracy"], s["nn_low"], s["nn_high"]]] = nn, nn - 0.1, min(nn + 0.1, 1.0)
            table[m, f, [s["pseudo_F"], s["p_value"], s["nn_chance"]]] = (
                3.0,
                rng.choice([0.001, 0.04, 0.6]),
                0.3,
            )
            table[m, f, [s["n"], s["groups"]]] = 24, 4 if f == 0 else 3 if f == 2 else 2
    return xr.Dataset(
        {"statistics": (("metric", "factor", "statistic"), table)},
        coords={"metric": metrics, "factor": factors, "statistic": list(STATISTICS)},
        attrs={"task": "flipflop"},
    )


def test_statistics_figure_from_a_hand_built_dataset_is_reproducible(tmp_path):
    assert_reproducible(partial(figures.statistics, statistics_dataset()), tmp_path / "statistics")


def loss_dataset(
    archs=("vanilla", "ugrnn", "lstm", "gru"), activations=("tanh", "relu"), widths=(64, 128, 256)
):
    """Loss curves of [U]'s grid by hand: two networks per (arch, activation, width), one diverged."""
    rng = np.random.default_rng(0)
    rows = [(a, f, u) for a in archs for f in activations for u in widths for _ in range(2)]
    step = np.arange(10, 101, 10)
    loss = np.exp(-step / 50.0)[None] * rng.uniform(0.5, 2.0, (len(rows), 1))
    diverged = np.zeros(len(rows), bool)
    diverged[1] = True
    loss[1, 5:] = np.nan
    loss[3] = 1e30  # finite, but no trained network: status "exploded"
    status = np.where(diverged, "diverged", "trained")
    status[3] = "exploded"
    return xr.Dataset(
        {"loss": (("member", "step"), loss), "diverged": ("member", diverged), "status": ("member", status)},
        coords={"member": np.arange(len(rows)), "step": step,
                "arch": ("member", [r[0] for r in rows]), "activation": ("member", [r[1] for r in rows]),
                "units": ("member", [r[2] for r in rows]),
                "group": ("member", [f"{a}-{f}-{u}" for a, f, u in rows])},
        attrs={"task": "flipflop"},
    )  # fmt: skip


@pytest.mark.parametrize("archs", [("vanilla", "ugrnn", "lstm", "gru"), ("gru",), ("vanilla", "lstm", "gru")])
def test_loss_curves_draw_one_panel_per_arch(archs, tmp_path):
    """[U]'s 24 groups, one arch, and three: a panel per arch, a line per group (activation × width)."""
    ds = loss_dataset(archs)
    fig = figures.training._loss_figure(ds)  # a bare Figure: pyplot never holds it, nothing to close
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == [a for a in figures.ARCHS if a in archs]  # canonical order
    for ax in shown:
        assert len(ax.get_legend().get_texts()) == 6  # 2 activations × 3 widths
        assert ax.get_yscale() == "log"
    legend = [t.get_text() for t in shown[0].get_legend().get_texts()]
    assert sum("(1), 1 diverged or exploded" in t for t in legend) == 2, legend  # members 1 and 3
    path = figures.loss_curves(ds, tmp_path / "loss_curves.png")
    assert path.read_bytes()[:8] == PNG


def test_network_figures_of_the_tiny_run(tiny_run, tmp_path):
    """The single-network figures drawn on their own, and the untrained twin they draw: the very network
    compare_run compared."""
    ds = figures.store.load(tiny_run)
    for name in ("trajectories", "example_trials"):
        assert_drawn(getattr(figures, name)(ds, tiny_run, tmp_path / name), tmp_path / name)
    member = figures.example_member(ds)
    trained, twin = (
        figures.network(tiny_run, ds, member),
        figures.network(tiny_run, ds, member, trained=False),
    )
    assert trained.states.shape == twin.states.shape and not np.allclose(trained.states, twin.states)
    assert twin.fp_states is None and trained.fp_states.shape[:2] == ds.fp_valid.sel(member=member).shape
    # the twin is the network compare_run compared: its CKA distance to the trained member is the stored one
    from popdyn.similarity import cka

    sim = figures.store.load_similarity(tiny_run)
    rows = np.load(tiny_run / figures.store.SIMILARITY)["rows"]
    x, y = (n.states.reshape(-1, n.states.shape[-1])[rows] for n in (trained, twin))
    a, b = (
        int(np.flatnonzero((sim.member.values == member) & (sim.trained.values == t))[0])
        for t in (True, False)
    )
    np.testing.assert_allclose(1 - float(cka(x, y)), sim.cka_distance.values[a, b], atol=1e-4)


def test_a_cut_fixed_point_set_is_named_in_the_title():
    net = xr.Dataset(
        {"fp_valid": (("condition", "fixed_point"), np.ones((3, 4), bool)),
         "fp_truncated": ("condition", [False, True, False]), "fp_n_found": ("condition", [4, 150, 4])}
    )  # fmt: skip
    assert figures.dynamics._truncation(net) == "\nset cut at condition 2: 4 kept of 150 found"
    assert figures.dynamics._truncation(
        net.assign(fp_truncated=("condition", [True, True, False]))
    ).startswith("\nset cut at 2 of 3 conditions: 8 kept of 154 found")
    assert figures.dynamics._truncation(net.assign(fp_truncated=("condition", [False] * 3))) == ""
    one = net.isel(condition=[1])
    assert figures.dynamics._truncation(one) == "\nset cut: 4 kept of 150 found"


def test_mean_and_standard_error_ignore_nan():
    values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, np.nan]])
    mean, se, n = figures._style._mean_se(values)
    np.testing.assert_allclose(mean, [3.0, 2.0])
    np.testing.assert_allclose(se, [np.std([1, 3, 5], ddof=1) / np.sqrt(3), 0.0])
    np.testing.assert_array_equal(n, [3, 1])


def fake_run(name: str, monkeypatch) -> xr.Dataset:
    """A sine or cdi run without training: three random vanilla/gru networks (one relu), their fixed points
    near their probe states, one oscillatory pair per point; the run's task, networks and similarity are
    patched into ``figures`` so the figures that read a run directory draw them."""
    from types import SimpleNamespace

    from popdyn.model import Model
    from popdyn.tasks import make_task

    task = make_task(name, T=30, n_probe=4) if name == "sine" else make_task("cdi", T=12, n_probe=5)
    arch, act = ["vanilla", "vanilla", "gru"], ["tanh", "relu", "tanh"]
    conditions, k, units = task.x_star.shape[0], 3, 6

    made = {}

    def network(run_dir, ds, member, trained=True):
        if (member, trained) not in made:  # each network made once: init and states compile slowly
            model = Model(arch[member], act[member], units, task.n_in, task.n_out)
            params = model.init(jax.random.key(member + (0 if trained else 10)))
            states = np.asarray(figures.networks._states(model, params, task.probe_inputs))
            cond = np.asarray(task.probe_condition)
            centre = np.stack([states[cond == c, -5:].mean(axis=(0, 1)) for c in range(conditions)])
            fps = centre[:, None] + 0.05 * np.arange(k)[None, :, None]
            made[member, trained] = figures.Network(member, model, params, states, fps if trained else None)
        return made[member, trained]

    rng = np.random.default_rng(0)
    eig = rng.uniform(-0.5, 0.5, (3, conditions, k, units)) + 0j
    angle = 2 * np.pi * np.linspace(0.01, 0.05, conditions)
    eig[..., 0] = 0.95 * np.exp(1j * angle)[None, :, None]  # one oscillatory pair per point
    eig[..., 1] = np.conj(eig[..., 0])
    valid = np.ones((3, conditions, k), bool)
    valid[0, 0, 2] = False
    ds = xr.Dataset(
        {"diverged": ("member", [False] * 3), "topology_ok": ("member", [True] * 3),
         "fp_valid": (("member", "condition", "fixed_point"), valid),
         "fp_n_unstable": (("member", "condition", "fixed_point"), np.zeros((3, conditions, k), int)),
         "fp_eigenvalues": (("member", "condition", "fixed_point", "mode"), np.where(valid[..., None], eig, np.nan))},
        coords={"member": np.arange(3), "arch": ("member", arch), "activation": ("member", act),
                "units": ("member", [units] * 3), "seed": ("member", [0, 0, 0]),
                "group": ("member", [f"{a}-{f}-{units}" for a, f in zip(arch, act)])},
        attrs={"task": name},
    )  # fmt: skip
    sim = xr.Dataset(
        {"svcca_distance": (("network", "network_to"), np.abs(rng.standard_normal((5, 5))))},
        coords={"network": np.arange(5), "member": ("network", [0, 1, 2, 0, 1]),
                "trained": ("network", [True, True, True, False, False]),
                "arch": ("network", ["vanilla", "vanilla", "gru", "vanilla", "vanilla"])},
    )  # fmt: skip
    sweep = SimpleNamespace(task=task, topology=SimpleNamespace(burn_in=0.5), seed=0)
    monkeypatch.setattr(figures.dynamics, "_sweep", lambda run_dir: sweep)
    monkeypatch.setattr(figures.dynamics, "network", network)
    monkeypatch.setattr(figures.store, "load_similarity", lambda run_dir: sim)
    return ds


@pytest.mark.parametrize("task", ["sine", "cdi"])
def test_state_figures_of_sine_and_cdi_are_reproducible(task, monkeypatch, tmp_path):
    """[U] Figs. 2b, 2d, 3b, 4a and the example trials, from random networks standing in for a run."""
    ds = fake_run(task, monkeypatch)
    names = ["trajectories", "example_trials", "trained_untrained_states"] + (
        ["sine_eigenvalues"] if task == "sine" else []
    )
    for name in names:
        draw = partial(getattr(figures, name), ds, tmp_path)
        if name == "trajectories":  # 3-D axes too give the same bytes twice
            assert_reproducible(draw, tmp_path / name)
        else:
            assert_drawn(draw(tmp_path / name), tmp_path / name)


def test_primary_eigenvalue_is_read_at_the_point_nearest_the_orbit_centre():
    """As popdyn.analyses.dynamics._oscillation: the valid point nearest the mean late state, and there the complex
    eigenvalue of largest modulus (real ones and invalid points never chosen)."""
    states = np.zeros((2, 10, 2))
    states[1] += 1.0  # orbit centres (0, 0) and (1, 1)
    fp = np.array([[[0.1, 0.0], [5.0, 5.0]], [[0.0, 0.0], [1.1, 1.0]]])
    eig = np.array(
        [[[0.99, 0.5 + 0.5j, 0.5 - 0.5j], [0.2 + 0.9j, 0.2 - 0.9j, 0.1]],
         [[0.1 + 0.1j, 0.1 - 0.1j, 0.0], [0.95, 0.3 + 0.2j, 0.3 - 0.2j]]]
    )  # fmt: skip
    valid = np.ones((2, 2), bool)
    ds = xr.Dataset(
        {"fp_valid": (("member", "condition", "fixed_point"), valid[None]),
         "fp_eigenvalues": (("member", "condition", "fixed_point", "mode"), eig[None])},
        coords={"member": [7]},
    )  # fmt: skip
    point, primary = figures.primary_eigenvalues(ds, 7, states, fp, burn_in=0.5)
    np.testing.assert_array_equal(point, [0, 1])
    np.testing.assert_allclose(np.abs(primary.imag), [0.5, 0.2])
    np.testing.assert_allclose(primary.real, [0.5, 0.3])
    ds["fp_valid"][0, 1, 1] = False  # the nearest point invalid: the other one is read
    point, primary = figures.primary_eigenvalues(ds, 7, states, fp, burn_in=0.5)
    assert point[1] == 0 and np.isclose(abs(primary[1].imag), 0.1)
