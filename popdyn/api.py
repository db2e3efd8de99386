"""popdyn from Python: a run without Hydra's command line, and the analyses for networks and arrays popdyn
did not train.

- :func:`compose` / :func:`run`: the config of ``scripts/sweep.py`` (the same ``conf/``, composed through
  Hydra's compose API, so the same defaults) and a whole run — trained, analysed, compared, drawn — returned
  as ``popdyn.store.load``'s labelled Dataset.
- :func:`compare`: every similarity metric between arrays of states you bring (recorded neurons, another
  framework's hidden states; any widths), through the same blocked all-pairs programs a run uses, with the
  MDS embeddings and, given labels, the PERMANOVA and nearest-neighbour statistics of [U]'s question.
- :func:`fixed_points`: popdyn's fixed-point finder (:mod:`popdyn.analyses.dynamics`) for any JAX step function
  ``h' = step(params, h, x)`` — a PyTorch GRU's weights as NumPy arrays, say (docs/python.md, "Your own networks").

They are also ``popdyn.run``, ``popdyn.compare``, ``popdyn.fixed_points`` and ``popdyn.compose``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

CONF = Path(__file__).resolve().parents[1] / "conf"  # a checkout's (or editable install's) conf/


# ------------------------------------------------------------------------------------------ runs
def compose(
    grid: str | None = "tiny", overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> dict:
    """The plain config ``python scripts/sweep.py [+grid=GRID] OVERRIDES…`` would run: ``conf/config.yaml``
    with ``conf/grid/<grid>.yaml`` laid over it (``grid=None``: the CPU demo) and Hydra-syntax
    ``overrides`` (``"train.steps=100"``, ``"task=sine"``, ``"grid.arch=[gru]"``), resolved.  Hydra's own
    section is left out; ``run_dir`` (``hydra.run.dir``'s value for these overrides) is added under
    ``"hydra_run_dir"``.  An unknown grid, task or key, or an override that does not parse: ``ConfigError``
    with the allowed ones; the values themselves (an unknown arch, an impossible number) are checked by
    :func:`popdyn.config.build_sweep`, as :func:`run` does before anything is computed."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from popdyn.cli import _hydra_error as hydra_error
    from popdyn.config import ConfigError

    conf = Path(config_dir) if config_dir is not None else CONF
    if not (conf / "config.yaml").is_file():
        raise ConfigError(
            f"no popdyn config in {conf} (conf/config.yaml of a popdyn checkout); pass config_dir= the "
            "folder that holds config.yaml"
        )
    grids = sorted(p.stem for p in (conf / "grid").glob("*.yaml"))
    if grid is not None and (not isinstance(grid, str) or not (conf / "grid" / f"{grid}.yaml").is_file()):
        raise ConfigError(f"unknown grid {grid!r}; allowed: {', '.join(grids)} (or None: the CPU demo)")
    if isinstance(overrides, str | bytes) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"overrides must be a list of strings such as ['train.steps=100', 'grid.arch=[gru]'], got "
            f"{overrides!r}"
        )
    overrides = ([f"+grid={grid}"] if grid else []) + [str(o) for o in overrides]
    # inside a running Hydra app (scripts/analyze.py reading a stored config) or a notebook that used
    # Hydra: set its state aside and put it back afterwards
    outer, outer_cfg = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf.resolve()), version_base="1.3", job_name="sweep"):
            cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)  # so that ${hydra:...} in hydra.run.dir resolves
            run_dir = str(cfg.hydra.run.dir)
            with open_dict(cfg):
                del cfg["hydra"]
            plain = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(hydra_error(e)) from None
    finally:
        GlobalHydra.instance().clear()
        GlobalHydra.instance().hydra = outer
        HydraConfig.instance().cfg = outer_cfg
    return {**plain, "hydra_run_dir": run_dir}


def run(
    grid: str | None = "tiny",
    overrides: Sequence[str] = (),
    run_dir: str | Path | None = None,
    progress: bool = True,
    config_dir: str | Path | None = None,
):
    """Train, analyse, compare and draw the population ``python scripts/sweep.py +grid=GRID OVERRIDES…``
    would (:func:`compose`), into ``run_dir`` (default: the CLI's, ``results/<grid.name>/<task>/<overrides>``
    under the current directory), and return ``popdyn.store.load(run_dir)``.

    Resumes like the CLI: the same call on an interrupted run finishes it, on a finished one changes
    nothing.  Bad values raise ``popdyn.config.ConfigError`` before anything is computed or written; a
    run directory that cannot be used raises ``popdyn.store.RunDirError``.  The command that reproduces
    the run from the shell is in ``run_dir/.hydra/overrides.yaml``."""
    from popdyn import _devices, store
    from popdyn.config import build_sweep
    from popdyn.sweep import run_sweep

    _devices.setup_host_devices()  # before JAX starts; a running JAX keeps its devices
    config = compose(grid, overrides, config_dir)
    target = Path(run_dir if run_dir is not None else config.pop("hydra_run_dir"))
    config.pop("hydra_run_dir", None)
    sweep = build_sweep(config)
    given = ([f"+grid={grid}"] if grid else []) + [str(o) for o in overrides]

    def record(path: Path) -> None:  # what the CLI writes in .hydra/, so that the shell can redo it
        import yaml

        for name, value in (("config.yaml", config), ("overrides.yaml", given)):
            text = yaml.safe_dump(value, sort_keys=False)
            store.write_file(path / ".hydra" / name, lambda tmp, text=text: tmp.write_text(text))

    run_sweep(sweep, target, progress, on_start=record)
    return store.load(target)


# ------------------------------------------------------------------------------------------ compare
def compare(
    states: Mapping[str, Any] | Sequence[Any],
    labels: Mapping[str, Sequence] | None = None,
    seeds: Sequence | None = None,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    **options,
):
    """Every pair of networks given as states: distances, 2-D MDS and (given ``labels``) [U]'s statistics.

    ``states``: ``{name: [samples, units]}`` or a list of such arrays — the same samples (rows: the same
    inputs, conditions or time points, in the same order) for every network, any number of units.
    ``metrics``: registered ``"states"`` metrics (``popdyn.similarity.names("states")``; default: those on
    by default, as in a run).  ``options``: :class:`popdyn.similarity.SimilarityOptions` fields
    (``keep_variance=0.99``, ``block=32``, ``mds_iter``, ``permutations``, ``bootstrap``).  ``labels``:
    ``{factor: [n labels]}`` (e.g. ``{"arch": [...]}``) — PERMANOVA R², pseudo-F, p and 1-NN accuracy of
    each factor under each distance (``popdyn.statistics.statistics_table``), with confidence intervals
    over ``seeds`` (each network's resampling unit, e.g. its training seed) when given.

    Returns an ``xarray.Dataset`` over ``network`` (the names; ``network_to`` the same): ``<metric>_distance``
    (network × network_to), ``mds_<metric>`` (network × mds), the labels as coordinates, and ``statistics``
    (metric × factor × statistic) when labels are given.  The distances are those of the pairwise
    functions (``popdyn.similarity.svcca``, ``cka``, ``procrustes`` …), computed in blocks as in a run."""
    import xarray as xr

    from popdyn import embed, similarity, statistics

    names, arrays = _named(states)
    n = len(arrays)
    metrics = _state_metrics(metrics)
    opts = replace(_similarity_options(options), metrics=metrics)
    prepared = _prepare(arrays, opts, metrics)
    dist = similarity.all_pairs(prepared, metrics, opts.block)
    coords: dict[str, Any] = {"network": names, "network_to": names}
    factors = {}
    for factor, values in (labels or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(
                f"labels[{factor!r}] has {values.size} labels for {n} networks; give one per network"
            )
        coords[factor] = ("network", values)
        factors[factor] = values
    data = {}
    for m in metrics:
        data[f"{m}_distance"] = (("network", "network_to"), dist[m])
        data[f"mds_{m}"] = (("network", "mds"), embed.mds(dist[m], seed, opts.mds_iter))
    if factors:
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"seeds has {len(seeds)} entries for {n} networks; give one per network")
        table = statistics.statistics_table(
            dist, factors, seeds=None if seeds is None else np.asarray(seeds),
            permutations=opts.permutations, bootstrap=opts.bootstrap, seed=seed,
        )  # fmt: skip
        data["statistics"] = table
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(metrics=list(metrics), samples=int(arrays[0].shape[0]), seed=seed)
    return ds


def _named(states) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(states, Mapping):
        names, arrays = [str(k) for k in states], list(states.values())
    elif isinstance(states, (list, tuple)):
        names, arrays = [str(i) for i in range(len(states))], list(states)
    else:
        raise TypeError(
            f"states must be a dict or a list of [samples, units] arrays, got {type(states).__name__}"
        )
    if len(arrays) < 2:
        raise ValueError(f"compare needs at least 2 networks, got {len(arrays)}")
    out = []
    for name, a in zip(names, arrays):
        a = np.asarray(a, np.float32)
        if a.ndim != 2:
            raise ValueError(f"states of network {name!r} have shape {a.shape}; want [samples, units]")
        if not np.isfinite(a).all():
            raise ValueError(f"states of network {name!r} are not all finite")
        if not np.any(np.var(a, axis=0) > 0):
            raise ValueError(f"states of network {name!r} are constant: there is nothing to compare")
        out.append(a)
    rows = {a.shape[0] for a in out}
    if len(rows) > 1:
        raise ValueError(
            f"the networks' states have {sorted(rows)} samples; every network needs the same samples "
            "(rows: the same inputs in the same order)"
        )
    return names, out


def _state_metrics(metrics) -> tuple[str, ...]:
    from popdyn import similarity

    allowed = similarity.names("states")
    if metrics is None:
        return tuple(m for m in similarity.enabled(similarity.SimilarityOptions(), "states"))
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for m in metrics:
        if m not in allowed:
            raise ValueError(f"unknown states metric {m!r} for compare; allowed: {', '.join(allowed)}")
    if not metrics:
        raise ValueError(f"no metric asked for; allowed: {', '.join(allowed)}")
    return metrics


def _similarity_options(options: dict):
    """``compare``'s options as :class:`popdyn.similarity.SimilarityOptions`, each value checked as the
    config's ``similarity`` section is (a ``ConfigError`` names the option and what it must be)."""
    from popdyn import similarity
    from popdyn.config import _similarity

    allowed = [k for k in similarity.option_fields() if k not in ("metrics", "untrained")]
    for k in options:
        if k not in allowed:
            raise TypeError(f"unknown compare option {k!r}; allowed: {', '.join(allowed)}")
    return _similarity(options)


def _prepare(arrays: list[np.ndarray], opts, metrics) -> dict:
    """Each network's preparation (``similarity.prepare``), vmapped over the networks of one width, then
    stacked in the given order (every width padded to the widest)."""
    import jax

    from popdyn import similarity

    many = jax.jit(jax.vmap(lambda x: similarity.prepare(x, opts, metrics)))
    parts, order = [], []
    for width in sorted({a.shape[1] for a in arrays}):
        idx = [i for i, a in enumerate(arrays) if a.shape[1] == width]
        parts.append(many(np.stack([arrays[i] for i in idx])))
        order.extend(idx)
    return similarity.take(similarity.stack(parts), np.argsort(order))


# ------------------------------------------------------------------------------------------ fixed points
def fixed_points(step, params, x_star, states, key=None, **options):
    """Fixed points of ``h ↦ step(params, h, x_star)`` for any JAX step function, with their Jacobians,
    eigenvalues and eigenvectors (:class:`popdyn.analyses.dynamics.FixedPoints`, arrays over ``max_points`` slots
    of which ``valid`` are found points, lowest ``q = ½‖F(h) − h‖²`` first).

    ``states [n, D]``: where the search starts — states your network visits (e.g. its hidden states over a
    batch of trials, flattened over time).  With ``key`` (a ``jax.random`` key), ``n_initial`` of them are
    drawn and perturbed by Gaussian noise of std ``noise``, as a popdyn run does; without, they are used as
    given.  ``options``: :class:`popdyn.analyses.dynamics.FixedPointOptions` fields (``steps``, ``q_tol``,
    ``unique_tol``, ``max_points``, …).  Pure and fixed-shape: ``jax.vmap`` it over a stack of ``params``
    (``in_axes=(None, 0, None, None)`` with ``functools.partial`` for the step)."""
    import jax
    import jax.numpy as jnp

    from popdyn._random import flat
    from popdyn.analyses.dynamics import FixedPointOptions, find_fixed_points
    from popdyn.config import _dynamics

    allowed = FixedPointOptions.__dataclass_fields__
    for k in options:
        if k not in allowed:
            raise TypeError(f"unknown fixed_points option {k!r}; allowed: {', '.join(allowed)}")
    opts = _dynamics(options)[0]  # each value checked as the config's dynamics section is
    states = jnp.asarray(states)
    x_star = jnp.asarray(x_star)
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must be [n ≥ 1, state size], got shape {states.shape}")
    if x_star.ndim != 1:
        raise ValueError(f"x_star must be one input vector [inputs], got shape {x_star.shape}")
    _check_step(step, params, states[0], x_star)
    if key is not None and not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        if getattr(key, "dtype", None) != jnp.uint32 or getattr(key, "shape", None) != (2,):
            raise TypeError(f"key must be a jax.random key (jax.random.key(0)) or None, got {key!r}")
        key = jax.random.wrap_key_data(key)  # an old-style jax.random.PRNGKey: the same draws
    if key is not None:
        pick, noise = jax.random.split(key)
        rows = jax.random.randint(pick, (opts.n_initial,), 0, states.shape[0])
        states = states[rows] + opts.noise * flat(
            jax.random.normal, noise, (opts.n_initial, states.shape[1]), states.dtype
        )
    return find_fixed_points(step, params, x_star, states, opts)


def _check_step(step, params, h, x_star) -> None:
    """``ValueError`` before the search if ``step(params, h, x_star)`` fails on one state or does not
    return a state of the same shape (it would fail deep inside the compiled search otherwise)."""
    import jax

    try:
        out = jax.eval_shape(step, params, h, x_star)
    except Exception as e:  # the step's own error, on shapes the caller gave
        raise ValueError(
            f"step(params, h, x_star) fails for a state h of shape {h.shape} and x_star of shape "
            f"{x_star.shape}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    if not hasattr(out, "shape") or out.shape != h.shape:
        raise ValueError(
            f"step(params, h, x_star) must return the next state, of h's shape {h.shape}; it returned "
            f"{getattr(out, 'shape', type(out).__name__)}"
        )
