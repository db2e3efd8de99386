"""The paper's figures from a run directory: every expected file as valid PNG and PDF; the script's errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from popdyn import figures

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
FLIPFLOP = [
    "mds_svcca", "distance_svcca", "mds_cka", "distance_cka", "mds_topology", "distance_topology",
    "fixed_points", "trained_untrained",
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
    """Every flip-flop figure of the shared tiny run (conftest), drawn again in this process."""
    paths = figures.draw_all(tiny_run)
    assert len(paths) == 2 * len(FLIPFLOP)
    for name in FLIPFLOP:
        assert_drawn(paths, tiny_run / figures.FIGURES / name)


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


def test_sine_figure_from_a_hand_built_dataset_is_reproducible(tmp_path):
    ds = sine_dataset()
    paths = figures.sine_frequency(ds, tmp_path / "sine_frequency")
    assert_drawn(paths, tmp_path / "sine_frequency")
    before = [p.read_bytes() for p in paths]
    assert figures.sine_frequency(ds, tmp_path / "sine_frequency") == paths
    assert [p.read_bytes() for p in paths] == before  # a re-run changes no file


def test_mean_and_standard_error_ignore_nan():
    values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, np.nan]])
    mean, se, n = figures._mean_se(values)
    np.testing.assert_allclose(mean, [3.0, 2.0])
    np.testing.assert_allclose(se, [np.std([1, 3, 5], ddof=1) / np.sqrt(3), 0.0])
    np.testing.assert_array_equal(n, [3, 1])
