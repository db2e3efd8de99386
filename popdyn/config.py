"""From a Hydra config to a validated :class:`Sweep`, before anything is compiled or written.

Every bad value gets one :class:`ConfigError` naming the value and what is allowed; ``scripts/sweep.py``
prints it and exits non-zero.  The config names are fixed (docs/training.md, "Config reference"): ``task.*``,
``grid.{arch,activation,units,l2,seeds,trials,search,hparams,cell_options}``, ``train.*``, ``seed``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from popdyn import analyses, cells
from popdyn import similarity as similarity_metrics
from popdyn.analyses.dynamics import FixedPointOptions, TopologyOptions
from popdyn.analyses.record import RecordOptions
from popdyn.cells import ACTIVATIONS
from popdyn.population import HPARAM_NAMES, SEARCH_SPACE, Grid, Group, shard_of_groups
from popdyn.similarity import SimilarityOptions
from popdyn.tasks import Task, TaskError, make_task
from popdyn.train import OPTIMIZERS, TrainSettings

TRAIN_KEYS = (
    "steps",
    "batch",
    "chunk",
    "decay_steps",
    "log_every",
    "val_batch",
    "final_window",
    "unroll",
    "devices",
    "member_batch",
    "checkpoint_seconds",
    "optimizer",
    "record_every",
)
GRID_KEYS = (
    "name", "arch", "activation", "units", "l2", "seeds", "trials", "search", "hparams", "cell_options",
)  # fmt: skip
# the config's top level (conf/config.yaml), besides every registered analysis's section (popdyn.analyses)
TOP_KEYS = ("task", "grid", "train", "similarity", "seed", "shard", "num_shards", "progress", "distributed",
            "analyze", "hydra")  # fmt: skip
MAX_SEED = 2**63 - 1  # what jax.random.key takes


class ConfigError(ValueError):
    """A config value popdyn cannot run with; the message names the value and the allowed ones."""


@dataclass(frozen=True)
class Sweep:
    """Everything a population run needs, validated."""

    name: str
    task: Task
    grid: Grid
    train: TrainSettings
    seed: int
    hparams: dict  # used for every member when grid.trials == 0
    unroll: int
    devices: int | None
    member_batch: int | None  # per device: None vmaps all local members, k loops over blocks of k
    config: dict  # the plain resolved config, as written to the run directory
    analyze: bool = True  # analyse the dynamics after training
    fixed_points: FixedPointOptions = FixedPointOptions()
    topology: TopologyOptions = TopologyOptions()
    similarity: SimilarityOptions = SimilarityOptions()
    checkpoint_seconds: float = 30.0  # a group's training state is saved between chunks at most this often
    shard: int = 0  # this job's part of the grid: whole groups (population.shard_of_groups)
    num_shards: int = 1
    record_every: int = 0  # [R]: save the parameters every this many steps (0: never)
    record: RecordOptions = RecordOptions()  # what is measured at each saved step
    # the options of every registered per-network analysis (popdyn.analyses), by name = config section
    analyses: dict = field(default_factory=dict)

    @property
    def groups(self) -> list[Group]:
        """The groups this job trains: all of them, or its shard's."""
        groups = self.grid.groups
        if self.num_shards == 1:
            return groups
        return [g for g, s in zip(groups, shard_of_groups(groups, self.num_shards)) if s == self.shard]


def _plain(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - hydra-core is a dependency
        pass
    return dict(cfg)


def _as_list(value: Any) -> list:
    if isinstance(value, (str, numbers.Number)):
        return [value]
    return list(value) if value is not None else []


def _int(where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{where} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def _names(where: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = _as_list(value)
    if not items:
        raise ConfigError(f"{where} is empty: the grid would hold no networks; allowed: {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            raise ConfigError(f"unknown {where} {item!r}; allowed: {', '.join(allowed)}")
    if len(set(items)) != len(items):
        raise ConfigError(f"{where} lists a value twice: {items}")
    return tuple(items)


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {where} {value!r}; allowed: {', '.join(allowed)}")
    return value


def _float(
    where: str,
    value: Any,
    low: float = -math.inf,
    strict: bool = False,
    high: float = math.inf,
    strict_high: bool = False,
) -> float:
    """A finite number in [low, high] (``strict``: low excluded; ``strict_high``: high excluded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    too_low = value < low or (strict and value == low)
    too_high = value > high or (strict_high and value == high)
    if too_low or too_high:
        if high == math.inf:
            want = f"{'>' if strict else '≥'} {low:g}"
        else:
            want = f"in {'(' if strict else '['}{low:g}, {high:g}{')' if strict_high else ']'}"
        raise ConfigError(f"{where} must be {want}, got {value!r}")
    return float(value)


# the range of each training hyper-parameter: (low, high, low excluded, high excluded); momentum ≥ 1
# never forgets a gradient (the velocity grows without bound), a decay above 1 makes the rate grow
HPARAM_RANGE = {
    "lr": (0.0, math.inf, True, False),
    "decay": (0.0, 1.0, True, False),
    "momentum": (0.0, 1.0, False, True),
    "clip": (0.0, math.inf, True, False),
}


def _search(value: Any) -> dict:
    search = dict(SEARCH_SPACE)
    for name, spec in (value or {}).items():
        if name not in SEARCH_SPACE:
            raise ConfigError(f"unknown grid.search entry {name!r}; allowed: {', '.join(SEARCH_SPACE)}")
        spec = _as_list(spec)
        if len(spec) != 3 or spec[2] not in ("log", "linear"):
            raise ConfigError(f"grid.search.{name} must be [low, high, log|linear], got {spec!r}")
        lo, hi, lo_open, hi_open = HPARAM_RANGE[name]
        low = _float(
            f"grid.search.{name} low",
            spec[0],
            lo,
            strict=lo_open or spec[2] == "log",
            high=hi,
            strict_high=hi_open,
        )
        high = _float(f"grid.search.{name} high", spec[1], low, high=hi)  # draws lie in [low, high)
        search[name] = (low, high, spec[2])
    return search


def _cell_options(value: Any) -> dict:
    """``grid.cell_options``: per arch, that cell's options (``CellSpec.options``: ``{arch: {name: value}}``),
    validated by ``popdyn.cells.options``; an arch not named keeps its defaults."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"grid.cell_options must map an arch to its options, got {value!r}")
    out = {}
    for arch, given in value.items():
        if given is not None and not isinstance(given, Mapping):
            raise ConfigError(f"grid.cell_options.{arch} must map option names to values, got {given!r}")
        try:
            out[arch] = cells.options(arch, given)
        except ValueError as e:
            raise ConfigError(f"grid.cell_options.{arch}: {e}") from None
    return out


def _hparams(value: Any) -> dict:
    value = dict(value or {})
    unknown = set(value) - set(HPARAM_NAMES[:-1])
    if unknown:
        raise ConfigError(
            f"unknown grid.hparams entry {sorted(unknown)[0]!r}; allowed: lr, decay, momentum, clip"
        )
    hp = {**HPARAM_DEFAULTS, **value}
    return {
        name: _float(f"grid.hparams.{name}", hp[name], lo, strict=lo_open, high=hi, strict_high=hi_open)
        for name, (lo, hi, lo_open, hi_open) in HPARAM_RANGE.items()
    }


def _member_batch(value: Any) -> int | None:
    """``auto``: one member at a time on a CPU (fastest there, benchmarks/README.md), vmap elsewhere."""
    if value == "auto":
        import jax

        return 1 if jax.default_backend() == "cpu" else None
    return None if value is None else _int("train.member_batch (null, auto or an integer)", value, 1)


# grid.hparams when the config gives none (conf/config.yaml's values; tests/test_api.py checks they agree)
HPARAM_DEFAULTS = {"lr": 0.05, "decay": 0.5, "momentum": 0.9, "clip": 1.0}


@functools.cache
def _base(task: str) -> dict | None:
    """``conf/config.yaml`` with ``conf/task/<task>.yaml`` (what ``scripts/sweep.py task=<task>`` starts
    from), or None where popdyn runs without its ``conf/`` (an installed wheel): then the settings
    dataclasses' defaults, which are the same values, fill in."""
    from popdyn import api

    if not (api.CONF / "config.yaml").is_file():
        return None
    base = api.compose(None, [f"task={task}"])
    base.pop("hydra_run_dir")
    return base


def _merged(base: dict, given: Mapping) -> dict:
    """``given`` over ``base``: mappings merged key by key (as Hydra merges configs), anything else replaced."""
    out = dict(base)
    for k, v in given.items():
        out[k] = _merged(base[k], v) if isinstance(v, Mapping) and isinstance(base.get(k), Mapping) else v
    return out


def complete(cfg: Mapping | Any) -> dict:
    """A plain config with every key the command line would have: a partial dict (``{"task": {"name":
    "sine"}, "train": {"steps": 100}}``) gets the values of ``conf/`` for what it leaves out, so that
    Python and the command line share one source of defaults.  A task popdyn's ``conf/task/`` does not
    hold (one registered from outside) keeps its own section as given."""
    cfg = _plain(cfg)
    task = cfg.get("task") if isinstance(cfg.get("task"), Mapping) else {}
    name = task.get("name", "flipflop")
    from popdyn import api

    known = (api.CONF / "task" / f"{name}.yaml").is_file()
    base = _base(name if known else "flipflop")
    if base is None:
        return cfg
    if not known:  # an outside task: its section is the given one, not flip-flop's
        base = {**base, "task": {}}
    return _merged(base, cfg)


def build_sweep(cfg: Mapping | Any) -> Sweep:
    """Validate a config (Hydra ``DictConfig`` or plain dict) into a :class:`Sweep`; raise ``ConfigError``.

    What a plain dict leaves out comes from ``conf/`` (:func:`complete`): the command line's defaults."""
    cfg = complete(cfg)
    allowed = TOP_KEYS + analyses.names()
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:  # a misspelt `+sed=3` would otherwise be ignored
        keys = ", ".join(k for k in allowed if k != "hydra")
        raise ConfigError(f"unknown key {unknown[0]!r}; the config has: {keys}")
    for section in ("task", "grid", "train"):
        if not isinstance(cfg.get(section), Mapping):
            raise ConfigError(f"config has no '{section}' section")
    task_cfg = dict(cfg["task"])
    name = task_cfg.pop("name", None)
    try:
        task = make_task(name, **task_cfg)
    except TaskError as e:
        raise ConfigError(f"task: {e}") from None

    g = dict(cfg["grid"])
    unknown = set(g) - set(GRID_KEYS)
    if unknown:
        raise ConfigError(f"unknown grid key {sorted(unknown)[0]!r}; allowed: {', '.join(GRID_KEYS)}")
    units = _as_list(g.get("units"))
    if not units:
        raise ConfigError("grid.units is empty: the grid would hold no networks")
    units = tuple(_int("grid.units", u, 1) for u in units)
    l2 = _as_list(g.get("l2"))
    if not l2:
        raise ConfigError("grid.l2 is empty: the grid would hold no networks")
    l2 = tuple(_float("grid.l2", v, 0.0) for v in l2)
    if len(set(units)) != len(units) or len(set(l2)) != len(l2):
        raise ConfigError(f"grid.units / grid.l2 list a value twice: {list(units)} / {list(l2)}")
    grid = Grid(
        arch=_names("grid.arch", g.get("arch"), cells.names()),
        activation=_names("grid.activation", g.get("activation"), ACTIVATIONS),
        units=units,
        l2=l2,
        seeds=_int("grid.seeds", g.get("seeds"), 1),
        trials=_int("grid.trials", g.get("trials", 0), 0),
        search=_search(g.get("search")),
        cell_options=_cell_options(g.get("cell_options")),
    )

    t = dict(cfg["train"])
    unknown = set(t) - set(TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"unknown train key {sorted(unknown)[0]!r}; allowed: {', '.join(TRAIN_KEYS)}")
    decay_steps = t.get("decay_steps")
    settings = TrainSettings(
        steps=_int("train.steps", t.get("steps"), 1),
        batch=_int("train.batch", t.get("batch"), 1),
        chunk=_int("train.chunk", t.get("chunk", _default(TrainSettings, "chunk")), 1),
        decay_steps=None if decay_steps is None else _int("train.decay_steps", decay_steps, 1),
        log_every=_int("train.log_every", t.get("log_every", _default(TrainSettings, "log_every")), 1),
        val_batch=_int("train.val_batch", t.get("val_batch", _default(TrainSettings, "val_batch")), 1),
        final_window=_int(
            "train.final_window", t.get("final_window", _default(TrainSettings, "final_window")), 1
        ),
        optimizer=_choice(
            "train.optimizer", t.get("optimizer", _default(TrainSettings, "optimizer")), OPTIMIZERS
        ),
    )
    for key in ("log_every", "final_window"):
        if getattr(settings, key) > settings.steps:
            raise ConfigError(
                f"train.{key} = {getattr(settings, key)} must be at most train.steps = {settings.steps}"
            )
    devices = t.get("devices")
    fixed_points, topology = _dynamics(cfg.get("dynamics") or {})
    num_shards = _int("num_shards", cfg.get("num_shards", 1), 1)
    shard = _int("shard", cfg.get("shard", 0), 0)
    if shard >= num_shards:
        raise ConfigError(f"shard must be in 0 … num_shards − 1 = {num_shards - 1}, got {shard}")
    if num_shards > len(grid.groups):
        raise ConfigError(
            f"num_shards = {num_shards} but the grid has only {len(grid.groups)} groups (a shard is whole groups)"
        )
    record_every = _int("train.record_every", t.get("record_every", 0), 0)
    if record_every % settings.chunk:
        raise ConfigError(
            f"train.record_every = {record_every} must be a multiple of train.chunk = {settings.chunk} "
            "(parameters are saved between chunks)"
        )
    analyze = cfg.get("analyze", True)
    for key in ("analyze", "progress"):
        if not isinstance(cfg.get(key, True), bool):
            raise ConfigError(f"{key} must be true or false, got {cfg[key]!r}")
    seed = _int("seed", cfg.get("seed", 0), 0)
    if seed > MAX_SEED:
        raise ConfigError(f"seed must be an integer in 0 … 2**63 − 1 = {MAX_SEED}, got {seed}")
    return Sweep(
        name=str(g.get("name", "run")),
        task=task,
        grid=grid,
        train=settings,
        seed=seed,
        hparams=_hparams(g.get("hparams")),
        unroll=_int("train.unroll", t.get("unroll", 1), 1),
        devices=None if devices is None else _int("train.devices", devices, 1),
        member_batch=_member_batch(t.get("member_batch", "auto")),
        config=cfg,
        analyze=analyze,
        fixed_points=fixed_points,
        topology=topology,
        similarity=_similarity(cfg.get("similarity") or {}),
        checkpoint_seconds=_float("train.checkpoint_seconds", t.get("checkpoint_seconds", 30.0), 0.0),
        shard=shard,
        num_shards=num_shards,
        record_every=record_every,
        record=_record(cfg.get("record") or {}, task),
        analyses={
            name: _analysis(analyses.get(name), cfg.get(name), task)
            for name in analyses.names()
            if analyses.get(name).options_of is None
        },  # the others: sections parsed above
    )


def _default(options: type, name: str):
    """The default of field ``name`` of the dataclass ``options``."""
    return options.__dataclass_fields__[name].default


def _section(name: str, value: Any, options: type) -> dict:
    """A config section that must be a mapping of the dataclass ``options``' field names."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping of settings, got {value!r}")
    allowed = options.__dataclass_fields__
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {name} key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    return dict(value)


def _analysis(spec: analyses.Analysis, value: Any, task: Task):
    """A registered analysis's config section (its options dataclass's fields, by name; absent: the
    defaults), checked against the task."""
    value = _section(spec.name, {} if value is None else value, spec.options)
    try:
        opts = spec.options(**value)
        spec.check(opts, task)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return opts


def _record(value: Any, task: Task) -> RecordOptions:
    """The ``record`` section: :class:`~popdyn.analyses.record.RecordOptions` fields, by name."""
    out = _section("record", value, RecordOptions)
    x = out.get("x_const")
    if x is not None:
        x = _as_list(x)
        if len(x) != task.n_in or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in x):
            raise ConfigError(
                f"record.x_const must be null or {task.n_in} numbers (the task's inputs), got {x!r}"
            )
        out["x_const"] = tuple(float(v) for v in x)
    if "scales" in out:
        scales = _as_list(out["scales"])
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in scales):
            raise ConfigError(f"record.scales must be a list of numbers, got {out['scales']!r}")
        out["scales"] = tuple(float(v) for v in scales)
    try:
        return RecordOptions(**out)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _dynamics(value: Any) -> tuple[FixedPointOptions, TopologyOptions]:
    """The ``dynamics`` section: FixedPointOptions and TopologyOptions fields, by name."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"dynamics must be a mapping of settings, got {value!r}")
    names = {f: FixedPointOptions for f in FixedPointOptions.__dataclass_fields__}
    names |= {f: TopologyOptions for f in TopologyOptions.__dataclass_fields__}
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ConfigError(f"unknown dynamics key {unknown[0]!r}; allowed: {', '.join(names)}")
    parts: dict[type, dict] = {FixedPointOptions: {}, TopologyOptions: {}}
    for k, v in value.items():
        kind = names[k].__dataclass_fields__[k].type
        if kind.endswith(" | None"):  # max_points: null keeps every distinct point
            if v is None:
                parts[names[k]][k] = None
                continue
            kind = kind.removesuffix(" | None")
        want = {"int": int, "float": float, "bool": bool}[kind]
        ok = isinstance(v, bool) if want is bool else isinstance(v, numbers.Real) and not isinstance(v, bool)
        if not ok or (want is int and int(v) != v):
            raise ConfigError(f"dynamics.{k} must be {kind}, got {v!r}")
        parts[names[k]][k] = want(v)
    try:
        return FixedPointOptions(**parts[FixedPointOptions]), TopologyOptions(**parts[TopologyOptions])
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _similarity(value: Any) -> SimilarityOptions:
    """The ``similarity`` section: :class:`SimilarityOptions` fields and each registered metric's own
    (``MetricSpec.options``), by name."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"similarity must be a mapping of settings, got {value!r}")
    allowed = similarity_metrics.option_fields()
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown similarity key {unknown[0]!r}; allowed: {', '.join(allowed)}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k == "untrained":
            out[k] = _names("similarity.untrained", v, cells.names()) if _as_list(v) else ()
            continue
        if k == "metrics":  # registered names (popdyn.similarity), any order; [] for none; null: defaults
            if v is None:
                continue
            out[k] = _names("similarity.metrics", v, similarity_metrics.names()) if _as_list(v) else ()
            continue
        kind = allowed[k][1].type  # a string, unless a metric's module does not postpone annotations
        kind = kind if isinstance(kind, str) else kind.__name__
        if kind == "str":
            if not isinstance(v, str):
                raise ConfigError(f"similarity.{k} must be a name, got {v!r}")
            out[k] = v
            continue
        if kind == "bool":
            if not isinstance(v, bool):
                raise ConfigError(f"similarity.{k} must be true or false, got {v!r}")
            out[k] = v
            continue
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
        if not ok or (kind == "int" and int(v) != v):
            raise ConfigError(f"similarity.{k} must be {kind}, got {v!r}")
        out[k] = int(v) if kind == "int" else float(v)
    try:
        opts = SimilarityOptions(**out)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for m in similarity_metrics.enabled(opts):  # a metric that cannot run here (its package absent)
        missing = similarity_metrics.get(m).missing
        if missing is not None and (message := missing()):
            raise ConfigError(message)
    return opts
