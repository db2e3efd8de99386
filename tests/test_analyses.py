"""Outside code adds a per-network analysis without editing popdyn (issue 19): an analysis defined here,
registered, computed by a tiny sweep, stored with its dimension names and read back by ``store.load``."""

from dataclasses import dataclass
from unittest import mock

import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import analyses, figures, store
from popdyn.config import ConfigError, build_sweep
from popdyn.sweep import run_sweep
from tests.test_sweep import config

TINY = ["grid.arch=[vanilla]", "grid.units=[6]", "grid.seeds=2", "grid.trials=0", "train.steps=20",
        "train.chunk=10", "train.log_every=5", "train.final_window=5", "dynamics.n_initial=8",
        "dynamics.steps=50", "dynamics.transition_runs=2", "dynamics.transition_steps=10"]  # fmt: skip


@dataclass(frozen=True)
class SpeedOptions:
    probes: int = 3

    def __post_init__(self):
        if not isinstance(self.probes, int) or self.probes < 1:
            raise ValueError(f"speed.probes must be an integer ≥ 1, got {self.probes!r}")


def speed(model, task, options, params, probes):
    """``‖F(h, x*) − h‖`` at each probe's final state, and the state norm there."""
    h = model.states(params, probes)[:, -1]
    return {
        "speed": jnp.linalg.norm(model.step(params["cell"], h, task.x_star[0]) - h, axis=-1),
        "norm": jnp.linalg.norm(h, axis=-1),
    }


@pytest.fixture
def registered():
    spec = analyses.register(analyses.Analysis(
        "speed", SpeedOptions, speed, dims={"speed": ("probe",), "norm": ("probe",)},
        inputs=lambda task, options: task.probe_inputs[: options.probes],
    ))  # fmt: skip
    yield spec
    analyses.unregister("speed")


def test_a_registered_analysis_runs_is_stored_labelled_and_loads(registered, tmp_path):
    sweep = build_sweep(config(*TINY, "+speed.probes=4"))
    assert sweep.analyses["speed"] == SpeedOptions(probes=4)
    with mock.patch.object(figures, "draw_all", lambda *a, **k: []):  # pictures: tests/test_figures.py
        run = run_sweep(sweep, tmp_path / "run", progress=False)
    path = store.group_dir(run, "vanilla-tanh-6") / "speed.npz"
    stored = store.read_labelled(path)
    assert stored["speed"][0] == ("probe",) and stored["speed"][1].shape == (2, 4)
    assert store.read_yaml(run / "speed.yaml") == {"probes": 4}  # its settings, recorded like the others'
    ds = store.load(run)
    assert ds["speed"].dims == ("member", "probe") and ds["speed_norm"].dims == ("member", "probe")
    assert np.all(ds["speed"].values >= 0) and np.all(np.isfinite(ds["speed_norm"].values))
    # the numbers are the function of ONE network, applied to each member
    gp = store.load_params(run)["vanilla-tanh-6"]
    one = speed(gp.model, sweep.task, sweep.analyses["speed"], {k: _take(v, 1) for k, v in gp.params.items()},
                sweep.task.probe_inputs[:4])  # fmt: skip
    np.testing.assert_allclose(
        ds["speed"].sel(member=gp.member[1]).values, one["speed"], rtol=1e-5, atol=1e-6
    )


def test_an_analysis_section_is_checked_before_anything_runs(registered):
    with pytest.raises(ConfigError, match="unknown speed key 'steps'; allowed: probes"):
        build_sweep(config(*TINY, "+speed.steps=3"))
    with pytest.raises(ConfigError, match="speed.probes must be an integer ≥ 1, got 0"):
        build_sweep(config(*TINY, "+speed.probes=0"))


def test_registry_names_refuse_duplicates_and_unknowns():
    assert "memory" in analyses.names()
    with pytest.raises(ValueError, match="already registered"):
        analyses.register(analyses.get("memory"))
    with pytest.raises(ValueError, match="unknown analysis 'nope'; registered: .*memory"):
        analyses.get("nope")


def _take(tree, i):
    import jax

    return jax.tree.map(lambda a: a[i], tree)


@dataclass(frozen=True)
class StableOptions:
    pass


def stable_norms(model, task, options, params, data, results):
    """The mean state norm of the stable fixed points at the first condition, from ``dynamics``'s."""
    fp = results["dynamics"]
    stable = fp["fp_valid"][0] & (fp["fp_n_unstable"][0] == 0)
    norms = jnp.linalg.norm(fp["fp_states"][0], axis=-1)
    count = jnp.sum(stable)
    return {"count": count, "mean_norm": jnp.sum(jnp.where(stable, norms, 0.0)) / jnp.maximum(count, 1)}


def test_an_analysis_that_needs_the_fixed_points_gets_them(tmp_path):
    """``needs=("dynamics",)``: it runs after the fixed points and receives each member's (``fp_states``,
    stored but not loaded, too), in dependency order whatever the registration order."""
    spec = analyses.register(analyses.Analysis(
        "stable", StableOptions, stable_norms, dims={"count": (), "mean_norm": ()}, needs=("dynamics",),
    ))  # fmt: skip
    try:
        names = [a.name for a in analyses.in_order()]
        assert names.index("dynamics") < names.index("stable")
        sweep = build_sweep(config(*TINY))
        with mock.patch.object(figures, "draw_all", lambda *a, **k: []):
            run = run_sweep(sweep, tmp_path / "run", progress=False)
    finally:
        analyses.unregister("stable")
    ds = store.load(run)
    stable = ds.fp_valid.isel(condition=0) & (ds.fp_n_unstable.isel(condition=0) == 0)
    np.testing.assert_array_equal(ds["stable_count"].values, stable.sum("fixed_point").values)
    with np.load(store.group_dir(run, "vanilla-tanh-6") / store.DYNAMICS) as z:
        norms = np.linalg.norm(z["fp_states"][:, 0], axis=-1)
        want = np.where(stable.values, norms, 0).sum(-1) / np.maximum(stable.values.sum(-1), 1)
    np.testing.assert_allclose(ds["stable_mean_norm"].values, want, rtol=1e-5)
    assert spec.settings_file == "stable.yaml" and (run / "stable.yaml").exists()


def test_needs_that_are_not_registered_or_cycles_are_errors():
    analyses.register(analyses.Analysis("loop_a", StableOptions, stable_norms, dims={}, needs=("loop_b",)))
    try:
        with pytest.raises(ValueError, match="analysis 'loop_a' needs 'loop_b', which is not registered"):
            analyses.in_order()
        analyses.register(analyses.Analysis("loop_b", StableOptions, stable_norms, dims={}, needs=("loop_a",)))
        with pytest.raises(ValueError, match="in a cycle: loop_a → loop_b → loop_a"):
            analyses.in_order()
    finally:
        analyses.unregister("loop_a")
        analyses.unregister("loop_b")
