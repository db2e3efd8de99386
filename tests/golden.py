"""The numbers a tiny run of every task gives, recorded before popdyn's modules were reorganised (issue 19)
and compared after: the same config and seed must give the same parameters, losses, fixed points and
distances whatever file the code lives in.  (flipflop, symbols and sinegen re-recorded from the code of
e17351d, before the moves, when each task came down to one group.)

``python -m tests.golden`` records ``tests/data/golden.npz`` (run it only to accept a deliberate change of
numbers, and say why in the commit); ``tests/test_golden.py`` reruns the runs and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden.npz"
# corpus reads a dataset from files (tests/test_corpora.py makes them); the generated tasks are all here
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml") if p.stem != "corpus")

# seconds per task on 2 cores: ONE group per task (a tiny run's cost is XLA compilation, paid per group),
# one seed, no search, a short analysis
COMMON = [
    "grid.activation=[tanh]",
    "grid.units=[6]",
    "grid.seeds=1",
    "grid.trials=0",
    "train.steps=20",
    "train.chunk=10",
    "train.log_every=5",
    "train.final_window=5",
    "train.batch=8",
    "train.val_batch=16",
    "dynamics.n_initial=16",
    "dynamics.steps=100",
    "dynamics.transition_runs=4",
    "dynamics.transition_steps=20",
    "progress=false",
]
# per task: its cell and the task's own small sizes (the cell changes per task, so that every cell is in
# some run — vanilla, ugrnn, gru, lstm, slstm, ornn, leaky — without every task paying for all of them)
PER_TASK = {
    "flipflop": ["grid.arch=[vanilla]", "task.T=20"],
    "sine": ["grid.arch=[gru]", "task.T=30", "task.n_probe=4"],
    "cdi": ["grid.arch=[ugrnn]", "task.T=20"],
    "categorical": ["grid.arch=[gru]", "task.L=12"],
    "ordered": ["grid.arch=[vanilla]", "task.L=12"],
    "multilabel": ["grid.arch=[lstm]", "task.L=12"],
    "repetition": [
        "grid.arch=[lstm]",
        "task.T=30",
        "task.n_probe=4",
        "memory.max_delay=3",
        "memory.probes=2",
    ],
    "symbols": [
        "grid.arch=[slstm]",
        "task.T=50",
        "task.n_probe=16",
        "train.record_every=10",
        "record.steps=20",
        "record.burn_in=10",
        "record.probes=2",
        "record.scales=[0.5,1.0]",
    ],
    "discrimination": ["grid.arch=[leaky]", "task.n_probe=4"],  # recorded after the move (new task, cell)
    "sinegen": ["grid.arch=[ornn]", "task.T=40", "task.n_sequences=8", "task.n_probe=4"],
}


def overrides(task: str) -> list[str]:
    return [f"task={task}", *COMMON, *PER_TASK.get(task, [])]


def run(task: str, run_dir: Path) -> dict[str, np.ndarray]:
    """Train and analyse the task's tiny run into ``run_dir``; every number it stored, by file and key."""
    from unittest import mock

    from popdyn import figures
    from popdyn.config import build_sweep
    from popdyn.sweep import run_sweep

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides(task))
    # pictures hold no numbers: not drawn here (tests/test_figures.py draws them)
    with (
        mock.patch.object(figures, "draw_all", lambda *a, **k: []),
        mock.patch.object(figures, "loss_curves", lambda *a, **k: []),
    ):
        run_sweep(build_sweep(cfg), run_dir, progress=False)
    return collect(run_dir)


def collect(run_dir: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for path in sorted(run_dir.rglob("*.npz")):
        rel = path.relative_to(run_dir).as_posix()
        if "checkpoint" in rel:
            continue
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                out[f"{rel}:{key}"] = z[key]
    for path in sorted(run_dir.rglob("*.csv")):
        rel = path.relative_to(run_dir).as_posix()
        frame = pd.read_csv(path)
        for col in frame.columns:
            values = frame[col].to_numpy()
            if values.dtype.kind in "biuf":
                out[f"{rel}:{col}"] = values
    return out


def main(tasks: list[str]) -> None:
    import tempfile

    recorded = dict(np.load(GOLDEN)) if GOLDEN.exists() else {}
    for task in tasks:
        with tempfile.TemporaryDirectory() as tmp:
            arrays = run(task, Path(tmp) / task)
        recorded = {k: v for k, v in recorded.items() if not k.startswith(task + "/")}
        recorded.update({f"{task}/{k}": v for k, v in arrays.items()})
        print(f"{task}: {len(arrays)} arrays", flush=True)
    np.savez_compressed(GOLDEN, **recorded)


if __name__ == "__main__":
    main(sys.argv[1:] or TASKS)
