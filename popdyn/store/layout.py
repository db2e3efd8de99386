"""The run directory (:mod:`popdyn.store` draws it): preparing it for a config, each group's directory
and whether it is done, damaged or to be trained again, checkpoints, snapshots, the finished groups' files
and tables, the shards of a multirun sweep, and ``groups.yaml`` (:func:`description`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from popdyn.store.files import (
    UNREADABLE,
    RunDirError,
    _check,
    _fingerprint,
    _read_manifest,
    _read_yaml,
    _record,
    _writer,
    flatten,
    intact,
    read_csv,
    read_yaml,
    remove,
    unflatten,
    verify,
    write_csv,
    write_npz,
    write_text,
)
from popdyn.store.names import (
    CONFIG,
    DESCRIPTION,
    DYNAMICS_CONFIG,
    GROUPS,
    LSA,
    MANIFEST,
    MEMBERS,
    SIMILARITY,
    SIMILARITY_CONFIG,
    SNAPSHOT,
    TRAINING_FILES,
    TRIALS,
    _manifests,
)

if TYPE_CHECKING:
    from popdyn.model import Model

log = logging.getLogger("popdyn")

# config entries that do not change any number a run produces, so they may differ when resuming
# (dynamics settings are checked against dynamics.yaml by popdyn.analysis instead)
_NOT_RESULTS = {
    ("progress",),
    ("train", "devices"),
    ("train", "chunk"),
    ("train", "checkpoint_seconds"),
    ("train", "record_every"),
    ("analyze",),
    ("dynamics",),
    ("similarity",),
    ("record",),
    ("memory",),
    ("distributed",),
}


def _strip(config: dict, keys=_NOT_RESULTS) -> dict:
    config = json.loads(json.dumps(config))
    for path in keys:
        node = config
        for k in path[:-1]:
            node = node.get(k, {})
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return config


MEMBER_COLUMNS = [
    "member", "group", "arch", "activation", "units", "l2", "seed",
    "lr", "decay", "momentum", "clip", "final_loss", "val_loss", "diverged", "status",
]  # fmt: skip
OPTIONAL_COLUMNS = ["val_accuracy"]  # classification tasks only
# A final loss above this, though finite, is no trained network: a network that outputs 0 scores at most
# 1 (MSE, targets in [−1, 1]) or log(classes) (cross-entropy) on every popdyn task.
EXPLODED_LOSS = 1e6
TRAINED, DIVERGED, EXPLODED = "trained", "diverged", "exploded"  # the values of the status column


def member_status(final_loss: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """Each network's ``status``: ``diverged`` (its loss turned non-finite, ``train`` froze it),
    ``exploded`` (finite final loss above :data:`EXPLODED_LOSS`) or ``trained``."""
    loss = np.asarray(final_loss, np.float64)
    bad = np.asarray(diverged, bool) | ~np.isfinite(loss)
    with np.errstate(invalid="ignore"):
        return np.where(bad, DIVERGED, np.where(loss > EXPLODED_LOSS, EXPLODED, TRAINED))


def clean(run_dir: Path) -> None:
    """Delete the temporary files of writes a killed process never finished (call with the lock held)."""
    if not _writer():
        return
    for tmp in [*Path(run_dir).glob(".*.tmp-*"), *Path(run_dir).glob(f"{GROUPS}/*/.*.tmp-*")]:
        tmp.unlink(missing_ok=True)


def _result_files(run: Path) -> list[Path]:
    """The files popdyn writes in one run directory (that are there), and every file its manifests name."""
    files = [run / n for n in (CONFIG, DESCRIPTION, MEMBERS, TRIALS, DYNAMICS_CONFIG, SIMILARITY_CONFIG,
                               SIMILARITY, LSA)]  # fmt: skip
    for d in [run, *sorted(d for d in (run / GROUPS).glob("*") if d.is_dir())]:
        if d != run:  # a group's directory holds nothing but popdyn's files
            files += [p for p in d.iterdir() if p.is_file() and p.name[0] != "." and p.name != MANIFEST]
        files += [d / name for name in _read_manifest(d / MANIFEST)]
    return sorted({p for p in files if p.exists() or p.name in _read_manifest(p.parent / MANIFEST)})


def _runs(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    return [run_dir] if (run_dir / CONFIG).exists() else [run_dir, *(shards(run_dir) or {}).values()]


def check_run(run_dir: str | Path) -> None:
    """``RunDirError`` naming the first result file of ``run_dir`` (or of its shards) that fails
    :func:`verify`; what ``scripts/analyze.py`` does before it reports success."""
    for run in _runs(run_dir):
        for path in _result_files(run):
            verify(path)


def adopt(run_dir: str | Path) -> list[Path]:
    """Record in new manifests every result file of a run written before popdyn kept manifests, as it is
    now (entries marked ``"adopted"``), so that it loads; from then on its files are checked like any
    run's.  Refused, nothing written, if the run has a manifest already: a file without an entry there
    was not written by popdyn or lost its record, and the error reading it says what recomputes it.
    Returns the files recorded."""
    run_dir = Path(run_dir)
    _config(run_dir)  # a run directory, or a sweep directory of shards
    found = _manifests(run_dir)
    if found:
        raise RunDirError(
            f"popdyn.store.adopt is for runs written before popdyn kept manifests, and {run_dir} has them "
            f"({found[0]}); the error reading a file without an entry says what recomputes it"
        )
    files = [p for run in _runs(run_dir) for p in _result_files(run)]
    for path in sorted(files, key=lambda p: p.name != CONFIG):  # config first: the others' hash names it
        if _writer():
            _record(path, [_fingerprint(path)], adopted=True)
    return files


def prepare_run(run_dir: Path, config: dict, description: dict | None = None) -> None:
    """Record ``config`` in ``run_dir``, or check that the results already there were made with it; then
    record ``description`` (``popdyn.sweep.describe``) as :data:`DESCRIPTION` unless it is there intact
    (a run written before that file gains it; a read-only one is read without it, :func:`description`)."""
    run_dir = Path(run_dir)
    _prepare_config(run_dir, config)
    path = run_dir / DESCRIPTION
    if description is None or intact(path):
        return
    try:
        write_text(path, yaml.safe_dump(description, sort_keys=False))
    except PermissionError:
        log.info("%s is read-only: its groups are read from %s", run_dir, CONFIG)


def _prepare_config(run_dir: Path, config: dict) -> None:
    path = run_dir / CONFIG
    if path.exists():
        try:
            old = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise RunDirError(
                f"{path} is not readable YAML ({e}); move the directory away or pick another"
            ) from None
        if not isinstance(old, dict):
            raise RunDirError(f"{path} holds no config (empty, or not a mapping); move the directory away or "
                              "pick another")  # fmt: skip
        if _strip(old) != _strip(config):
            raise RunDirError(
                f"{run_dir} holds results of a different config; nothing was changed. "
                f"Use another directory (hydra.run.dir=...) or the same settings as {path}"
            )
        if not _manifests(run_dir):  # its first write made one: these files are older than manifests
            raise RunDirError(f"{_check(path)}; nothing was changed")
        return
    write_text(path, yaml.safe_dump(config, sort_keys=False))


def group_dir(run_dir: Path, group: str) -> Path:
    """Where a group's files are: ``run_dir/groups/<group>``, or in its shard's run directory when
    ``run_dir`` is a multirun sweep directory (:func:`shards`)."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).exists() or (run_dir / GROUPS / group).exists():
        return run_dir / GROUPS / group
    found = shards(run_dir)
    if not found:
        return run_dir / GROUPS / group
    of = {g["name"]: g["shard"] for g in description(run_dir)["groups"]}
    return found[of[group]] / GROUPS / group if group in of else run_dir / GROUPS / group


def group_done(run_dir: Path, group: str) -> bool:
    return (group_dir(run_dir, group) / MEMBERS).exists()


def damaged(run_dir: Path, group: str) -> str | None:
    """Why a group's training files can be neither used nor resumed from — one of them (those there and
    those its manifest names) is missing, truncated, altered or unrecorded — or None."""
    d = group_dir(run_dir, group)
    if not d.is_dir():
        return None
    try:
        names = {p.name for p in d.iterdir() if p.is_file()} | set(_read_manifest(d / MANIFEST))
        for name in sorted(names):
            if name in TRAINING_FILES or name.startswith("snapshot-"):
                problem = _check(d / name)
                if problem is not None:
                    return problem
    except RunDirError as e:  # an unreadable manifest
        return str(e)
    return None


def reset_group(run_dir: Path, group: str) -> None:
    """Delete every file of a group (training files, analysis, manifest), to train it from the start."""
    if _writer():
        shutil.rmtree(group_dir(run_dir, group), ignore_errors=True)
    invalidate(run_dir, group)


def invalidate(run_dir: Path, group: str) -> None:
    """Before a group is trained: delete what was computed from parameters it had before — its analysis
    (dynamics, memory, through-training measurements), its snapshots unless it resumes from a checkpoint,
    the run's tables and similarity (and a multirun sweep directory's similarity, when popdyn wrote it)."""
    run_dir = Path(run_dir)
    d = group_dir(run_dir, group)
    analysed = [
        p for p in d.glob("*.npz") if p.name not in TRAINING_FILES and not p.name.startswith("snapshot-")
    ]
    derived = [
        *analysed,
        *(run_dir / n for n in (MEMBERS, TRIALS, SIMILARITY)),
    ]  # every analysis of the group
    if not (d / "checkpoint.npz").exists():
        derived += d.glob(SNAPSHOT.replace("{step:08d}", "*"))
    sweep_dir = run_dir.parent  # the sweep of a multirun shard: its comparison includes this group
    if not (sweep_dir / CONFIG).exists() and SIMILARITY in _read_manifest(sweep_dir / MANIFEST):
        derived.append(sweep_dir / SIMILARITY)
    for path in derived:
        if path.exists():
            log.info("%s: removed, made from parameters of %s that are trained again", path, group)
            remove(path)


def save_checkpoint(path: Path, phase: str, state: Any, losses: np.ndarray) -> None:
    arrays = {f"state/{k}": v for k, v in flatten(state).items()}
    write_npz(path, {**arrays, "losses": losses, "phase": np.array(phase)})


def load_checkpoint(path: Path, phase: str, template: Any) -> tuple[Any, np.ndarray] | None:
    """The (state, losses) saved for ``phase``, shaped like ``template``; None if there is none for it."""
    if not path.exists():
        return None
    try:
        with np.load(verify(path)) as z:
            if str(z["phase"]) != phase:
                return None
            leaves = [z[f"state/{k}"] for k in flatten(template)]
            losses = z["losses"]
    except UNREADABLE as e:
        raise RunDirError(f"checkpoint {path} is unreadable ({e}); delete it to restart that group") from None
    import jax

    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, leaves), losses


def downsample(losses: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over consecutive blocks of ``every`` steps: (loss [members, blocks], last step of each block)."""
    steps = losses.shape[1]
    edges = np.arange(0, steps, every)
    blocks = np.stack([losses[:, a : a + every].mean(axis=1) for a in edges], axis=1)
    return blocks.astype(np.float32), np.minimum(edges + every, steps)


def write_group(
    run_dir: Path,
    group: str,
    params: dict,
    members: pd.DataFrame,
    loss: np.ndarray,
    step: np.ndarray,
    about: dict | None = None,
):
    """Write a finished group; its ``members.csv`` goes last and marks it done.  ``about``: how it was
    trained, into the parameters' manifest entry (``{"time_loop": "fused"}``: ``Model.time_loop``)."""
    d = group_dir(run_dir, group)
    write_npz(d / "params.npz", {**flatten(params), "member": members["member"].to_numpy()}, about=about)
    write_npz(d / "losses.npz", {"loss": loss, "step": step, "member": members["member"].to_numpy()})
    write_csv(d / MEMBERS, members[MEMBER_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in members]])
    remove(d / "checkpoint.npz")


def write_snapshot(run_dir: Path, group: str, step: int, params: dict, member: np.ndarray) -> None:
    """The parameters of a group's members at one training step (``train.record_every``)."""
    write_npz(group_dir(run_dir, group) / SNAPSHOT.format(step=step), {**flatten(params), "member": member})


def _snapshot_paths(run_dir: str | Path, group: str) -> list[Path]:
    return sorted(group_dir(Path(run_dir), group).glob(SNAPSHOT.replace("{step:08d}", "*")))


def has_snapshots(run_dir: str | Path, group: str) -> bool:
    """Whether parameters were saved during the group's training (``train.record_every``)."""
    return bool(_snapshot_paths(run_dir, group))


def load_snapshots(run_dir: str | Path, group: str) -> tuple[np.ndarray, dict, np.ndarray] | None:
    """``(steps [S], params with leading axes [S, members], member)`` of the parameters saved during a
    group's training, in step order; ``None`` if none were saved."""
    paths = _snapshot_paths(run_dir, group)
    if not paths:
        return None
    steps, trees = [], []
    for path in paths:
        try:
            with np.load(verify(path)) as z:
                arrays = {k: z[k] for k in z.files}
        except UNREADABLE as e:
            raise RunDirError(f"snapshot {path} is unreadable ({e})") from None
        member = arrays.pop("member")
        steps.append(int(path.stem.split("-")[1]))
        trees.append(unflatten(arrays))
    return np.array(steps), _stack(trees), member


def _stack(trees: list[dict]) -> dict:
    """Nested dicts of arrays with one structure → one nested dict, each leaf stacked on a new axis 0."""
    return {k: _stack([t[k] for t in trees]) if isinstance(v, dict) else np.stack([t[k] for t in trees])
            for k, v in trees[0].items()}  # fmt: skip


def write_tables(run_dir: Path, groups: list[str]) -> None:
    """The run-level ``members.csv`` and ``trials.csv``, gathered from finished groups."""
    members = pd.concat([read_csv(group_dir(run_dir, g) / MEMBERS) for g in groups]).sort_values("member")
    trials = [group_dir(run_dir, g) / TRIALS for g in groups]
    trials = [read_csv(p) for p in trials if p.exists()]
    write_csv(Path(run_dir) / MEMBERS, members)
    if trials:
        write_csv(Path(run_dir) / TRIALS, pd.concat(trials))


def read_config(run_dir: Path) -> dict:
    """The config a run directory was made with; ``RunDirError`` if there is no readable one."""
    return _config(run_dir)


def _config(run_dir: Path) -> dict:
    """A run directory's config; for a multirun sweep directory, the config of the whole grid."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"no run directory at {run_dir}")
    path = run_dir / CONFIG
    if not path.exists():
        found = shards(run_dir)
        if found:
            return {**_read_config(found[0] / CONFIG), "shard": 0, "num_shards": 1}
        raise RunDirError(f"{run_dir} is not a popdyn run directory (no {CONFIG})")
    return _read_config(path)


def _read_config(path: Path) -> dict:
    """A run's ``config.yaml``; ``RunDirError`` if it is empty or not a mapping (not as popdyn wrote it)."""
    out = _read_yaml(path)
    if not isinstance(out, dict):
        raise RunDirError(f"{path} holds no config (empty, or not a mapping): it is not as popdyn wrote it")
    return out


def shards(sweep_dir: str | Path) -> dict[int, Path] | None:
    """``{shard: run directory}`` of a multirun sweep directory whose jobs split one grid
    (``shard=range(n) num_shards=n``); ``None`` if ``sweep_dir`` holds no run directories.

    ``RunDirError`` names the problem when the jobs do not make one grid: runs of different configs, a
    shard missing, or a shard there twice."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or (sweep_dir / CONFIG).exists():
        return None
    runs = sorted(p.parent for p in sweep_dir.glob(f"*/{CONFIG}"))
    if not runs:
        return None
    configs = {r: _read_config(r / CONFIG) for r in runs}
    base = {r: _strip({**c, "shard": 0}) for r, c in configs.items()}
    first = runs[0]
    for r in runs[1:]:
        if base[r] != base[first]:
            raise RunDirError(
                f"{sweep_dir} holds runs of different configs ({first.name} and {r.name}), not the shards "
                "of one grid; load each run directory on its own"
            )
    n = int(configs[first].get("num_shards", 1))
    found: dict[int, Path] = {}
    for r, c in configs.items():
        k = int(c.get("shard", 0))
        if k in found:
            raise RunDirError(f"{sweep_dir}: shard {k} is there twice ({found[k].name} and {r.name})")
        found[k] = r
    missing = sorted(set(range(n)) - set(found))
    if missing:
        raise RunDirError(
            f"{sweep_dir}: shard(s) {', '.join(map(str, missing))} of {n} missing (no run directory with "
            f"shard={missing[0]}); run those jobs, then load again"
        )
    return found


MODEL_FIELDS = ("arch", "activation", "units", "n_in", "n_out", "unroll", "readout_bias", "vocab")


def model_description(model: Model) -> dict:
    """A group's ``Model`` as plain values for :data:`DESCRIPTION` (:data:`MODEL_FIELDS`, ``options``
    as a mapping); :func:`load_params` builds the same ``Model`` from it."""
    out = {k: getattr(model, k) for k in MODEL_FIELDS}
    out = {k: v if isinstance(v, str) else bool(v) if isinstance(v, bool) else int(v) for k, v in out.items()}
    return {**out, "options": dict(model.options)}


def description(run_dir: str | Path) -> dict:
    """What readers need of a run's config (:data:`DESCRIPTION`): ``task`` (its name), ``num_shards``,
    ``groups`` (every group of the grid in grid order: ``name``, ``shard``, ``model``), and where the task
    has them, ``conditions`` (``{name: {"dtype", "values"}}``, coordinates of the ``condition`` axis) and
    ``words``.  For a multirun sweep directory, its first shard's; for a run written before the file, the
    groups, shards and models derived from its ``config.yaml`` (:func:`_derived`)."""
    run_dir = Path(run_dir)
    home = run_dir if (run_dir / CONFIG).exists() else (shards(run_dir) or {}).get(0)
    if home is None:
        _config(run_dir)  # the RunDirError that says what run_dir is not
        raise RunDirError(f"{run_dir} is not a popdyn run directory (no {CONFIG})")
    path = home / DESCRIPTION
    if path.exists():
        return read_yaml(path)
    return _derived(_read_config(home / CONFIG))


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, (str, int, float)) else list(value or [])


def _derived(config: dict) -> dict:
    """The :func:`description` of a run written before :data:`DESCRIPTION`, from its config alone: the
    grid's groups (arch × activation × units, in that order), their shards
    (``popdyn.population.shard_of_groups``) and models without the task's sizes (``load_params`` reads
    those from the parameters); no condition coordinates or words (they need the task)."""
    from popdyn import cells
    from popdyn.population import Group, shard_of_groups

    grid, train = config["grid"], config.get("train") or {}
    axes = {k: _as_list(grid.get(k)) for k in ("arch", "activation", "units", "l2")}
    groups = [Group(a, f, int(u), tuple(axes["l2"])) for a in axes["arch"] for f in axes["activation"]
              for u in axes["units"]]  # fmt: skip
    n = int(config.get("num_shards", 1))
    options = grid.get("cell_options") or {}
    rows = [
        {"name": g.name, "shard": k,
         "model": {"arch": g.arch, "activation": g.activation, "units": g.units,
                   "unroll": int(train.get("unroll", 1)), "options": dict(cells.options(g.arch, options.get(g.arch)))}}
        for g, k in zip(groups, shard_of_groups(groups, n))
    ]  # fmt: skip
    return {"task": config["task"]["name"], "num_shards": n, "groups": rows}


def _groups(run_dir: Path, partial: bool) -> list[str]:
    """The finished groups of a run directory (a shard's run: its shard's) or of a multirun sweep
    directory (every shard's), in grid order; ``RunDirError`` if one is missing and not ``partial``."""
    groups = description(run_dir)["groups"]
    if (run_dir / CONFIG).exists():
        shard = int(_config(run_dir).get("shard", 0))
        groups = [g for g in groups if g["shard"] == shard]
    names = [g["name"] for g in groups]
    done = [g for g in names if group_done(run_dir, g)]
    missing = [g for g in names if g not in done]
    if missing and not partial:
        raise RunDirError(
            f"{run_dir} is not finished: groups {', '.join(missing)} have no results yet "
            "(re-run the same command to resume, or load(..., partial=True) for what is done)"
        )
    if not done:
        raise RunDirError(f"{run_dir} has no finished group yet")
    return done
