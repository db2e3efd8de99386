"""A population run on disk: write, resume, and read back in one call.

Layout of a run directory (plain, open formats; no pickle)::

    config.yaml                   the resolved popdyn config the run was made with
    groups.yaml                   what readers need of it: groups, shards, models, condition coordinates
    members.csv                   one row per trained network (written when every group is done)
    trials.csv                    the hyper-parameter search: one row per trial
    groups/<arch>-<activation>-<units>/
        params.npz                stacked parameters, one array per leaf ("cell/recurrent", ...),
                                  leading axis = the group's members (array "member" gives their ids)
        losses.npz                "loss" [members, logged steps] (mean MSE over each block of
                                  train.log_every steps) and "step" (the last step of each block)
        trials.csv                this group's search (written when its search is done)
        members.csv               this group's members — written last, so it marks the group done
        checkpoint.npz            training state between chunks (removed when the group is done)

Every file is written to a temporary name and renamed into place, so an interrupted run never leaves a
half-written file under a real name, and a re-run resumes: finished groups are skipped, a group with a
checkpoint continues from it.  Each directory's ``manifest.json`` records what popdyn wrote there; every
read checks the file against it (:func:`verify`), and a file it does not name is refused like an altered
one (a run older than manifests: :func:`adopt`).

Storage sits near the ground: this module imports no config, task or analysis code (readers learn what they
need of the config from ``groups.yaml``), and JAX only where it writes or rebuilds a model, so reading a
run starts no JAX backend.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import zipfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import filelock
import numpy as np
import pandas as pd
import xarray as xr
import yaml

if TYPE_CHECKING:
    from popdyn.model import Model

log = logging.getLogger("popdyn")

CONFIG = "config.yaml"
# what readers need of the config, written by the run layer when it prepares the run (popdyn.sweep.describe),
# so that reading imports no config or task code: the groups in grid order with their shard and model
# (arch, activation, units, n_in, n_out, unroll, readout bias, vocab, cell options), the task's condition
# coordinates and words (:func:`description`)
DESCRIPTION = "groups.yaml"
MEMBERS = "members.csv"
TRIALS = "trials.csv"
GROUPS = "groups"
DYNAMICS = "dynamics.npz"
DYNAMICS_CONFIG = "dynamics.yaml"
SIMILARITY = "similarity.npz"
SIMILARITY_CONFIG = "similarity.yaml"
LSA = "lsa.npz"  # text classification: the dataset's class × word counts and their LSA
SNAPSHOT = "snapshot-{step:08d}.npz"  # parameters saved during training (train.record_every)
TRAINING = "training.npz"  # [R]'s measurements at every saved step (popdyn.analyses.record)
MEMORY = "memory.npz"  # [V]'s memory curves (popdyn.analyses.memory)
MEMORY_CONFIG = "memory.yaml"  # the memory.* settings memory.npz was made with
RECORD_CONFIG = "record.yaml"  # the record.* settings training.npz was made with
# similarity.npz holds one [n, n] matrix per distance metric under the metric's name, beside its embedding
# mds_<name> (and <name>_compared for one between trained members only): store reads which metrics a file
# has (similarity_metrics) and names none of them
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


class RunDirError(RuntimeError):
    """A run directory that is missing, half-written, or made with a different config."""


# what reading a missing, truncated or foreign file raises (np.load of a cut .npz: BadZipFile)
UNREADABLE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)


# ---------------------------------------------------------------------------------------------- writing
MANIFEST = "manifest.json"  # per directory: what wrote each of its files (_record)


def _writer() -> bool:
    """Whether this process writes (``popdyn.hosts.writer``; imported here, so that reading a run
    imports no JAX)."""
    from popdyn import hosts

    return hosts.writer()


def _atomic(path: Path, write, record: bool = True) -> None:
    """Write to a temporary name, then rename into place; with ``record``, the directory's manifest
    accepts both the old and the new content while the rename happens, then only the new, so a process
    killed at any instant leaves a file its manifest vouches for.  In a multi-process run only process 0
    writes (``popdyn.hosts``); the others return at once."""
    if not _writer():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if record:
            new = _fingerprint(tmp)
            _record(path, [*_accepted(path), new])
        os.replace(tmp, path)
    except Exception as e:
        if _disk_full(e, path.parent):
            raise RunDirError(
                f"no space left on the device to write {path} (nothing was replaced); free some space and "
                "run the same command again: it resumes where this one stopped"
            ) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    if record:
        _record(path, [new])


def _disk_full(error: BaseException, directory: Path) -> bool:
    """Whether a failed write failed for want of space: ENOSPC / EDQUOT, or (writers such as zlib or
    matplotlib's PDF backend that report a failed write in their own words) under 1 MiB left."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(directory).free < 2**20
    except OSError:
        return False


def write_file(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name, then rename to ``path`` (figures: outside the manifests, since
    they are drawn from the results and can always be drawn again); a full disk is a ``RunDirError``."""
    _atomic(Path(path), write, record=False)


def remove(path: Path) -> None:
    """Delete a file written by popdyn and its manifest entry (process 0 only, as every write)."""
    if not _writer():
        return
    path.unlink(missing_ok=True)
    manifest = _read_manifest(path.parent / MANIFEST)
    if manifest.pop(path.name, None) is not None:
        _write_manifest(path.parent / MANIFEST, manifest)


def clean(run_dir: Path) -> None:
    """Delete the temporary files of writes a killed process never finished (call with the lock held)."""
    if not _writer():
        return
    for tmp in [*Path(run_dir).glob(".*.tmp-*"), *Path(run_dir).glob(f"{GROUPS}/*/.*.tmp-*")]:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(path: Path) -> dict:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _config_hash(path: Path) -> str | None:
    """sha256 of the ``config.yaml`` of the run a file belongs to (its directory or one above)."""
    for d in (path.parent, *path.parents[1:3]):
        if (d / CONFIG).exists():
            return hashlib.sha256((d / CONFIG).read_bytes()).hexdigest()
    return None


def _accepted(path: Path) -> list[dict]:
    """The fingerprints the manifest accepts for ``path`` now (its current content, if recorded)."""
    entry = _read_manifest(path.parent / MANIFEST).get(path.name)
    return [] if entry is None else entry["content"]


PROVENANCE_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")  # their versions, in every manifest entry


@functools.cache
def provenance() -> dict[str, Any]:
    """What this process computes with, as every manifest entry records it: popdyn's version and, run
    from a git checkout, its ``git_commit`` (``git_dirty``: tracked files changed since), the versions of
    :data:`PROVENANCE_PACKAGES`, ``python``, ``platform``, JAX's ``backend`` and ``device`` kind (called
    by writers only, whose JAX backend is up: ``popdyn.hosts.writer``)."""
    import jax

    from popdyn import __version__

    out: dict[str, Any] = {"popdyn": __version__, **_git(Path(__file__).resolve().parent.parent)}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    devices = jax.devices()
    out |= {"python": platform.python_version(), "platform": platform.platform(),
            "backend": jax.default_backend(), "device": devices[0].device_kind}  # fmt: skip
    return out


def _git(root: Path) -> dict[str, Any]:
    """``{"git_commit": ..., "git_dirty": ...}`` of the checkout popdyn runs from; empty for an installed
    popdyn (no ``.git`` beside the package) or where git does not answer."""
    if not (root / ".git").exists():
        return {}
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode != 0:
        return {}
    return {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def _record(path: Path, content: list[dict], adopted: bool = False) -> None:
    """Note in ``manifest.json`` beside ``path`` what produced it: its content's sha256 and size (so a
    truncated or altered file is caught on reading), the run's config hash, and the :func:`provenance`
    of the process that wrote it (popdyn's version and commit, JAX's and the other packages' versions,
    platform, device)."""
    manifest_path = path.parent / MANIFEST
    manifest = _read_manifest(manifest_path)
    manifest[path.name] = {
        "content": content,
        "config_sha256": _config_hash(path) if path.name != CONFIG else None,
        **provenance(),
        **({"adopted": True} if adopted else {}),
    }
    _write_manifest(manifest_path, manifest)


def _write_manifest(path: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True)
    _atomic(path, lambda tmp: tmp.write_text(text), record=False)


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); the files it describes cannot be checked") from None


def _run_of(path: Path) -> Path:
    """The run directory a file belongs to: its own directory, or the one above ``groups/<g>/``."""
    return path.parent.parent.parent if path.parent.parent.name == GROUPS else path.parent


# a group's training files, besides snapshots
TRAINING_FILES = ("params.npz", "losses.npz", MEMBERS, TRIALS, "checkpoint.npz")
ANALYSED = (DYNAMICS, TRAINING, MEMORY, SIMILARITY, LSA)  # what scripts/analyze.py computes if not intact


def _advice(path: Path) -> str:
    """What makes a damaged result file right again."""
    run = _run_of(path)
    if path.name in ANALYSED or (path.parent.parent.name == GROUPS and path.name not in TRAINING_FILES
                                 and path.suffix == ".npz" and not path.name.startswith("snapshot-")):  # fmt: skip
        return f"run `python scripts/analyze.py run_dir={run}` again: it recomputes it"
    if path.name in (DYNAMICS_CONFIG, SIMILARITY_CONFIG):
        made = f"{GROUPS}/*/{DYNAMICS}" if path.name == DYNAMICS_CONFIG else SIMILARITY
        return f"remove it and {made}, then run `python scripts/analyze.py run_dir={run}` again"
    if path.name == CONFIG:
        return "the settings of the run are unknown: restore it as popdyn wrote it, or start in another directory"
    sweep = f"re-run the sweep with the settings of {run / CONFIG} (hydra.run.dir={run})"
    if path.name == DESCRIPTION:
        return f"{sweep}: it writes it again from the config"
    if path.parent.parent.name == GROUPS:
        return f"{sweep}: it retrains group {path.parent.name}"
    return f"{sweep}: it rewrites it from the groups"


def _manifests(run_dir: Path) -> list[Path]:
    """Every manifest of a run directory (or of the shards of a multirun sweep directory)."""
    return sorted(
        p for pattern in (MANIFEST, f"{GROUPS}/*/{MANIFEST}", f"*/{MANIFEST}", f"*/{GROUPS}/*/{MANIFEST}")
        for p in Path(run_dir).glob(pattern)
    )  # fmt: skip


def _check(path: Path) -> str | None:
    """What is wrong with ``path`` by its directory's manifest (None: it is as popdyn wrote it, or it is
    absent and the manifest does not name it)."""
    manifest = path.parent / MANIFEST
    entry = _read_manifest(manifest).get(path.name)
    if entry is None:
        if not path.exists():
            return None
        run = _run_of(path)
        if not _manifests(run):
            return (
                f"{path} cannot be checked: {run} has no {MANIFEST} anywhere, as a run written before popdyn "
                f"kept manifests. If its files are as that popdyn left them, `popdyn.store.adopt({str(run)!r})` "
                "records them as they are now, and they load"
            )
        why = "is missing" if not manifest.exists() else "does not name it"
        return (
            f"{path} has no entry in its manifest ({manifest} {why}): popdyn did not write it, or its record "
            "was removed, so its numbers cannot be checked"
        )
    if not path.exists():
        return f"{path} is missing (its manifest says popdyn wrote it)"
    if _fingerprint(path) not in entry["content"]:
        return (
            f"{path} is truncated or altered since popdyn wrote it ({path.stat().st_size} bytes, "
            f"{entry['content'][-1]['bytes']} written); its numbers cannot be trusted"
        )
    config = _config_hash(path)
    if entry.get("config_sha256") and config and config != entry["config_sha256"]:
        return f"{path} was written under another config than the run's {CONFIG} now holds"
    return None


def verify(path: Path) -> Path:
    """``path``, after checking it against its directory's manifest: ``RunDirError`` naming the file and
    what makes it right if it is missing, truncated or altered since popdyn wrote it, was written under
    another config than its run's ``config.yaml``, or is there without a manifest entry (a run written
    before manifests: :func:`adopt`).  An absent file the manifest does not name passes: its reader says
    it is missing."""
    path = Path(path)
    problem = _check(path)
    if problem is not None:
        raise RunDirError(f"{problem}; {_advice(path)}")
    return path


def intact(path: Path) -> bool:
    """Whether ``path`` is there and as popdyn wrote it; a damaged one is logged (its caller makes it
    again)."""
    path = Path(path)
    if not path.exists():
        return False
    problem = _check(path)
    if problem is not None:
        log.warning("%s; computing it again", problem)
    return problem is None


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


DIMS_KEY = "_dims"  # in a labelled npz: JSON {key: [dimension names]} of its other arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray], dims: dict[str, tuple[str, ...]] | None = None) -> None:
    """``arrays`` into ``path`` (atomically); with ``dims``, a self-describing file: each key's dimension
    names stored beside the arrays (``_dims``), so that :func:`load` needs no table of what it holds."""
    if dims is not None:
        arrays = {**arrays, DIMS_KEY: np.array(json.dumps({k: list(v) for k, v in dims.items()}))}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic(path, write)


def read_labelled(path: Path) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """A labelled npz (:func:`write_npz` with ``dims``) as ``{key: (dims, array)}``; ``member`` too."""
    try:
        with np.load(verify(path)) as z:
            dims = json.loads(str(z[DIMS_KEY]))
            out = {k: (tuple(dims[k]), z[k]) for k in dims}
            out["member"] = (("member",), z["member"])
    except (*UNREADABLE, KeyError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); remove it and run scripts/analyze.py again") from None
    return out


def is_labelled(path: Path) -> bool:
    try:
        with np.load(path) as z:
            return DIMS_KEY in z.files
    except UNREADABLE:
        return False


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def flatten(tree: Any) -> dict[str, np.ndarray]:
    """``{"cell/recurrent": array, ...}`` — the leaves of a pytree of arrays keyed by their path."""
    import jax

    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
        out[name] = np.asarray(leaf)
    return out


def unflatten(arrays: dict[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten` for nested dicts."""
    tree: dict = {}
    for name, value in arrays.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _strip(config: dict, keys=_NOT_RESULTS) -> dict:
    config = json.loads(json.dumps(config))
    for path in keys:
        node = config
        for k in path[:-1]:
            node = node.get(k, {})
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return config


LOCK = ".popdyn.lock"
_held: dict[Path, int] = {}  # run directories this process holds, with nesting depth


@contextmanager
def locked(run_dir: str | Path):
    """Hold ``run_dir`` for this process: an exclusive OS lock on ``run_dir/.popdyn.lock`` (``flock`` on
    Linux and macOS, ``LockFileEx`` on Windows, through ``filelock``), which the OS releases when the
    process ends however it ends (``kill -9`` included).  A second process pointed at
    the same directory gets a ``RunDirError`` at once, before it computes or writes anything.  Nested
    use in one process is fine.  In a multi-process run process 0 holds it for all, and all of them get
    the ``RunDirError`` if it cannot."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir] += 1
        try:
            yield
        finally:
            _held[run_dir] -= 1
        return
    from popdyn import hosts

    f, error = None, None
    if hosts.writer():
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            try:
                f = open(run_dir / LOCK, "a")  # noqa: SIM115  (held open for the whole block)
            except PermissionError:  # read-only: locking needs no write access (a finished run no write)
                f = open(run_dir / LOCK)  # noqa: SIM115
        except OSError as e:
            error = RunDirError(f"cannot write to {run_dir}: {e.strerror or e}")
        else:
            try:
                held = filelock.lock_descriptor(f.fileno(), blocking=False)
            except OSError:
                held = False
            if not held:
                f.close()
                f = None
                error = RunDirError(
                    f"{run_dir} is in use by another popdyn process (it holds {run_dir / LOCK}); "
                    "wait for it to finish, or point this one at another directory"
                )
    if not hosts.agree(error is None):
        raise error or RunDirError(f"process 0 of this run could not lock {run_dir} (its log says why)")
    _held[run_dir] = 1
    try:
        yield
    finally:
        del _held[run_dir]
        if f is not None:
            filelock.unlock_descriptor(f.fileno())
            f.close()


def check_writable(run_dir: Path, needed: int) -> None:
    """``RunDirError`` before any work if ``run_dir`` cannot be written, or its file system has less than
    ``needed`` bytes free (checked on its nearest existing ancestor, so nothing is created)."""
    base = Path(run_dir).absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to {run_dir}: {base} is not a writable directory")
    free = shutil.disk_usage(base).free
    if free < needed:
        raise RunDirError(
            f"{run_dir} has {free / 2**30:.2f} GiB free, but this run needs about {needed / 2**30:.2f} GiB "
            "(parameters, checkpoints, losses, figures); free some space or pick another directory"
        )


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
    analysed = [p for p in d.glob("*.npz") if p.name not in TRAINING_FILES and not p.name.startswith("snapshot-")]
    derived = [*analysed, *(run_dir / n for n in (MEMBERS, TRIALS, SIMILARITY))]  # every analysis of the group
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
    run_dir: Path, group: str, params: dict, members: pd.DataFrame, loss: np.ndarray, step: np.ndarray
):
    """Write a finished group; its ``members.csv`` goes last and marks it done."""
    d = group_dir(run_dir, group)
    write_npz(d / "params.npz", {**flatten(params), "member": members["member"].to_numpy()})
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


# ---------------------------------------------------------------------------------------------- reading
def read_config(run_dir: Path) -> dict:
    """The config a run directory was made with; ``RunDirError`` if there is no readable one."""
    return _config(run_dir)


def read_csv(path: Path) -> pd.DataFrame:
    """A table popdyn wrote, checked against its manifest (:func:`verify`)."""
    try:
        return pd.read_csv(verify(path))
    except (*UNREADABLE, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); {_advice(Path(path))}") from None


def read_yaml(path: Path) -> dict:
    """Settings popdyn wrote (``dynamics.yaml``, ``similarity.yaml``), checked against their manifest."""
    try:
        return _read_yaml(verify(path)) or {}
    except OSError as e:
        raise RunDirError(f"{path} is unreadable ({e}); {_advice(Path(path))}") from None


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RunDirError(f"{path} is not readable YAML: {e}") from None


def _config(run_dir: Path) -> dict:
    """A run directory's config; for a multirun sweep directory, the config of the whole grid."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"no run directory at {run_dir}")
    path = run_dir / CONFIG
    if not path.exists():
        found = shards(run_dir)
        if found:
            return {**_read_yaml(found[0] / CONFIG), "shard": 0, "num_shards": 1}
        raise RunDirError(f"{run_dir} is not a popdyn run directory (no {CONFIG})")
    return _read_yaml(path)


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
    configs = {r: _read_yaml(r / CONFIG) for r in runs}
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
    return _derived(_read_yaml(home / CONFIG))


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


def load(run_dir: str | Path, partial: bool = False) -> xr.Dataset:
    """A run's results as an ``xarray.Dataset`` over ``member``.

    Coordinates ``arch``, ``activation``, ``units``, ``l2``, ``seed``, ``group`` (per member) and ``step``;
    data ``final_loss``, ``val_loss``, ``diverged``, ``status`` (:func:`member_status`), ``lr``, ``decay``, ``momentum``, ``clip`` (member) and
    ``loss`` (member × step, the training MSE).  ``partial=True`` loads the finished groups of an
    unfinished run.  Select like ``ds.where(ds.arch == "gru", drop=True)`` or
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
    if (run_dir / SIMILARITY).exists():
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


PREFIX_KEY = "_prefix"  # in an analysis's npz: its variables in `load` are <prefix>_<key> ("": the keys)
COORDS_KEY = "_coords"  # in an analysis's npz: JSON list of its keys that are coordinates, not per member


def labels(prefix: str, coords) -> dict[str, np.ndarray]:
    """What an analysis's npz stores beside its arrays and ``_dims`` so that :func:`load` needs no table
    of it: the prefix of its variables and which keys are coordinates (``record_step``)."""
    return {PREFIX_KEY: np.array(prefix), COORDS_KEY: np.array(json.dumps(list(coords)))}


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
