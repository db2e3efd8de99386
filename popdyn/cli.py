"""What the Hydra entry points in ``scripts/`` do, importable and testable without Hydra's runner."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from popdyn import analyses, analysis, hosts, setup_host_devices, store
from popdyn.config import ConfigError, build_sweep
from popdyn.sweep import Interrupted, run_sweep

log = logging.getLogger("popdyn")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own, for the run's log file
_made: dict[Path, Path] = {}  # run directory → its nearest ancestor that existed before Hydra made it


def main(hydra_main: Callable[[], None]) -> None:
    """Call a ``@hydra.main`` function with Hydra's config errors (an unknown task or grid, a misspelt key,
    an override that does not parse) as popdyn's one line, exit 2, and Ctrl-C as one line, exit 130.

    First what an entry point chooses for its process, before JAX starts: one host device per core
    (:func:`popdyn.setup_host_devices`, with the compilation cache) and matplotlib's Agg backend (files
    only, no display needed)."""
    try:
        setup_host_devices()
    except ValueError as e:  # a POPDYN_* environment variable that is not a number
        fail(str(e))
    matplotlib.use("Agg")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its own report and exiting 1
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as e:
        fail(_hydra_error(e))
    except KeyboardInterrupt:
        interrupted("what was finished is kept; the same command resumes")


def _hydra_error(e: Exception) -> str:
    if "Missing mandatory value: run_dir" in str(e):  # analyze.py, figures.py without their one argument
        return "no run directory given: add run_dir=PATH (a run of scripts/sweep.py)"
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, name = e.missing_cfg_file.rsplit("/", 1)
        return f"unknown {group} {name!r}; allowed: {', '.join(e.options or [])}"
    cause = e.__cause__
    parent = getattr(cause, "parent_node", None)
    if isinstance(e, ConfigCompositionException) and getattr(cause, "full_key", None) and parent is not None:
        section = cause.full_key.rpartition(".")[0] or "the config"
        keys = ", ".join(str(k) for k in parent.keys()) if isinstance(parent, DictConfig) else "no keys"
        return f"unknown key {cause.full_key}; {section} has: {keys}"
    if isinstance(e, OverrideParseException):
        return f"cannot parse {e.override}: {str(e).splitlines()[0]}"
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


class RunDirCheck(Callback):
    """Before Hydra makes the run directory: refuse one that cannot be made (popdyn's one line, not a
    traceback from inside Hydra), and note which of its parents exist, so that a refused new run leaves
    none of the directories Hydra made for it."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            run_dir = Path(os.path.abspath(str(config.hydra.run.dir)))  # as Hydra's runtime.output_dir
        except OmegaConfBaseException:  # no run_dir= given: Hydra's own error follows (one line, main)
            return
        if run_dir.exists() and not run_dir.is_dir():
            fail(f"{run_dir} is a file, not a run directory")
        base = run_dir
        while not base.exists():
            base = base.parent
        if base != run_dir:
            try:
                store.check_writable(run_dir, 0)
            except store.RunDirError as e:
                fail(str(e))
        _made[run_dir] = base


class MultirunCheck(Callback):
    """Before a multirun (``-m``) sends any job: every job's config checked as ``scripts/sweep.py`` checks
    one (:func:`popdyn.config.build_sweep`), so that a bad value in the last job is refused before the
    first one trains, and nothing (no ``multirun.yaml``) is written."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from popdyn.api import compose

        given = [o for o in config.hydra.overrides.task if not o.lstrip("+~").startswith("hydra")]
        try:
            parsed = OverridesParser.create().parse_overrides(given)
            jobs = BasicSweeper.split_arguments(parsed, None)[0]
        except HydraException:  # a sweep Hydra's sweeper cannot expand: its own error follows
            return
        for k, job in enumerate(jobs):
            try:
                config_ = compose(None, job)
                config_.pop("hydra_run_dir")
                build_sweep(config_)
            except ConfigError as e:
                fail(f"job #{k} of {len(jobs)} ({' '.join(job)}): {e}; no job was sent")


def interrupted(message: str) -> None:
    print(f"popdyn: interrupted: {message}", file=sys.stderr)
    sys.exit(130)


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _discard_if_new(run_dir: Path) -> None:
    """Remove ``run_dir`` if popdyn never wrote results there and no other process holds it, and the empty
    parents Hydra made for it.  Not in a multi-process run: the others may still be using it."""
    import jax

    if jax.distributed.is_initialized() or (run_dir / store.CONFIG).exists() or not run_dir.is_dir():
        return
    if not all(p.name in (".hydra", store.LOCK) or p.suffix == ".log" for p in run_dir.iterdir()):
        return
    try:
        with store.locked(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
    except store.RunDirError:  # in use: leave it and its lock file alone
        return
    run_dir = Path(os.path.abspath(run_dir))
    existed = _made.get(run_dir, run_dir.parent)
    for parent in run_dir.parents:
        if parent == existed or not parent.is_relative_to(existed) or any(parent.iterdir()):
            break
        parent.rmdir()


def fail(message: str, run_dir: Path | None = None) -> None:
    if run_dir is not None:
        _discard_if_new(run_dir)
    print(f"popdyn: error: {message}", file=sys.stderr)
    sys.exit(2)


def sweep(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """``scripts/sweep.py``: validate, then train every group into ``run_dir`` (default: Hydra's run dir).

    Sets up the host devices itself too: a job of a Hydra launcher (submitit) runs this function in a
    process of its own, without :func:`main`, and must split its members like a single run does."""
    setup_host_devices()
    run_dir = Path(run_dir) if run_dir is not None else _output_dir()
    try:
        hosts.initialize(cfg.get("distributed"))
        spec = build_sweep(OmegaConf.to_container(cfg, resolve=True))
        progress = cfg.get("progress", True)  # a bool: build_sweep checked it
        run_sweep(spec, run_dir, progress, on_start=lambda run_dir: _record_command(run_dir, cfg))
    except (ConfigError, hosts.DistributedError, store.RunDirError) as e:
        fail(str(e), run_dir)  # every process gets these alike
    except Interrupted as e:
        interrupted(str(e))
    except KeyboardInterrupt:
        interrupted("what was finished is kept; the same command resumes")
    except Exception:
        hosts.abandon()  # one process of several failed alone: end it so the others stop too
        raise
    log.info("results in %s — popdyn.store.load(%r)", run_dir, str(run_dir))
    return run_dir


def _record_command(run_dir: Path, cfg: DictConfig) -> None:
    """Once the run is checked and has work to do: Hydra's record of the command in ``.hydra/`` (Hydra
    itself writes none, ``hydra.output_subdir: null``, so a refused command changes nothing) and the log
    file ``<job>.log`` (the console only, ``hydra/job_logging: popdyn``, until now)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not hosts.writer():  # called as a function, or not process 0
        return
    hydra_cfg = HydraConfig.instance().cfg  # {"hydra": ...}
    record = {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}
    for name, node in record.items():
        text = OmegaConf.to_yaml(node)
        store.write_file(run_dir / ".hydra" / name, lambda tmp, text=text: tmp.write_text(text))
    _open_log(run_dir)


def _open_log(run_dir: Path) -> None:
    """Log to ``<run_dir>/<job>.log`` from now on (Hydra's job name: sweep, analyze, figures), when under
    Hydra; a directory that cannot be written (a read-only finished run) logs to the console only."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not hosts.writer():
        return
    try:
        handler = logging.FileHandler(run_dir / f"{HydraConfig.get().job.name}.log")
    except OSError:
        return
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def _checked(cfg: DictConfig, allowed: tuple[str, ...]) -> bool:
    """An entry point's own config (``conf/analyze.yaml``, ``conf/figures.yaml``): ``ConfigError`` for a key
    it does not have (a misspelt ``+dpi=…`` would otherwise be ignored) or a ``progress`` that is not a
    bool; the ``progress`` setting."""
    keys = ("run_dir", "progress", *allowed)
    unknown = sorted(set(cfg) - {*keys, "hydra"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; the config has: {', '.join(keys)}")
    progress = cfg.get("progress", True)
    if not isinstance(progress, bool):
        raise ConfigError(f"progress must be true or false, got {progress!r}")
    return progress


def analyze(cfg: DictConfig) -> Path:
    """``scripts/analyze.py``: analyse the dynamics of the trained run in ``cfg.run_dir``, then compare
    its networks (similarity, MDS).

    The run's own ``config.yaml`` gives task, grid and training, and the ``dynamics.*`` and
    ``similarity.*`` settings it was made (or last analysed) with; those given on the command line
    replace them."""
    setup_host_devices()  # as sweep: a launcher's job does not go through main
    run_dir = Path(str(cfg.run_dir))
    try:
        progress = _checked(cfg, ("similarity", *analyses.names()))
        config = store.read_config(run_dir)
        for section, recorded in (
            ("similarity", store.SIMILARITY_CONFIG),
            *((a.name, a.settings_file) for a in analyses.in_order() if a.settings_file is not None),
        ):
            given = OmegaConf.to_container(cfg[section], resolve=True) if section in cfg else {}
            settings = dict(config.get(section) or given)
            if (run_dir / recorded).exists():
                settings |= store.read_yaml(run_dir / recorded)
            for key in _overridden(section, given):
                settings[key] = given[key]
            config[section] = settings
        spec = build_sweep(config)
        with store.locked(run_dir):
            _open_log(run_dir)
            analysis.analyze_run(spec, run_dir, progress)
            analysis.compare_run(spec, run_dir, progress)
            store.check_run(run_dir)  # success only if every result file there is as popdyn wrote it
    except (ConfigError, store.RunDirError) as e:
        fail(str(e), run_dir)
    log.info(
        "analysis in %s — popdyn.store.load(%r); figures: scripts/figures.py run_dir=%s",
        run_dir,
        str(run_dir),
        run_dir,
    )
    return run_dir


def _overridden(section: str, given: dict) -> list[str]:
    """The keys of ``section`` set on the command line (all of them if the section itself was chosen)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:  # not under Hydra's runner
        return []
    keys = []
    for o in overrides:
        path = o.lstrip("+~").split("=", 1)[0]
        if path == section:
            return list(given)
        if path.startswith(section + "."):
            keys.append(path.split(".")[1])
    return keys


def figures(cfg: DictConfig) -> list[Path]:
    """``scripts/figures.py``: draw every figure of the run in ``cfg.run_dir`` into its ``figures/``."""
    from popdyn.figures import draw_all  # by its own name: this function's name is the module's

    run_dir = Path(str(cfg.run_dir))
    try:
        progress = _checked(cfg, ())
        store.read_config(run_dir)  # a missing directory is an error, not a new one with a lock in it
        with store.locked(run_dir):
            _open_log(run_dir)
            paths = draw_all(run_dir, progress=progress)
    except (ConfigError, store.RunDirError) as e:
        fail(str(e), run_dir)
    except PermissionError as e:  # a read-only run directory: its figures cannot be drawn there
        fail(f"cannot write the figures of {run_dir}: {e.strerror} ({e.filename})")
    for p in paths:
        log.info("figure %s", p)
    if not paths:
        log.info("no figures: %s has no analysis yet (scripts/analyze.py run_dir=%s)", run_dir, run_dir)
    return paths
