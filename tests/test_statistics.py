"""PERMANOVA, 1-NN accuracy and their bootstrap intervals against hand computations and known structure."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import cdist

from popdyn.statistics import (
    STATISTICS,
    _nn_weighted,
    factor_statistics,
    format_table,
    nn_accuracy,
    permanova,
    statistics_table,
)


def euclidean(points) -> np.ndarray:
    x = np.asarray(points, np.float64)
    x = x.reshape(len(x), -1)
    return cdist(x, x)


def hand_permanova(d, labels) -> tuple[float, float]:
    """(pseudo-F, R²) by explicit double loops over the pairs, straight from Anderson (2001)."""
    n, groups = len(labels), sorted(set(labels))
    ss_t = sum(d[i, j] ** 2 for i in range(n) for j in range(i + 1, n)) / n
    ss_w = 0.0
    for g in groups:
        members = [i for i in range(n) if labels[i] == g]
        ss_w += sum(d[i, j] ** 2 for a, i in enumerate(members) for j in members[a + 1 :]) / len(members)
    f = ((ss_t - ss_w) / (len(groups) - 1)) / (ss_w / (n - len(groups)))
    return f, 1.0 - ss_w / ss_t


def grid(noise: float = 0.3, seed: int = 0):
    """arch (4) × l2 (2) × seed (5) networks whose position depends on arch only, plus noise."""
    rng = np.random.default_rng(seed)
    arch, l2, seeds = (a.ravel() for a in np.meshgrid(["gru", "lstm", "rnn", "ugrnn"], [0.0, 1e-4], range(5)))
    centres = {a: 3.0 * rng.standard_normal(3) for a in np.unique(arch)}
    points = np.stack([centres[a] for a in arch]) + noise * rng.standard_normal((len(arch), 3))
    return euclidean(points), {"arch": arch, "l2": l2}, seeds


LINE = [0.0, 0.3, 0.5, 0.9, 1.2, 10.0, 10.4, 11.0, 11.1, 11.8, 12.5]  # two clusters, 5 and 6 points
LINE_LABELS = ["a"] * 5 + ["b"] * 6


@pytest.mark.parametrize("case", ["line", "plane"])
def test_permanova_matches_hand_computation(case):
    if case == "line":
        d, labels = euclidean(LINE), LINE_LABELS
    else:  # three groups of unequal size in 2-D
        rng = np.random.default_rng(3)
        labels = [0] * 4 + [1] * 5 + [2] * 6
        d = euclidean(rng.standard_normal((15, 2)) + 8.0 * np.array([[0, 0], [1, 0], [0, 1]])[labels])
    f, r2 = hand_permanova(d, labels)
    out = permanova(d, np.array(labels), permutations=999, seed=0)
    np.testing.assert_allclose(out["pseudo_F"], f, rtol=1e-10)
    np.testing.assert_allclose(out["R2"], r2, rtol=1e-10)
    assert out["p_value"] <= 0.01
    assert out["n"] == len(labels) and out["groups"] == len(set(labels))


def test_p_value_counts_the_seeded_permutations():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 14)
    d = euclidean(rng.standard_normal((14, 2)) + 0.8 * labels[:, None])
    shuffled = np.random.default_rng(7).permuted(np.tile(labels, (300, 1)), axis=1)
    f = hand_permanova(d, list(labels))[0]
    hits = sum(hand_permanova(d, list(p))[0] >= f * (1 - 1e-9) for p in shuffled)
    assert permanova(d, labels, permutations=300, seed=7)["p_value"] == (1 + hits) / 301
    assert 0.0 < hits < 300  # a test that both sides of the count are exercised


def test_structureless_matrix_is_not_significant():
    rng = np.random.default_rng(11)
    d = euclidean(rng.standard_normal((40, 3)))
    labels = rng.integers(0, 3, 40)
    out = permanova(d, labels, permutations=999, seed=0)
    assert out["p_value"] > 0.05
    assert out["R2"] < 0.15  # expected (g − 1) / (N − 1) ≈ 0.05 without structure
    accuracy, chance = nn_accuracy(d, labels)
    assert abs(accuracy - chance) < 0.25


def test_invariant_to_relabelling():
    rng = np.random.default_rng(5)
    names = np.array(["lstm", "gru", "rnn"])[rng.integers(0, 3, 30)]
    shift = {"lstm": 0.0, "gru": 0.4, "rnn": 0.8}
    d = euclidean(rng.standard_normal((30, 2)) + np.array([[shift[n], 0.0] for n in names]))
    base = factor_statistics(d, names, permutations=499, seed=3)
    assert 0.01 < base["p_value"] < 0.9  # a p-value made of many hits, so that equality means something
    renamed = {"lstm": 2, "gru": 0, "rnn": 1}  # numbers, in another order than the names sort in
    for relabelled in (np.array([renamed[n] for n in names]), np.char.add("arch_", names[::-1])[::-1]):
        out = factor_statistics(d, relabelled, permutations=499, seed=3)
        for k in ("pseudo_F", "R2", "nn_accuracy", "nn_chance"):
            np.testing.assert_allclose(out[k], base[k], rtol=1e-12)
        assert out["p_value"] == base["p_value"]
    order = rng.permutation(30)
    out = factor_statistics(d[np.ix_(order, order)], names[order], permutations=499, seed=3)
    for k in ("pseudo_F", "R2", "nn_accuracy", "nn_chance", "n", "groups"):
        np.testing.assert_allclose(out[k], base[k], rtol=1e-12)


def test_one_factor_at_a_time_on_a_grid():
    d, factors, seeds = grid()
    arch = factor_statistics(d, factors["arch"], seeds, permutations=999, bootstrap=100)
    l2 = factor_statistics(d, factors["l2"], seeds, permutations=999, bootstrap=100)
    assert arch["R2"] > 0.9 and arch["p_value"] <= 0.01
    assert arch["nn_accuracy"] >= 0.95
    np.testing.assert_allclose(arch["nn_chance"], 4 * 10 * 9 / (40 * 39))
    assert l2["R2"] < 0.05 and l2["p_value"] > 0.05
    assert l2["nn_accuracy"] < 0.75
    assert arch["groups"] == 4 and l2["groups"] == 2 and arch["n"] == l2["n"] == 40


def test_nn_accuracy_by_hand():
    # nearest neighbours: 0↔1 (a, a: right), 2↔3 (b, a: wrong), 4↔5 (b, b: right)
    points, labels = [0.0, 1.0, 3.0, 3.5, 10.0, 10.2], ["a", "a", "b", "a", "b", "b"]
    accuracy, chance = nn_accuracy(euclidean(points), labels)
    assert accuracy == pytest.approx(4 / 6)
    assert chance == pytest.approx((3 * 2 + 3 * 2) / (6 * 5))
    # network 1 is as close to 0 as to 2: the lower index wins, and its label is the wrong one
    d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    assert nn_accuracy(d, ["x", "y", "y"])[0] == pytest.approx(1 / 3)


def test_nn_chance_is_a_random_neighbour():
    labels = np.array([0, 1, 1, 2, 2, 2])
    chance = nn_accuracy(euclidean(np.arange(6.0)), labels)[1]
    assert chance == pytest.approx((0 + 2 + 6) / 30)
    same = labels[:, None] == labels[None]
    assert chance == pytest.approx(same[~np.eye(6, dtype=bool)].mean())


def test_bootstrap_intervals_contain_the_estimate_and_are_reproducible():
    d, factors, seeds = grid(noise=1.0)
    out = factor_statistics(d, factors["arch"], seeds, permutations=99, bootstrap=200, seed=2)
    assert out["R2_low"] <= out["R2"] <= out["R2_high"] and out["R2_low"] < out["R2_high"]
    assert out["nn_low"] <= out["nn_accuracy"] <= out["nn_high"]
    assert out == factor_statistics(d, factors["arch"], seeds, permutations=99, bootstrap=200, seed=2)
    other = factor_statistics(d, factors["arch"], seeds, permutations=99, bootstrap=200, seed=3)
    assert (other["R2_low"], other["R2_high"]) != (out["R2_low"], out["R2_high"])
    narrow = factor_statistics(d, factors["arch"], seeds, permutations=0, bootstrap=200, ci=0.5, seed=2)
    assert out["R2_low"] <= narrow["R2_low"] <= narrow["R2_high"] <= out["R2_high"]
    assert np.isnan(narrow["p_value"])
    for none in (
        factor_statistics(d, factors["arch"], None),
        factor_statistics(d, factors["arch"], seeds, bootstrap=0),
    ):
        assert all(np.isnan(none[k]) for k in ("R2_low", "R2_high", "nn_low", "nn_high"))
        assert none["R2"] == out["R2"]


def test_one_seed_resamples_to_the_whole_set():
    d, factors, _ = grid(noise=1.0)
    out = factor_statistics(d, factors["arch"], np.zeros(40), permutations=0, bootstrap=20)
    np.testing.assert_allclose([out["R2_low"], out["R2_high"]], out["R2"], rtol=1e-10)
    np.testing.assert_allclose([out["nn_low"], out["nn_high"]], out["nn_accuracy"], rtol=1e-12)


def test_copies_of_a_network_are_not_its_neighbours():
    # copies of 0 (a) see 1 (b); 1 sees 0 (a); 2 (b) sees 1 (b): one right out of four copies
    d, codes = euclidean([0.0, 1.0, 5.0, 5.5]), np.array([0, 1, 1, 1])
    np.testing.assert_allclose(_nn_weighted(d, codes, np.array([[2.0, 1.0, 1.0, 0.0]])), [1 / 4])
    rng = np.random.default_rng(0)
    d, labels = euclidean(rng.standard_normal((20, 2))), rng.integers(0, 3, 20)
    np.testing.assert_allclose(_nn_weighted(d, labels, np.ones((1, 20))), [nn_accuracy(d, labels)[0]])
    # every network's neighbour has another label and its partner is far: duplicates must not help
    labels = np.arange(12) % 6
    out = factor_statistics(euclidean(np.arange(12.0)), labels, np.arange(12), permutations=0, bootstrap=200)
    assert out["nn_accuracy"] == 0.0 and out["nn_high"] < 0.2


def test_networks_with_nan_distances_are_left_out():
    d, factors, seeds = grid(noise=1.0)
    bad = d.copy()
    bad[3, :] = bad[:, 3] = np.nan
    bad[7, :] = bad[:, 7] = np.nan
    bad[10, 20] = bad[20, 10] = np.nan  # one pair: the lower index goes
    np.fill_diagonal(bad, np.nan)  # self-distances nobody computed exclude nobody
    keep = np.setdiff1d(np.arange(40), [3, 7, 10])
    for name, labels in factors.items():
        out = factor_statistics(bad, labels, seeds, permutations=99, bootstrap=50, seed=1)
        sub = factor_statistics(d[np.ix_(keep, keep)], labels[keep], seeds[keep], 99, 50, seed=1)
        assert out["n"] == 37
        assert out == sub, name
    assert permanova(bad, factors["arch"])["n"] == 37


def test_degenerate_factors_are_nan():
    d = euclidean(np.arange(6.0))
    assert all(np.isnan(v) for v in factor_statistics(d, np.zeros(6), np.arange(6), bootstrap=10).values())
    assert all(np.isnan(v) for v in permanova(d[:2, :2], [0, 1]).values())
    assert np.isnan(nn_accuracy(d, ["a"] * 6)).all()
    two = d.copy()
    two[2:, :] = two[:, 2:] = np.nan  # two networks left
    assert np.isnan(factor_statistics(two, [0, 1, 0, 1, 0, 1])["R2"])


def test_against_scikit_bio(tmp_path):
    """scikit-bio's permanova as the oracle, run in a subprocess: importing skbio turns on JAX's float64
    mode for the whole process (skbio.util._testing), which would change every later test's dtypes."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("skbio") is None:
        pytest.skip("scikit-bio is not installed")
    d, factors, _ = grid(noise=1.0)
    np.savez(tmp_path / "case.npz", d=d, **{f"labels_{k}": np.asarray(v, str) for k, v in factors.items()})
    code = (
        "import json, sys, numpy as np, skbio\n"
        "from skbio.stats.distance import permanova\n"
        "z = np.load(sys.argv[1])\n"
        "out = {k[7:]: permanova(skbio.DistanceMatrix(z['d']), list(z[k]), permutations=999)"
        "[['test statistic', 'p-value']].astype(float).tolist() for k in z.files if k.startswith('labels_')}\n"
        "print(json.dumps(out))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "case.npz")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    theirs = json.loads(r.stdout.strip().splitlines()[-1])
    for name, labels in factors.items():
        ours = permanova(d, labels, permutations=999)
        f, p = theirs[name]
        np.testing.assert_allclose(ours["pseudo_F"], f, rtol=1e-8)
        assert (ours["p_value"] <= 0.01) == (p <= 0.01)


def test_statistics_table():
    d, factors, seeds = grid(noise=1.0)
    metrics = {"cka": d, "svcca": np.sqrt(d)}
    d_nan = d.copy()
    d_nan[0, 1:] = d_nan[1:, 0] = np.nan
    metrics["partial"] = d_nan
    factors = {**factors, "activation": np.array(["tanh"] * 40), "first": np.arange(40) == 0}
    kw = dict(seeds=seeds, permutations=49, bootstrap=20, seed=4)
    table = statistics_table(metrics, factors, **kw)
    assert isinstance(table, xr.DataArray)
    assert table.dims == ("metric", "factor", "statistic")
    assert list(table.metric.values) == list(metrics) and list(table.factor.values) == list(factors)
    assert tuple(table.statistic.values) == STATISTICS
    np.testing.assert_array_equal(table.values, statistics_table(metrics, factors, **kw).values)
    assert np.isnan(table.sel(factor="activation")).all()
    # only network 0 differs, and the partial metric leaves it out
    assert np.isnan(table.sel(metric="partial", factor="first")).all()
    assert np.isfinite(table.sel(metric="cka", factor="first", statistic="R2"))
    assert table.sel(metric="partial", factor="arch", statistic="n") == 39
    cell = factor_statistics(metrics["svcca"], factors["l2"], seeds, 49, 20, seed=[4, 1, 1])
    np.testing.assert_array_equal(
        table.sel(metric="svcca", factor="l2").values, [cell[s] for s in STATISTICS]
    )

    text = format_table(table)
    lines = text.splitlines()
    cells = [
        (m, f) for m in metrics for f in factors if np.isfinite(table.sel(metric=m, factor=f, statistic="R2"))
    ]
    assert len(lines) == len(cells) < len(metrics) * len(factors)  # the NaN cells are left out
    for line, (metric, factor) in zip(lines, cells):
        assert line.split()[:2] == [metric, factor]
        assert "R2" in line and "NN" in line
