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

Storage sits near the ground: this package imports no config, task or analysis code (readers learn what
they need of the config from ``groups.yaml``), and JAX only where it writes or rebuilds a model, so reading
a run starts no JAX backend.  Its modules, each importing only those above it:

    names    the files' names and where they live; what makes a damaged one right again
    files    safe files: atomic writes, manifests with provenance (verify, intact), the lock, npz/CSV/YAML
    layout   the run directory: prepare_run, group_dir, done/damaged/reset, checkpoints, snapshots,
             write_group/write_tables, shards, groups.yaml (description), check_run, adopt
    read     members, load, load_similarity, load_params, and the table of files older than labelled ones
    portable export(run_dir, path): one netCDF-4 file or zarr store of load and load_similarity

Every public name of them is here, as ``popdyn.store.<name>``.
"""

from popdyn.store.files import (
    COORDS_KEY,
    DIMS_KEY,
    LOCK,
    PREFIX_KEY,
    PROVENANCE_PACKAGES,
    UNREADABLE,
    RunDirError,
    check_writable,
    flatten,
    intact,
    is_labelled,
    labels,
    locked,
    provenance,
    read_csv,
    read_labelled,
    read_yaml,
    remove,
    unflatten,
    verify,
    write_csv,
    write_file,
    write_npz,
    write_text,
)
from popdyn.store.layout import (
    DIVERGED,
    EXPLODED,
    EXPLODED_LOSS,
    MEMBER_COLUMNS,
    MODEL_FIELDS,
    OPTIONAL_COLUMNS,
    TRAINED,
    adopt,
    check_run,
    clean,
    damaged,
    description,
    downsample,
    group_dir,
    group_done,
    has_snapshots,
    invalidate,
    load_checkpoint,
    load_snapshots,
    member_status,
    model_description,
    prepare_run,
    read_config,
    reset_group,
    save_checkpoint,
    shards,
    write_group,
    write_snapshot,
    write_tables,
)
from popdyn.store.names import (
    ANALYSED,
    CONFIG,
    DESCRIPTION,
    DYNAMICS,
    DYNAMICS_CONFIG,
    GROUPS,
    LSA,
    MANIFEST,
    MEMBERS,
    MEMORY,
    MEMORY_CONFIG,
    RECORD_CONFIG,
    SIMILARITY,
    SIMILARITY_CONFIG,
    SNAPSHOT,
    TRAINING,
    TRAINING_FILES,
    TRIALS,
)
from popdyn.store.portable import export
from popdyn.store.read import (
    LEGACY_FILES,
    GroupParams,
    load,
    load_params,
    load_similarity,
    members,
    read_results,
    similarity_metrics,
)

__all__ = [
    "ANALYSED",
    "CONFIG",
    "DESCRIPTION",
    "DYNAMICS",
    "DYNAMICS_CONFIG",
    "GROUPS",
    "LSA",
    "MANIFEST",
    "MEMBERS",
    "MEMORY",
    "MEMORY_CONFIG",
    "RECORD_CONFIG",
    "SIMILARITY",
    "SIMILARITY_CONFIG",
    "SNAPSHOT",
    "TRAINING",
    "TRAINING_FILES",
    "TRIALS",
    "COORDS_KEY",
    "DIMS_KEY",
    "LOCK",
    "PREFIX_KEY",
    "PROVENANCE_PACKAGES",
    "UNREADABLE",
    "RunDirError",
    "check_writable",
    "flatten",
    "intact",
    "is_labelled",
    "labels",
    "locked",
    "provenance",
    "read_csv",
    "read_labelled",
    "read_yaml",
    "remove",
    "unflatten",
    "verify",
    "write_csv",
    "write_file",
    "write_npz",
    "write_text",
    "DIVERGED",
    "EXPLODED",
    "EXPLODED_LOSS",
    "MEMBER_COLUMNS",
    "MODEL_FIELDS",
    "OPTIONAL_COLUMNS",
    "TRAINED",
    "adopt",
    "check_run",
    "clean",
    "damaged",
    "description",
    "downsample",
    "group_dir",
    "group_done",
    "has_snapshots",
    "invalidate",
    "load_checkpoint",
    "load_snapshots",
    "member_status",
    "model_description",
    "prepare_run",
    "read_config",
    "reset_group",
    "save_checkpoint",
    "shards",
    "write_group",
    "write_snapshot",
    "write_tables",
    "LEGACY_FILES",
    "GroupParams",
    "load",
    "load_params",
    "load_similarity",
    "members",
    "read_results",
    "similarity_metrics",
    "export",
]
