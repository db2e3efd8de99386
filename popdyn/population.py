"""The population of [U] §2.2 / SPEC §3: the grid, its groups, and per-member hyper-parameters and keys.

The grid is arch × activation × units × l2 (a *configuration*) × seeds.  Members that share a parameter
shape and code — (arch, activation, units) — form a *group* and train as one compiled program; l2, the
optimiser's hyper-parameters and the seed are values, so they vary inside a group.

Every random draw comes from the config's ``seed`` folded with a stable hash of what the draw is for
(``"gru/tanh/64/0.0001/seed=3"``), so a member's numbers do not depend on which other members the grid holds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float

from popdyn import cells

# SPEC §3's random search: (low, high, scale) per hyper-parameter
SEARCH_SPACE = {
    "clip": (0.1, 10.0, "log"),
    "lr": (1e-5, 0.1, "log"),
    "decay": (0.1, 0.9, "linear"),
    "momentum": (0.0, 1.0, "linear"),
}
HPARAM_NAMES = ("lr", "decay", "momentum", "clip", "l2")


class HParams(NamedTuple):
    """Per-member training hyper-parameters; arrays with a leading member axis in a population."""

    lr: Float[Array, "..."]
    decay: Float[Array, "..."]
    momentum: Float[Array, "..."]
    clip: Float[Array, "..."]
    l2: Float[Array, "..."]

    @staticmethod
    def of(row: dict) -> "HParams":
        """One network's hyper-parameters (scalars) from a dict with at least ``HPARAM_NAMES``."""
        return HParams(*(jnp.float32(row[k]) for k in HPARAM_NAMES))

    @staticmethod
    def stack(rows: list[dict]) -> "HParams":
        return HParams(*(jnp.asarray([float(r[k]) for r in rows], jnp.float32) for k in HPARAM_NAMES))


@dataclass(frozen=True)
class Grid:
    """The axes of a population (SPEC §3) and the random-search ranges."""

    arch: tuple[str, ...]
    activation: tuple[str, ...]
    units: tuple[int, ...]
    l2: tuple[float, ...]
    seeds: int
    trials: int
    search: dict = field(default_factory=lambda: dict(SEARCH_SPACE), hash=False, compare=False)
    # per arch, the cell's options as sorted (name, value) pairs (``popdyn.cells.options``); absent: defaults
    cell_options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def groups(self) -> list["Group"]:
        return [
            Group(a, f, u, self.l2, tuple(self.cell_options.get(a, ())))
            for a in self.arch
            for f in self.activation
            for u in self.units
        ]

    @property
    def n_members(self) -> int:
        return len(self.arch) * len(self.activation) * len(self.units) * len(self.l2) * self.seeds


def shard_of_groups(groups: list["Group"], num_shards: int) -> list[int]:
    """The shard (0 … num_shards − 1) of each group: whole groups, balanced by their cost (gate blocks, the
    cell's recurrent matmul width in units of N (``CellSpec.blocks``), ×
    units² × configurations), the costliest first onto the least loaded shard (ties: lowest index).
    Depends only on the grid, so every job of a multirun computes the same split."""
    cost = [cells.get(g.arch).blocks * g.units**2 * len(g.l2) for g in groups]
    load = [0] * num_shards
    out = [0] * len(groups)
    for i in sorted(range(len(groups)), key=lambda i: (-cost[i], i)):
        s = min(range(num_shards), key=lambda s: (load[s], s))
        out[i] = s
        load[s] += cost[i]
    return out


@dataclass(frozen=True)
class Group:
    """Members sharing (arch, activation, units): one compiled program.  ``options``: the cell's options
    (sorted (name, value) pairs; ``Model.for_task(..., options=group.options)``)."""

    arch: str
    activation: str
    units: int
    l2: tuple[float, ...]
    options: tuple = ()

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.activation}-{self.units}"

    def label(self, l2: float, what: str) -> str:
        return f"{self.arch}/{self.activation}/{self.units}/{l2:g}/{what}"


def member_key(seed: int, label: str) -> Array:
    """A key for one draw, from the config's ``seed`` and a stable hash of ``label``."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(label.encode()) & 0x7FFFFFFF)


def sample_search(key: Array, search: dict) -> dict:
    """One random-search trial: log-uniform clip and lr, uniform decay and momentum (SPEC §3)."""
    out = {}
    for name, k in zip(sorted(search), jax.random.split(key, len(search))):
        low, high, scale = search[name]
        u = float(jax.random.uniform(k))
        out[name] = (
            math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
            if scale == "log"
            else low + u * (high - low)
        )
    return out


def search_members(group: Group, grid: Grid, seed: int) -> list[dict]:
    """The random-search trials of every configuration in ``group``: one row (with its key) per trial."""
    rows = []
    for l2 in group.l2:
        for trial in range(grid.trials):
            label = group.label(l2, f"trial={trial}")
            hp = sample_search(member_key(seed, "search/" + label), grid.search)
            rows.append(dict(l2=l2, trial=trial, key=member_key(seed, label), **hp))
    return rows


def seed_members(group: Group, grid: Grid, seed: int, chosen: dict[float, dict]) -> list[dict]:
    """``grid.seeds`` members per configuration, each with the hyper-parameters chosen for its l2."""
    rows = []
    for l2 in group.l2:
        for s in range(grid.seeds):
            hp = {k: chosen[l2][k] for k in ("lr", "decay", "momentum", "clip")}
            rows.append(dict(l2=l2, seed=s, key=member_key(seed, group.label(l2, f"seed={s}")), **hp))
    return rows


def member_ids(grid: Grid) -> dict[tuple, int]:
    """Global member number of each (arch, activation, units, l2, seed), in grid order."""
    ids = {}
    for g in grid.groups:
        for l2 in g.l2:
            for s in range(grid.seeds):
                ids[(g.arch, g.activation, g.units, l2, s)] = len(ids)
    return ids


def padded_size(n: int, n_devices: int) -> int:
    """Smallest multiple of ``n_devices`` that holds ``n`` members (the member axis is split over devices)."""
    return int(np.ceil(n / n_devices) * n_devices)


# ---------------------------------------------------------------------------- one program for a population
def population_program(
    f: Callable, mesh: Mesh, member_batch: int | None, shared: bool = False, unbatched_one: bool = False
) -> Callable:
    """``jit`` of ``f`` (written for one member) over a leading member axis split across ``mesh``.

    On each device the local members run as ``vmap`` (``member_batch=None``) or as
    ``lax.map(..., batch_size=member_batch)``, a loop over blocks of members, each block vmapped.
    ``unbatched_one``: blocks of one are not vmapped at all (``lax.map(f, members)``) — the same numbers;
    for the fixed-point analysis, whose while loops and solves a block of one batches, this traces and
    compiles faster (a 64-unit vanilla flip-flop group of 8 on 2 cores: 8.8 against 10.5 s, compilation
    included); training keeps its vmapped blocks, measured faster for vanilla networks (2026-12-03,
    2 cores: 393 against 291 network-steps/s, `benchmarks/train_throughput.py --quick`).
    ``shared``: the last argument has no member axis; every member reads all of it (replicated).
    """
    members = PartitionSpec("member")

    def local(*args):
        own, rest = (args[:-1], args[-1:]) if shared else (args, ())
        if member_batch is None:
            return jax.vmap(lambda *a: f(*a, *rest))(*own)
        if member_batch == 1 and unbatched_one:
            return jax.lax.map(lambda a: f(*a, *rest), own)
        return jax.lax.map(lambda a: f(*a, *rest), own, batch_size=member_batch)

    def specs(*args):
        return tuple(PartitionSpec() if shared and i == len(args) - 1 else members for i in range(len(args)))

    def program(*args):
        return jax.shard_map(local, mesh=mesh, in_specs=specs(*args), out_specs=members, check_vma=False)(
            *args
        )

    return jax.jit(program)
