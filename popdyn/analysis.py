"""Analyse the dynamics of a trained run, group by group, into its run directory (SPEC §4).

Each group is two compiled programs over its members (``dynamics.analyze_one`` in two parts, mapped
over the member axis, members split over the devices as in training); its results go to ``groups/<g>/dynamics.npz``
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
from popdyn.dynamics import analyze_descend, analyze_finish
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
    """Every member of one group, as two compiled programs: ``{name: [members, ...]}``.

    The Adam descent (``dynamics.analyze_descend``, most of the time, pure XLA) is sharded over every
    device; the rest (``dynamics.analyze_finish``) as well on accelerators, but on one host device on a
    CPU: its LAPACK work (eig, solve) goes through host callbacks, and a callback in a program sharded
    over 2 host devices on 2 cores waits forever for an XLA pool thread (jaxlib 0.10.2; the same deadlock
    as XLA's own batched LAPACK kernels)."""
    devices = tuple(devices or jax.devices())
    finish_devices = devices[:1] if devices[0].platform == "cpu" else devices
    n = len(gp.member)
    keys = member_keys(sweep.seed, gp.member)
    descend = partial(analyze_descend, gp.model, sweep.task, sweep.fixed_points)
    finish = partial(analyze_finish, gp.model, sweep.task, sweep.fixed_points, sweep.topology)

    def run(f, devs, *args):
        size = padded_size(n, len(devs))
        idx = np.concatenate([np.arange(n), np.zeros(size - n, int)])
        program = population_program(f, Mesh(np.array(devs), ("member",)), sweep.member_batch)
        out = program(*(jax.tree.map(lambda a: np.asarray(a)[idx], a) for a in args))
        return jax.tree.map(lambda v: np.asarray(v)[:n], out)

    def descend_member(params, raw_key):
        return descend(params, jax.random.wrap_key_data(raw_key))

    def finish_member(params, raw_key, h0, h):
        return finish(params, jax.random.wrap_key_data(raw_key), h0, h)

    h0, h = run(descend_member, devices, gp.params, keys)
    return run(finish_member, finish_devices, gp.params, keys, h0, h)


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
