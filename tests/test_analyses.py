"""The analysis registry (``popdyn.analyses``): an analysis defined outside popdyn (tests/test_outside.py,
whose sweep computes, stores and loads it) has its config section checked before anything runs."""

from dataclasses import dataclass
from unittest import mock

import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import analyses, figures, store
from popdyn.config import ConfigError, build_sweep
from popdyn.sweep import run_sweep
from tests.test_outside import EndSpeedOptions, registered
from tests.test_sweep import config

TINY = ["grid.arch=[vanilla]", "grid.units=[6]", "grid.seeds=2", "grid.trials=0", "train.steps=20",
        "train.chunk=10", "train.log_every=5", "train.final_window=5", "dynamics.n_initial=8",
        "dynamics.steps=50", "dynamics.transition_runs=2", "dynamics.transition_steps=10"]  # fmt: skip


@pytest.fixture
def end_speed():
    with registered(analysis=True):
        yield analyses.get("end_speed")


def test_an_analysis_section_is_checked_before_anything_runs(end_speed):
    assert build_sweep(config("+end_speed.probes=4")).analyses["end_speed"] == EndSpeedOptions(probes=4)
    with pytest.raises(ConfigError, match="unknown end_speed key 'steps'; allowed: probes"):
        build_sweep(config("+end_speed.steps=3"))
    with pytest.raises(ConfigError, match="end_speed.probes must be an integer ≥ 1, got 0"):
        build_sweep(config("+end_speed.probes=0"))


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
        analyses.register(
            analyses.Analysis("loop_b", StableOptions, stable_norms, dims={}, needs=("loop_a",))
        )
        with pytest.raises(ValueError, match="in a cycle: loop_a → loop_b → loop_a"):
            analyses.in_order()
    finally:
        analyses.unregister("loop_a")
        analyses.unregister("loop_b")
