"""State gradients of [V]: against closed forms (a linear RNN's ``W^τ U``, an orthogonal map's unit singular
values), against ``jax.jacfwd`` of a model's unrolled states for every cell, the Cholesky normalisation's
invariances; the repetition dataset of [V] §4.2.1 against a plain-Python parser of its rules."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popdyn.analyses import memory
from popdyn.model import Model
from popdyn.tasks.repetition import sample_repetition

S, E, T = 5, 3, 12


def linear_step(p, s, e):
    return p["W"] @ s + p["U"] @ e


@pytest.fixture(scope="module")
def linear():
    """A stable linear RNN ``s' = W s + U e`` (spectral radius 0.8), a sequence and a non-zero start."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((S, S))
    W *= 0.8 / np.abs(np.linalg.eigvals(W)).max()
    U = rng.standard_normal((S, E))
    p = {"W": jnp.asarray(W, jnp.float32), "U": jnp.asarray(U, jnp.float32)}
    e = jnp.asarray(rng.standard_normal((4, T, E)), jnp.float32)
    s0 = jnp.asarray(rng.standard_normal(S), jnp.float32)
    expected = np.stack([np.linalg.matrix_power(W, k) @ U for k in range(T)])  # W^τ U, float64
    return p, e, s0, expected


# ------------------------------------------------------------------------------------------------------
# closed forms
def test_linear_rnn_state_gradients_are_powers_of_w_times_u(linear):
    p, e, s0, expected = linear
    G = jax.jit(memory.state_gradients, static_argnums=(0, 4))(linear_step, p, e[0], s0, T - 1)
    assert G.shape == (T, S, E)
    np.testing.assert_allclose(G, expected, rtol=1e-4, atol=1e-5)


def test_linear_rnn_every_single_t_is_w_power_u(linear):
    """A mask keeping one source position k averages one term per delay: ``G_{k+τ,τ}`` itself, for every
    k — so the closed form holds at every t, not only on average; delays past the end have no term (NaN)."""
    p, e, s0, expected = linear
    masks = jnp.eye(T, dtype=bool)  # row k: only the source t−τ = k counts
    G = jax.vmap(lambda m: memory.state_gradients(linear_step, p, e[0], s0, T - 1, m))(masks)
    for k in range(T):
        np.testing.assert_allclose(G[k, : T - k], expected[: T - k], rtol=1e-4, atol=1e-5)
        assert np.all(np.isnan(G[k, T - k :]))


@pytest.mark.parametrize("chunk", [None, 2])
def test_batch_mean_of_a_linear_rnn_is_w_power_u(linear, chunk):
    p, e, s0, expected = linear
    G = memory.mean_state_gradients(linear_step, p, e, s0, 7, chunk=chunk)
    np.testing.assert_allclose(G, expected[:8], rtol=1e-4, atol=1e-5)


def test_orthogonal_w_with_identity_input_remembers_every_direction_fully():
    """``W`` orthogonal, ``U = I``: ``G_τ = W^τ`` is orthogonal, every singular value is 1 at every delay and
    the memory curve is flat at S."""
    rng = np.random.default_rng(1)
    W, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    p = {"W": jnp.asarray(W, jnp.float32), "U": jnp.eye(6)}
    e = jnp.asarray(rng.standard_normal((30, 6)), jnp.float32)
    G = memory.state_gradients(linear_step, p, e, jnp.ones(6), 25)
    np.testing.assert_allclose(memory.singular_values(G), 1.0, atol=1e-4)
    np.testing.assert_allclose(memory.memory_curve(G), 6.0, atol=1e-3)


# ------------------------------------------------------------------------------------------------------
# gated cells against forward-mode autodiff of the model's own unrolled states
def random_params(model, seed, members=None):
    """Parameters of ``model``'s layout (shapes from ``init`` without running it), Gaussian entries — no
    orthogonal init to compile, and no zero bias to hide a mis-sliced gate block."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    lead = () if members is None else (members,)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(lead + s.shape), jnp.float32), shapes)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_cell_state_gradients_match_jacfwd_of_model_states(arch, activation):
    """``∂s_t/∂e_{t'}`` from ``jax.jacfwd`` of ``Model.states`` (the scan path, from h0 = 0), averaged by
    hand over t = τ … T−1, against :func:`memory.state_gradients` on ``Model.step`` — every delay."""
    model = Model(arch, activation, 6, 3, 2)
    params = random_params(model, 2)
    n_time = 6
    x = jax.random.normal(jax.random.key(2), (n_time, model.n_in))
    scan_model = dataclasses.replace(model, grad="autodiff")  # the hoisted backward pass is reverse-only
    J = jax.jit(jax.jacfwd(lambda x: scan_model.states(params, x[None])[0]))(x)  # [t, state, t', n_in]
    expected = np.stack([np.mean([J[t, :, t - k] for t in range(k, n_time)], axis=0) for k in range(n_time)])
    state0 = jnp.zeros((model.state_size,))
    G = jax.jit(memory.state_gradients, static_argnums=(0, 4))(
        model.step, params["cell"], x, state0, n_time - 1
    )
    assert G.shape == (n_time, model.state_size, model.n_in)
    np.testing.assert_allclose(G, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Cholesky normalisation ([V] eqs. 6–10)
def _whitened(rng, n, dims):
    x = rng.standard_normal((n, dims)) @ rng.standard_normal((dims, dims))
    x -= x.mean(0)
    return x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / n)).T  # sample covariance exactly I


def test_whitened_embeddings_leave_the_gradients_unchanged(linear):
    p, e, s0, _ = linear
    D = memory.embedding_cholesky(jnp.asarray(_whitened(np.random.default_rng(3), 500, E), jnp.float32))
    np.testing.assert_allclose(D, np.eye(E), atol=1e-4)
    G = memory.state_gradients(linear_step, p, e[0], s0, 5)
    np.testing.assert_allclose(memory.normalise(G, D), G, rtol=1e-4, atol=1e-5)


def test_cholesky_factor_reproduces_the_embedding_covariance():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((400, 4)) @ rng.standard_normal((4, 4)) + 3.0
    D = np.asarray(memory.embedding_cholesky(jnp.asarray(x, jnp.float32), ridge=0.0))
    np.testing.assert_allclose(D, np.tril(D))
    np.testing.assert_allclose(D @ D.T, np.cov(x.T, bias=True), rtol=1e-3, atol=1e-3)


def test_normalised_singular_values_ignore_how_the_embedding_space_is_parameterised(linear):
    """Re-express the embeddings as ``e' = M e`` with the input weights ``U M⁻¹`` (the same network, [V]
    eq. 4): the raw gradients change to ``G M⁻¹`` but the normalised singular values do not."""
    p, _, s0, _ = linear
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, T, E)) * np.array([1.0, 5.0, 0.2])
    M = rng.standard_normal((E, E)) + 2 * np.eye(E)
    x2 = x @ M.T
    p2 = {"W": p["W"], "U": jnp.asarray(np.asarray(p["U"], np.float64) @ np.linalg.inv(M), jnp.float32)}

    def normalised_sv(params, x):
        x = jnp.asarray(x, jnp.float32)
        G = memory.mean_state_gradients(linear_step, params, x, s0, 6)
        D = memory.embedding_cholesky(x.reshape(-1, E), ridge=0.0)
        return memory.singular_values(G), memory.singular_values(memory.normalise(G, D))

    raw, sv = normalised_sv(p, x)
    raw2, sv2 = normalised_sv(p2, x2)
    assert not np.allclose(raw, raw2, rtol=1e-2)
    np.testing.assert_allclose(sv2, sv, rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# a population in one call
def test_population_memory_labels_members_and_delays_and_matches_one_network():
    model = Model("lstm", "tanh", 4, 11, 11)
    params = random_params(model, 6, members=3)
    data = sample_repetition(jax.random.key(7), 4, length=40)
    x = jax.nn.one_hot(data.inputs, 11)
    ds = memory.population_memory(model, params, x, 20, part="cell", chunk=2, members=[10, 11, 12])
    assert ds["memory"].dims == ("member", "delay") and ds["memory"].shape == (3, 21)
    assert list(ds.member.values) == [10, 11, 12] and list(ds.delay.values) == list(range(21))
    np.testing.assert_allclose(ds["memory"], ds["singular_values"].sum("rank"), rtol=1e-6)
    assert np.all(np.isfinite(ds["memory"])) and ds.attrs["part"] == "cell"

    one = jax.tree.map(lambda leaf: leaf[1], params)
    mean = jax.jit(memory.mean_state_gradients, static_argnums=(0, 4))
    G = mean(model.step, one["cell"], x, jnp.zeros(8), 20)[:, 4:]
    D = memory.embedding_cholesky(x.reshape(-1, 11))
    np.testing.assert_allclose(
        ds["singular_values"].sel(member=11), memory.singular_values(G @ D), rtol=1e-4, atol=1e-6
    )

    before = memory._population._cache_size()
    params2 = jax.tree.map(lambda leaf: leaf * 0.9, params)
    memory.population_memory(model, params2, x, 20, part="cell", chunk=2)
    assert memory._population._cache_size() == before  # new values, same shapes: no recompilation


def test_population_memory_rejects_what_it_cannot_compute():
    model = Model("gru", "tanh", 4, 3, 1)
    params = random_params(model, 0, members=2)
    x = jnp.ones((2, 5, 3))
    with pytest.raises(ValueError, match="part='cell' needs an lstm"):
        memory.population_memory(model, params, x, 2, part="cell")
    with pytest.raises(ValueError, match=r"max_delay must be an integer in \[0, 4\].*got 5"):
        memory.population_memory(model, params, x, 5)
    with pytest.raises(ValueError, match="chunk must be a positive integer dividing the batch"):
        memory.population_memory(model, params, x, 2, chunk=3)


# ------------------------------------------------------------------------------------------------------
# the repetition dataset of [V] §4.2.1
def parse(tokens, vocab, repeats, min_cycles, max_cycles):
    """Walk one stream by [V]'s rules, asserting each; returns the expected counts and the cycles of every
    complete line."""
    eos, single, rep, cycles = vocab, None, None, 0
    counts, lines = [], []
    i = 0
    while i < len(tokens):
        if tokens[i] == eos:
            assert min_cycles <= cycles <= max_cycles
            lines.append(cycles)
            counts.append(-1)
            cycles, i = 0, i + 1
            continue
        new = tokens[i]
        assert 0 <= new < vocab and new != single and new != rep  # a new token differs from A and B
        run = tokens[i + 1 : i + 1 + repeats]
        repeated = run[0] if single is None and len(run) else single  # first cycle: any B ≠ A
        assert single is not None or repeated != new
        assert all(t == repeated for t in run)  # the previous new token, `repeats` times
        counts.extend(range(1 + len(run)))
        rep, single, cycles, i = repeated, new, cycles + 1, i + 1 + repeats
        assert cycles <= max_cycles
    return counts, lines


@pytest.mark.parametrize(
    "settings", [{}, {"length": 50, "vocab": 3, "repeats": 2, "min_cycles": 1, "max_cycles": 3}]
)
def test_repetition_streams_follow_the_papers_rules(settings):
    full = {"length": 200, "vocab": 10, "repeats": 15, "min_cycles": 5, "max_cycles": 10} | settings
    data = sample_repetition(jax.random.key(0), 64, **settings)
    inputs, targets, count = (np.asarray(a) for a in data)
    assert inputs.shape == targets.shape == count.shape == (64, full["length"])
    assert inputs.dtype == np.int32
    np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])  # language modelling: the next token
    lines = []
    for b in range(64):
        stream = list(inputs[b]) + [targets[b, -1]]
        expected_count, complete = parse(
            stream, full["vocab"], full["repeats"], full["min_cycles"], full["max_cycles"]
        )
        np.testing.assert_array_equal(count[b], expected_count[: full["length"]])
        lines += complete
    # every number of cycles in the range occurs; default windows always cross a line end
    assert set(lines) == set(range(full["min_cycles"], full["max_cycles"] + 1))
    if not settings:
        assert np.all((inputs == full["vocab"]).any(axis=1))
        new_tokens = inputs[count == 0]
        assert set(new_tokens) == set(range(full["vocab"]))


def test_repetition_is_deterministic_per_key_and_vmaps_over_keys():
    a = sample_repetition(jax.random.key(1), 8)
    b = sample_repetition(jax.random.key(1), 8)
    c = sample_repetition(jax.random.key(2), 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.inputs, c.inputs)
    assert len({tuple(row) for row in np.asarray(a.inputs)}) == 8  # rows are independent streams
    keys = jax.random.split(jax.random.key(3), 2)
    stacked = jax.vmap(lambda k: sample_repetition(k, 3, length=20).inputs)(keys)
    np.testing.assert_array_equal(stacked[1], sample_repetition(keys[1], 3, length=20).inputs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch": 0}, r"batch must be an integer ≥ 1, got 0"),
        ({"length": 2.5}, r"length must be an integer ≥ 1, got 2.5"),
        ({"vocab": 2}, r"vocab must be an integer ≥ 3 \(a new token must differ .*got 2"),
        ({"repeats": 0}, r"repeats must be an integer ≥ 1, got 0"),
        ({"min_cycles": 0}, r"min_cycles must be an integer ≥ 1, got 0"),
        ({"min_cycles": 6, "max_cycles": 5}, r"max_cycles must be an integer ≥ 6 \(min_cycles\), got 5"),
        ({"vocab": True}, r"vocab must be an integer"),
    ],
)
def test_repetition_rejects_bad_parameters_by_name(kwargs, message):
    kwargs = {"batch": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        sample_repetition(jax.random.key(0), **kwargs)


def test_network_memory_differentiates_each_network_s_own_embedding():
    """With an embedding, the state gradients are taken with respect to the network's embedded inputs
    and normalised by its embedding vectors' covariance over the vocabulary ([V] §4.1); <pad> sources
    are left out."""
    model = Model("gru", "tanh", 6, 4, 3, vocab=7)
    params = model.init(jax.random.key(0))
    ids = jnp.array([[0, 0, 3, 5, 2, 6, 1, 4], [1, 2, 3, 4, 5, 6, 1, 2]])
    opts = memory.MemoryOptions(max_delay=3, probes=2)
    sv = memory.network_memory(model, opts, params, ids)
    table = params["embedding"]["embedding"]
    e, real = table[ids], ids != 0
    g = memory.mean_state_gradients(model.step, params["cell"], e, jnp.zeros(6), 3, real, step_mask=real)
    expected = memory.singular_values(memory.normalise(g, memory.embedding_cholesky(table[1:])))
    np.testing.assert_allclose(sv, expected, rtol=1e-5)
    assert sv.shape == (4, 4)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_left_padding_changes_no_state_gradient(arch):
    """The masked training recurrence holds the state at zero through a document's left padding, so the
    state gradients of a padded document — sources and steps masked — are those of the document alone,
    whatever the (untrained) <pad> embedding is; stepping the padding unmasked would change them."""
    model = Model(arch, "tanh", 5, 3, 2, vocab=9)
    params = model.init(jax.random.key(1))
    table = params["embedding"]["embedding"]
    doc = jnp.array([3, 5, 2, 6, 1, 4, 8])
    padded = jnp.concatenate([jnp.zeros(4, doc.dtype), doc])
    s0, step, cell = jnp.zeros(model.state_size), model.step, params["cell"]
    alone = memory.state_gradients(step, cell, table[doc], s0, 5)
    real = padded != 0
    masked = memory.state_gradients(step, cell, table[padded], s0, 5, real)
    with_steps = memory.mean_state_gradients(
        step, cell, table[padded][None], s0, 5, real[None], step_mask=real[None]
    )
    np.testing.assert_allclose(with_steps, alone, rtol=1e-5, atol=1e-7)
    assert not np.allclose(masked, alone, rtol=1e-3)  # the pads' embedding moved the state


@pytest.mark.slow
def test_the_repetition_grid_learns_and_draws_memory_curves(tmp_path):
    """``+grid=repetition`` shrunk: an lstm trained by the engine (Adagrad, next-token cross-entropy)
    predicts far better than chance, and its memory curve over 0 … 15 steps back is in the dataset and
    drawn; the gradient of the state on the current input is larger than on one 15 steps back."""
    from popdyn import store
    from tests.test_sweep import run_script

    run_dir = tmp_path / "run"
    r = run_script(
        "+grid=repetition", "grid.arch=[lstm]", "grid.units=[16]", "grid.seeds=1", "task.T=40",
        "task.n_probe=4", "train.steps=300", "memory.max_delay=15", "memory.probes=4",
        "dynamics.n_initial=8", "dynamics.max_points=4", f"hydra.run.dir={run_dir}", "progress=false",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ds = store.load(run_dir)
    assert float(ds.val_loss[0]) < 0.6 * np.log(11), ds.val_loss.values  # chance: log(11 tokens)
    assert float(ds.val_accuracy[0]) > 0.5
    assert ds.memory.dims == ("member", "delay") and ds.sizes["delay"] == 16
    assert float(ds.memory[0, 0]) > float(ds.memory[0, 15]) > 0
    assert (run_dir / "figures" / "memory_curves.png").exists()


def test_bad_memory_settings_are_named():
    from popdyn.config import ConfigError, build_sweep
    from tests.test_sweep import config

    with pytest.raises(ConfigError, match="unknown part 'bogus'; allowed: state, hidden, cell"):
        build_sweep(config("memory.part=bogus", grid="tiny"))
    with pytest.raises(ConfigError, match="memory.max_delay must be an integer ≥ 0, got -1"):
        build_sweep(config("memory.max_delay=-1", grid="tiny"))
    with pytest.raises(ConfigError, match="max_delay = 30 must be below the task's T = 20"):
        build_sweep(config("memory.max_delay=30", "task.T=20", grid="tiny"))
    s = build_sweep(config(grid="repetition"))
    assert s.train.optimizer == "adagrad" and s.analyses["memory"].max_delay == 40 and s.grid.units == (50,)


def test_memory_results_record_their_settings_and_refuse_others(tiny_run, tmp_path):
    """Issue 18 item 4: ``memory.npz`` is kept only with the ``memory.*`` settings that made it
    (``memory.yaml``); another ``memory.max_delay`` is refused before anything is computed, naming the
    setting, and a ``memory.npz`` without ``memory.yaml`` is refused rather than trusted."""
    import shutil

    from popdyn import analysis, store
    from popdyn.config import build_sweep

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    config = store.read_config(run_dir)

    def sweep(**memory_settings):
        return build_sweep({**config, "memory": {**config.get("memory", {}), **memory_settings}})

    analysis.analyze_run(sweep(max_delay=3, probes=2), run_dir, progress=False)
    assert store.read_yaml(run_dir / store.MEMORY_CONFIG)["max_delay"] == 3
    first = {p: p.read_bytes() for p in run_dir.glob(f"groups/*/{store.MEMORY}")}
    assert len(first) == 2 and store.load(run_dir).sizes["delay"] == 4
    analysis.analyze_run(sweep(max_delay=3, probes=2), run_dir, progress=False)  # the same: kept as is
    with pytest.raises(store.RunDirError, match=r"memory\.max_delay=3, not 4.*remove memory\.yaml"):
        analysis.analyze_run(sweep(max_delay=4, probes=2), run_dir, progress=False)
    assert {p: p.read_bytes() for p in first} == first
    (run_dir / store.MEMORY_CONFIG).unlink()  # results that do not say what made them
    with pytest.raises(store.RunDirError, match=r"memory\.npz has no memory\.yaml"):
        analysis.analyze_run(sweep(max_delay=3, probes=2), run_dir, progress=False)
