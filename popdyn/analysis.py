"""Analyse the dynamics of a trained run, group by group, into its run directory (SPEC §4).

Each group is two compiled programs over its members (``dynamics.analyze_one`` in two parts, mapped
over the member axis, members split over the devices as in training); its results go to ``groups/<g>/dynamics.npz``
(written atomically, so an interrupted analysis resumes with the next group), and the settings to
``dynamics.yaml``.  ``popdyn.store.load`` then exposes them per member.

Then :func:`compare_run` compares every pair of networks (``popdyn.similarity``) on the same probe
states — trained members, plus an untrained twin of each member of the archs in
``similarity.untrained`` — and embeds each distance matrix in 2-D (``popdyn.embed``), into
``similarity.npz`` (settings in ``similarity.yaml``).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import yaml
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from popdyn import analyses, embed, similarity, statistics, store
from popdyn.attractors import record_one
from popdyn.config import Sweep
from popdyn.dynamics import analyze_descend, analyze_finish
from popdyn.geometry import class_word_counts, lsa, network_geometry
from popdyn.hosts import finish_devices, to_host
from popdyn.population import member_key, padded_size, population_program
from popdyn.similarity import all_pairs, prepare, stack, take

log = logging.getLogger("popdyn")


def settings_dict(sweep: Sweep) -> dict:
    return {**asdict(sweep.fixed_points), **asdict(sweep.topology)}


def check_settings(sweep: Sweep, run_dir: Path) -> None:
    """``RunDirError`` now, before anything is computed or written, if ``run_dir`` was analysed with other
    settings than ``sweep``'s (the checks of :func:`analyze_run` and :func:`compare_run`, writing nothing)."""
    _check_settings(run_dir, settings_dict(sweep), write=False)
    _check_settings(run_dir, _similarity_settings(sweep), store.SIMILARITY_CONFIG, write=False)
    groups = [g.name for g in sweep.groups]
    for spec, options in registered(sweep):
        _check_settings(run_dir, _plain_settings(options), spec.settings_file, legacy_ok=False, write=False)
    if any((store.group_dir(run_dir, g) / store.TRAINING).exists() or store.has_snapshots(run_dir, g)
           for g in groups):  # fmt: skip
        _check_settings(
            run_dir, _plain_settings(sweep.record), store.RECORD_CONFIG, legacy_ok=False, write=False
        )


def _similarity_settings(sweep: Sweep) -> dict:
    return sweep.similarity.settings()


# each analysis's settings file: (config section, the results made with those settings); a registered
# per-network analysis <name> (popdyn.analyses): <name>.yaml, section <name>, groups/*/<name>.npz
_SETTINGS = {
    store.DYNAMICS_CONFIG: ("dynamics", f"groups/*/{store.DYNAMICS}"),
    store.SIMILARITY_CONFIG: ("similarity", store.SIMILARITY),
    store.RECORD_CONFIG: ("record", f"groups/*/{store.TRAINING}"),
}


def _about(name: str) -> tuple[str, str]:
    if name in _SETTINGS:
        return _SETTINGS[name]
    spec = analyses.get(name.removesuffix(".yaml"))
    return spec.name, f"groups/*/{spec.file}"


def registered(sweep: Sweep) -> list[tuple[analyses.Analysis, object]]:
    """The registered per-network analyses this sweep computes, with their options."""
    out = []
    for name, options in sweep.analyses.items():
        spec = analyses.get(name)
        if spec.applies(options, sweep.task):
            out.append((spec, options))
    return out


def _plain_settings(options) -> dict:
    """A settings dataclass as YAML-safe plain values (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


def _check_settings(
    run_dir: Path,
    settings: dict,
    name: str = store.DYNAMICS_CONFIG,
    legacy_ok: bool = True,
    write: bool = True,
) -> None:
    """Refuse to mix analyses made with different settings in one run directory: the first analysis
    records its settings in ``name``, every later one must match them.  ``legacy_ok=False``: results
    without a settings file (written before popdyn recorded them) are refused too, since nothing says
    what they were made with.  ``write=False``: only check, recording nothing."""
    path = run_dir / name
    section, results = _about(name)
    if path.exists():
        old = store.read_yaml(path)
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            k = diff[0]
            raise store.RunDirError(
                f"{run_dir} was analysed with {section}.{k}={old.get(k)!r}, not {settings.get(k)!r}; "
                f"remove {path.name} and {results} to analyse it again with new settings"
            )
        return
    if not legacy_ok and (made := sorted(run_dir.glob(results))):
        raise store.RunDirError(
            f"{made[0]} has no {path.name} saying which {section}.* settings made it; remove "
            f"{results} to analyse it again with these settings"
        )
    if write:
        store.write_text(path, yaml.safe_dump(settings, sort_keys=False))


def member_keys(seed: int, members: np.ndarray) -> np.ndarray:
    """One raw key per member id, from the config's seed: independent of grouping and devices."""
    return np.stack([jax.random.key_data(member_key(seed, f"dynamics/{m}")) for m in members])


def analyze_group(sweep: Sweep, gp: store.GroupParams, devices=None) -> dict[str, np.ndarray]:
    """Every member of one group, as two compiled programs: ``{name: [members, ...]}``.

    The Adam descent (``dynamics.analyze_descend``, most of the time, pure XLA) is sharded over every
    device; the rest (``dynamics.analyze_finish``) as well on accelerators, but on one host device per
    process on a CPU (``hosts.finish_devices``): its LAPACK work (eig, solve) goes through host callbacks,
    and a callback in a program sharded over 2 host devices on 2 cores waits forever for an XLA pool
    thread (jaxlib 0.10.2; the same deadlock as XLA's own batched LAPACK kernels).  The programs are
    built once per (model, task, settings, devices) and reused by every group of that kind (compiling
    them takes seconds on a CPU: ≈ 7 s for a 64-unit flip-flop group on 2 cores)."""
    devices = tuple(devices or jax.devices())
    n = len(gp.member)
    keys = member_keys(sweep.seed, gp.member)
    descend, finish = _group_programs(
        gp.model, sweep.task, sweep.fixed_points, sweep.topology, devices, sweep.member_batch
    )

    def run(program, devs, *args):
        size = padded_size(n, len(devs))
        idx = np.concatenate([np.arange(n), np.zeros(size - n, int)])
        sharding = NamedSharding(Mesh(np.array(devs), ("member",)), PartitionSpec("member"))
        out = program(
            *(jax.device_put(jax.tree.map(lambda a: np.asarray(a)[idx], a), sharding) for a in args)
        )
        return jax.tree.map(lambda v: v[:n], to_host(out))

    h0, h = run(descend, devices, gp.params, keys)
    return run(finish, finish_devices(devices), gp.params, keys, h0, h)


@functools.cache
def _group_programs(model, task, fp_opts, topo, devices: tuple, member_batch):
    """The two jitted population programs of :func:`analyze_group` (descend on ``devices``, finish on
    ``finish_devices(devices)``), shared by every group of that model, task and settings."""
    descend = partial(analyze_descend, model, task, fp_opts)
    finish = partial(analyze_finish, model, task, fp_opts, topo)

    def descend_member(params, raw_key):
        return descend(params, jax.random.wrap_key_data(raw_key))

    def finish_member(params, raw_key, h0, h):
        return finish(params, jax.random.wrap_key_data(raw_key), h0, h)

    def program(f, devs):
        return population_program(f, Mesh(np.array(devs), ("member",)), member_batch)

    return program(descend_member, devices), program(finish_member, finish_devices(devices))


def not_trained(run_dir: Path) -> dict[int, str]:
    """``{member: status}`` of the members that are no trained network (``store.member_status``:
    diverged, or exploded): their analyses are emptied (:func:`mask_members`), their distances NaN."""
    table = store.members(run_dir, partial=True)
    bad = table[table["status"] != store.TRAINED]
    return dict(zip(bad["member"].tolist(), bad["status"].tolist()))


def mask_members(arrays: dict[str, np.ndarray], bad: np.ndarray) -> dict[str, np.ndarray]:
    """``arrays`` (``[members, ...]`` each, plus ``member``) with the rows of the members ``bad`` emptied:
    NaN (per-network counts such as ``n_fixed_points`` become float32 to hold it), False for masks
    (no valid fixed point), 0 for per-point counts (``fp_n_unstable``: 0 where not valid).  A diverged
    member is frozen at finite weights, so its analysis runs and gives numbers: they describe no trained
    network."""
    bad = np.asarray(bad, bool)
    if not bad.any():
        return arrays
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if k != "member":
            per_point = "fixed_point" in store.DYNAMICS_DIMS.get(k, ())
            if a.dtype == np.bool_:
                a = a & ~bad.reshape(-1, *[1] * (a.ndim - 1))
            elif per_point and np.issubdtype(a.dtype, np.integer):
                a = np.where(bad.reshape(-1, *[1] * (a.ndim - 1)), 0, a).astype(a.dtype)
            else:
                a = a.astype(np.float32) if np.issubdtype(a.dtype, np.integer) else a.copy()
                a[bad] = np.nan
        out[k] = a
    return out


def _nanmedian(a: np.ndarray, axis=None):
    """``np.nanmedian`` without the warning of an all-NaN slice (NaN there)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.asarray(a, np.float64), axis=axis)


def text_geometry(sweep: Sweep, gp: store.GroupParams, dynamics: dict) -> dict[str, np.ndarray]:
    """[A]'s measures of each member of a classification group (``popdyn.geometry.network_geometry``),
    plus ``word_deflection`` [members, V, state] — the mean ``h_t − h_{t−1}`` over the probe phrases'
    steps reading each word — and ``speed`` [members, probes] — ``‖h − F(h, 0)‖`` at each probe phrase's
    final state (slow where it is far below the deflections)."""
    task, model = sweep.task, gp.model
    x = task.probe_inputs
    states = jax.jit(jax.vmap(model.states, (0, None)))(gp.params, x)  # [M, P, L, D]
    zero = jnp.zeros((task.n_in,))  # x = 0: the cell's input (a corpus: the embedded input)
    step = jax.vmap(jax.vmap(model.step, (None, 0, None)), (0, 0, None))  # members × probes
    speed = np.asarray(
        jnp.linalg.norm(step(gp.params["cell"], states[:, :, -1], zero) - states[:, :, -1], axis=-1)
    )
    states = np.asarray(states, np.float64)
    words = np.asarray(x) if task.vocab else np.asarray(x).argmax(-1)  # [P, L] word ids
    delta = np.diff(states, axis=2, prepend=0.0)  # h_0 = 0
    n_words = len(reported_words(task))  # a corpus: its most common words (ids 2 …), padding excluded
    first = 2 if task.vocab else 0
    onehot = (words[..., None] == np.arange(first, first + n_words)).astype(np.float64)  # [P, L, W]
    uses = np.maximum(onehot.sum(axis=(0, 1)), 1)
    deflection = np.einsum("plv,mpld->mvd", onehot, delta) / uses[None, :, None]
    readout = np.asarray(gp.params["readout"]["kernel"])
    rows = [
        network_geometry(states[m, :, -1], dynamics["fp_states"][m, 0], dynamics["fp_valid"][m, 0], readout[m],
                         seed=sweep.seed)
        for m in range(len(gp.member))
    ]  # fmt: skip
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return out | {"word_deflection": deflection.astype(np.float32), "speed": speed.astype(np.float32)}


def analyze_run(sweep: Sweep, run_dir: str | Path, progress: bool = True) -> Path:
    """Analyse every finished group of a trained run that has no analysis yet (and, for text
    classification, the dataset's LSA into ``lsa.npz``); return ``run_dir``."""
    run_dir = Path(run_dir)
    _check_settings(run_dir, settings_dict(sweep))
    groups = store.load_params(run_dir)  # every group must be trained: RunDirError names the missing
    for spec, options in registered(sweep):
        _check_settings(run_dir, _plain_settings(options), spec.settings_file, legacy_ok=False)
    if any((store.group_dir(run_dir, g) / store.TRAINING).exists() or store.has_snapshots(run_dir, g)
           for g in groups):  # fmt: skip
        _check_settings(run_dir, _plain_settings(sweep.record), store.RECORD_CONFIG, legacy_ok=False)
    devices = jax.devices()[: sweep.devices] if sweep.devices else None
    if sweep.task.classification and not store.intact(run_dir / store.LSA):
        store.write_npz(run_dir / store.LSA, text_lsa(sweep))
    record_run(sweep, run_dir, groups, progress)
    skip = not_trained(run_dir)
    network_analyses(sweep, run_dir, groups, progress, skip)
    todo = [g for g in groups if not store.intact(store.group_dir(run_dir, g) / store.DYNAMICS)]
    if not todo:
        log.info("dynamics: every group already analysed")
        return run_dir
    bar = tqdm(todo, desc="dynamics", unit="group", disable=not progress)
    for g in bar:
        bar.set_postfix_str(f"{g} ({len(groups[g].member)} networks)")
        out = analyze_group(sweep, groups[g], devices)
        if sweep.task.classification:
            out |= text_geometry(sweep, groups[g], out)
        bad = np.isin(groups[g].member, list(skip))
        out = store.trim_points(mask_members({**out, "member": groups[g].member}, bad))
        store.write_npz(store.group_dir(run_dir, g) / store.DYNAMICS, out)
        counts = out["n_fixed_points"]
        log.info(
            "%s: fixed points per condition median %s, stable %s%s",
            g, _nanmedian(counts, axis=0).tolist(), _nanmedian(out["n_stable"], axis=0).tolist(),
            _left_out(groups[g].member[bad], skip),
        )  # fmt: skip
        cut = out["fp_truncated"].any(axis=1)
        if cut.any():
            log.warning(
                "%s: %d of %d networks found more distinct fixed points than dynamics.max_points = %d "
                "(up to %d) and kept only the lowest-q %d: their sets are incomplete (fp_truncated); "
                "raise dynamics.max_points to keep every point",
                g, int(cut.sum()), len(cut), sweep.fixed_points.max_points, int(np.nanmax(out["fp_n_found"])),
                sweep.fixed_points.max_points,
            )  # fmt: skip
    bar.close()
    return run_dir


def _left_out(members: np.ndarray, status: dict[int, str]) -> str:
    """``"; 2 not analysed (NaN): 3 (diverged), 5 (exploded)"`` for the log, or ``""``."""
    if not len(members):
        return ""
    names = ", ".join(f"{m} ({status[m]})" for m in members.tolist())
    return f"; {len(members)} not analysed (NaN, no trained network): {names}"


def record_run(sweep: Sweep, run_dir: Path, groups: dict, progress: bool = True) -> None:
    """[R] through training: for every group with parameters saved during training
    (``train.record_every``) and no ``training.npz`` yet, ``attractors.record_one`` of every member at
    every saved step — one compiled program per group, vmapped over its members and run once per saved
    step (vmapping the steps too would hold every step's Jacobians at once) — into
    ``groups/<g>/training.npz``."""
    todo = [g for g in groups if not store.intact(store.group_dir(run_dir, g) / store.TRAINING)]
    todo = [(g, snaps) for g in todo if (snaps := store.load_snapshots(run_dir, g)) is not None]
    for g, (steps, params, member) in tqdm(todo, desc="through training", unit="group", disable=not progress):
        program = jax.jit(jax.vmap(partial(record_one, groups[g].model, sweep.task, sweep.record)))
        per_step = [program(jax.tree.map(lambda a, i=i: a[i], params)) for i in range(len(steps))]
        out = {
            k: np.stack([np.asarray(o[k]) for o in per_step], axis=1) for k in per_step[0]
        }  # [members, steps]
        store.write_npz(store.group_dir(run_dir, g) / store.TRAINING,
                        {**out, "member": member, "record_step": steps, "scale": np.array(sweep.record.scales)})  # fmt: skip
        log.info(
            "%s through training: %d saved steps; final spectral norm median %.3g, radius %.3g",
            g, len(steps), float(np.median(out["spectral_norm"][:, -1])), float(np.median(out["spectral_radius"][:, -1])),
        )  # fmt: skip


def network_analyses(
    sweep: Sweep, run_dir: Path, groups: dict, progress: bool = True, skip: dict[int, str] | None = None
) -> None:
    """Every registered per-network analysis (``popdyn.analyses``) the sweep computes, for every group
    without its results yet: ``spec.network`` of ONE network vmapped over the group's members, one
    compiled program per group, into ``groups/<g>/<name>.npz`` with its dimension names; NaN for the
    members ``skip`` (:func:`not_trained`)."""
    for spec, options in registered(sweep):
        todo = [g for g in groups if not store.intact(store.group_dir(run_dir, g) / spec.file)]
        data = spec.inputs(sweep.task, options) if todo else None
        for g in tqdm(todo, desc=spec.name, unit="group", disable=not progress):
            gp = groups[g]
            def one(params, gp=gp, spec=spec, options=options, data=data):  # data: constants of the program
                return spec.network(gp.model, sweep.task, options, params, data)

            program = jax.jit(jax.vmap(one))
            out = {k: np.asarray(v) for k, v in program(gp.params).items()}
            if set(out) != set(spec.dims):
                raise ValueError(
                    f"analysis {spec.name!r} returned {sorted(out)} but declares the dimensions of {sorted(spec.dims)}"
                )
            bad = np.isin(gp.member, list(skip or {}))
            out = mask_members({**out, "member": gp.member}, bad)
            store.write_npz(store.group_dir(run_dir, g) / spec.file, out, dims=spec.dims)
            said = spec.summary(out) if spec.summary else f"{spec.name} of {len(gp.member)} networks"
            log.info("%s: %s%s", g, said, _left_out(gp.member[bad], skip or {}))


def reported_words(task) -> tuple[str, ...]:
    """The words the per-word results are given for: the whole vocabulary of a synthetic task; a
    corpus's ``n_words`` most common (``<pad>`` and ``<unk>`` left out)."""
    if not task.vocab:
        return task.words
    return task.words[2 : 2 + task.param("n_words")]


def text_lsa(sweep: Sweep, phrases: int = 8192) -> dict[str, np.ndarray]:
    """[A] §4: the LSA of the dataset's class × word count matrix, rank = number of classes — over
    ``phrases`` phrases drawn from the config's seed (synthetic tasks), or a corpus's whole training split
    (counts and word directions kept for :func:`reported_words`).  Also the reported ``words``."""
    task = sweep.task
    words = reported_words(task)
    if task.vocab:
        c = task.corpus
        counts = np.stack(
            [np.bincount(c.train_ids[t > 0].ravel(), minlength=task.vocab) for t in c.train_targets.T]
        )
        counts = counts.astype(np.float64)
        counts[:, :2] = 0  # <pad>, <unk>
    else:
        inputs, targets = task.sample(member_key(sweep.seed, "lsa"), phrases)
        counts = class_word_counts(inputs, targets)
    out = lsa(counts, task.n_out)
    first = 2 if task.vocab else 0
    keep = slice(first, first + len(words))
    return {"counts": counts[:, keep], "classes": out["classes"], "words": out["words"][keep],
            "singular_values": out["singular_values"], "word": np.array(words)}  # fmt: skip


# ------------------------------------------------------------------------------------------ similarity
def sample_rows(sweep: Sweep) -> np.ndarray:
    """The probe-state rows (trial-major over ``task.probe_inputs``) every network is compared on."""
    n_probe, t = sweep.task.probe_inputs.shape[:2]
    total, want = n_probe * t, sweep.similarity.samples
    if not want or want >= total:
        return np.arange(total)
    key = member_key(sweep.seed, "similarity/samples")
    return np.sort(np.asarray(jax.random.choice(key, total, (want,), replace=False)))


def _prepare_group(sweep: Sweep, model, params: dict, rows: np.ndarray, block: int):
    """States on the probe rows → every enabled states metric's preparation (``similarity.prepare``),
    stacked over the group's networks (``similarity.stack``), and whether each network is comparable
    (finite states with some variance; diverged networks are not)."""
    opts = sweep.similarity
    inputs = sweep.task.probe_inputs

    @jax.jit
    def one(p):
        states = model.states(p, inputs)
        x = states.reshape(-1, states.shape[-1])[rows]
        ok = jnp.all(jnp.isfinite(x)) & (jnp.sum(jnp.var(x, axis=0)) > 0)
        return prepare(jnp.where(ok, x, jnp.eye(*x.shape)), opts), ok

    many = jax.jit(jax.vmap(one))
    n = jax.tree.leaves(params)[0].shape[0]
    size = min(block, n)
    idx = np.concatenate([np.arange(n), np.full(-n % size, n - 1)])  # whole blocks: one compilation
    parts = [
        many(jax.tree.map(lambda a, i=i: np.asarray(a)[idx[i : i + size]], params)) for i in range(0, n, size)
    ]
    prep = take(stack([p[0] for p in parts]), np.arange(n))
    ok = np.concatenate([np.asarray(p[1]) for p in parts])[:n]
    return prep, ok


def compare_run(sweep: Sweep, run_dir: str | Path, progress: bool = True) -> Path:
    """Every enabled metric of ``popdyn.similarity``'s registry: the states metrics (SVCCA, CKA, …) and
    pairwise ones (DSA) between every pair of networks (trained members and untrained
    twins), the fixed-point ones (topology) between trained members, 2-D MDS of each, into
    ``similarity.npz``; return ``run_dir``."""
    run_dir = Path(run_dir)
    opts = sweep.similarity
    _check_settings(run_dir, _similarity_settings(sweep), store.SIMILARITY_CONFIG)
    groups = store.load_params(run_dir)
    path = run_dir / store.SIMILARITY
    if store.intact(path):
        log.info("similarity: already computed")
        return run_dir
    rows = sample_rows(sweep)
    parts = []  # (member ids, trained, prepared, comparable) per group and twin set
    trajectories = []  # per network [trials, T, D], only for pairwise metrics (DSA)
    pairwise = similarity.enabled(opts, "pairwise")
    for gp in tqdm(groups.values(), desc="states", unit="group", disable=not progress):
        sets = [(gp.params, True)]
        if gp.model.arch in opts.untrained:  # the same architecture, randomly initialised ([U] Fig. 4)
            keys = jnp.stack([member_key(sweep.seed, f"untrained/{m}") for m in gp.member])
            sets.append((jax.vmap(gp.model.init)(keys), False))
        for params, is_trained in sets:
            prep, ok = _prepare_group(sweep, gp.model, params, rows, opts.block)
            parts.append((gp.member, np.full(len(gp.member), is_trained), prep, ok))
            if pairwise:  # whole probe trials, in time order: DSA fits dynamics
                states = jax.jit(jax.vmap(gp.model.states, (0, None)))(params, sweep.task.probe_inputs)
                trajectories.extend(np.asarray(states))
    nets, trained, preps, oks = zip(*parts)
    network, trained, ok = np.concatenate(nets), np.concatenate(trained), np.concatenate(oks)
    order = np.lexsort((network, ~trained))  # trained members by id, then the untrained twins by id
    prep = take(stack(list(preps)), order)  # every width padded to the widest
    network, trained, ok = network[order], trained[order], ok[order]
    ds = store.load(run_dir)
    # a diverged member is frozen at finite weights, so its states look comparable: it is not, nor is an
    # exploded one (store.member_status); their untrained twins are compared
    status = np.where(trained, ds.status.sel(member=network).values, store.TRAINED)
    ok &= status == store.TRAINED
    for s in (store.DIVERGED, store.EXPLODED):
        if (status == s).any():
            log.info("similarity: %d %s networks left out of every comparison (NaN rows, no MDS "
                     "coordinates, no statistics)", int((status == s).sum()), s)  # fmt: skip
    n = len(network)
    states = similarity.enabled(opts, "states")
    total = len(states) * n * (n + 1) // 2  # pairs, counted once per metric
    with tqdm(total=total, desc="similarity", unit="pair", disable=not progress) as bar:
        dist = all_pairs(prep, states, opts.block, progress=bar.update)
    for m in pairwise:
        log.info(
            "similarity: %s between %d networks (%d pairs)", similarity.get(m).short, n, n * (n - 1) // 2
        )
        dist[m] = similarity.get(m).pairwise([trajectories[i] for i in order], opts, sweep.seed)
    for d in dist.values():
        d[~ok], d[:, ~ok] = np.nan, np.nan
    out = {"network": network, "trained": trained, "rows": rows}
    for m, p in prep.items():  # a metric's own per-network arrays, kept beside the distances (SVCCA: k)
        out |= similarity.get(m).outputs(p) if similarity.get(m).outputs is not None else {}
    n_trained = int(trained.sum())
    for m in similarity.names():  # rank order: every listing of similarity.npz follows the registry
        spec = similarity.get(m)
        if m in dist:
            out[m] = dist[m]
            out[f"mds_{m}"] = embed.mds(dist[m][:n_trained, :n_trained], sweep.seed, opts.mds_iter)
            if n_trained < n:
                out[f"mds_all_{m}"] = embed.mds(dist[m], sweep.seed, opts.mds_iter)
        elif spec.kind == "fixed_points" and spec.on(opts) and spec.applies(sweep.task.name, ds):
            out[m], out[f"{m}_compared"] = spec.fixed_points(ds, opts)
            out[f"mds_{m}"] = embed.mds(out[m], sweep.seed, opts.mds_iter)
    table = universality(sweep, ds, out, trained, network)
    out |= {"statistics": table.values, "statistics_metric": np.array(table.metric.values, str),
            "statistics_factor": np.array(table.factor.values, str),
            "statistics_statistic": np.array(table.statistic.values, str)}  # fmt: skip
    store.write_npz(path, out)
    pairs = np.triu_indices(n, 1)  # each pair of distinct networks once; NaN rows (left out) ignored
    log.info(
        "similarity: %d networks (%d untrained twins, %d compared) on %d probe states; median %s over the "
        "pairs compared", n, n - n_trained, int(ok.sum()), len(rows),
        ", ".join(f"{similarity.get(m).short} distance {float(_nanmedian(d[pairs])):.3f}" for m, d in dist.items()),
    )  # fmt: skip
    log.info("how much each grid factor explains each distance (PERMANOVA R² [%d%% CI over seeds], pseudo-F, "
             "permutation p; 1-NN accuracy [CI] vs chance; networks):\n%s", round(100 * table.attrs["ci"]),
             statistics.format_table(table.dropna("factor", how="all")))  # fmt: skip
    return run_dir


FACTORS = ("arch", "activation", "units", "l2")  # the grid axes whose share of each distance is reported


def universality(sweep: Sweep, ds, out: dict, trained: np.ndarray, network: np.ndarray):
    """[U]'s question as numbers: ``statistics.statistics_table`` of every distance matrix of ``out``
    (trained members; diverged and set-aside networks are NaN rows and left out) per grid factor, and —
    with untrained twins — of the factor ``trained`` over trained and untrained networks together
    ([U] Fig. 4).  ``[metric, factor, statistic]``."""
    opts = sweep.similarity
    metrics = [m for m in similarity.names() if m in out]
    n_trained = int(trained.sum())
    table = statistics.statistics_table(
        {m: out[m][:n_trained, :n_trained] for m in metrics},
        {f: ds[f].values for f in FACTORS},
        seeds=ds.seed.values, permutations=opts.permutations, bootstrap=opts.bootstrap, seed=sweep.seed,
    )  # fmt: skip
    if n_trained < len(trained):
        compared = [m for m in metrics if similarity.get(m).kind != "fixed_points"]  # all networks
        twins = statistics.statistics_table(
            {m: out[m] for m in compared}, {"trained": trained},
            seeds=ds.seed.sel(member=network).values, permutations=opts.permutations,
            bootstrap=opts.bootstrap, seed=sweep.seed + 1,
        ).reindex(metric=metrics)  # fmt: skip
        table = xr.concat([table, twins], dim="factor")
    return table
