"""popdyn.store.export: one netCDF-4 file of a run, read back with xarray alone (popdyn and JAX not imported)
and equal to ``store.load`` / ``store.load_similarity``."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from popdyn import store

READ_BACK = """
import pickle, sys
import xarray as xr
parts = {g: xr.open_dataset(sys.argv[1], group=g, engine="h5netcdf").load() for g in ("members", "similarity")}
assert "popdyn" not in sys.modules and "jax" not in sys.modules, "reading needs neither popdyn nor JAX"
with open(sys.argv[2], "wb") as f:
    pickle.dump(parts, f)
"""


def _same(read, want):
    for name, v in want.data_vars.items():
        if np.iscomplexobj(v.values):
            re, im = read[f"{name}_real"], read[f"{name}_imag"]
            assert re.attrs["complex_of"] == name and im.attrs["complex_part"] == "imag"
            got = re.values + 1j * im.values
            assert re.dims == v.dims
        else:
            got = read[name].values
            assert read[name].dims == v.dims, name
        assert got.dtype.kind == v.values.dtype.kind or v.dtype == bool, name
        np.testing.assert_array_equal(got, v.values, err_msg=name)
    for name, c in want.coords.items():
        np.testing.assert_array_equal(read[name].values, c.values, err_msg=name)


def test_export_is_read_back_by_xarray_alone_equal_to_load(tiny_run, tmp_path):
    path = store.export(tiny_run, tmp_path / "tiny.nc")
    out = tmp_path / "read.pkl"
    r = subprocess.run([sys.executable, "-c", READ_BACK, str(path), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(out, "rb") as f:
        parts = pickle.load(f)
    _same(parts["members"], store.load(tiny_run))
    _same(parts["similarity"], store.load_similarity(tiny_run))
    attrs = parts["members"].attrs
    assert "grid:" in attrs["config"] and attrs["written_by_popdyn"] and attrs["task"] == "flipflop"
    assert not list(tmp_path.glob(".tiny.nc.tmp-*"))  # nothing left beside it


def test_export_refuses_an_unknown_format_and_a_missing_run(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'hdf'; allowed: netcdf, zarr"):
        store.export(tiny_run, tmp_path / "x.nc", format="hdf")
    with pytest.raises(store.RunDirError):
        store.export(tmp_path / "nothing", tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()


def test_export_replaces_an_earlier_export_and_nothing_else(tiny_run, tmp_path):
    """A path holding anything but an earlier export (the run directory itself, a file of the user's) is
    refused and left as it was; an earlier export is replaced; a missing folder is named."""
    nc = store.export(tiny_run, tmp_path / "tiny.nc")
    store.export(tiny_run, nc)  # an earlier export: replaced
    mine = tmp_path / "notes.nc"
    mine.write_text("my notes")
    before = sorted(p.name for p in tiny_run.rglob("*"))
    for target in (mine, tiny_run, tiny_run / "config.yaml"):
        with pytest.raises(FileExistsError, match="not an earlier export"):
            store.export(tiny_run, target, format="zarr" if target == tiny_run else None)
    assert mine.read_text() == "my notes" and sorted(p.name for p in tiny_run.rglob("*")) == before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.export(tiny_run, tmp_path / "no" / "such" / "x.nc")
