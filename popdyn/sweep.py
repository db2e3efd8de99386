"""A whole population run (SPEC §3): for each group, random search → choice on validation loss → seeds.

``run_sweep(sweep, run_dir)`` is what ``scripts/sweep.py`` calls.  Per group (arch, activation, units):

1. *search* — ``grid.trials`` random trials per configuration (per l2), all members of one compiled program;
   each trial is scored by the MSE of its final parameters on a held-out validation batch (drawn from a key
   no training batch uses); the best non-diverged trial of each configuration is chosen.
   With ``grid.trials = 0`` every configuration uses ``grid.hparams``.
2. *seeds* — ``grid.seeds`` networks per configuration with the chosen hyper-parameters, the same program.

Finished groups are skipped on a re-run; an unfinished one resumes from its last checkpoint; one whose files
fail their manifest (``store.damaged``) is trained again from the start.  Whatever was computed from a
group's earlier parameters is removed before it is trained (``store.invalidate``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from popdyn import analysis, figures, hosts, store
from popdyn.config import ConfigError, Sweep
from popdyn.hosts import to_host
from popdyn.model import Model
from popdyn.population import (
    Group,
    HParams,
    member_ids,
    member_key,
    search_members,
    seed_members,
    shard_of_groups,
)
from popdyn.train import GroupTrainer

log = logging.getLogger("popdyn")
LOSS_CURVES = "loss_curves.png"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, saying where it stopped (the group's state is saved there when it can be)."""


def _final_loss(losses: np.ndarray, window: int) -> np.ndarray:
    """Mean training MSE over the last ``window`` steps (NaN for a member that diverged)."""
    return losses[:, -window:].mean(axis=1)


def _train_phase(
    trainer: GroupTrainer,
    group: Group,
    phase: str,
    rows: list[dict],
    validation: tuple,
    run_dir: Path,
    progress: bool,
    checkpoint_seconds: float = 30.0,
    record: tuple[int, np.ndarray] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Train ``rows`` (one per member) to the end; return (params, losses [n, steps], diverged [n], val)
    with ``val["val_loss"]`` [n] the task loss of the final parameters on the ``validation`` (inputs,
    targets), and ``val["val_accuracy"]`` for classification tasks.  The training
    state is saved between chunks at most every ``checkpoint_seconds``.  ``record = (every, member ids)``:
    the parameters at step 0 and every ``every`` steps go to ``snapshot-<step>.npz`` ([R])."""
    s, n = trainer.settings, len(rows)
    hp, keys = trainer.pad(HParams.stack(rows), jnp.stack([r["key"] for r in rows]))
    state = trainer.init(hp, keys)
    losses = np.full((trainer.size, s.steps), np.nan, np.float32)
    ckpt = store.group_dir(run_dir, group.name) / "checkpoint.npz"
    restored = store.load_checkpoint(ckpt, phase, state)
    if restored is not None:
        state, losses = trainer.shard(restored[0]), restored[1]
        log.info("%s %s: resuming from step %d", group.name, phase, int(restored[0].step.max()))

    bar = tqdm(total=s.steps, desc=f"{group.name} {phase}", unit="step", disable=not progress, leave=True)
    bar.update(int(to_host(state.step).max()))
    last_save = [time.monotonic()]
    start = int(to_host(state.step).max())
    last = {"state": None, "losses": losses, "done": start, "saved": start}  # for Ctrl-C
    gdir = store.group_dir(run_dir, group.name)

    def snapshot(state, done):
        if not record or done % record[0]:
            return
        # process 0's file system decides: gathering the parameters takes every process
        if hosts.agree(not (gdir / store.SNAPSHOT.format(step=done)).exists()):
            params = jax.tree.map(lambda a: a[:n], to_host(state.params))
            store.write_snapshot(run_dir, group.name, done, params, record[1])

    snapshot(state, int(to_host(state.step).max()))

    def on_chunk(state, losses, done):
        last.update(state=state, losses=losses, done=done)
        snapshot(state, done)
        recent = losses[:n, max(0, done - s.log_every) : done]
        diverged = int(to_host(state.diverged)[:n].sum())
        with np.errstate(all="ignore"):
            median = float(np.nanmedian(recent)) if np.isfinite(recent).any() else float("nan")
        bar.set_postfix(median_loss=f"{median:.4g}", diverged=diverged)
        bar.update(done - bar.n)
        due = done < s.steps and time.monotonic() - last_save[0] >= checkpoint_seconds
        if hosts.agree(due):  # process 0's clock decides: gathering the state takes every process
            store.save_checkpoint(ckpt, phase, to_host(state), losses)
            last_save[0] = time.monotonic()
            last["saved"] = done

    try:
        state, losses = trainer.run(hp, state, losses, on_chunk)
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(_interrupted(group.name, phase, s.steps, ckpt, **last)) from None
    bar.close()
    params = jax.tree.map(lambda a: a[:n], to_host(state.params))
    val = trainer.val_loss(state.params, *validation)[:n]
    if trainer.task.loss != "mse":
        val = {"val_loss": val, "val_accuracy": trainer.val_accuracy(state.params, *validation)[:n]}
    else:
        val = {"val_loss": val}
    return params, losses[:n], to_host(state.diverged)[:n], val


def _interrupted(group: str, phase: str, steps: int, ckpt: Path, state, losses, done: int, saved: int) -> str:
    """Save the state of the last finished chunk unless it is saved already (in a run of one process:
    saving takes every process, and Ctrl-C reaches one); say where training stopped."""
    if state is not None and saved < done and jax.process_count() == 1:
        store.save_checkpoint(ckpt, phase, to_host(state), losses)
        saved = done
    return (
        f"training stopped in {group} ({phase}) at step {done} of {steps}; "
        f"the same command resumes from step {saved}"
    )


def _choose(group: Group, sweep: Sweep, rows: list[dict], val: np.ndarray, diverged: np.ndarray) -> dict:
    """Per l2, the trial with the lowest validation loss among those that did not diverge."""
    chosen = {}
    for l2 in group.l2:
        idx = [i for i, r in enumerate(rows) if r["l2"] == l2]
        ok = [i for i in idx if not diverged[i] and np.isfinite(val[i])]
        if not ok:
            best = min(idx, key=lambda i: rows[i]["lr"])
            log.warning("%s l2=%g: every trial diverged; using the smallest learning rate", group.name, l2)
        else:
            best = min(ok, key=lambda i: val[i])
        chosen[l2] = rows[best]
    return chosen


def train_group(
    sweep: Sweep, group: Group, run_dir: Path, progress: bool = True, devices=None
) -> GroupTrainer:
    """Search, choose and train the seeds of one group, then write it to ``run_dir``."""
    task, grid, s = sweep.task, sweep.grid, sweep.train
    model = Model.for_task(group.arch, group.activation, group.units, task, sweep.unroll, group.options)
    n_seed = len(group.l2) * grid.seeds
    n_search = len(group.l2) * grid.trials
    trainer = GroupTrainer(model, task, s, max(n_seed, n_search), devices, sweep.member_batch)
    validation = task.validation(member_key(sweep.seed, "validation"), s.val_batch)
    gdir = store.group_dir(run_dir, group.name)

    if grid.trials == 0:
        chosen = {l2: sweep.hparams for l2 in group.l2}
    elif (gdir / store.TRIALS).exists():
        trials = store.read_csv(gdir / store.TRIALS)
        chosen = {r["l2"]: r for r in trials[trials.chosen].to_dict("records")}
    else:
        rows = search_members(group, grid, sweep.seed)
        _, losses, diverged, val = _train_phase(
            trainer, group, "search", rows, validation, run_dir, progress, sweep.checkpoint_seconds
        )
        chosen_rows = _choose(group, sweep, rows, val["val_loss"], diverged)
        trials = pd.DataFrame([{k: v for k, v in r.items() if k != "key"} for r in rows])
        trials.insert(0, "group", group.name)
        trials["final_loss"] = _final_loss(losses, s.final_window)
        for k, v in val.items():
            trials[k] = v
        trials["diverged"] = diverged
        trials["status"] = store.member_status(trials["final_loss"], diverged)
        trials["chosen"] = [r is chosen_rows[r["l2"]] for r in rows]
        store.write_csv(gdir / store.TRIALS, trials)
        chosen = chosen_rows

    rows = seed_members(group, grid, sweep.seed, chosen)
    ids = member_ids(grid)
    member = np.array([ids[(group.arch, group.activation, group.units, r["l2"], r["seed"])] for r in rows])
    record = (sweep.record_every, member) if sweep.record_every else None
    params, losses, diverged, val = _train_phase(
        trainer, group, "seeds", rows, validation, run_dir, progress, sweep.checkpoint_seconds, record
    )
    members = pd.DataFrame(
        {
            "member": member,
            "group": group.name,
            "arch": group.arch,
            "activation": group.activation,
            "units": group.units,
            **{k: [r[k] for r in rows] for k in ("l2", "seed", "lr", "decay", "momentum", "clip")},
            "final_loss": _final_loss(losses, s.final_window),
            **val,
            "diverged": diverged,
        }
    )
    members["status"] = store.member_status(members["final_loss"], diverged)
    loss, step = store.downsample(losses, s.log_every)
    # provenance: the time loop that trained the group (the fused kernel, or XLA's), in its manifest
    loop = model.time_loop(params["readout"]["kernel"].dtype, noisy=model.spec.stochastic)
    store.write_group(run_dir, group.name, params, members, loss, step, about={"time_loop": loop})
    n_div = int(diverged.sum())
    n_exploded = int((members.status == store.EXPLODED).sum())
    log.info(
        "%s: %d networks, median final loss %.4g, %d diverged (non-finite loss), %d exploded (final loss "
        "above %g), %d trace(s)",
        group.name, len(rows), float(np.nanmedian(members.final_loss)) if n_div < len(rows) else float("nan"),
        n_div, n_exploded, store.EXPLODED_LOSS, trainer.traces,
    )  # fmt: skip
    return trainer


def run_sweep(
    sweep: Sweep, run_dir: str | Path, progress: bool = True, on_start: Callable[[Path], None] | None = None
) -> Path:
    """Train (or finish training) every group of ``sweep`` into ``run_dir``, then (``sweep.analyze``)
    analyse, compare and draw it; return ``run_dir``.  The directory is locked meanwhile
    (``store.locked``): a second process pointed at it is refused.  ``on_start(run_dir)`` runs once the
    directory is locked, its config and analysis settings are checked, and there is something to do; a
    finished run is left untouched."""
    run_dir = Path(run_dir)
    if jax.process_count() > 1 and sweep.devices:
        raise ConfigError(
            f"train.devices={sweep.devices} in a run of {jax.process_count()} processes: leave it null, "
            "the members are split over every device of every process"
        )
    if sweep.devices and sweep.devices > len(jax.devices()):
        raise ConfigError(
            f"train.devices = {sweep.devices} but there are {len(jax.devices())} {jax.default_backend()} "
            f"device(s); allowed: null (all of them) or 1 … {len(jax.devices())}"
        )
    hosts.same_everywhere(str(run_dir.absolute()), "run directory")
    if not (run_dir / store.CONFIG).exists():  # a new run: can it be written, will it fit?
        store.check_writable(run_dir, results_bytes(sweep))
    with store.locked(run_dir):
        store.prepare_run(run_dir, sweep.config, describe(sweep))
        if sweep.analyze:
            analysis.check_settings(sweep, run_dir)
        if finished(sweep, run_dir):
            log.info("%s is finished: nothing to do, nothing changed", run_dir)
            return run_dir
        if on_start is not None:
            on_start(run_dir)
        return _run_sweep(sweep, run_dir, progress and hosts.writer())


def describe(sweep: Sweep) -> dict:
    """What readers of the run need of its config, without ``popdyn.config`` or the task's code
    (``store.DESCRIPTION``, ``store.description``): every group of the grid in grid order with its shard
    and its model (``store.model_description``), the task's condition coordinates
    (``TaskSpec.condition_coords``: sine's ω) and its words (a text task's, one per input dimension)."""
    task, groups = sweep.task, sweep.grid.groups
    rows = [
        {"name": g.name, "shard": k, "model": store.model_description(
            Model.for_task(g.arch, g.activation, g.units, task, sweep.unroll, g.options))}
        for g, k in zip(groups, shard_of_groups(groups, sweep.num_shards))
    ]  # fmt: skip
    out = {"task": task.name, "num_shards": sweep.num_shards, "groups": rows}
    if task.spec.condition_coords is not None:
        coords = {k: np.asarray(v) for k, v in task.spec.condition_coords(task).items()}
        out["conditions"] = {k: {"dtype": str(v.dtype), "values": v.tolist()} for k, v in coords.items()}
    if not task.vocab and task.words:
        out["words"] = list(task.words)
    return out


def finished(sweep: Sweep, run_dir: Path) -> bool:
    """Whether everything a re-run of ``sweep`` would write into ``run_dir`` is there, as popdyn wrote it
    (a damaged file is made again, so a run with one is not finished)."""
    if not store.intact(run_dir / store.CONFIG) or not _tables_written(sweep, run_dir):
        return False
    for g in sweep.groups:
        if not store.group_done(run_dir, g.name) or store.damaged(run_dir, g.name) is not None:
            return False
    left = [*run_dir.glob(".*.tmp-*"), *run_dir.glob(f"{store.GROUPS}/*/.*.tmp-*")]
    if left or list(run_dir.glob(f"{store.GROUPS}/*/checkpoint.npz")):  # what a kill left: cleared
        return False
    if not sweep.analyze:
        return True
    if analysis.run_pending(sweep, run_dir) or any(
        analysis.pending(sweep, run_dir, g.name) for g in sweep.groups
    ):
        return False
    return sweep.num_shards > 1 or (store.intact(run_dir / store.SIMILARITY) and not figures.missing(run_dir))


def _tables_written(sweep: Sweep, run_dir: Path) -> bool:
    """The run-level tables, as written, and the loss curves (written after them, atomically)."""
    tables = [store.MEMBERS] + ([store.TRIALS] if sweep.grid.trials else [])
    return all(store.intact(run_dir / t) for t in tables) and (run_dir / LOSS_CURVES).exists()


def results_bytes(sweep: Sweep) -> int:
    """About how many bytes a run writes at most: per member its parameters, its checkpoint (parameters
    and momentum), its logged losses; twice for the search trials; and the figures."""
    total = 0
    for g in sweep.groups:
        model = Model.for_task(g.arch, g.activation, g.units, sweep.task)
        shapes = jax.eval_shape(model.init, jax.random.key(0))
        n_params = sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
        members = len(g.l2) * max(sweep.grid.seeds, sweep.grid.trials)
        logged = sweep.train.steps // sweep.train.log_every
        total += 2 * members * 4 * (3 * n_params + logged)
    if sweep.analyze:  # the figures: 1.1 MB for +grid=tiny's 4 networks, 2.8 MB for 32 (PNG and PDF each)
        total += 4 * 2**20 + 64 * 2**10 * sweep.grid.n_members
    return total


def _run_sweep(sweep: Sweep, run_dir: Path, progress: bool) -> Path:
    devices = jax.devices()[: sweep.devices] if sweep.devices else None
    groups = sweep.groups
    part = f" (shard {sweep.shard} of {sweep.num_shards})" if sweep.num_shards > 1 else ""
    log.info(
        "%s%s: %d networks in %d groups on %s, task %s, into %s",
        sweep.name, part, sum(len(g.l2) for g in groups) * sweep.grid.seeds, len(groups),
        f"{len(devices or jax.devices())} device(s)", sweep.task.name, run_dir,
    )  # fmt: skip
    store.clean(run_dir)
    for group in groups:
        problem = store.damaged(run_dir, group.name)
        if hosts.agree(problem is not None):  # process 0's file system decides, as for every write
            log.warning("%s: %s; training the group again", group.name, problem or "damaged on process 0")
            store.reset_group(run_dir, group.name)
            hosts.barrier(f"reset {group.name}")
        if store.group_done(run_dir, group.name):
            log.info("%s: already done, skipped", group.name)
            store.remove(store.group_dir(run_dir, group.name) / "checkpoint.npz")  # killed right after
            continue
        store.invalidate(run_dir, group.name)  # what was made from parameters about to be rewritten
        train_group(sweep, group, run_dir, progress, devices)
    hosts.barrier("trained")  # every group written by process 0 before anyone reads them
    if hosts.writer() and not _tables_written(sweep, run_dir):
        store.write_tables(run_dir, [g.name for g in groups])
        figures.loss_curves(store.load(run_dir), run_dir / LOSS_CURVES)
    if sweep.analyze:
        analysis.analyze_run(sweep, run_dir, progress)
        hosts.barrier("analysed")
        if sweep.num_shards > 1:  # comparisons and figures need every network: on the gathered sweep
            log.info(
                "shard %d of %d done; once every shard is: python scripts/analyze.py run_dir=%s",
                sweep.shard, sweep.num_shards, run_dir.parent,
            )  # fmt: skip
            return run_dir
        analysis.compare_run(sweep, run_dir, progress)
        if hosts.writer():
            paths = figures.draw_all(run_dir, progress, missing_only=True)
            log.info("%d figure files written in %s", len(paths), run_dir / figures.FIGURES)
    return run_dir
