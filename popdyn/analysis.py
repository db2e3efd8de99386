"""Analyse a trained run, group by group, into its run directory (SPEC §4).

Every registered per-network analysis (``popdyn.analyses``: the fixed points and each task's topology,
[A]'s geometry, [R] through training, [V]'s memory, and any a user registers) in dependency order, for
every group without its results yet: its own group program where it declares one (the fixed points: two
sharded programs), else its function of ONE network vmapped over the group's members; its results go to
``groups/<g>/<file>`` with their dimension names (written atomically, so an interrupted analysis resumes
with the next group), its settings to ``<name>.yaml``.  ``popdyn.store.load`` then exposes them per member.

Then :func:`compare_run` compares every pair of networks (``popdyn.similarity``) on the same probe
states — trained members, plus an untrained twin of each member of the archs in
``similarity.untrained`` — and embeds each distance matrix in 2-D (``popdyn.embed``), into
``similarity.npz`` (settings in ``similarity.yaml``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
import yaml
from tqdm.auto import tqdm

from popdyn import analyses, embed, similarity, statistics, store
from popdyn.config import Sweep
from popdyn.population import member_key
from popdyn.similarity import all_pairs, prepare, stack, take

log = logging.getLogger("popdyn")


def registered(sweep: Sweep) -> list[tuple[analyses.Analysis, object]]:
    """The registered per-network analyses this sweep computes, with their options, in dependency order
    (each after the analyses it ``needs``)."""
    out = []
    for spec in analyses.in_order():
        options = spec.options_for(sweep)
        if spec.applies(options, sweep.task):
            out.append((spec, options))
    return out


def check_settings(sweep: Sweep, run_dir: Path) -> None:
    """``RunDirError`` now, before anything is computed or written, if ``run_dir`` was analysed with other
    settings than ``sweep``'s (the checks of :func:`analyze_run` and :func:`compare_run`, writing nothing)."""
    _record_settings(sweep, run_dir, [g.name for g in sweep.groups], write=False)
    _check_settings(run_dir, _similarity_settings(sweep), store.SIMILARITY_CONFIG, "similarity",
                    store.SIMILARITY, legacy_ok=True, write=False)  # fmt: skip


def _record_settings(sweep: Sweep, run_dir: Path, groups: list[str], write: bool = True) -> None:
    """Every registered analysis's settings against its settings file, all checked before any is written
    (``write``): one refused writes nothing.  An analysis is checked where it has something to analyse
    in some group (``has_source``) or results already there."""
    todo = []
    for spec, options in registered(sweep):
        if spec.settings_file is None:  # stored into another analysis's file, with its settings
            continue
        if not any(spec.has_source(run_dir, g) or (store.group_dir(run_dir, g) / spec.file).exists()
                   for g in groups):  # fmt: skip
            continue
        todo.append((spec, spec.settings(options)))
    for write_now in (False, True) if write else (False,):
        for spec, settings in todo:
            _check_settings(run_dir, settings, spec.settings_file, spec.name, f"groups/*/{spec.file}",
                            spec.legacy_ok, write_now)  # fmt: skip


def _similarity_settings(sweep: Sweep) -> dict:
    return sweep.similarity.settings()


def _check_settings(
    run_dir: Path,
    settings: dict,
    name: str,
    section: str,
    results: str,
    legacy_ok: bool = False,
    write: bool = True,
) -> None:
    """Refuse to mix analyses made with different settings in one run directory: the first analysis
    records its settings (config section ``section``) in ``name``, every later one must match them.
    ``legacy_ok=False``: results (the glob ``results``) without a settings file (written before popdyn
    recorded them) are refused too, since nothing says what they were made with.  ``write=False``: only
    check, recording nothing."""
    path = run_dir / name
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


def pending(sweep: Sweep, run_dir: Path, group: str) -> bool:
    """Whether :func:`analyze_run` would still write something for ``group`` (a registered analysis with
    something to analyse there and no intact results)."""
    gdir = store.group_dir(run_dir, group)
    return any(
        spec.has_source(run_dir, group) and not store.intact(gdir / spec.file)
        for spec, _ in registered(sweep)
    )


def run_pending(sweep: Sweep, run_dir: Path) -> bool:
    """Whether a registered analysis's results of the whole run (``run_results``: ``lsa.npz``) are missing."""
    return any(not store.intact(run_dir / f) for spec, _ in registered(sweep) for f in spec.run_results)


def not_trained(run_dir: Path) -> dict[int, str]:
    """``{member: status}`` of the members that are no trained network (``store.member_status``:
    diverged, or exploded): their analyses are emptied (:func:`mask_members`), their distances NaN."""
    table = store.members(run_dir, partial=True)
    bad = table[table["status"] != store.TRAINED]
    return dict(zip(bad["member"].tolist(), bad["status"].tolist()))


def mask_members(
    arrays: dict[str, np.ndarray], bad: np.ndarray, dims: dict[str, tuple[str, ...]]
) -> dict[str, np.ndarray]:
    """``arrays`` (``[members, ...]`` each, plus ``member``) with the rows of the members ``bad`` emptied:
    NaN (per-network counts such as ``n_fixed_points`` become float32 to hold it), False for masks
    (no valid fixed point), 0 for per-point counts (``fp_n_unstable``: 0 where not valid; a
    ``fixed_point`` axis in ``dims``, the declared dimensions).  A diverged
    member is frozen at finite weights, so its analysis runs and gives numbers: they describe no trained
    network."""
    bad = np.asarray(bad, bool)
    if not bad.any():
        return arrays
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if k != "member":
            per_point = "fixed_point" in dims.get(k, ())
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


def analyze_run(sweep: Sweep, run_dir: str | Path, progress: bool = True) -> Path:
    """Every registered analysis (:func:`registered`) of every finished group of a trained run that has
    no results of it yet, and their results of the whole run (``lsa.npz``); return ``run_dir``."""
    run_dir = Path(run_dir)
    groups = store.load_params(run_dir)  # every group must be trained: RunDirError names the missing
    _record_settings(sweep, run_dir, list(groups))
    devices = jax.devices()[: sweep.devices] if sweep.devices else None
    todo = registered(sweep)
    for spec, _ in todo:
        for name, make in spec.run_results.items():
            if not store.intact(run_dir / name):
                store.write_npz(run_dir / name, make(sweep))
    skip = not_trained(run_dir)
    for spec, options in todo:
        if spec.into is None:
            riders = [(s, o) for s, o in todo if s.into == spec.name]
            _analyse_groups(sweep, run_dir, groups, spec, options, riders, devices, skip, progress)
    return run_dir


def _analyse_groups(sweep, run_dir, groups, spec, options, riders, devices, skip, progress) -> None:
    """``spec`` (and the analyses stored ``into`` its file, ``riders``) of every group without its
    results: computed, the members ``skip`` emptied (:func:`mask_members`; not for networks from a
    ``source``, which are saved training steps), ``spec.finish``-ed and written with their dimensions."""
    todo = [g for g in groups if spec.has_source(run_dir, g)
            and not store.intact(store.group_dir(run_dir, g) / spec.file)]  # fmt: skip
    bar = tqdm(todo, desc=spec.name, unit="group", disable=not progress)
    for g in bar:
        gp = groups[g] if spec.source is None else spec.source(run_dir, g, groups[g])
        if gp is None:
            continue
        bar.set_postfix_str(f"{g} ({len(gp.member)} networks)")
        dims = spec.dims_for(sweep.task)
        out = _compute(sweep, spec, options, gp, devices, _needed(run_dir, g, spec))
        for rider, rider_options in riders:
            needed = _needed(run_dir, g, rider, computed={spec.name: out})
            out |= _compute(sweep, rider, rider_options, gp, devices, needed)
            dims |= rider.dims_for(sweep.task)
        undeclared = sorted(set(out) - set(dims) - set(spec.file_only))
        if undeclared:
            raise ValueError(
                f"analysis {spec.name!r} returned {undeclared} but declares the dimensions of {sorted(dims)} "
                "only: declare every key's dimensions (`dims`), or it could not be loaded"
            )
        bad = np.isin(gp.member, list(skip)) if spec.source is None else np.zeros(len(gp.member), bool)
        arrays = mask_members({**out, "member": np.asarray(gp.member)}, bad, {**dims, **spec.file_only})
        arrays = spec.finish(arrays, {**dims, **spec.file_only})
        coords = {k: np.asarray(v) for k, v in spec.coords(options, gp).items()}
        labels = store.labels(spec.var_prefix, coords)  # with `dims`: all that store.load reads of it
        stored = {k: dims[k] for k in arrays if k in dims}
        store.write_npz(store.group_dir(run_dir, g) / spec.file, {**arrays, **coords, **labels}, dims=stored)
        said = spec.summary(arrays, options) if spec.summary else f"{spec.name} of {len(gp.member)} networks"
        log.info("%s: %s%s", g, said, _left_out(gp.member[bad], skip))
    bar.close()


def _compute(
    sweep: Sweep, spec: analyses.Analysis, options, gp, devices, results: dict
) -> dict[str, np.ndarray]:
    """One analysis of one group: its group program, or its function of ONE network vmapped over the
    members (one compiled program; ``inputs`` made once on the host, constants of the program)."""
    if spec.group is not None:
        out = spec.group(sweep, options, gp, devices, results)
    else:
        data = spec.inputs(sweep.task, options)
        model, task = gp.model, sweep.task
        if spec.needs:

            def one(params, results):
                return spec.network(model, task, options, params, data, results=results)

            out = jax.jit(jax.vmap(one))(gp.params, results)
        else:

            def one(params):
                return spec.network(model, task, options, params, data)

            out = jax.jit(jax.vmap(one))(gp.params)
        missing = sorted(set(spec.dims_for(task)) - set(out))
        if missing:
            raise ValueError(
                f"analysis {spec.name!r} declares the dimensions of {missing} but did not return them"
            )
    return {k: np.asarray(v) for k, v in out.items()}


def _needed(run_dir: Path, group: str, spec: analyses.Analysis, computed: dict | None = None) -> dict:
    """The results of the group that ``spec`` needs: those just ``computed`` (the analysis it is stored
    into), else read from their files (every per-member array, ``fp_states`` too)."""
    out = {}
    for name in spec.needs:
        if computed and name in computed:
            out[name] = computed[name]
        else:
            out[name] = store.read_results(store.group_dir(run_dir, group) / analyses.get(name).file)
    return out


def _left_out(members: np.ndarray, status: dict[int, str]) -> str:
    """``"; 2 not analysed (NaN): 3 (diverged), 5 (exploded)"`` for the log, or ``""``."""
    if not len(members):
        return ""
    names = ", ".join(f"{m} ({status[m]})" for m in members.tolist())
    return f"; {len(members)} not analysed (NaN, no trained network): {names}"


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
    _check_settings(
        run_dir,
        _similarity_settings(sweep),
        store.SIMILARITY_CONFIG,
        "similarity",
        store.SIMILARITY,
        legacy_ok=True,
    )
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
    ds = store.load(run_dir, similarity=False)  # the file being made again, damaged or not, stays unread
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
