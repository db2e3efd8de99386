"""One self-describing file of a run's results, readable without popdyn: netCDF-4 (h5netcdf) or zarr.

:func:`export` (``popdyn.store.export``) writes every labelled array ``popdyn.store.load`` gives (group
``members``: the training table, losses, every analysis) and ``popdyn.store.load_similarity`` gives (group
``similarity``: every compared network, untrained twins included) with their dimension names and
coordinates; the run's config (YAML) and what the run's manifest recorded (popdyn, JAX versions) are
attributes.  netCDF has no complex type: each complex variable (``fp_eigenvalues``) is written as
``<name>_real`` and ``<name>_imag``, each with the attribute ``complex_part`` ("real"/"imag") and
``complex_of`` (the original name); read back, the pair is ``ds.fp_eigenvalues_real + 1j *
ds.fp_eigenvalues_imag``.  Booleans become int8 with xarray's ``dtype: bool`` marker (xarray decodes them
back to bool).

(This module is not named ``export``: ``popdyn.store.export`` is the function, and a module of that name
would be hidden behind it.)

Read it anywhere with xarray alone::

    members = xr.open_dataset("run.nc", group="members", engine="h5netcdf")
    sim = xr.open_dataset("run.nc", group="similarity", engine="h5netcdf")   # when the run has one
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from popdyn.store.layout import read_config
from popdyn.store.names import CONFIG, MANIFEST, SIMILARITY
from popdyn.store.read import load, load_similarity

FORMATS = ("netcdf", "zarr")


def export(run_dir: str | Path, path: str | Path, format: str | None = None) -> Path:
    """Write run ``run_dir``'s labelled results into ``path`` (``.nc`` → netCDF-4 through h5netcdf,
    ``.zarr`` → a zarr store; or ``format``); return ``path``.  Written beside and renamed into place, so
    that an interrupted export leaves no half-written file; an existing ``path`` is replaced only once the
    new one is complete, and only if it is an earlier export (a netCDF-4 file, a zarr store): anything
    else there — a run directory, a folder of yours, another file — is ``FileExistsError``, untouched."""
    run_dir, path = Path(run_dir), Path(path)
    format = format or ("zarr" if path.suffix == ".zarr" else "netcdf")
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; allowed: {', '.join(FORMATS)}")
    if not path.absolute().parent.is_dir():
        raise FileNotFoundError(
            f"cannot export to {path}: the folder {path.absolute().parent} does not exist"
        )
    if (path.exists() or path.is_symlink()) and not _an_export(path):
        raise FileExistsError(
            f"{path} exists and is not an earlier export (a netCDF-4 file or a zarr store); it is left as it "
            "is: remove it or pick another path"
        )
    parts = {"members": load(run_dir)}  # the netCDF (zarr) groups
    if (run_dir / SIMILARITY).exists():
        parts["similarity"] = load_similarity(run_dir)
    attrs = _provenance(run_dir)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        for i, (group, ds) in enumerate(parts.items()):
            ds = portable(ds)
            ds.attrs.update({k: _attr(v) for k, v in attrs.items()})
            if format == "netcdf":
                ds.to_netcdf(tmp, group=group, mode="w" if i == 0 else "a", engine="h5netcdf")
            else:
                ds.to_zarr(tmp, group=group, mode="w")
        _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def portable(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with what netCDF-4 cannot hold rewritten (complex → ``_real``/``_imag`` pairs, dict and
    other non-scalar attributes → JSON strings)."""
    data = {}
    for name, v in ds.data_vars.items():
        if np.iscomplexobj(v.values):
            for part, values in (("real", v.real), ("imag", v.imag)):
                data[f"{name}_{part}"] = values.assign_attrs(v.attrs, complex_part=part, complex_of=name)
        else:
            data[name] = v
    coords = {k: _bool(c) for k, c in ds.coords.items()}
    out = xr.Dataset({k: _bool(v) for k, v in data.items()}, coords=coords)
    out.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
    return out


def _bool(v: xr.DataArray) -> xr.DataArray:
    """A boolean variable as int8 with xarray's ``dtype: bool`` marker (decoded back to bool on reading)."""
    if v.dtype != bool:
        return v
    return v.astype(np.int8).assign_attrs(v.attrs, dtype="bool")


def _attr(v):
    if isinstance(v, (str, int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return v
    return json.dumps(v, default=str)


def _provenance(run_dir: Path) -> dict:
    """The run's config (YAML text) and the versions its manifest recorded for its config file."""
    out = {
        "popdyn_export": "popdyn.store.export (netCDF groups: members, similarity)",
        "run_dir": str(run_dir),
    }
    config = read_config(run_dir)
    out["config"] = yaml.safe_dump(config, sort_keys=False)
    manifest = run_dir / MANIFEST
    if manifest.exists():
        entry = json.loads(manifest.read_text()).get(CONFIG, {})
        for k, v in entry.items():
            if k not in ("content", "config_sha256"):
                out[f"written_by_{k}"] = v
    return out


def _an_export(path: Path) -> bool:
    """Whether ``path`` is what an export writes: a netCDF-4 (HDF5) file or a zarr store."""
    if path.is_symlink():
        return False
    if path.is_dir():
        return (path / ".zgroup").exists() or (path / "zarr.json").exists()
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
