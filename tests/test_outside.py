"""Outside code needs no edit to popdyn (issue 19): a cell, a task, two similarity metrics and an analysis
defined in this file, registered, run through ONE tiny sweep (training, fixed points, comparison, the
registered analysis) and read back by ``store.load`` / ``store.load_similarity``.

The toys are importable by the unit tests of each registry (tests/test_cell_registry.py, test_tasks.py,
test_analyses.py, test_similarity.py), which check them without a sweep; :func:`registered` undoes every
registration it made, so that no other test of the same pytest-xdist worker sees them.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from popdyn import analyses, cells, figures, similarity, store, tasks
from popdyn.config import build_sweep
from popdyn.sweep import run_sweep
from tests.test_sweep import config

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- a cell
def indrnn_params(declare, units: int, n_in: int) -> dict:
    return {
        "recurrent": declare("recurrent", nn.initializers.uniform(1.0), (units,)),
        "input": declare("input", nn.initializers.lecun_normal(), (n_in, units)),
        "bias": declare("bias", nn.initializers.zeros, (units,)),
    }


def indrnn_recur(cell, w, h, xp, noise=None):
    """IndRNN (Li et al. 2018): ``h' = f(u ⊙ h + U x + b)``, one recurrent weight per unit."""
    return cell.f(w["recurrent"] * h + xp)


INDRNN = cells.CellSpec("indrnn", blocks=1, params=indrnn_params, recur=indrnn_recur)


# ---------------------------------------------------------------------------------------------- a task
class Hold(tasks.TaskSpec):
    """A value c ~ U[−1, 1] arrives at t = 0; output c at every step."""

    names = ("hold_toy",)
    defaults = {"hold_toy": {"T": 12, "n_probe": 4, "probe_seed": 0}}

    def build(self, name, values):
        return 1, 1, values["T"]

    def sample(self, task, key, batch, data=None):
        c = jax.random.uniform(key, (batch, 1, 1), jnp.float32, -1.0, 1.0)
        inputs = jnp.zeros((batch, task.T, 1), jnp.float32).at[:, :1].set(c)
        return inputs, jnp.broadcast_to(c, (batch, task.T, 1))


# ---------------------------------------------------------------------------------------------- metrics
def _mean_block(a, b):
    """``‖x̄ − ȳ‖`` between the networks' mean activity vectors (the narrower zero-padded)."""
    return jnp.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


MEAN_ACTIVITY = similarity.MetricSpec(
    name="mean_activity", short="mean activity", label="distance between mean activity vectors",
    color="#000000", prepare=lambda states, options: states.mean(axis=0), score=_mean_block,
    distance=lambda d: d,  # score is already a distance
)  # fmt: skip


def _speed_distances(trajectories, options, seed):
    """A pairwise-kind toy (the path DSA takes): |difference| of the networks' mean speeds ‖h_t − h_{t−1}‖."""
    speed = np.array([np.linalg.norm(np.diff(t, axis=1), axis=-1).mean() for t in trajectories])
    return np.abs(speed[:, None] - speed[None, :]).astype(np.float32)


MEAN_SPEED = similarity.MetricSpec(
    name="mean_speed", short="speed", label="difference of mean speeds", color="#000000",
    kind="pairwise", pairwise=_speed_distances,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------- an analysis
@dataclass(frozen=True)
class EndSpeedOptions:
    probes: int = 3

    def __post_init__(self):
        if not isinstance(self.probes, int) or self.probes < 1:
            raise ValueError(f"end_speed.probes must be an integer ≥ 1, got {self.probes!r}")


def end_speed(model, task, options, params, probes):
    """``‖F(h, x*) − h‖`` at each probe's final state, and the state norm there."""
    h = model.states(params, probes)[:, -1]
    return {
        "end_speed": jnp.linalg.norm(model.step(params["cell"], h, task.x_star[0]) - h, axis=-1),
        "norm": jnp.linalg.norm(h, axis=-1),
    }


def draw_end_speed(ds, prefix):
    """The toy analysis's own figure: each network's mean end speed (a bare Figure, PNG only)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.subplots().bar(ds.member.values, ds["end_speed"].mean("probe").values)
    path = Path(f"{prefix}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return [path]


END_SPEED = analyses.Analysis(  # its dims depend on the task (as [A]'s per-word ones do): figures find them
    "end_speed", EndSpeedOptions, end_speed, dims=lambda task: {"end_speed": ("probe",), "norm": ("probe",)},
    inputs=lambda task, options: task.probe_inputs[: options.probes], figures={"end_speed": draw_end_speed},
)  # fmt: skip

TOYS = ("indrnn", "hold_toy", "mean_activity", "mean_speed", "end_speed")


@contextlib.contextmanager
def registered(cell=False, task=False, metrics=False, analysis=False):
    """The chosen toys registered for the ``with`` block, and removed after it (also when it fails)."""
    undo = []
    try:
        if cell:
            cells.register(INDRNN)
            undo.append(lambda: cells.REGISTRY.pop("indrnn"))
        if task:
            tasks.register(Hold())
            undo.append(lambda: tasks.REGISTRY.pop("hold_toy"))
        if metrics:
            for spec in (MEAN_ACTIVITY, MEAN_SPEED):
                similarity.register(spec)
                undo.append(lambda name=spec.name: similarity.unregister(name))
        if analysis:
            analyses.register(END_SPEED)
            undo.append(lambda: analyses.unregister("end_speed"))
        yield
    finally:
        for step in reversed(undo):
            step()


def _take(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


# ---------------------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def outside_run(tmp_path_factory):
    """ONE tiny sweep of the toy task with the toy cell beside vanilla, the toy metrics on (registered
    metrics are on by default) and the toy analysis configured; figures are not drawn
    (tests/test_figures.py draws them).  Yields (sweep, run dir, a copy compared without the toy metrics)."""
    with registered(cell=True, task=True, metrics=True, analysis=True):
        cfg = config(
            "grid.arch=[indrnn,vanilla]", "grid.seeds=2", "grid.trials=0", "train.steps=40", "train.chunk=20",
            "dynamics.n_initial=8", "dynamics.steps=100", "+end_speed.probes=4", "progress=false",
        )  # fmt: skip
        OmegaConf.set_struct(cfg, False)
        cfg.task = {"name": "hold_toy", "T": 12, "n_probe": 4, "probe_seed": 0}
        sweep = build_sweep(cfg)
        run = tmp_path_factory.mktemp("outside") / "run"
        with mock.patch.object(figures, "draw_all", lambda *a, **k: []), \
                mock.patch.object(figures, "loss_curves", lambda *a, **k: []):  # fmt: skip
            run_sweep(sweep, run, progress=False)
        # the same run compared with the package's metrics only: the toys must not change their numbers
        from popdyn import analysis

        plain = run.parent / "plain"
        shutil.copytree(run, plain)
        (plain / store.SIMILARITY).unlink()
        (plain / store.SIMILARITY_CONFIG).unlink()
        own = tuple(m for m in sweep.similarity.metrics if m not in TOYS)
        analysis.compare_run(replace(sweep, similarity=replace(sweep.similarity, metrics=own)), plain, False)
        yield sweep, run, plain
    assert not set(TOYS) & {*cells.names(), *tasks.names(), *similarity.names(), *analyses.names()}


def test_outside_members_run_through_one_sweep_analysis_and_store_load(outside_run):
    sweep, run, plain = outside_run
    ds, sim = store.load(run), store.load_similarity(run)

    # the task: config, training, fixed points and probes take it as it is
    assert sweep.task == tasks.make_task("hold_toy") and ds.attrs["task"] == "hold_toy"
    assert (ds.n_fixed_points.values >= 1).all() and ds.fp_valid.sizes["condition"] == 1
    assert "transition" not in ds and "sine_frequency" not in ds and "cdi_graph" not in ds

    # the cell: its networks trained (finite losses), were analysed and reload as indrnn
    assert list(dict.fromkeys(ds.arch.values)) == ["indrnn", "vanilla"]
    assert np.isfinite(ds.loss.values).all() and np.isfinite(ds.final_loss.values).all()
    assert (ds.fp_n_found.values > 0).all()
    gp = store.load_params(run)["indrnn-tanh-8"]
    assert gp.model.arch == "indrnn" and gp.params["cell"]["recurrent"].shape[-1] == 8

    # the metrics: on by default, a symmetric distance matrix with its MDS, in the statistics too
    assert sweep.similarity.metrics[-2:] == ("mean_activity", "mean_speed")
    d = sim.mean_activity_distance.values
    ok = np.isfinite(np.diag(d))
    assert ok.sum() >= 2 and np.allclose(d[np.ix_(ok, ok)], d[np.ix_(ok, ok)].T)
    assert (np.diag(d)[ok] == 0).all()
    assert "mds_all_mean_activity" in sim and "mean_activity_distance" in ds and "mds_mean_activity" in ds
    speed = sim.mean_speed_distance.values
    assert speed.shape == (len(sim.network),) * 2
    assert np.isfinite(speed[np.ix_(*[np.isfinite(np.diag(speed))] * 2)]).all()
    assert {"mean_activity", "mean_speed"} <= set(ds.statistics.metric.values)
    alone = store.load_similarity(plain)  # the package's metrics beside them are unchanged
    assert "mean_activity_distance" not in alone
    for m in ("svcca", "cka", "procrustes"):
        np.testing.assert_array_equal(sim[f"{m}_distance"].values, alone[f"{m}_distance"].values)

    # the analysis: its settings recorded, its arrays stored with their dims, the function of ONE network
    assert sweep.analyses["end_speed"] == EndSpeedOptions(probes=4)
    assert store.read_yaml(run / "end_speed.yaml") == {"probes": 4}
    for g in ("indrnn-tanh-8", "vanilla-tanh-8"):
        stored = store.read_labelled(store.group_dir(run, g) / "end_speed.npz")
        assert stored["end_speed"][0] == ("probe",) and stored["end_speed"][1].shape == (2, 4)
    assert ds["end_speed"].dims == ("member", "probe") and ds["end_speed_norm"].dims == ("member", "probe")
    assert np.all(ds["end_speed"].values >= 0) and np.all(np.isfinite(ds["end_speed_norm"].values))
    for g, gp in store.load_params(run).items():
        one = end_speed(gp.model, sweep.task, sweep.analyses["end_speed"], _take(gp.params, 1),
                        sweep.task.probe_inputs[:4])  # fmt: skip
        np.testing.assert_allclose(
            ds["end_speed"].sel(member=gp.member[1]).values, one["end_speed"], rtol=1e-5, atol=1e-6, err_msg=g
        )
    # its figure, drawn by popdyn.figures where its variables are loaded
    assert "end_speed" in figures.missing(run)
    (path,) = figures.draw_all(run, only=["end_speed"])
    assert path == run / figures.FIGURES / "end_speed.png" and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no_such_figure"):
        figures.draw_all(run, only=["no_such_figure"])


def test_no_file_of_popdyn_names_the_outside_members():
    """The proof holds only if popdyn's own code and configs know none of the toys."""
    named = [
        f"{p.relative_to(ROOT)}: {toy}"
        for p in sorted([*(ROOT / "popdyn").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")])
        for toy in TOYS
        if toy in p.read_text()
    ]
    assert not named, named
