"""Cells of SPEC §1: one step against a NumPy float64 transcription of the equations, Jacobians, init, errors.

The reference below is written from SPEC §1 in the column convention of the paper (``W h + U x + b``).
The only thing it takes from popdyn is the documented storage layout (popdyn/cells/__init__.py docstring):
kernels are stored as ``inputs @ kernel`` — so ``W = kernel.T`` — with the gate blocks side by side in column
order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from popdyn.cells import Cell, make_cell, recurrent_kernel
from popdyn.model import Model
from tests.conftest import N_OUT, M, N

B = 5  # batch of states
RTOL, ATOL = 2e-5, 2e-6  # float32 against float64

# gate blocks of each fused kernel, in column order (popdyn/cells/__init__.py docstring)
INPUT_BLOCKS = {
    "vanilla": ("h",),
    "ugrnn": ("c", "g"),
    "gru": ("r", "g", "c"),
    "lstm": ("i", "fg", "o", "c"),
}
RECURRENT_BLOCKS = {**INPUT_BLOCKS, "gru": ("r", "g")}  # gru's Wc is the separate ``candidate``
BASE = {"slstm": "lstm", "ornn": "vanilla", "leaky": "vanilla"}  # cells with these cells' layout (SPEC §1)
LEAKY_ALPHA = 0.2  # SPEC §1's default α = dt/τ


# ---------------------------------------------------------------------------------------------- reference
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


_F = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}


def named_blocks(arch: str, p: dict) -> tuple[dict, dict, dict]:
    """W[name] (N×N), U[name] (N×M), b[name] (N) in the equations' convention, as float64; ornn's W is
    ``expm(A − Aᵀ)`` of its ``skew`` parameter A (SciPy)."""
    if arch == "ornn":
        skew = np.asarray(p["skew"], np.float64)
        rec = scipy.linalg.expm(skew - skew.T)
    else:
        rec = np.asarray(p["recurrent"], np.float64)
    arch = BASE.get(arch, arch)
    inp = np.asarray(p["input"], np.float64)
    bias = np.asarray(p["bias"], np.float64)
    n = rec.shape[0]
    W = {name: rec[:, k * n : (k + 1) * n].T for k, name in enumerate(RECURRENT_BLOCKS[arch])}
    if arch == "gru":
        W["c"] = np.asarray(p["candidate"], np.float64).T
    U = {name: inp[:, k * n : (k + 1) * n].T for k, name in enumerate(INPUT_BLOCKS[arch])}
    b = {name: bias[k * n : (k + 1) * n] for k, name in enumerate(INPUT_BLOCKS[arch])}
    return W, U, b


def ref_step(arch: str, activation: str, p: dict, state: np.ndarray, x: np.ndarray):
    """SPEC §1 for one column-vector state (1-D). Returns (state', pre-activations fed to f)."""
    W, U, b = named_blocks(arch, p)
    if arch == "leaky":  # h' = (1 − α) h + α f(W h + U x + b), noiseless
        z = W["h"] @ np.asarray(state, np.float64) + U["h"] @ np.asarray(x, np.float64) + b["h"]
        return (1 - LEAKY_ALPHA) * np.asarray(state, np.float64) + LEAKY_ALPHA * _F[activation](z), [z]
    arch = BASE.get(arch, arch)
    f = _F[activation]
    state, x = np.asarray(state, np.float64), np.asarray(x, np.float64)
    if arch == "vanilla":
        z = W["h"] @ state + U["h"] @ x + b["h"]
        return f(z), [z]
    if arch == "ugrnn":
        h = state
        zc = W["c"] @ h + U["c"] @ x + b["c"]
        c = f(zc)
        g = _sigmoid(W["g"] @ h + U["g"] @ x + b["g"])
        return g * h + (1 - g) * c, [zc]
    if arch == "gru":
        h = state
        r = _sigmoid(W["r"] @ h + U["r"] @ x + b["r"])
        g = _sigmoid(W["g"] @ h + U["g"] @ x + b["g"])
        zc = W["c"] @ (r * h) + U["c"] @ x + b["c"]
        c = f(zc)
        return g * h + (1 - g) * c, [zc]
    assert arch == "lstm"
    n = state.shape[0] // 2
    h, c = state[:n], state[n:]
    i = _sigmoid(W["i"] @ h + U["i"] @ x + b["i"])
    fg = _sigmoid(W["fg"] @ h + U["fg"] @ x + b["fg"])
    o = _sigmoid(W["o"] @ h + U["o"] @ x + b["o"])
    zc = W["c"] @ h + U["c"] @ x + b["c"]
    c_new = fg * c + i * f(zc)
    return np.concatenate([o * f(c_new), c_new]), [zc, c_new]


def ref_jacobian_fd(arch, activation, p, state, x, eps=1e-6) -> np.ndarray:
    """Central finite differences of the float64 reference: J[i, j] = ∂F_i/∂state_j."""
    d = state.shape[0]
    J = np.empty((d, d))
    for j in range(d):
        e = np.zeros(d)
        e[j] = eps
        J[:, j] = (
            ref_step(arch, activation, p, state + e, x)[0] - ref_step(arch, activation, p, state - e, x)[0]
        ) / (2 * eps)
    return J


# NumPy draws: eager jax.random would compile a sampler for every new shape.
def random_state(model, seed, shape=()):
    """Random state (both signs, scale 1.5 so relu pre-activations cross zero)."""
    return jnp.asarray(
        1.5 * np.random.default_rng(seed).standard_normal((*shape, model.state_size)), jnp.float32
    )


def random_input(seed, shape=()):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((*shape, M)), jnp.float32)


@functools.cache
def jitted(model: Model):
    return jax.jit(model.step)


@functools.cache
def jacobians(model: Model):
    """(jax.jacobian, jax.jacfwd) of the step w.r.t. the state, in one compiled program."""
    return jax.jit(
        lambda p, s, x: (
            jax.jacobian(model.step, argnums=1)(p, s, x),
            jax.jacfwd(model.step, argnums=1)(p, s, x),
        )
    )


# ---------------------------------------------------------------------------------------------- one step
def test_state_size(model, arch):
    assert model.state_size == (2 * N if BASE.get(arch, arch) == "lstm" else N)
    assert model.cell.state_size == model.state_size
    assert make_cell(arch, model.activation, N, M).state_size == model.state_size


def test_parameter_shapes(init_params, arch):
    base = BASE.get(arch, arch)
    g = len(INPUT_BLOCKS[base])
    cell = init_params["cell"]
    expected = {"recurrent": (N, len(RECURRENT_BLOCKS[base]) * N), "input": (M, g * N), "bias": (g * N,)}
    if arch == "gru":
        expected["candidate"] = (N, N)
    if arch == "ornn":  # W = expm(A − Aᵀ) of the free parameter A
        expected["skew"] = expected.pop("recurrent")
    assert {k: v.shape for k, v in cell.items()} == expected
    assert init_params["readout"]["kernel"].shape == (N, N_OUT)
    assert init_params["readout"]["bias"].shape == (N_OUT,)


def test_step_matches_numpy(model, params, arch, activation):
    ks, kx = 20, 21
    state, x = random_state(model, ks), random_input(kx)
    expected, pre = ref_step(arch, activation, params["cell"], np.asarray(state), np.asarray(x))
    if activation == "relu":  # the state should exercise both branches of relu in f(Wc h + Uc x + bc)
        assert (pre[0] > 0).any() and (pre[0] < 0).any()

    out = model.step(params["cell"], state, x)
    assert out.shape == state.shape == (model.state_size,)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        model.cell.apply({"params": params["cell"]}, state, x), expected, rtol=RTOL, atol=ATOL
    )


def test_step_batched_matches_numpy(model, params, arch, activation):
    ks, kx = 30, 31
    states, xs = random_state(model, ks, (B,)), random_input(kx, (B,))
    expected = np.stack(
        [
            ref_step(arch, activation, params["cell"], np.asarray(s), np.asarray(x))[0]
            for s, x in zip(states, xs)
        ]
    )
    out = jitted(model)(params["cell"], states, xs)  # also the check under jax.jit
    assert out.shape == states.shape == (B, model.state_size)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_project_recur_compose_to_step(model, params):
    ks, kx = 40, 41
    state, x = random_state(model, ks), random_input(kx)
    v = {"params": params["cell"]}
    xp = model.cell.apply(v, x, method=Cell.project)
    assert xp.shape == (params["cell"]["input"].shape[1],)
    np.testing.assert_allclose(
        model.cell.apply(v, state, xp, method=Cell.recur),
        model.step(params["cell"], state, x),
        rtol=1e-6,
        atol=1e-6,
    )


def test_step_vmaps_over_members(model, arch, activation):
    members = 3
    # eager inits (jitting init would compile the orthogonal initialiser's QR again) stacked on a member axis
    stacked = jax.tree_util.tree_map(
        lambda *leaves: jnp.stack(leaves),
        *[model.init(k) for k in jax.random.split(jax.random.key(5), members)],
    )
    ks, kx = 60, 61
    states, x = random_state(model, ks, (members,)), random_input(kx)
    out = jax.jit(jax.vmap(model.step, in_axes=(0, 0, None)))(stacked["cell"], states, x)
    assert out.shape == (members, model.state_size)
    for m in range(members):
        p_m = jax.tree_util.tree_map(lambda leaf, m=m: leaf[m], stacked["cell"])
        expected, _ = ref_step(arch, activation, p_m, np.asarray(states[m]), np.asarray(x))
        np.testing.assert_allclose(out[m], expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------- Jacobians
def test_jacobian_matches_jacfwd_and_finite_differences(model, params, arch, activation):
    ks, kx = 70, 71
    state, x = random_state(model, ks), random_input(kx)
    J, J_fwd = jacobians(model)(params["cell"], state, x)
    d = model.state_size
    assert J.shape == (d, d)
    np.testing.assert_allclose(J, J_fwd, rtol=1e-5, atol=1e-6)
    J_fd = ref_jacobian_fd(arch, activation, params["cell"], np.asarray(state, np.float64), np.asarray(x))
    np.testing.assert_allclose(J, J_fd, rtol=1e-4, atol=1e-5)


def test_vanilla_tanh_jacobian_closed_form():
    """h' = tanh(W h + U x + b)  ⇒  ∂h'_i/∂h_j = (1 − h'_i²) W_ij, i.e. J = diag(1 − h'²) Kᵀ with K the stored kernel."""
    model = Model("vanilla", "tanh", N, M, N_OUT)
    params = model.init(jax.random.key(9))
    state, x = random_state(model, 80), random_input(81)
    h_new = np.asarray(model.step(params["cell"], state, x), np.float64)
    K = np.asarray(params["cell"]["recurrent"], np.float64)
    J_closed = np.diag(1.0 - h_new**2) @ K.T
    J = jax.jacobian(model.step, argnums=1)(params["cell"], state, x)
    np.testing.assert_allclose(J, J_closed, rtol=1e-5, atol=1e-6)
    # and the same as the column-convention W of the reference
    W = named_blocks("vanilla", params["cell"])[0]["h"]
    np.testing.assert_allclose(J_closed, (1.0 - h_new**2)[:, None] * W, rtol=1e-12)


# ---------------------------------------------------------------------------------------------- init
def test_recurrent_blocks_orthogonal(init_params, arch):
    if arch == "slstm":
        pytest.skip("slstm's blocks are projected into its contractive region (test_slstm_* below)")
    cell = init_params["cell"]
    rec = np.asarray(recurrent_kernel(arch, cell), np.float64)
    blocks = [rec[:, k * N : (k + 1) * N] for k in range(rec.shape[1] // N)]
    if arch == "gru":
        blocks.append(np.asarray(cell["candidate"], np.float64))
    assert len(blocks) == len(RECURRENT_BLOCKS[BASE.get(arch, arch)]) + (arch == "gru")
    for Q in blocks:
        np.testing.assert_allclose(Q.T @ Q, np.eye(N), atol=1e-5)
    # each block drawn with its own key
    for a in range(len(blocks)):
        for b in range(a + 1, len(blocks)):
            assert not np.allclose(blocks[a], blocks[b])


def test_biases(init_params, arch):
    bias = np.asarray(init_params["cell"]["bias"])
    expected = np.zeros_like(bias)
    if arch == "lstm":
        expected[N : 2 * N] = 1.0  # forget gate, second block (slstm: +1 is projected down to 0)
    np.testing.assert_array_equal(bias, expected)
    np.testing.assert_array_equal(init_params["readout"]["bias"], 0.0)


def test_init_deterministic_per_key(model, init_params):
    same = model.init(jax.random.key(0))
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, init_params)
    other = model.init(jax.random.key(1))
    for name in ("skew" if model.arch == "ornn" else "recurrent", "input"):
        assert not np.allclose(other["cell"][name], init_params["cell"][name])
    assert not np.allclose(other["readout"]["kernel"], init_params["readout"]["kernel"])


def test_cell_init_via_make_cell(arch, activation):
    cell = make_cell(arch, activation, N, M)
    v = cell.init(jax.random.key(0), jnp.zeros((cell.state_size,)), jnp.zeros((M,)))
    v2 = cell.init(jax.random.key(0), jnp.zeros((cell.state_size,)), jnp.zeros((M,)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, v, v2)
    x = jnp.ones((M,))
    s = 0.5 * jnp.ones((cell.state_size,))
    expected, _ = ref_step(arch, activation, v["params"], np.asarray(s), np.asarray(x))
    np.testing.assert_allclose(cell.apply(v, s, x), expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("arch_", "activation_", "units", "needle"),
    [
        ("bogus_arch", "tanh", 4, "bogus_arch"),
        ("LSTM", "tanh", 4, "LSTM"),
        ("gru", "sigmoid_xyz", 4, "sigmoid_xyz"),
        ("vanilla", "tanh", 0, "0"),
        ("vanilla", "tanh", -3, "-3"),
    ],
)
def test_make_cell_rejects(arch_, activation_, units, needle):
    with pytest.raises(ValueError, match=needle) as err:
        make_cell(arch_, activation_, units, M)
    if units <= 0:
        assert "units" in str(err.value)


def test_model_rejects_unknown_arch():
    with pytest.raises(ValueError, match="bogus_arch"):
        Model("bogus_arch", "tanh", N, M, N_OUT).init(jax.random.key(0))


# ---------------------------------------------------------------------------------------------- [R]'s cells
def test_ornn_recurrent_matrix_stays_orthogonal_through_training():
    """ornn's W = expm(A − Aᵀ) is orthogonal for any A — at init (rotations spread over the circle) and
    after Adam has moved A."""
    from popdyn.population import HParams
    from popdyn.tasks import make_task
    from popdyn.train import TrainSettings, train_one

    task = make_task("flipflop", T=20)
    model = Model.for_task("ornn", "tanh", 8, task)
    settings = TrainSettings(steps=30, batch=16, chunk=30, optimizer="adam")
    hp = HParams(*(jnp.float32(v) for v in (0.05, 1.0, 0.0, 10.0, 0.0)))
    state, losses = train_one(model, task, settings, hp, jax.random.key(0))
    init = model.init(jax.random.key(0))
    for cell in (init["cell"], state.params["cell"]):
        Q = np.asarray(recurrent_kernel("ornn", cell), np.float64)
        np.testing.assert_allclose(Q.T @ Q, np.eye(8), atol=2e-5)
        assert np.linalg.det(Q) == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(init["cell"]["skew"], state.params["cell"]["skew"])  # it did train
    angles = np.angle(np.linalg.eigvals(np.asarray(recurrent_kernel("ornn", init["cell"]))))
    assert np.ptp(angles) > 1.0  # not the identity


def test_slstm_stays_contractive_after_every_update():
    """slstm: the parameters are projected after each Adam step (and at init), so the state map's
    Jacobian has spectral norm < 1 at states every trajectory can reach (|h| ≤ 1, |c| ≤ 2.5), even with a
    learning rate that throws an lstm far out of that region."""
    from popdyn.cells import SLSTM_RECURRENT_CAPS
    from popdyn.population import HParams
    from popdyn.tasks import make_task
    from popdyn.train import TrainSettings, chunk_one, init_one

    task = make_task("flipflop", T=20)
    model = Model.for_task("slstm", "tanh", 8, task)
    settings = TrainSettings(steps=20, batch=16, chunk=5, optimizer="adam")
    hp = HParams(*(jnp.float32(v) for v in (0.5, 1.0, 0.0, 100.0, 0.0)))
    state = init_one(model, settings, hp, jax.random.key(0))
    rng = np.random.default_rng(0)
    h = rng.uniform(-1, 1, (100, 8))
    c = rng.uniform(-2.5, 2.5, (100, 8))
    states = jnp.asarray(np.concatenate([h, c], axis=1), jnp.float32)
    x = jnp.asarray(rng.uniform(-1, 1, (100, 3)), jnp.float32)
    jac = jax.jit(jax.vmap(jax.jacobian(model.step, argnums=1), (None, 0, 0)))
    for _ in range(4):
        cell = state.params["cell"]
        rec = np.asarray(cell["recurrent"])
        for g, cap in enumerate(SLSTM_RECURRENT_CAPS):
            block = np.abs(rec[:, g * 8 : (g + 1) * 8])
            assert block.sum(0).max() <= cap * 1.0001 and block.sum(1).max() <= cap * 1.0001
        norms = np.linalg.norm(np.asarray(jac(cell, states, x)), ord=2, axis=(1, 2))
        assert norms.max() < 1.0, norms.max()
        state, _ = chunk_one(model, task, settings, hp, state)
    # the same steps leave a plain lstm non-contractive
    lstm = Model.for_task("lstm", "tanh", 8, task)
    free = init_one(lstm, settings, hp, jax.random.key(0))
    for _ in range(4):
        free, _ = chunk_one(lstm, task, settings, hp, free)
    norms = np.linalg.norm(
        np.asarray(
            jax.vmap(jax.jacobian(lstm.step, argnums=1), (None, 0, 0))(free.params["cell"], states, x)
        ),
        ord=2,
        axis=(1, 2),
    )
    assert norms.max() > 1.0
