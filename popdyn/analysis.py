"""Analyse the dynamics of a trained run, group by group, into its run directory (SPEC §4).

Each group is one compiled program over its members (``dynamics.analyze_one`` mapped over the member
axis, members split over the devices as in training); its results go to ``groups/<g>/dynamics.npz``
(written atomically, so an interrupted analysis resumes with the next group), and the settings to
``dynamics.yaml``.  ``popdyn.store.load`` then exposes them per member.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path

import jax
import numpy as np
import yaml
from jax.sharding import Mesh
from tqdm.auto import tqdm

from popdyn import store
from popdyn.config import Sweep
from popdyn.dynamics import analyze_one
from popdyn.population import member_key, padded_size
from popdyn.train import population_program

log = logging.getLogger("popdyn")


def settings_dict(sweep: Sweep) -> dict:
    return {**asdict(sweep.fixed_points), **asdict(sweep.topology)}


def _check_settings(run_dir: Path, settings: dict) -> None:
    """Refuse to mix analyses made with different settings in one run directory."""
    path = run_dir / store.DYNAMICS_CONFIG
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            k = diff[0]
            raise store.RunDirError(
                f"{run_dir} was analysed with dynamics.{k}={old.get(k)!r}, not {settings.get(k)!r}; "
                f"remove {path.name} and groups/*/{store.DYNAMICS} to analyse it again with new settings"
            )
    else:
        store.write_text(path, yaml.safe_dump(settings, sort_keys=False))


def member_keys(seed: int, members: np.ndarray) -> np.ndarray:
    """One raw key per member id, from the config's seed: independent of grouping and devices."""
    return np.stack([jax.random.key_data(member_key(seed, f"dynamics/{m}")) for m in members])


def analyze_group(sweep: Sweep, gp: store.GroupParams, devices=None) -> dict[str, np.ndarray]:
    """Every member of one group, as one compiled program: ``{name: [members, ...]}``.

    On a CPU the program runs on one host device: its LAPACK work (eig, solve) goes through host
    callbacks, and a callback in a program sharded over 2 host devices on 2 cores waits forever for an
    XLA pool thread (jaxlib 0.10.2; the same deadlock as XLA's own batched LAPACK kernels)."""
    devices = tuple(devices or jax.devices())
    if devices[0].platform == "cpu":
        devices = devices[:1]
    mesh = Mesh(np.array(devices), ("member",))
    n = len(gp.member)
    size = padded_size(n, len(devices))
    idx = np.concatenate([np.arange(n), np.zeros(size - n, int)])
    one = partial(analyze_one, gp.model, sweep.task, sweep.fixed_points, sweep.topology)

    def member(params, raw_key):
        return one(params, jax.random.wrap_key_data(raw_key))

    program = population_program(member, mesh, sweep.member_batch)
    params = jax.tree.map(lambda a: np.asarray(a)[idx], gp.params)
    keys = member_keys(sweep.seed, gp.member)[idx]
    out = program(params, keys)
    return {k: np.asarray(v)[:n] for k, v in out.items()}


def analyze_run(sweep: Sweep, run_dir: str | Path, progress: bool = True) -> Path:
    """Analyse every finished group of a trained run that has no analysis yet; return ``run_dir``."""
    run_dir = Path(run_dir)
    _check_settings(run_dir, settings_dict(sweep))
    groups = store.load_params(run_dir)  # every group must be trained: RunDirError names the missing
    devices = jax.devices()[: sweep.devices] if sweep.devices else None
    todo = [g for g in groups if not (store.group_dir(run_dir, g) / store.DYNAMICS).exists()]
    if not todo:
        log.info("dynamics: every group already analysed")
        return run_dir
    bar = tqdm(todo, desc="dynamics", unit="group", disable=not progress)
    for g in bar:
        bar.set_postfix_str(f"{g} ({len(groups[g].member)} networks)")
        out = analyze_group(sweep, groups[g], devices)
        store.write_npz(store.group_dir(run_dir, g) / store.DYNAMICS, {**out, "member": groups[g].member})
        counts = out["n_fixed_points"]
        log.info(
            "%s: fixed points per condition median %s, stable %s",
            g, np.median(counts, axis=0).tolist(), np.median(out["n_stable"], axis=0).tolist(),
        )  # fmt: skip
    bar.close()
    return run_dir
