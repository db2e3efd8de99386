"""The names of a run directory's files and where they live (the layout: :mod:`popdyn.store`), and
what makes a damaged one right again; plain paths, nothing read or written."""

from __future__ import annotations

from pathlib import Path

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
MANIFEST = "manifest.json"  # per directory: what wrote each of its files (_record)


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
