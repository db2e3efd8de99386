"""A stored network rebuilt to draw it: its model and parameters (read and checked against the group's
manifest), its states on the task's probe inputs, its fixed points, or its untrained twin."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Float

from popdyn import store
from popdyn.config import build_sweep
from popdyn.model import Model
from popdyn.population import member_key

__all__ = ["Network", "network", "example_states"]


class Network(NamedTuple):
    """One network of a run, ready to draw: its model and parameters, its states on the task's probe
    inputs ``[probes, time, state]`` and its fixed points ``[conditions, fixed_point, state]`` (NaN where
    ``ds.fp_valid`` is False; None for a run without dynamics)."""

    member: int
    model: Model
    params: dict
    states: np.ndarray
    fp_states: np.ndarray | None


def _sweep(run_dir: Path):
    """The run's ``Sweep``: its task, seed and analysis settings."""
    return build_sweep(store.read_config(run_dir))


# compiled once per model and input shape: the figures of one run ask for the same network's states often
@partial(jax.jit, static_argnums=0)
def _states(model: Model, params: dict, inputs):
    return model.states(params, inputs)


@partial(jax.jit, static_argnums=0)
def _outputs(model: Model, params: dict, inputs):
    return model(params, inputs)


def _group_params(run_dir: Path, group: str) -> tuple[store.GroupParams, object]:
    """One group's parameters, read (and checked against its manifest) as ``store.load_params`` reads
    them, but without reading every other group's; and the run's Sweep."""
    sweep = _sweep(run_dir)
    g = next(g for g in sweep.grid.groups if g.name == group)
    path = store.group_dir(run_dir, group) / "params.npz"
    try:
        with np.load(store.verify(path)) as z:
            arrays = {k: z[k] for k in z.files}
    except store.UNREADABLE as e:
        raise store.RunDirError(f"parameters of group {group} in {run_dir} are unreadable ({e})") from None
    member = arrays.pop("member")
    model = Model.for_task(g.arch, g.activation, g.units, sweep.task, sweep.unroll, g.options)
    return store.GroupParams(model, store.unflatten(arrays), member), sweep


def _fp_states(run_dir: Path, ds: xr.Dataset, group: str, member: int) -> np.ndarray:
    """``groups/<group>/dynamics.npz``'s fixed points of ``member`` ``[conditions, K, state]``, padded with
    NaN to the run's ``fixed_point`` size (each group's file is cut to its own most valid points)."""
    path = store.group_dir(run_dir, group) / store.DYNAMICS
    try:
        with np.load(store.verify(path)) as z:
            fp = z["fp_states"][int(np.flatnonzero(z["member"] == member)[0])]
    except (*store.UNREADABLE, IndexError) as e:
        raise store.RunDirError(f"fixed points of network {member} are unreadable ({path}: {e})") from None
    k = ds.sizes.get("fixed_point", fp.shape[1])
    out = np.full((fp.shape[0], max(k, fp.shape[1]), fp.shape[2]), np.nan)
    out[:, : fp.shape[1]] = fp
    return np.where(ds.fp_valid.sel(member=member).values[..., None], out[:, :k], np.nan)


def network(run_dir: str | Path, ds: xr.Dataset, member: int, trained: bool = True) -> Network:
    """Network ``member`` of the run in ``run_dir``, with its probe states and (trained, dynamics
    analysed) fixed points.  ``trained=False``: its untrained twin, with the parameters
    ``popdyn.analysis.compare_run`` compared — ``jax.vmap(model.init)`` over the keys
    ``member_key(seed, "untrained/<m>")`` of every member ``m`` of its group, the same keys and the same
    call, so the very same numbers."""
    run_dir = Path(run_dir)
    group = str(ds.group.sel(member=member).item())
    gp, sweep = _group_params(run_dir, group)
    i = int(np.flatnonzero(gp.member == member)[0])
    params = gp.params
    if not trained:
        keys = jnp.stack([member_key(sweep.seed, f"untrained/{m}") for m in gp.member])
        params = jax.vmap(gp.model.init)(keys)
    params = jax.tree.map(lambda a: jnp.asarray(a[i]), params)
    states = np.asarray(_states(gp.model, params, sweep.task.probe_inputs))
    fps = _fp_states(run_dir, ds, group, member) if trained and "fp_valid" in ds else None
    return Network(member, gp.model, params, states, fps)


def example_states(run_dir: Path, ds: xr.Dataset, member: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One member's states on the task's probe inputs ``[probes, time, state]``, its fixed points
    ``[conditions, K, state]`` (from ``groups/<g>/dynamics.npz``, NaN where not valid) and its
    parameters."""
    net = network(run_dir, ds, member)
    return net.states, net.fp_states, net.params


def _pca(states: Float[np.ndarray, "... state"], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre ``[state]``, top ``n`` principal axes ``[n, state]`` and their shares of the variance of
    the states (rows of every leading axis pooled)."""
    flat = states.reshape(-1, states.shape[-1]).astype(np.float64)
    centre = flat.mean(axis=0)
    _, sv, vt = np.linalg.svd(flat - centre, full_matrices=False)
    total = np.sum(sv**2)
    explained = sv**2 / total if total > 0 else np.zeros_like(sv)
    if vt.shape[0] < n:  # fewer samples than components: pad with zero axes
        vt = np.concatenate([vt, np.zeros((n - vt.shape[0], vt.shape[1]))])
        explained = np.concatenate([explained, np.zeros(n - len(explained))])
    return centre, vt[:n], explained[:n]
