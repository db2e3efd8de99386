"""Reading a run back: its members' table (:func:`members`), every labelled result over ``member``
(:func:`load`), every compared network (:func:`load_similarity`), the trained parameters
(:func:`load_params`), and the table of files written before analyses named their dimensions
(:data:`LEGACY_FILES`).  No JAX is imported, but to build a ``Model`` in :func:`load_params`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from popdyn.store.files import COORDS_KEY, DIMS_KEY, PREFIX_KEY, UNREADABLE, RunDirError, unflatten, verify
from popdyn.store.layout import (
    MEMBER_COLUMNS,
    MODEL_FIELDS,
    OPTIONAL_COLUMNS,
    TRAINED,
    _config,
    _groups,
    description,
    group_dir,
    member_status,
)
from popdyn.store.names import DYNAMICS, LSA, MEMBERS, MEMORY, SIMILARITY, TRAINING, TRAINING_FILES

if TYPE_CHECKING:
    from popdyn.model import Model


def _sizes(arrays: dict[str, np.ndarray]) -> dict:
    """A model's task sizes read off its stored parameters (runs older than :data:`DESCRIPTION`):
    ``n_out`` and the readout bias from the readout, ``vocab`` and ``n_in`` from the embedding
    ``[vocab, n_in]`` or the cell's ``input`` kernel ``[n_in, ·]``."""
    if "embedding/embedding" in arrays:
        vocab, n_in = arrays["embedding/embedding"].shape[-2:]
    else:
        vocab, n_in = 0, arrays["cell/input"].shape[-2]
    return {"n_in": int(n_in), "n_out": int(arrays["readout/kernel"].shape[-1]),
            "readout_bias": "readout/bias" in arrays, "vocab": int(vocab)}  # fmt: skip


def members(run_dir: str | Path, partial: bool = False) -> pd.DataFrame:
    """The rows of every (``partial``: every finished) group's ``members.csv``, each file checked, with
    ``status`` (:func:`member_status`, worked out for runs written before the column) — without reading
    any analysis, so that it serves while an analysis file is being recomputed."""
    run_dir = Path(run_dir)
    frames = []
    for g in _groups(run_dir, partial):
        try:
            frames.append(pd.read_csv(verify(group_dir(run_dir, g) / MEMBERS)))
        except (*UNREADABLE, pd.errors.ParserError) as e:
            raise RunDirError(f"group {g} in {run_dir} is unreadable ({e})") from None
    frame = pd.concat(frames, ignore_index=True).sort_values("member", kind="stable").reset_index(drop=True)
    if "status" not in frame:
        frame["status"] = member_status(frame["final_loss"], frame["diverged"])
    return frame


def load(run_dir: str | Path, partial: bool = False, *, similarity: bool = True) -> xr.Dataset:
    """A run's results as an ``xarray.Dataset`` over ``member``.

    Coordinates ``arch``, ``activation``, ``units``, ``l2``, ``seed``, ``group`` (per member) and ``step``;
    data ``final_loss``, ``val_loss``, ``diverged``, ``status`` (:func:`member_status`), ``lr``, ``decay``, ``momentum``, ``clip`` (member) and
    ``loss`` (member × step, the training MSE).  ``partial=True`` loads the finished groups of an
    unfinished run; ``similarity=False`` leaves ``similarity.npz`` unread (what the analysis that makes it
    again reads: a damaged one is not in its way).  Select like ``ds.where(ds.arch == "gru", drop=True)`` or
    ``ds.set_index(member=["arch", "activation", "units", "l2", "seed"])``.
    """
    run_dir = Path(run_dir)
    config = _config(run_dir)
    frames, losses, steps = [], [], None
    for g in _groups(run_dir, partial):
        d = group_dir(run_dir, g)
        try:
            frame = pd.read_csv(verify(d / MEMBERS))
            with np.load(verify(d / "losses.npz")) as z:
                loss, step, member = z["loss"], z["step"], z["member"]
        except (*UNREADABLE, pd.errors.ParserError) as e:
            raise RunDirError(f"group {g} in {run_dir} is unreadable ({e})") from None
        if not np.array_equal(member, frame["member"].to_numpy()):
            raise RunDirError(f"group {g} in {run_dir}: losses.npz and members.csv disagree")
        frames.append(frame)
        losses.append(loss)
        steps = step
    frame = pd.concat(frames, ignore_index=True)
    order = np.argsort(frame["member"].to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    loss = np.concatenate(losses)[order]
    coords = {
        c: ("member", frame[c].to_numpy()) for c in ("arch", "activation", "units", "l2", "seed", "group")
    }
    data = {c: ("member", frame[c].to_numpy()) for c in MEMBER_COLUMNS[7:] + OPTIONAL_COLUMNS if c in frame}
    data["diverged"] = ("member", frame["diverged"].to_numpy().astype(bool))
    status = frame["status"] if "status" in frame else member_status(frame["final_loss"], frame["diverged"])
    data["status"] = ("member", np.asarray(status, str))
    data["loss"] = (("member", "step"), loss)
    ds = xr.Dataset(data, coords={"member": frame["member"].to_numpy(), "step": steps, **coords})
    ds.attrs.update(task=config["task"]["name"], run_dir=str(run_dir))
    groups = list(dict.fromkeys(frame["group"]))
    variables, coordinates = _analyses(run_dir, groups, frame["member"].to_numpy())
    ds = ds.assign(variables).assign_coords(coordinates)
    if "n_fixed_points" in ds:  # [U] §3.1: the fixed-point counts' modal set
        ds = ds.assign(topology_ok=_topology_ok(ds.n_fixed_points.values, ds.status.to_numpy() != TRAINED))
    if all((group_dir(run_dir, g) / DYNAMICS).exists() for g in groups):
        if (run_dir / LSA).exists():  # text tasks: the dataset's LSA, and the words of the per-word results
            lsa = _lsa(run_dir)
            ds = ds.assign_coords(word=lsa.pop("word")).assign(lsa)
        elif "word_deflection" in ds and description(run_dir).get("words"):  # before lsa.npz named them
            ds = ds.assign_coords(word=description(run_dir)["words"])
        coords = description(run_dir).get("conditions") or {}  # the task's condition coordinates (sine: ω)
        ds = ds.assign_coords({k: ("condition", np.asarray(c["values"], c["dtype"])) for k, c in coords.items()})  # fmt: skip
    if "memory" not in ds and all((group_dir(run_dir, g) / MEMORY).exists() for g in groups):
        ds = ds.assign(_memory(run_dir, groups))  # written before memory.npz named its dimensions
    if similarity and (run_dir / SIMILARITY).exists():
        ds = ds.assign(_similarity_of_members(run_dir, frame["member"].to_numpy()))
        ds = ds.assign_coords(member_to=ds.member.values)
    return ds


def _lsa(run_dir: Path) -> dict:
    """``lsa.npz`` as variables over ``output`` (the classes), ``word`` and ``lsa_component``, and the
    words (``word``)."""
    path = run_dir / LSA
    try:
        with np.load(verify(path)) as z:
            return {
                "class_word_counts": (("output", "word"), z["counts"]),
                "lsa_classes": (("output", "lsa_component"), z["classes"]),
                "lsa_words": (("word", "lsa_component"), z["words"]),
                "lsa_singular_values": ("lsa_rank", z["singular_values"]),
                "word": z["word"].tolist(),
            }
    except UNREADABLE as e:
        raise RunDirError(f"{path} is unreadable ({e}); remove it and run scripts/analyze.py again") from None


def _read_similarity(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / SIMILARITY
    try:
        with np.load(verify(path)) as z:
            out = {k: z[k] for k in z.files}
        for k in ("network", "trained"):
            out[k]  # noqa: B018  (a KeyError names what is missing)
    except UNREADABLE as e:
        raise RunDirError(f"{path} is unreadable ({e}); remove it and run scripts/analyze.py again") from None
    return out


def similarity_metrics(z: dict[str, np.ndarray]) -> list[str]:
    """The distance metrics of a similarity.npz, in file order: every square matrix ``z[m]`` stored
    beside its embedding ``mds_<m>`` (``popdyn.similarity`` writes them in its registry's order)."""
    return [m for m in z if f"mds_{m}" in z and z[m].ndim == 2 and z[m].shape[0] == z[m].shape[1]]


def _similarity_of_members(run_dir: Path, members: np.ndarray) -> dict:
    """Distances and embeddings between trained members, in ``members`` order (both axes)."""
    z = _read_similarity(run_dir)
    trained = z["trained"]
    if not np.array_equal(np.sort(z["network"][trained]), members):
        raise RunDirError(f"{run_dir / SIMILARITY} does not hold the members of members.csv")
    out = {}
    for m in similarity_metrics(z):
        # over every compared network (trained and untrained twins), or over trained members only: the
        # metrics that store which of them they compared (<m>_compared, topology)
        d = z[m] if f"{m}_compared" in z else z[m][np.ix_(trained, trained)]
        out[f"{m}_distance"] = (("member", "member_to"), d)
        out[f"mds_{m}"] = (("member", "mds"), z[f"mds_{m}"])
        if f"{m}_compared" in z:
            out[f"{m}_compared"] = ("member", z[f"{m}_compared"])
    if "statistics" in z:  # how much each grid factor explains each distance (popdyn.statistics)
        out["statistics"] = xr.DataArray(
            z["statistics"], dims=("metric", "factor", "statistic"),
            coords={"metric": z["statistics_metric"], "factor": z["statistics_factor"],
                    "statistic": z["statistics_statistic"]},
        )  # fmt: skip
    return out


def load_similarity(run_dir: str | Path) -> xr.Dataset:
    """Every compared network of a run — trained members and their untrained twins — as a Dataset over
    ``network`` (and ``network_to``): coordinates ``member`` (the trained member it belongs to),
    ``trained``, ``arch``, ``activation``, ``units``, ``l2``, ``seed``; data ``<metric>_distance``
    (network × network_to) and ``mds_all_<metric>`` (network × mds, one embedding of trained and
    untrained networks together; [U] Fig. 4) for every metric computed over all compared networks
    (``svcca``, ``cka``, ``dsa``, …: every one in the file but those between trained
    members only, topology), and ``k`` (SVCCA components)."""
    run_dir = Path(run_dir)
    members = load(run_dir)
    z = _read_similarity(run_dir)
    net = z["network"]
    meta = members.sel(member=net)
    n = len(net)
    coords = {"member": ("network", net), "trained": ("network", z["trained"])}
    coords |= {c: ("network", meta[c].values) for c in ("arch", "activation", "units", "l2", "seed")}
    metrics = [m for m in similarity_metrics(z) if f"{m}_compared" not in z]  # over every compared network
    data = {f"{m}_distance": (("network", "network_to"), z[m]) for m in metrics}
    for m in metrics:
        emb = z.get(f"mds_all_{m}")
        if emb is None:  # no untrained twins: the trained-only embedding is the embedding of all
            emb = z[f"mds_{m}"]
        data[f"mds_all_{m}"] = (("network", "mds"), emb)
    if "k" in z:
        data["k"] = ("network", z["k"])
    ds = xr.Dataset(data, coords={"network": np.arange(n), "network_to": np.arange(n), **coords})
    ds.attrs.update(members.attrs)
    return ds


# Reading files written before analyses named their dimensions (no `_dims`) — only for those old files:
# {file: (prefix, {key: dimensions after `member`}, coordinate keys)}; keys not listed were never loaded.
LEGACY_FILES = {
    DYNAMICS: ("", {
        "n_fixed_points": ("condition",), "n_stable": ("condition",), "fp_q": ("condition", "fixed_point"),
        "fp_valid": ("condition", "fixed_point"), "fp_n_unstable": ("condition", "fixed_point"),
        "fp_readout": ("condition", "fixed_point", "output"), "fp_eigenvalues": ("condition", "fixed_point", "mode"),
        "fp_n_found": ("condition",), "fp_truncated": ("condition",),
        "transition": ("fixed_point", "fixed_point_to"), "sine_frequency": ("condition",),
        "sine_modulus": ("condition",), "sine_graph": ("condition", "condition_to"),
        "cdi_graph": ("condition", "node", "node_to"), "cdi_spectrum": ("condition", "mode"),
        "cdi_response": ("condition", "mode"),
        **dict.fromkeys([f"{s}_{m}" for s in ("hidden", "fp") for m in ("var95", "var_classes", "pr")]
                        + ["hidden_local_pr", "hidden_mle", "hidden_corr_dim", "subspace_fraction"], ()),
        "readout_norm": ("output",), "readout_angle": ("output", "output_to"),
        "fp_time_constants": ("condition", "fixed_point", "mode"),
        "fp_mode_overlap": ("condition", "fixed_point", "mode"), "word_deflection": ("word", "state"),
        "speed": ("probe",),
    }, ()),
    TRAINING: ("", {
        "bif_y": ("record_step", "bif_t", "output"), "bif_dy": ("record_step", "bif_t", "output"),
        "spectral_radius": ("record_step",), "spectral_norm": ("record_step",),
        "loss_line": ("record_step", "scale"),
    }, ("record_step", "scale")),
}  # fmt: skip


def _fill(dtype: np.dtype):
    """Padding of an analysis array: False for masks, 0 for counts (an empty slot has no unstable
    mode), NaN otherwise."""
    return False if np.issubdtype(dtype, np.bool_) else 0 if np.issubdtype(dtype, np.integer) else np.nan


def _pad(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack along axis 0, padding trailing axes (state size or kept fixed points differ between groups)
    with :func:`_fill`."""
    shape = np.max([a.shape for a in arrays], axis=0)
    out = []
    for a in arrays:
        if a.shape != tuple(shape):
            fill = _fill(a.dtype)
            kind = a.dtype if fill is not np.nan else np.result_type(a.dtype, np.float32)
            big = np.full((a.shape[0], *shape[1:]), fill, kind)
            big[tuple(slice(0, n) for n in a.shape)] = a
            a = big
        out.append(a)
    return np.concatenate(out)


def _read_analysis(path: Path):
    """One analysis file: ``(prefix, {key: dims}, {key: array}, coordinate keys)`` from the names stored
    in it (``_dims``, ``_prefix``, ``_coords``), or from :data:`LEGACY_FILES` for an old file that has
    none; None for an old file that table does not know."""
    try:
        with np.load(verify(path)) as z:
            arrays = {k: z[k] for k in z.files}
    except UNREADABLE as e:
        raise RunDirError(f"{path} is unreadable ({e}); remove it and run scripts/analyze.py again") from None
    try:
        if DIMS_KEY in arrays:
            dims = {k: tuple(v) for k, v in json.loads(str(arrays[DIMS_KEY])).items()}
            prefix = str(arrays[PREFIX_KEY]) if PREFIX_KEY in arrays else path.stem
            coords = tuple(json.loads(str(arrays[COORDS_KEY]))) if COORDS_KEY in arrays else ()
        elif path.name in LEGACY_FILES:
            prefix, dims, coords = LEGACY_FILES[path.name]
        else:
            return None
        arrays["member"]  # noqa: B018  (a KeyError names what is missing)
    except (KeyError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); remove it and run scripts/analyze.py again") from None
    return prefix, {k: d for k, d in dims.items() if k in arrays}, arrays, coords


def read_results(path: Path) -> dict[str, np.ndarray]:
    """Every per-member array of one group's analysis file (those not loaded, ``fp_states``, too): what
    an analysis that ``needs`` it receives."""
    got = _read_analysis(path)
    if got is None:
        with np.load(verify(path)) as z:
            return {k: z[k] for k in z.files if k != "member" and not k.startswith("_")}
    _, _, arrays, coords = got
    return {k: a for k, a in arrays.items() if k != "member" and not k.startswith("_") and k not in coords}


def _analysis_files(run_dir: Path, group: str) -> list[str]:
    """The analysis files of a group: every npz but its training files and snapshots (``_dims`` in it,
    or an old one :data:`LEGACY_FILES` or :func:`_memory` reads)."""
    return [p.name for p in sorted(group_dir(run_dir, group).glob("*.npz"))
            if p.name not in TRAINING_FILES and not p.name.startswith("snapshot-")]  # fmt: skip


def _analyses(run_dir: Path, groups: list[str], members: np.ndarray) -> tuple[dict, dict]:
    """Every per-group analysis file present for every group (``popdyn.analysis`` writes them, each
    naming its dimensions), as variables over ``member`` then its stored dimensions, in ``members``
    order (sorted): each key as ``<prefix>_<key>`` (``<prefix>`` for the key named like it; the stored
    prefix, else the file's name); trailing axes that differ between groups padded (:func:`_fill`).
    Also the coordinates the files store (``record_step``, ``scale``), from the first group."""
    variables, coordinates = {}, {}
    for name in _analysis_files(run_dir, groups[0]):
        paths = [group_dir(run_dir, g) / name for g in groups]
        if not all(p.exists() for p in paths):
            continue
        parts = [_read_analysis(p) for p in paths]
        if parts[0] is None:
            continue
        prefix, dims, first, coords = parts[0]
        ids = np.concatenate([p[2]["member"] for p in parts])
        if sorted(ids.tolist()) != sorted(members.tolist()):
            raise RunDirError(f"{run_dir}: the members of groups/*/{name} do not match members.csv")
        order = np.argsort(ids)
        for key, d in dims.items():
            var = key if not prefix else prefix if key == prefix else f"{prefix}_{key}"
            variables[var] = (("member", *d), _pad([p[2][key] for p in parts])[order])
        coordinates |= {c: first[c] for c in coords}
    return variables, coordinates


def _topology_ok(n_fixed_points: np.ndarray, excluded: np.ndarray) -> tuple:
    """[U] §3.1: networks whose fixed-point count (at the first condition) differs from the modal count
    are set aside; never the members ``excluded`` (diverged or exploded, whose analyses are NaN)."""
    counts = n_fixed_points[:, 0]
    counted = ~excluded & np.isfinite(counts)
    values, freq = np.unique(counts[counted], return_counts=True)
    modal = values[np.argmax(freq)] if len(values) else -1
    return ("member", (counts == modal) & counted)


def _memory(run_dir: Path, groups: list[str]) -> dict:
    """An old ``memory.npz`` (before it named its dimensions): ``memory`` (member × delay, Σσ) and
    ``memory_singular_values`` (member × delay × rank, NaN-padded where ranks differ between groups)."""
    svs, ids = [], []
    for g in groups:
        path = group_dir(run_dir, g) / MEMORY
        try:
            with np.load(verify(path)) as z:
                svs.append(z["singular_values"])
                ids.append(z["member"])
        except UNREADABLE as e:
            why = f"{path} is unreadable ({e}); remove it and run scripts/analyze.py again"
            raise RunDirError(why) from None
    sv = _pad(svs)[np.argsort(np.concatenate(ids))]
    return {"memory": (("member", "delay"), np.nansum(sv, axis=-1)),
            "memory_singular_values": (("member", "delay", "rank"), sv)}  # fmt: skip


class GroupParams(NamedTuple):
    """One group's trained networks: ``model`` and ``params`` stacked over ``member`` (global ids)."""

    model: Model
    params: dict
    member: np.ndarray


def load_params(run_dir: str | Path, partial: bool = False) -> dict[str, GroupParams]:
    """Every finished group's parameters: ``{"gru-tanh-64": GroupParams(model, params, member)}``.

    ``jax.vmap(model, in_axes=(0, None))(params, inputs)`` runs a whole group on the same inputs.
    """
    from popdyn.model import Model

    run_dir = Path(run_dir)
    models = {g["name"]: g["model"] for g in description(run_dir)["groups"]}
    out = {}
    for g in _groups(run_dir, partial):
        path = group_dir(run_dir, g) / "params.npz"
        try:
            with np.load(verify(path)) as z:
                arrays = {k: z[k] for k in z.files}
            fields = models[g] if "n_in" in models[g] else {**models[g], **_sizes(arrays)}
        except UNREADABLE as e:
            raise RunDirError(f"parameters of group {g} in {run_dir} are unreadable ({e})") from None
        member = arrays.pop("member")
        options = tuple(sorted((fields.get("options") or {}).items()))
        model = Model(**{k: fields[k] for k in MODEL_FIELDS}, options=options)
        out[g] = GroupParams(model, unflatten(arrays), member)
    return out
