"""Safe files: atomic writes (a full disk is a clear error), the manifest beside every file with the
provenance of what wrote it (:func:`verify`, :func:`intact`), the run directory's lock, and the npz, CSV,
YAML and text writers and readers."""

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
from typing import Any

import filelock
import numpy as np
import pandas as pd
import yaml

from popdyn.store.names import CONFIG, MANIFEST, _advice, _manifests, _run_of

log = logging.getLogger("popdyn")


class RunDirError(RuntimeError):
    """A run directory that is missing, half-written, or made with a different config."""


# what reading a missing, truncated or foreign file raises (np.load of a cut .npz: BadZipFile)
UNREADABLE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)


def _writer() -> bool:
    """Whether this process writes (``popdyn.hosts.writer``; imported here, so that reading a run
    imports no JAX)."""
    from popdyn import hosts

    return hosts.writer()


def _atomic(path: Path, write, record: bool = True, about: dict | None = None) -> None:
    """Write to a temporary name, then rename into place; with ``record``, the directory's manifest
    accepts both the old and the new content while the rename happens, then only the new, so a process
    killed at any instant leaves a file its manifest vouches for.  In a multi-process run only process 0
    writes (``popdyn.hosts``); the others return at once.  ``about``: what else the manifest entry says
    of how the content was made (a group's parameters: the time loop that trained them)."""
    if not _writer():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if record:
            new = _fingerprint(tmp)
            _record(path, [*_accepted(path), new], about=about)
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
        _record(path, [new], about=about)


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

    out: dict[str, Any] = {"popdyn": __version__, **_git(Path(__file__).resolve().parents[2])}
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


def _record(path: Path, content: list[dict], adopted: bool = False, about: dict | None = None) -> None:
    """Note in ``manifest.json`` beside ``path`` what produced it: its content's sha256 and size (so a
    truncated or altered file is caught on reading), the run's config hash, and the :func:`provenance`
    of the process that wrote it (popdyn's version and commit, JAX's and the other packages' versions,
    platform, device), and ``about`` (what the writer adds: a group's ``time_loop``)."""
    manifest_path = path.parent / MANIFEST
    manifest = _read_manifest(manifest_path)
    manifest[path.name] = {
        "content": content,
        "config_sha256": _config_hash(path) if path.name != CONFIG else None,
        **provenance(),
        **(about or {}),
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


DIMS_KEY = "_dims"  # in a labelled npz: JSON {key: [dimension names]} of its other arrays
PREFIX_KEY = "_prefix"  # in an analysis's npz: its variables in `load` are <prefix>_<key> ("": the keys)
COORDS_KEY = "_coords"  # in an analysis's npz: JSON list of its keys that are coordinates, not per member


def labels(prefix: str, coords) -> dict[str, np.ndarray]:
    """What an analysis's npz stores beside its arrays and ``_dims`` so that :func:`load` needs no table
    of it: the prefix of its variables and which keys are coordinates (``record_step``)."""
    return {PREFIX_KEY: np.array(prefix), COORDS_KEY: np.array(json.dumps(list(coords)))}


def write_npz(
    path: Path,
    arrays: dict[str, np.ndarray],
    dims: dict[str, tuple[str, ...]] | None = None,
    about: dict | None = None,
) -> None:
    """``arrays`` into ``path`` (atomically); with ``dims``, a self-describing file: each key's dimension
    names stored beside the arrays (``_dims``), so that :func:`load` needs no table of what it holds;
    ``about``: added to its manifest entry (:func:`_atomic`)."""
    if dims is not None:
        arrays = {**arrays, DIMS_KEY: np.array(json.dumps({k: list(v) for k, v in dims.items()}))}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic(path, write, about=about)


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
