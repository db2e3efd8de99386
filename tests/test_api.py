"""popdyn's Python API (popdyn.api): a run without the command line that gives the CLI's numbers, the
comparison of arrays popdyn did not make, and the fixed points of a network popdyn did not train."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import popdyn
from popdyn import similarity, statistics, store
from popdyn.config import ConfigError


# ------------------------------------------------------------------------------------------ compare
def _arrays(seed=0, samples=120):
    """Five networks' states on the same 120 samples: linear maps of one latent, one of them wider, one
    a nonlinear map, one unrelated."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, 6))
    return {
        "lin8": z @ rng.standard_normal((6, 8)),
        "lin12": z @ rng.standard_normal((6, 12)),
        "lin5": z[:, :5] @ rng.standard_normal((5, 5)),
        "tanh8": np.tanh(z @ rng.standard_normal((6, 8))),
        "noise7": rng.standard_normal((samples, 7)),
    }


def test_compare_equals_the_pairwise_functions_for_any_widths():
    states = _arrays()
    ds = popdyn.compare(states, keep_variance=0.9)
    names = list(states)
    assert list(ds.network.values) == names and ds.attrs["metrics"] == ["svcca", "cka", "procrustes"]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            x, y = jnp.asarray(states[a], jnp.float32), jnp.asarray(states[b], jnp.float32)
            want = {
                "svcca": 1 - float(similarity.svcca(x, y, 0.9)),
                "cka": 1 - float(similarity.cka(x, y)),
                "procrustes": float(similarity.procrustes(x, y)),
            }
            for m, w in want.items():
                got = float(ds[f"{m}_distance"].values[i, j])
                assert got == pytest.approx(0.0 if i == j else w, abs=2e-4), (m, a, b)
    # a linear map of the same latent is nearer (CKA, SVCCA) than unrelated noise
    d = ds.cka_distance.sel(network="lin8")
    assert float(d.sel(network_to="lin12")) < float(d.sel(network_to="noise7"))
    assert ds.mds_svcca.shape == (5, 2) and np.isfinite(ds.mds_svcca.values).all()


def test_compare_with_labels_gives_the_statistics_table_of_its_distances():
    states = _arrays(1)
    kind = ["linear", "linear", "linear", "tanh", "noise"]
    seeds = [0, 1, 2, 0, 1]
    ds = popdyn.compare(
        states, labels={"kind": kind}, seeds=seeds, metrics=["cka"], permutations=99, bootstrap=20
    )
    want = statistics.statistics_table(
        {"cka": ds.cka_distance.values}, {"kind": np.array(kind)}, seeds=np.array(seeds), permutations=99,
        bootstrap=20, seed=0,
    )  # fmt: skip
    np.testing.assert_array_equal(ds.statistics.values, want.values)
    assert list(ds.kind.values) == kind and "svcca_distance" not in ds


def test_compare_refuses_what_it_cannot_compare():
    states = _arrays()
    with pytest.raises(ValueError, match="same samples"):
        popdyn.compare({"a": states["lin8"], "b": states["lin8"][:100]})
    with pytest.raises(ValueError, match=r"shape \(120,\)"):
        popdyn.compare([states["lin8"], states["lin8"][:, 0]])
    with pytest.raises(ValueError, match="at least 2"):
        popdyn.compare([states["lin8"]])
    with pytest.raises(ValueError, match="unknown states metric 'topology'.*svcca"):
        popdyn.compare(states, metrics=["topology"])
    with pytest.raises(TypeError, match="unknown compare option 'keep'"):
        popdyn.compare(states, keep=0.9)
    for bad in ({"keep_variance": "abc"}, {"keep_variance": None}, {"block": "x"}):
        with pytest.raises(ValueError, match=f"similarity.{next(iter(bad))} must be"):
            popdyn.compare(states, **bad)
    with pytest.raises(ValueError, match="constant"):
        popdyn.compare([states["lin8"], np.ones((120, 3))])
    with pytest.raises(ValueError, match="4 labels for 5"):
        popdyn.compare(states, labels={"kind": ["a", "b", "c", "d"]})


# ------------------------------------------------------------------------------------------ fixed points
def torch_gru_step(weights: dict, h, x):
    """PyTorch ``nn.GRU``'s update written out from its state dict (``weight_ih_l0`` [3H, I],
    ``weight_hh_l0`` [3H, H], ``bias_ih_l0``, ``bias_hh_l0``; gate rows in the order r, z, n):
    r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)) — the reset gate multiplies the recurrent term with its
    bias, unlike popdyn's gru — and h' = (1 − z) ⊙ n + z ⊙ h."""
    gi = weights["weight_ih_l0"] @ x + weights["bias_ih_l0"]
    gh = weights["weight_hh_l0"] @ h + weights["bias_hh_l0"]
    i_r, i_z, i_n = jnp.split(gi, 3)
    h_r, h_z, h_n = jnp.split(gh, 3)
    r, z = jax.nn.sigmoid(i_r + h_r), jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _numpy_gru(w: dict, h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The same equations in float64 NumPy, the reference."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    gi = w["weight_ih_l0"] @ x + w["bias_ih_l0"]
    gh = w["weight_hh_l0"] @ h + w["bias_hh_l0"]
    (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(gi, 3), np.split(gh, 3)
    r, z = sig(i_r + h_r), sig(i_z + h_z)
    return (1 - z) * np.tanh(i_n + r * h_n) + z * h


def test_fixed_points_of_a_pytorch_style_gru_given_as_numpy_weights():
    rng = np.random.default_rng(3)
    hidden, inputs = 4, 2
    w = {
        "weight_ih_l0": rng.standard_normal((3 * hidden, inputs)),
        "weight_hh_l0": rng.standard_normal((3 * hidden, hidden)),
        "bias_ih_l0": 0.1 * rng.standard_normal(3 * hidden),
        "bias_hh_l0": 0.1 * rng.standard_normal(3 * hidden),
    }
    w["weight_hh_l0"][2 * hidden :] = 3.0 * np.eye(hidden)  # strong self-excitation: several fixed points
    x_star = np.zeros(inputs)
    visited = rng.uniform(-1, 1, (256, hidden))
    fp = popdyn.fixed_points(
        torch_gru_step, jax.tree.map(jnp.asarray, w), x_star, visited, key=jax.random.key(0), n_initial=256,
        max_points=128,
    )  # fmt: skip
    valid = np.asarray(fp.valid)
    assert valid.sum() >= 2  # h ↦ tanh(3h)-like units: more than the origin
    w64 = {k: np.asarray(v, np.float64) for k, v in w.items()}
    for h, jac, eig in zip(np.asarray(fp.states, np.float64)[valid], np.asarray(fp.jacobians)[valid],
                           np.asarray(fp.eigenvalues)[valid]):  # fmt: skip
        assert np.max(np.abs(_numpy_gru(w64, h, x_star) - h)) < 1e-4  # a fixed point of the equations
        eps = 1e-6  # ∂F/∂h by central differences of the NumPy reference
        fd = np.stack([(_numpy_gru(w64, h + eps * e, x_star) - _numpy_gru(w64, h - eps * e, x_star)) / (2 * eps)
                       for e in np.eye(hidden)], axis=1)  # fmt: skip
        np.testing.assert_allclose(jac, fd, atol=2e-4)
        np.testing.assert_allclose(np.sort(np.abs(eig)), np.sort(np.abs(np.linalg.eigvals(fd))), atol=2e-4)
    stable = valid & (np.asarray(fp.n_unstable) == 0)
    assert stable.sum() >= 2  # bistable units: at least two stable points


def test_fixed_points_is_vmappable_over_a_stack_of_networks():
    """``h' = tanh(g h)`` in 2-D: 3² = 9 fixed points for gain 3 (n_unstable 0: 4, 1: 4, 2: 1), the origin
    alone for gain 0.5."""

    def step(gain, h, x):
        return jnp.tanh(gain * h) + x

    states = jnp.asarray(np.random.default_rng(0).uniform(-1.2, 1.2, (128, 2)), jnp.float32)
    many = jax.vmap(partial(popdyn.fixed_points, step, x_star=jnp.zeros(2), states=states, max_points=16))
    fp = many(jnp.array([3.0, 0.5]))
    counts = np.asarray(fp.valid).sum(axis=1)
    assert counts.tolist() == [9, 1]
    unstable = np.asarray(fp.n_unstable)[0][np.asarray(fp.valid)[0]]
    assert np.bincount(unstable).tolist() == [4, 4, 1]


def test_fixed_points_refuses_unknown_options_and_shapes():
    with pytest.raises(TypeError, match="unknown fixed_points option 'tol'.*q_tol"):
        popdyn.fixed_points(lambda p, h, x: h, None, jnp.zeros(1), jnp.zeros((4, 2)), tol=1.0)
    with pytest.raises(ValueError, match="states must be"):
        popdyn.fixed_points(lambda p, h, x: h, None, jnp.zeros(1), jnp.zeros(4))
    with pytest.raises(ValueError, match="states must be"):
        popdyn.fixed_points(lambda p, h, x: h, None, jnp.zeros(1), jnp.zeros((0, 2)))
    # a step that does not return a state of h's shape, or fails on it: named before the search starts
    states = jnp.zeros((4, 3))
    with pytest.raises(
        ValueError, match=r"must return the next state, of h's shape \(3,\); it returned \(1,\)"
    ):
        popdyn.fixed_points(lambda p, h, x: jnp.tanh(h)[:1], None, jnp.zeros(3), states)
    with pytest.raises(ValueError, match=r"fails for a state h of shape \(3,\) and x_star of shape \(5,\)"):
        popdyn.fixed_points(lambda p, h, x: jnp.tanh(h + x), None, jnp.zeros(5), states)
    with pytest.raises(ValueError, match="dynamics.n_initial must be int, got 'abc'"):
        popdyn.fixed_points(lambda p, h, x: h, None, jnp.zeros(1), states, n_initial="abc")
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        popdyn.fixed_points(lambda p, h, x: h, None, jnp.zeros(1), states, key=0)


def test_fixed_points_takes_an_old_style_prng_key_with_the_same_draws():
    def step(p, h, x):
        return jnp.tanh(3 * h)

    states = jnp.asarray(np.random.default_rng(0).normal(size=(50, 2)), jnp.float32)
    a = popdyn.fixed_points(step, None, jnp.zeros(2), states, key=jax.random.key(3), n_initial=32, steps=50)
    b = popdyn.fixed_points(
        step, None, jnp.zeros(2), states, key=jax.random.PRNGKey(3), n_initial=32, steps=50
    )
    np.testing.assert_array_equal(np.asarray(a.states), np.asarray(b.states))


# ------------------------------------------------------------------------------------------ run
def test_compose_gives_the_cli_config_and_names_bad_values():
    from omegaconf import OmegaConf

    from tests.test_sweep import config

    got = popdyn.compose("tiny", ["train.steps=30"])
    assert got.pop("hydra_run_dir") == "results/tiny/flipflop/train.steps=30"  # the CLI's run directory
    assert got == OmegaConf.to_container(config("train.steps=30"), resolve=True)
    with pytest.raises(ConfigError, match="unknown grid 'tinny'; allowed: .*tiny"):
        popdyn.compose("tinny")
    with pytest.raises(ConfigError, match="unknown key train.step"):
        popdyn.compose("tiny", ["train.step=10"])
    with pytest.raises(ConfigError, match="overrides must be a list of strings"):
        popdyn.compose("tiny", "train.steps=10")  # a string is not read letter by letter
    with pytest.raises(ConfigError, match="unknown grid 5; allowed: .*tiny"):
        popdyn.compose(5)
    with pytest.raises(ConfigError, match="no popdyn config"):
        popdyn.compose("tiny", config_dir="/nonexistent")
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from tests.test_sweep import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):  # inside Hydra (scripts/analyze.py)
        outer = compose(config_name="config", return_hydra_config=True)
        HydraConfig.instance().set_config(outer)
        popdyn.compose("tiny")
        assert HydraConfig.get() is outer.hydra or HydraConfig.get() == outer.hydra  # left as it was
        assert compose(config_name="config").grid.name == "demo"  # Hydra itself still works
    HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_run_from_python_gives_the_cli_run(tiny_run, tmp_path):
    """``popdyn.run("tiny")`` = ``scripts/sweep.py +grid=tiny``: the same parameters and losses, bit for
    bit, and the labelled Dataset of ``store.load``."""
    ds = popdyn.run("tiny", run_dir=tmp_path / "api", progress=False)
    cli = store.load(tiny_run)
    for v in ("final_loss", "n_fixed_points", "status"):
        np.testing.assert_array_equal(ds[v].values, cli[v].values)
    a, b = store.load_params(tmp_path / "api"), store.load_params(tiny_run)
    for g in a:
        for x, y in zip(jax.tree.leaves(a[g].params), jax.tree.leaves(b[g].params)):
            np.testing.assert_array_equal(x, y)
    assert (tmp_path / "api" / ".hydra" / "overrides.yaml").read_text().strip() == "- +grid=tiny"
    mtime = (tmp_path / "api" / store.CONFIG).stat().st_mtime_ns
    popdyn.run("tiny", run_dir=tmp_path / "api", progress=False)  # finished: nothing changes
    assert (tmp_path / "api" / store.CONFIG).stat().st_mtime_ns == mtime


def _field_defaults(options: type) -> dict:
    from dataclasses import MISSING, fields

    out = {}
    for f in fields(options):
        v = f.default if f.default is not MISSING else f.default_factory()
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def test_one_source_of_defaults_for_the_cli_the_api_and_the_dataclasses():
    """conf/config.yaml's values are the settings dataclasses' defaults, and a partial dict given to
    ``build_sweep`` gets the command line's values for everything it leaves out."""
    from popdyn.analyses.dynamics import FixedPointOptions, TopologyOptions
    from popdyn.analyses.memory import MemoryOptions
    from popdyn.analyses.record import RecordOptions
    from popdyn.config import HPARAM_DEFAULTS, build_sweep
    from popdyn.train import TrainSettings
    from tests.test_sweep import config

    base = popdyn.compose(None)
    train = _field_defaults(TrainSettings)
    assert {k: base["train"][k] for k in train} == train
    assert base["grid"]["hparams"] == HPARAM_DEFAULTS
    assert base["dynamics"] == _field_defaults(FixedPointOptions) | _field_defaults(TopologyOptions)
    from popdyn import cells

    shared = {k: f.default for k, (_, f) in similarity.option_fields().items()}
    shared["untrained"] = list(cells.twins())  # None: the cells that declare an untrained twin
    assert base["similarity"] == shared
    assert base["memory"] == _field_defaults(MemoryOptions)
    assert base["record"] == _field_defaults(RecordOptions)
    partial = build_sweep(
        {"task": {"name": "sine", "T": 40}, "train": {"steps": 200}, "grid": {"arch": ["gru"]}}
    )
    cli = build_sweep(config("task=sine", "task.T=40", "train.steps=200", "grid.arch=[gru]", grid=None))
    for field in ("train", "hparams", "grid", "fixed_points", "topology", "similarity", "analyses", "record",
                  "unroll", "member_batch", "seed", "config"):  # fmt: skip
        assert getattr(partial, field) == getattr(cli, field), field
    assert partial.task.T == 40 and partial.train.steps == 200
