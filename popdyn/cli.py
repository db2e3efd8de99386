"""What the Hydra entry points in ``scripts/`` do, importable and testable without Hydra's runner."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from popdyn import analysis, hosts, store
from popdyn.config import ConfigError, build_sweep
from popdyn.sweep import run_sweep

log = logging.getLogger("popdyn")


def _output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _discard_if_new(run_dir: Path) -> None:
    """Remove what Hydra put in ``run_dir`` (.hydra/, the log) if popdyn never wrote results there; the
    directory itself too unless another process holds it.  Not in a multi-process run: the others may
    still be using it."""
    import jax

    if jax.distributed.is_initialized() or (run_dir / store.CONFIG).exists() or not run_dir.is_dir():
        return
    if not all(p.name in (".hydra", store.LOCK) or p.suffix == ".log" for p in run_dir.iterdir()):
        return
    try:
        with store.locked(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
    except store.RunDirError:  # in use: leave its lock file alone
        for p in run_dir.iterdir():
            if p.name != store.LOCK:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def fail(message: str, run_dir: Path | None = None) -> None:
    if run_dir is not None:
        _discard_if_new(run_dir)
    print(f"popdyn: error: {message}", file=sys.stderr)
    sys.exit(2)


def sweep(cfg: DictConfig, run_dir: Path | None = None) -> Path:
    """``scripts/sweep.py``: validate, then train every group into ``run_dir`` (default: Hydra's run dir)."""
    run_dir = Path(run_dir) if run_dir is not None else _output_dir()
    try:
        hosts.initialize(cfg.get("distributed"))
        spec = build_sweep(OmegaConf.to_container(cfg, resolve=True))
        run_sweep(spec, run_dir, progress=bool(cfg.get("progress", True)))
    except (ConfigError, hosts.DistributedError, store.RunDirError) as e:
        fail(str(e), run_dir)  # every process gets these alike
    except Exception:
        hosts.abandon()  # one process of several failed alone: end it so the others stop too
        raise
    log.info("results in %s — popdyn.store.load(%r)", run_dir, str(run_dir))
    return run_dir


def analyze(cfg: DictConfig) -> Path:
    """``scripts/analyze.py``: analyse the dynamics of the trained run in ``cfg.run_dir``, then compare
    its networks (similarity, MDS).

    The run's own ``config.yaml`` gives task, grid and training, and the ``dynamics.*`` and
    ``similarity.*`` settings it was made (or last analysed) with; those given on the command line
    replace them."""
    run_dir = Path(str(cfg.run_dir))
    try:
        config = store.read_config(run_dir)
        for section, recorded in (
            ("dynamics", store.DYNAMICS_CONFIG),
            ("similarity", store.SIMILARITY_CONFIG),
            ("memory", store.MEMORY_CONFIG),
            ("record", store.RECORD_CONFIG),
        ):
            given = OmegaConf.to_container(cfg[section], resolve=True) if section in cfg else {}
            settings = dict(config.get(section) or given)
            if (run_dir / recorded).exists():
                settings |= store.read_yaml(run_dir / recorded)
            for key in _overridden(section, given):
                settings[key] = given[key]
            config[section] = settings
        spec = build_sweep(config)
        progress = bool(cfg.get("progress", True))
        with store.locked(run_dir):
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
        store.read_config(run_dir)  # a missing directory is an error, not a new one with a lock in it
        with store.locked(run_dir):
            paths = draw_all(run_dir, progress=bool(cfg.get("progress", True)))
    except (ConfigError, store.RunDirError) as e:
        fail(str(e), run_dir)
    for p in paths:
        log.info("figure %s", p)
    if not paths:
        log.info("no figures: %s has no analysis yet (scripts/analyze.py run_dir=%s)", run_dir, run_dir)
    return paths
