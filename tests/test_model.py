"""Model of SPEC §1: unrolled states and readout against a NumPy loop from h0 = 0; shapes, unroll, L2 leaves.

The NumPy step below is a row-vector transcription of SPEC §1 (``h Wᵀ`` with ``Wᵀ`` the stored kernel) using
the documented fused layout (popdyn/cells/__init__.py docstring); ``tests/test_cells.py`` checks the single
step in the paper's column convention.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from popdyn import cells
from popdyn.model import Model, weight_matrices
from tests.conftest import N_OUT, M, N

B, T = 4, 7
RTOL, ATOL = 5e-5, 5e-6  # float32 over T steps against float64


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


_F = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}


def ref_step(arch: str, activation: str, p: dict, s: np.ndarray, x: np.ndarray) -> np.ndarray:
    """SPEC §1 on row vectors s [B, D], x [B, M]; gate blocks in the column order of the fused kernels."""
    f = _F[activation]
    if arch == "ornn":  # a vanilla cell with W = expm(A − Aᵀ)
        skew = np.asarray(p["skew"], np.float64)
        p, arch = {**p, "recurrent": scipy.linalg.expm(skew - skew.T)}, "vanilla"
    if arch == "leaky":  # h' = (1 − α) h + α f(W h + U x + b), noiseless, default α
        alpha = cells.get("leaky").options["alpha"]
        return (1 - alpha) * s + alpha * ref_step("vanilla", activation, p, s, x)
    arch = "lstm" if arch == "slstm" else arch
    K, Ux, b = (np.asarray(p[k], np.float64) for k in ("recurrent", "input", "bias"))
    n = K.shape[0]
    xp = x @ Ux + b  # U x + b for every gate, side by side

    def blk(a, k):
        return a[..., k * n : (k + 1) * n]

    if arch == "vanilla":
        return f(s @ K + xp)
    if arch == "ugrnn":
        z = s @ K + xp
        c, g = f(blk(z, 0)), _sigmoid(blk(z, 1))
        return g * s + (1 - g) * c
    if arch == "gru":
        z = s @ K
        r, g = _sigmoid(blk(z, 0) + blk(xp, 0)), _sigmoid(blk(z, 1) + blk(xp, 1))
        c = f((r * s) @ np.asarray(p["candidate"], np.float64) + blk(xp, 2))
        return g * s + (1 - g) * c
    h, c = s[..., :n], s[..., n:]
    z = h @ K + xp
    i, fg, o = _sigmoid(blk(z, 0)), _sigmoid(blk(z, 1)), _sigmoid(blk(z, 2))
    c_new = fg * c + i * f(blk(z, 3))
    return np.concatenate([o * f(c_new), c_new], axis=-1)


def ref_states(model: Model, params: dict, inputs: np.ndarray) -> np.ndarray:
    """states_t = F(states_{t-1}, x_t), states_{-1} = 0."""
    inputs = np.asarray(inputs, np.float64)
    s = np.zeros((inputs.shape[0], model.state_size))
    out = []
    for t in range(inputs.shape[1]):
        s = ref_step(model.arch, model.activation, params["cell"], s, inputs[:, t])
        out.append(s)
    return np.stack(out, axis=1)


def ref_readout(params: dict, states: np.ndarray) -> np.ndarray:
    """y = R h + d with h the first N entries of the state (lstm: h of [h; c])."""
    R = np.asarray(params["readout"]["kernel"], np.float64).T  # [n_out, N]
    d = np.asarray(params["readout"]["bias"], np.float64)
    return states[..., :N] @ R.T + d


@pytest.fixture(scope="module")
def inputs():
    return jnp.asarray(np.random.default_rng(2).standard_normal((B, T, M)), jnp.float32)


@functools.cache
def forward(model: Model):
    """One compiled program per model giving (states, outputs)."""
    return jax.jit(lambda p, u: (model.states(p, u), model(p, u)))


# ---------------------------------------------------------------------------------------------- tests
def test_states_and_outputs_match_numpy_loop(model, params, inputs):
    states, outputs = forward(model)(params, inputs)
    expected = ref_states(model, params, inputs)
    assert states.shape == (B, T, model.state_size)
    assert outputs.shape == (B, T, N_OUT)
    np.testing.assert_allclose(states, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(outputs, ref_readout(params, expected), rtol=RTOL, atol=ATOL)
    # the readout on its own, on the reference states
    np.testing.assert_allclose(
        model.readout(params, jnp.asarray(expected, jnp.float32)),
        ref_readout(params, expected),
        rtol=RTOL,
        atol=ATOL,
    )


def test_readout_sees_only_hidden_part(model, params, arch):
    """For lstm the cell memory c (second half of [h; c]) must not reach the output."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal((B, model.state_size))
    s2 = s.copy()
    s2[:, N:] = rng.standard_normal(s2[:, N:].shape)  # changes c for lstm, nothing for the others
    y, y2 = (model.readout(params, jnp.asarray(a, jnp.float32)) for a in (s, s2))
    assert y.shape == (B, N_OUT)
    np.testing.assert_allclose(y, y2, rtol=0, atol=0)


@pytest.mark.parametrize("arch_", cells.names())
def test_unroll_does_not_change_result(arch_, inputs):
    """unroll = 3 does not divide T = 7, so the remainder steps are checked too (tanh only: one compile per arch)."""
    model = Model(arch_, "tanh", N, M, N_OUT)
    params = model.init(jax.random.key(6))
    unrolled = Model(arch_, "tanh", N, M, N_OUT, unroll=3)
    states, outputs = forward(unrolled)(params, inputs)
    ref_s, ref_y = forward(model)(params, inputs)  # compiled already by the test above
    np.testing.assert_allclose(states, ref_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs, ref_y, rtol=1e-5, atol=1e-6)


def test_population_vmap_matches_members():
    """A population is the same params dict with a leading member axis: vmap over it equals each member."""
    model = Model("gru", "tanh", N, M, N_OUT)
    members = [model.init(k) for k in jax.random.split(jax.random.key(4), 3)]
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)
    u = jnp.asarray(np.random.default_rng(5).standard_normal((B, T, M)), jnp.float32)
    ys = jax.jit(jax.vmap(model, in_axes=(0, None)))(stacked, u)
    assert ys.shape == (3, B, T, N_OUT)
    for m, p in enumerate(members):
        np.testing.assert_allclose(ys[m], ref_readout(p, ref_states(model, p, u)), rtol=RTOL, atol=ATOL)


def test_weight_matrices_are_the_kernels(init_params, arch):
    mats = weight_matrices(init_params)
    cell = init_params["cell"]
    expected = [
        cell["skew" if arch == "ornn" else "recurrent"],
        cell["input"],
        init_params["readout"]["kernel"],
    ]
    if arch == "gru":
        expected.append(cell["candidate"])
    assert len(mats) == len(expected)
    assert all(m.ndim == 2 for m in mats)
    # exactly these leaves (by identity), each once; no bias
    assert sorted(map(id, mats)) == sorted(map(id, expected))
    biases = [cell["bias"], init_params["readout"]["bias"]]
    assert not any(m is b for m in mats for b in biases)
    # and the L2 sum over them is the sum over the kernels
    l2 = sum(float(np.sum(np.asarray(m, np.float64) ** 2)) for m in mats)
    np.testing.assert_allclose(
        l2, sum(float(np.sum(np.asarray(e, np.float64) ** 2)) for e in expected), rtol=1e-5
    )


def test_states_accept_integer_inputs():
    """One-hot inputs stored as integers ([A] text tasks) should unroll like their float32 copy."""
    model = Model("vanilla", "tanh", N, M, N_OUT)
    params = model.init(jax.random.key(0))
    onehot = jnp.asarray(np.eye(M, dtype=np.int32)[np.arange(T) % M][None])  # [1, T, M]
    np.testing.assert_allclose(
        model.states(params, onehot), model.states(params, onehot.astype(jnp.float32)), rtol=1e-6
    )


def test_hoisted_gradient_equals_autodiff(model, params, inputs):
    """popdyn.recurrence's backward (weight gradients hoisted out of the reversed loop) gives the gradients
    that plain autodiff of the step-by-step scan gives, for every parameter and the inputs; every state
    element gets its own cotangent so that no block of the backward pass can hide."""
    plain = Model(model.arch, model.activation, N, M, N_OUT, grad="autodiff")
    probe = jnp.asarray(np.random.default_rng(7).standard_normal((B, T, model.state_size)), jnp.float32)

    def loss(m):
        return jax.jit(jax.grad(lambda p, u: jnp.sum(m.states(p, u) * probe), argnums=(0, 1)))

    got, want = loss(model)(params, inputs), loss(plain)(params, inputs)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    # the states do not reach the readout; everything else has a gradient to get right
    assert all(np.abs(np.asarray(w)).max() > 0 for w in jax.tree.leaves((want[0]["cell"], want[1])))


@pytest.mark.parametrize("arch_", ["gru", "lstm"])
def test_hoisted_gradient_under_vmap_and_unroll(arch_, inputs):
    """A population's gradients (vmap over members, unroll 3 not dividing T) equal each member's plain one."""
    model = Model(arch_, "relu", N, M, N_OUT, unroll=3)
    plain = Model(arch_, "relu", N, M, N_OUT, grad="autodiff")
    members = [model.init(k) for k in jax.random.split(jax.random.key(8), 3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)

    def mean_out(m):
        return jax.grad(lambda p: jnp.mean(m(p, inputs) ** 2))

    grads = jax.jit(jax.vmap(mean_out(model)))(stacked)
    for i, p in enumerate(members):
        for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(mean_out(plain)(p)), strict=True):
            np.testing.assert_allclose(g[i], w, rtol=1e-5, atol=1e-6)


def test_unknown_grad_is_refused():
    with pytest.raises(ValueError, match="unknown grad 'bogus'.*hoisted, autodiff"):
        Model("gru", "tanh", N, M, N_OUT, grad="bogus")
