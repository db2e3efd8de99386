"""Training of SPEC §3, written for ONE network and run as ``jit(vmap(...))`` over a group of members.

Objective ``L = MSE(y, target) + l2 · Σ‖W‖²`` (weight matrices only, biases excluded); SGD with momentum,
learning rate ``lr · decay^(step / decay_steps)``, global-norm gradient clipping ([U] §2.2).  Text
classification ([A] App. B) swaps the MSE for a cross-entropy of the final state (``Task.loss``) and SGD
for Adam (``TrainSettings.optimizer``); the rest is the same.

A member whose loss or gradient turns non-finite is *frozen* (parameters and optimiser state stop changing)
and flagged ``diverged``; under ``vmap`` every member's arithmetic is its own, so its neighbours compute
bit-for-bit what they would have without it.  Training runs in chunks of ``chunk`` steps (one ``lax.scan``
each) so that the caller can show progress and write checkpoints between them; every chunk is the same
compiled program.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float

from popdyn.hosts import to_host
from popdyn.model import Model
from popdyn.population import HParams, padded_size, population_program
from popdyn.tasks import Task


@dataclass(frozen=True)
class TrainSettings:
    """Static training settings (they shape the compiled program).  The defaults are conf/config.yaml's
    (the CPU demo; SPEC §3's 20,000 steps are conf/grid/<task>.yaml's)."""

    steps: int = 600
    batch: int = 64
    chunk: int = 100
    decay_steps: int | None = None  # None: the number of training steps
    log_every: int = 10
    val_batch: int = 512
    final_window: int = 100
    optimizer: str = "sgd"  # sgd (with momentum, [U]), adam ([A]) or adagrad

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.steps / self.chunk)

    @property
    def decay_horizon(self) -> int:
        return self.decay_steps or self.steps


class TrainState(NamedTuple):
    """One network's training state (a population stacks it along a leading member axis)."""

    params: dict
    opt_state: optax.OptState
    step: Array  # int32, steps taken (frozen members keep counting so that chunks stay aligned)
    key: Array  # uint32 raw key data, so that a checkpoint is plain arrays
    diverged: Array  # bool


OPTIMIZERS = ("sgd", "adam", "adagrad")
NOISE_STREAM = 0x6E6F6973  # folded into a step's key for a stochastic cell's noise ("nois")


def make_optimizer(hp: HParams, decay_steps: int, optimizer: str = "sgd") -> optax.GradientTransformation:
    """Global-norm clip → SGD momentum ([U]), Adam ([A], [R]) or Adagrad ([V]) → ``-lr ·
    decay^(count/decay_steps)``; every hyper-parameter may be traced (Adam, Adagrad ignore ``momentum``)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    direction = {
        "sgd": lambda: optax.trace(decay=hp.momentum),
        "adam": optax.scale_by_adam,
        "adagrad": optax.scale_by_rss,
    }[optimizer]()
    return optax.chain(
        optax.clip_by_global_norm(hp.clip),
        direction,
        optax.scale_by_schedule(lambda count: -hp.lr * hp.decay ** (count / decay_steps)),
    )


def mse(
    model: Model, params: dict, inputs: Array, targets: Array, key: Array | None = None
) -> Float[Array, ""]:
    """Task loss: mean squared error over batch, steps and outputs."""
    return jnp.mean((model(params, inputs, key) - targets) ** 2)


def final_logits(
    model: Model, params: dict, inputs: Array, key: Array | None = None
) -> Float[Array, "batch n_out"]:
    """The readout of the final state only ([A]: classification of a whole phrase)."""
    return model.readout(params, model.states(params, inputs, key)[:, -1])


def task_loss(
    model: Model, loss: str, params: dict, inputs: Array, targets: Array, key: Array | None = None
) -> Float[Array, ""]:
    """``mse`` over every step ([U]); ``softmax``: cross-entropy of the final readout against one-hot
    classes; ``sigmoid``: the mean sigmoid cross-entropy over labels ([A]); ``lm``: the cross-entropy of
    the next token at every step (a language model, [V]).  ``key``: a stochastic cell's noise (training)."""
    if loss == "mse":
        return mse(model, params, inputs, targets, key)
    if loss == "lm":
        return jnp.mean(optax.softmax_cross_entropy(model(params, inputs, key), targets))
    logits = final_logits(model, params, inputs, key)
    if loss == "softmax":
        return jnp.mean(optax.softmax_cross_entropy(logits, targets))
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets))


def accuracy(model: Model, loss: str, params: dict, inputs: Array, targets: Array) -> Float[Array, ""]:
    """Fraction classified right: the arg-max class (``softmax``), every label's sign averaged over
    labels and phrases (``sigmoid``), or the next token at every step (``lm``)."""
    if loss == "lm":
        return jnp.mean(jnp.argmax(model(params, inputs), -1) == jnp.argmax(targets, -1))
    logits = final_logits(model, params, inputs)
    if loss == "softmax":
        return jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
    return jnp.mean((logits > 0) == (targets > 0.5))


def objective(
    model: Model, params: dict, l2: Array, inputs: Array, targets: Array, loss: str = "mse", key=None
):
    """``loss + l2 · Σ‖W‖²`` (the leaves ``Model.weight_matrices`` names: weight matrices, no biases);
    returns (objective, loss).  ``key``: a stochastic cell's noise."""
    value = task_loss(model, loss, params, inputs, targets, key)
    penalty = sum(jnp.sum(w**2) for w in model.weight_matrices(params))
    return value + l2 * penalty, value


def init_one(model: Model, settings: TrainSettings, hp: HParams, key: Array) -> TrainState:
    """Fresh parameters and optimiser state for one network; ``key`` is a typed PRNG key."""
    k_init, k_data = jax.random.split(key)
    params = model.init(k_init)
    opt_state = make_optimizer(hp, settings.decay_horizon, settings.optimizer).init(params)
    return TrainState(params, opt_state, jnp.int32(0), jax.random.key_data(k_data), jnp.bool_(False))


def chunk_one(
    model: Model, task: Task, settings: TrainSettings, hp: HParams, state: TrainState, data=None
) -> tuple[TrainState, Float[Array, " chunk"]]:
    """``settings.chunk`` training steps of one network; returns the new state and the MSE of each step.

    Steps past ``settings.steps`` and steps of a diverged member change nothing and record NaN.
    ``data``: the task's :attr:`~popdyn.tasks.Task.data` (a corpus), an argument of the compiled program.
    """
    opt = make_optimizer(hp, settings.decay_horizon, settings.optimizer)
    grad_fn = jax.value_and_grad(partial(objective, model, loss=task.loss), has_aux=True)

    def body(state: TrainState, _):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        inputs, targets = task.sample(key, settings.batch, data)
        # a stochastic cell's noise: from the member's training key and the step, apart from the data's
        noise = jax.random.fold_in(key, NOISE_STREAM) if model.spec.stochastic else None
        (_, loss), grads = grad_fn(state.params, hp.l2, inputs, targets, key=noise)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = model.constrain(optax.apply_updates(state.params, updates))
        active = (state.step < settings.steps) & ~state.diverged
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        take = active & finite
        keep = partial(jax.tree.map, lambda new, old: jnp.where(take, new, old))
        state = TrainState(
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            step=state.step + (state.step < settings.steps),
            key=state.key,
            diverged=state.diverged | (active & ~finite),
        )
        return state, jnp.where(take, loss, jnp.nan)

    return jax.lax.scan(body, state, None, length=settings.chunk)


def train_one(model: Model, task: Task, settings: TrainSettings, hp: HParams, key: Array):
    """Train one network from scratch: ``(final state, MSE per step [steps])`` — the reference the population
    must reproduce."""
    state = init_one(model, settings, hp, key)
    losses = []
    for _ in range(settings.n_chunks):
        state, loss = chunk_one(model, task, settings, hp, state, task.data)
        losses.append(loss)
    return state, jnp.concatenate(losses)[: settings.steps]


class _Programs:
    """The jitted population functions of one (model, task, settings, devices, member_batch), shared by
    every trainer of it.

    The member axis is split over ``mesh`` with ``shard_map``; on each device the local members run as
    ``vmap`` (``member_batch=None``) or as ``lax.map(..., batch_size=member_batch)`` — a loop over blocks of
    members, each block vmapped.  On a CPU the loop is faster: the batched matmuls that a whole-group vmap
    makes of the small per-step matmuls run slower than the same matmuls one network at a time
    (benchmarks/README.md).
    """

    def __init__(
        self, model: Model, task: Task, settings: TrainSettings, mesh: Mesh, member_batch: int | None
    ):
        self.traces = 0
        per_device = partial(population_program, mesh=mesh)

        def chunk(hp, state, data=None):
            self.traces += 1  # runs only while tracing
            return chunk_one(model, task, settings, hp, state, data)

        self.chunk = per_device(chunk, member_batch=member_batch, shared=task.data is not None)

        def init(hp, raw_key):
            return init_one(model, settings, hp, jax.random.wrap_key_data(raw_key))

        # One member at a time: vmap would batch the orthogonal init's QR, and XLA CPU's batched LAPACK
        # kernel can deadlock its thread pool on a 2-core machine (jaxlib 0.10.2), one device or several.
        self.init = per_device(init, member_batch=1)
        self.val = jax.jit(jax.vmap(partial(task_loss, model, task.loss), in_axes=(0, None, None)))
        self.accuracy = jax.jit(jax.vmap(partial(accuracy, model, task.loss), in_axes=(0, None, None)))


@functools.cache
def _programs(model, task, settings, devices: tuple, member_batch: int | None) -> _Programs:
    mesh = Mesh(np.array(devices), ("member",))
    return _Programs(model, task, settings, mesh, member_batch)


class GroupTrainer:
    """The compiled programs of one group: ``jit(vmap(one-network function))``, members split over devices.

    ``size`` members are trained at once (phases with fewer members are padded, so that every phase of a
    group runs the *same* compiled program).  ``traces`` counts how often the training chunk was traced.
    """

    def __init__(
        self,
        model: Model,
        task: Task,
        settings: TrainSettings,
        n_members: int,
        devices=None,
        member_batch: int | None = None,
    ):
        self.model, self.task, self.settings = model, task, settings
        self.devices = tuple(devices) if devices is not None else tuple(jax.devices())
        self.size = padded_size(n_members, len(self.devices))
        self._programs = _programs(model, task, settings, self.devices, member_batch)
        mesh = Mesh(np.array(self.devices), ("member",))
        self.sharding = NamedSharding(mesh, PartitionSpec("member"))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        data = task.data  # a corpus: on every device once, an argument of every chunk
        self.data = () if data is None else (jax.device_put(jax.tree.map(np.asarray, data), self.replicated),)

    @property
    def traces(self) -> int:
        """How often the training chunk of this (model, task, settings) was traced in this process."""
        return self._programs.traces

    def pad(self, hp: HParams, keys: Array) -> tuple[HParams, Array]:
        """Fill the member axis up to ``size`` with copies of member 0 (their results are discarded)."""
        n = keys.shape[0]
        if n > self.size:
            raise ValueError(f"{n} members do not fit a trainer of size {self.size}")
        idx = np.concatenate([np.arange(n), np.zeros(self.size - n, int)])
        return jax.tree.map(lambda a: a[idx], hp), keys[idx]

    def shard(self, tree):
        """Host values (the same in every process of a multi-process run) split over the devices."""
        return jax.device_put(jax.tree.map(np.asarray, tree), self.sharding)

    def init(self, hp: HParams, keys: Array) -> TrainState:
        return self._programs.init(self.shard(hp), self.shard(jax.random.key_data(keys)))

    def chunk(self, hp: HParams, state: TrainState) -> tuple[TrainState, Array]:
        return self._programs.chunk(hp, state, *self.data)

    def val_loss(self, params: dict, inputs: Array, targets: Array) -> np.ndarray:
        """Each member's task loss on one batch (the same for all)."""
        rep = jax.device_put((np.asarray(inputs), np.asarray(targets)), self.replicated)
        return to_host(self._programs.val(params, *rep))

    def val_accuracy(self, params: dict, inputs: Array, targets: Array) -> np.ndarray:
        """Each member's accuracy on one batch (classification tasks)."""
        rep = jax.device_put((np.asarray(inputs), np.asarray(targets)), self.replicated)
        return to_host(self._programs.accuracy(params, *rep))

    def run(
        self,
        hp: HParams,
        state: TrainState,
        losses: np.ndarray,
        on_chunk: Callable[[TrainState, np.ndarray, int], None] | None = None,
    ) -> tuple[TrainState, np.ndarray]:
        """Train ``state`` to ``settings.steps``; ``losses [size, steps]`` is filled in place (NaN = not yet).

        Starts from whatever step ``state`` is at (a restored checkpoint resumes where it stopped);
        ``on_chunk(state, losses, done_steps)`` runs on the host after every chunk.
        """
        s = self.settings
        hp = self.shard(hp)
        done = int(to_host(state.step).max())
        while done < s.steps:
            state, chunk_losses = self.chunk(hp, state)
            stop = min(done + s.chunk, s.steps)
            losses[:, done:stop] = to_host(chunk_losses)[:, : stop - done]
            done = stop
            if on_chunk is not None:
                on_chunk(state, losses, done)
        return state, losses
