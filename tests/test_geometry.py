"""[A]'s dimension and readout measures on point sets whose answers are known: a plane, a sphere, a simplex."""

from __future__ import annotations

import numpy as np
import pytest

from popdyn.analyses import geometry

RNG = np.random.default_rng(0)


def _embed(points: np.ndarray, dim: int) -> np.ndarray:
    """``points`` placed in R^dim by a random orthonormal map and shifted: no measure may notice."""
    q, _ = np.linalg.qr(RNG.normal(size=(dim, points.shape[1])))
    return points @ q.T + RNG.normal(size=dim)


def _simplex_vertices(n: int) -> np.ndarray:
    """The n vertices of a regular (n−1)-simplex centred at 0, in R^n (rows)."""
    return np.eye(n) - 1.0 / n


@pytest.fixture(scope="module")
def plane():
    return _embed(RNG.uniform(size=(2000, 2)), 10)


@pytest.fixture(scope="module")
def sphere():
    x = RNG.normal(size=(3000, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_plane_is_two_dimensional_by_every_measure(plane):
    assert geometry.variance_dimension(plane, 0.95) == 2
    assert geometry.participation_ratio(plane) == pytest.approx(2.0, abs=0.05)  # equal variances
    assert geometry.local_participation_ratio(plane, k=30) == pytest.approx(2.0, abs=0.25)
    assert geometry.mle_dimension(plane, k=20) == pytest.approx(2.0, abs=0.2)
    assert geometry.correlation_dimension(plane) == pytest.approx(2.0, abs=0.2)


def test_a_sphere_is_two_dimensional_locally_and_three_globally(sphere):
    # PCA sees the embedding: three equal variances; the nearest-neighbour measures see a surface
    assert geometry.variance_dimension(sphere, 0.95) == 3
    assert geometry.participation_ratio(sphere) == pytest.approx(3.0, abs=0.05)
    assert geometry.local_participation_ratio(sphere, k=20) == pytest.approx(2.0, abs=0.2)
    assert geometry.mle_dimension(sphere, k=20) == pytest.approx(2.0, abs=0.2)
    assert geometry.correlation_dimension(sphere) == pytest.approx(2.0, abs=0.2)


@pytest.mark.parametrize("n", [3, 4, 6])
def test_a_filled_regular_simplex_has_dimension_n_minus_1(n):
    """Uniform points in a regular (n−1)-simplex: by symmetry their covariance is isotropic in its n−1
    dimensions, so the participation ratio is n − 1 (the simplex attractors of [A] §3.1)."""
    weights = RNG.dirichlet(np.ones(n), size=4000)
    x = _embed(weights @ _simplex_vertices(n), 2 * n)
    assert geometry.participation_ratio(x) == pytest.approx(n - 1, rel=0.03)
    assert geometry.variance_dimension(x, n / (n + 1)) == n - 1


def test_variance_dimension_counts_the_components_needed():
    x = RNG.normal(size=(5000, 4)) * np.array([10.0, 3.0, 1.0, 0.1])
    total = 100 + 9 + 1 + 0.01
    assert geometry.variance_dimension(x, 0.85) == 1  # 100 / 110 ≈ 0.909
    assert geometry.variance_dimension(x, 100 / total + 0.02) == 2
    assert geometry.variance_dimension(x, 0.999) == 3


def test_readouts_at_a_simplex_s_vertices():
    """N readouts at the vertices of a regular simplex: equal norms, every pairwise angle
    arccos(−1/(N−1)) (120° for N = 3), all in one N−1 dimensional subspace (Λ = 1)."""
    assert geometry.simplex_angle(3) == pytest.approx(120.0)
    assert geometry.simplex_angle(2) == pytest.approx(180.0)
    for n in (3, 5):
        r = _embed(_simplex_vertices(n), 12).T  # shifted by _embed: undo, readouts are directions
        r = r - r.mean(axis=1, keepdims=True)
        g = geometry.readout_geometry(r * 3.0)
        np.testing.assert_allclose(g["norms"], g["norms"][0])
        off = g["angles"][~np.eye(n, dtype=bool)]
        np.testing.assert_allclose(off, geometry.simplex_angle(n), atol=1e-6)
        assert g["subspace_fraction"] == pytest.approx(1.0)


def test_orthogonal_readouts_share_no_subspace():
    q, _ = np.linalg.qr(RNG.normal(size=(10, 4)))
    g = geometry.readout_geometry(q * np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose(g["norms"], [1, 2, 3, 4])
    np.testing.assert_allclose(g["angles"][~np.eye(4, dtype=bool)], 90.0, atol=1e-6)
    assert g["subspace_fraction"] == pytest.approx(0.0, abs=1e-12)


def test_lsa_of_a_constructed_count_matrix():
    # classes × words from two topics: a rank-2 matrix; LSA recovers it from 2 components
    topics = np.array([[3, 3, 0, 0, 1], [0, 0, 4, 4, 1]], float)
    mix = np.array([[1, 0], [0, 1], [2, 1]], float)
    counts = mix @ topics
    out = geometry.lsa(counts, rank=2)
    np.testing.assert_allclose(out["classes"] @ out["words"].T, counts, atol=1e-9)
    assert out["singular_values"][2] < 1e-9
    # a diagonal count matrix: its singular values are the counts, words are the unit vectors
    out = geometry.lsa(np.diag([5.0, 3.0, 1.0]), rank=3)
    np.testing.assert_allclose(out["singular_values"], [5, 3, 1])
    np.testing.assert_allclose(np.abs(out["words"]), np.eye(3), atol=1e-12)


def test_too_many_neighbours_is_refused():
    with pytest.raises(ValueError, match="k must be"):
        geometry.mle_dimension(RNG.normal(size=(10, 3)), k=10)


def test_class_word_counts_add_each_word_s_uses_per_class():
    """Two phrases over a 3-word vocabulary: [w0, w0, w2] of class 0, [w1, w2, w2] of class 1; a
    multi-label phrase counts for every label it carries."""
    inputs = np.eye(3)[np.array([[0, 0, 2], [1, 2, 2]])]
    np.testing.assert_array_equal(geometry.class_word_counts(inputs, np.eye(2)), [[2, 0, 1], [0, 1, 2]])
    np.testing.assert_array_equal(
        geometry.class_word_counts(inputs, np.array([[1, 1], [0, 1]])), [[2, 0, 1], [2, 1, 3]]
    )
