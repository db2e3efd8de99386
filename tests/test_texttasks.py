"""The synthetic text datasets of [A] App. D: labels against plain-Python references of the paper's rules,
the score sampler's uniformity, bad parameters named; and a trained classifier's geometry."""

from __future__ import annotations

import itertools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn import store
from popdyn.analyses import geometry
from popdyn.analyses.dynamics import FixedPointOptions, TopologyOptions, analyze_one
from popdyn.config import ConfigError, build_sweep
from popdyn.model import Model
from popdyn.population import HParams
from popdyn.tasks import TaskError, make_task
from popdyn.train import TrainSettings, accuracy, train_one
from tests.test_sweep import config, run_script


def _words(inputs) -> np.ndarray:
    x = np.asarray(inputs)
    assert np.all(x.sum(-1) == 1)  # one-hot, one word per step
    return x.argmax(-1)


def _categorical_label(words, n):
    counts = [int(np.sum(words == i)) for i in range(n)]
    return counts.index(max(counts))  # ties: the smallest index


def _sentiment_label(words, n, length):
    s = int(np.sum(words == 0) - np.sum(words == 1))  # good +1, bad −1
    edges = [-length + 2 * length * k / n for k in range(1, n)]
    return sum((s > e) if e < 0 else (s >= e) for e in edges)


def _intensity_label(words):
    table = [(2, 1), (1, -0.5), (0, -2), (-1, -0.5), (-2, 1), (0, 0)]  # [A] eq. 14
    s = sum(table[w][0] for w in words)
    i = sum(table[w][1] for w in words)
    if i < 0 and abs(i) > abs(s):  # [A] eq. 15
        return 2
    if i >= 0 and s > 0:
        return 4
    if i < 0 and s > 0:
        return 3
    if i < 0 and s < 0:
        return 1
    return 0


@pytest.mark.parametrize("sampling", ["score", "word"])
def test_categorical_labels_follow_the_evidence_counts(sampling):
    task = make_task("categorical", N=4, L=7, sampling=sampling)
    assert task.words == ("evid1", "evid2", "evid3", "evid4", "neutral") and task.loss == "softmax"
    x, y = task.sample(jax.random.key(0), 500)
    assert x.shape == (500, 7, 5) and y.shape == (500, 4)
    want = [_categorical_label(w, 4) for w in _words(x)]
    np.testing.assert_array_equal(np.asarray(y).argmax(-1), want)
    np.testing.assert_array_equal(np.asarray(y).sum(-1), 1)


@pytest.mark.parametrize(("n", "length"), [(2, 6), (3, 9), (5, 10), (4, 7)])
def test_sentiment_labels_cut_the_score_range_into_equal_bins(n, length):
    task = make_task("ordered", N=n, L=length)
    x, y = task.sample(jax.random.key(1), 600)
    want = [_sentiment_label(w, n, length) for w in _words(x)]
    np.testing.assert_array_equal(np.asarray(y).argmax(-1), want)
    assert set(want) == set(range(n))  # every bin is reached


def test_intensity_labels_follow_eq_15():
    task = make_task("ordered", scheme="intensity", sampling="word", L=8)
    assert task.n_out == 5 and task.words[:3] == ("awesome", "good", "okay")
    x, y = task.sample(jax.random.key(2), 800)
    want = [_intensity_label(w) for w in _words(x)]
    np.testing.assert_array_equal(np.asarray(y).argmax(-1), want)
    assert set(want) == set(range(5))


def test_multilabel_targets_are_the_sign_of_each_label_score():
    task = make_task("multilabel", N=3, L=6)
    assert task.loss == "sigmoid" and task.n_in == 7
    x, y = task.sample(jax.random.key(3), 400)
    w = _words(x)
    want = np.stack([np.sum(w == 2 * i, -1) - np.sum(w == 2 * i + 1, -1) >= 0 for i in range(3)], -1)
    np.testing.assert_array_equal(np.asarray(y), want.astype(np.float32))


def test_score_sampling_is_uniform_over_scores():
    """categorical N = 2, L = 3: the 10 compositions of 3 words into (evid1, evid2, neutral) counts are
    equally likely; ordered sentiment L = 4: the 9 scores −4 … 4 are."""
    n = 20_000
    x, _ = make_task("categorical", N=2, L=3).sample(jax.random.key(4), n)
    counts = Counter(tuple(np.bincount(w, minlength=3)) for w in _words(x))
    assert set(counts) == {c for c in itertools.product(range(4), repeat=3) if sum(c) == 3}
    freq = np.array(list(counts.values())) / n
    np.testing.assert_allclose(freq, 0.1, atol=0.012)
    x, _ = make_task("ordered", N=3, L=4).sample(jax.random.key(5), n)
    w = _words(x)
    scores = Counter((np.sum(w == 0, -1) - np.sum(w == 1, -1)).tolist())
    assert set(scores) == set(range(-4, 5))
    np.testing.assert_allclose(np.array(list(scores.values())) / n, 1 / 9, atol=0.012)


def test_word_order_is_shuffled():
    x, _ = make_task("categorical", N=2, L=10).sample(jax.random.key(6), 4000)
    first = np.bincount(_words(x)[:, 0], minlength=3) / 4000
    last = np.bincount(_words(x)[:, -1], minlength=3) / 4000
    np.testing.assert_allclose(first, last, atol=0.04)  # no position prefers a word


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("ordered", {"scheme": "intensity", "N": 3}, "5 classes"),
        ("ordered", {"scheme": "intensity"}, "sampling=word"),  # N = 5 by default, score sampling refused
        ("multilabel", {"sampling": "score"}, "sampling=word"),
        ("categorical", {"sampling": "sentence"}, "sentence"),
        ("ordered", {"scheme": "stars"}, "stars"),
        ("categorical", {"N": 1}, "N must be at least 2"),
        ("categorical", {"L": 0}, "L must be a positive integer"),
        ("categorical", {"K": 3}, "'K'"),
    ],
)
def test_bad_text_task_parameters_are_named(name, params, named):
    with pytest.raises(TaskError, match=named):
        make_task(name, **params)


@pytest.fixture(scope="module")
def trained_categorical():
    """One GRU trained by popdyn's engine (Adam, final-state cross-entropy) on 3-class categorical."""
    task = make_task("categorical", N=3, L=10)
    model = Model.for_task("gru", "tanh", 32, task)
    settings = TrainSettings(steps=1000, batch=64, chunk=250, optimizer="adam", decay_steps=1)
    hp = HParams(lr=jnp.float32(0.01), decay=jnp.float32(0.999), momentum=jnp.float32(0.0),
                 clip=jnp.float32(10.0), l2=jnp.float32(1e-3))  # fmt: skip
    state, losses = train_one(model, task, settings, hp, jax.random.key(0))
    return task, model, state.params, np.asarray(losses)


@pytest.mark.slow
def test_a_trained_categorical_network_integrates_on_a_simplex(trained_categorical):
    """[A] §3.1 / App. D.1: a 3-class network classifies the phrases, its final states fill a
    2-dimensional (N − 1) triangle, and its 3 readouts point to the vertices: ~120° apart, in one plane.
    (With L2 1e-3; weaker L2 leaves more variance off the plane, as [A] App. D.1 reports.)"""
    task, model, params, losses = trained_categorical
    assert not model.readout_bias and "bias" not in params["readout"]
    assert losses[-50:].mean() < 0.3 * losses[:10].mean()
    x, y = task.sample(jax.random.key(99), 1024)
    assert float(accuracy(model, "softmax", params, x, y)) > 0.9
    final = np.asarray(model.states(params, task.probe_inputs))[:, -1]
    assert geometry.variance_dimension(final, 0.95) == 2
    assert 1.6 < geometry.participation_ratio(final) < 2.6
    g = geometry.readout_geometry(np.asarray(params["readout"]["kernel"]))
    np.testing.assert_allclose(g["angles"][~np.eye(3, dtype=bool)], geometry.simplex_angle(3), atol=10)
    assert g["subspace_fraction"] > 0.9


@pytest.mark.slow
def test_a_trained_categorical_network_integrates_with_two_slow_modes_in_its_manifold(trained_categorical):
    """[A] Fig. 2a: a 3-class network's approximate fixed points at x = 0 form a plane, and exactly two
    modes both outlast a phrase (time constant ≳ L) and lie in that plane; the next mode decays in a few
    words and points mostly out of it.  Fixed-point settings of ``+grid=categorical``."""
    task, model, params, _ = trained_categorical
    opts = FixedPointOptions(n_initial=256, max_points=256, steps=300, q_tol=1e-3, unique_tol=1e-2)
    out = jax.jit(lambda p: analyze_one(model, task, opts, TopologyOptions(), p, jax.random.key(1)))(params)
    valid = np.asarray(out["fp_valid"][0])
    assert valid.sum() >= 30, valid.sum()
    assert geometry.variance_dimension(np.asarray(out["fp_states"][0])[valid]) == 2
    tau = np.median(np.asarray(out["fp_time_constants"][0])[valid], axis=0)  # per mode, slowest first
    overlap = np.median(np.asarray(out["fp_mode_overlap"][0])[valid], axis=0)
    assert (tau[:2] > task.T).all() and (overlap[:2] > 0.9).all(), (tau[:3], overlap[:3])
    assert tau[2] < task.T / 2 and (overlap[2:] < 0.5).all(), (tau[:3], overlap[:3])


@pytest.mark.slow
def test_the_categorical_grid_trains_analyses_and_reloads(tmp_path):
    """``+grid=categorical`` end to end, shrunk: trained with Adam on the final state, accuracy in the
    members table, [A]'s geometry per network in the dataset, figures drawn."""
    run_dir = tmp_path / "run"
    r = run_script(
        "+grid=categorical", "grid.arch=[gru]", "grid.units=[16]", "grid.seeds=2", "task.L=8",
        "task.n_probe=128", "train.steps=300", "train.chunk=100", "train.batch=64", "train.val_batch=512",
        "grid.hparams.lr=0.01", "grid.hparams.decay=0.999", "dynamics.n_initial=32", "dynamics.max_points=32",
        "dynamics.steps=300", f"hydra.run.dir={run_dir}", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ds = store.load(run_dir)
    assert ds.sizes["member"] == 2 and ds.attrs["task"] == "categorical"
    assert (ds.val_accuracy > 0.8).all(), ds.val_accuracy.values
    assert list(ds.word.values) == ["evid1", "evid2", "evid3", "neutral"]
    assert ds.word_deflection.sizes["word"] == 4 and ds.readout_angle.shape == (2, 3, 3)
    assert ((ds.hidden_pr > 1.2) & (ds.hidden_pr < 3.5)).all(), ds.hidden_pr.values
    assert ds.hidden_var95.dtype.kind == "f" and "topology_distance" not in ds
    # evidence words move the state more than the neutral word does
    norms = np.linalg.norm(ds.word_deflection.values, axis=-1)  # [member, word]
    assert (norms[:, :3].min(axis=1) > norms[:, 3]).all()
    # [A] Fig. 2's per-mode measures, and the dataset's LSA: evidence word i is used most in class i
    assert ds.fp_mode_overlap.dims == ("member", "condition", "fixed_point", "mode")
    assert ds.fp_time_constants.shape == ds.fp_mode_overlap.shape
    counts = ds.class_word_counts.values  # [output, word]
    assert (counts[:, :3].argmax(axis=0) == np.arange(3)).all()
    assert ds.lsa_classes.shape == (3, 3) and ds.lsa_words.sizes["word"] == 4
    for name in ("mds_svcca", "fixed_points", "text_manifold", "eigenmodes", "readout_angles", "dimensions"):
        assert (run_dir / "figures" / f"{name}.png").exists(), name


@pytest.mark.parametrize("grid", ["categorical", "ordered", "multilabel"])
def test_text_grids_validate_with_the_paper_s_settings(grid):
    s = build_sweep(config(grid=grid))
    assert s.task.name == grid and s.task.classification and s.train.optimizer == "adam"
    assert s.train.batch == 128 and s.train.decay_steps == 1 and s.hparams["decay"] == 0.9997
    assert s.grid.arch == ("ugrnn", "gru", "lstm") and s.grid.units == (128,) and s.grid.l2 == (5e-4,)
    s = build_sweep(config("task.N=5", "task.scheme=intensity", "task.sampling=word", grid="ordered"))
    assert s.task.n_out == 5 and s.task.n_in == 6


def test_an_unknown_optimizer_is_named():
    with pytest.raises(ConfigError, match="rmsprop"):
        build_sweep(config("train.optimizer=rmsprop"))


@pytest.mark.parametrize("name", ["categorical", "ordered", "multilabel"])
def test_text_tasks_are_deterministic_hashable_and_vmappable(name):
    a, b = make_task(name), make_task(name, **dict(make_task(name).params))
    assert a == b and hash(a) == hash(b) and make_task(name, L=7) != a
    x1, y1 = a.sample(jax.random.key(7), 16)
    x2, y2 = jax.jit(a.sample, static_argnums=1)(jax.random.key(7), 16)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    xs, ys = jax.vmap(lambda k: a.sample(k, 4))(jax.random.split(jax.random.key(8), 3))
    assert xs.shape == (3, 4, a.T, a.n_in) and ys.shape == (3, 4, a.n_out)
    np.testing.assert_array_equal(a.probe_inputs, a.sample(jax.random.key(0), a.param("n_probe"))[0])
    assert a.x_star.shape == (1, a.n_in) and not np.asarray(a.x_star).any()  # [A]: fixed points at x = 0
