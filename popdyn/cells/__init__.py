"""Recurrent cells of SPEC §1 as a registry: one file per cell (``vanilla.py``, ``gru.py``, ``lstm.py`` …),
each declaring a :class:`CellSpec` with :func:`register` when it is imported.

Every cell is a map on its full dynamical state, ``F(state, x) -> state'`` (the equations are in each cell's
file).  The rest of popdyn asks the spec, never the name: its gate blocks (the cost that population.py
balances shards by), its state size (N or 2N), its parameters, its ``project``/``recur`` step, its hoisted
and fused time loops (or None: plain autodiff through ``lax.scan``), a constraint after every update, which
leaves L2 applies to, whether its step draws noise during training, its per-cell options, its figure colour
and marker.  Adding a cell is adding one file here, or calling :func:`register` from outside code.

Layout. Kernels are stored as Flax stores them, ``inputs @ kernel`` (the transpose of the ``W h`` in the
equations), and the gates of one cell are fused into one kernel so that a step is one or two matmuls:

=========  ======================  =========================  ==================
arch       ``recurrent``           ``input`` / ``bias``       column blocks
=========  ======================  =========================  ==================
vanilla    [N, N]                  [M, N] / [N]               h
ugrnn      [N, 2N]                 [M, 2N] / [2N]             c, g
gru        [N, 2N] + ``candidate`` [M, 3N] / [3N]             r, g | c
lstm       [N, 4N]                 [M, 4N] / [4N]             i, fg, o, c
=========  ======================  =========================  ==================

(gru's ``candidate`` [N, N] is ``Wc``, applied to ``r⊙h``; slstm stores lstm's layout, ornn vanilla's with
``skew`` in place of ``recurrent``; other cells say theirs in their files.)  A step is split into
``project`` (the input part ``x U + b``, which does not depend on the state, so a whole sequence is
projected in one matmul before the time loop) and ``recur`` (the state-dependent part inside the loop);
``step = recur ∘ project``.  Inside
time loops a state of 2N (lstm's ``[h; c]``) is carried as the pair ``(h, c)``: the *carry*; ``recur`` works
on the carry, :class:`Cell` converts.

Initialisation: input kernels LeCun-normal, recurrent kernels orthogonal per gate block, biases zero except
the LSTM forget gate (+1, Gers et al. 2000) — the usual defaults of gated-RNN libraries.

Registry (the convention of every popdyn subpackage): ``REGISTRY`` (name → spec, registration order),
:func:`register` (a duplicate name is an error), :func:`get` (an unknown name is a ``ValueError`` listing
the allowed ones), :func:`names`.  The member modules are imported below; the registry lists them by their
``rank`` ([U]'s ``vanilla, ugrnn, gru, lstm`` first), outside registrations after them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from popdyn._members import import_members

# ---------------------------------------------------------------------------------------------- activations


class Activation(NamedTuple):
    """A nonlinearity and its derivative written as a function of its output ``y = fn(a)`` (the hoisted
    backward pass evaluates no transcendental again: ``σ(1−σ)``, ``1−tanh²``, ``[y > 0]``)."""

    name: str
    fn: Callable[[Array], Array]
    deriv: Callable[[Array], Array]


SIGMOID = Activation("sigmoid", jax.nn.sigmoid, lambda y: y * (1.0 - y))
# in the order of every listing and figure: the first a run has is the one figures compare archs within
# (popdyn.figures.PANELS; tanh, [U] §2.3)
ACT: dict[str, Activation] = {
    "tanh": Activation("tanh", jnp.tanh, lambda y: 1.0 - y * y),
    "relu": Activation("relu", jax.nn.relu, lambda y: (y > 0).astype(y.dtype)),
}
ACTIVATIONS = tuple(ACT)  # a cell's f; gates are always sigmoids
_ACT: dict[str, Callable[[Array], Array]] = {k: a.fn for k, a in ACT.items()}


class Fused(NamedTuple):
    """A cell's time loop as one compiled kernel: ``run(kernels, x, carry0, mask, activation)`` (the
    hoisted loop's arguments and result), used where ``usable(dtype)`` holds (popdyn/fused.py: lstm)."""

    usable: Callable[[Any], bool]
    run: Callable


def activation(name: str) -> Activation:
    """The activation ``name``; a ``ValueError`` naming it and the allowed ones otherwise."""
    if name not in ACT:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACT[name]


# ---------------------------------------------------------------------------------------------- inits


def orthogonal_blocks(blocks: int):
    """Orthogonal init for each [N, N] block of a fused [N, blocks·N] recurrent kernel."""

    def init(key, shape, dtype=jnp.float32):
        n = shape[0]
        keys = jax.random.split(key, blocks)
        return jnp.concatenate([nn.initializers.orthogonal()(k, (n, n), dtype) for k in keys], axis=1)

    return init


_orthogonal_blocks = orthogonal_blocks


def dense_params(declare, units: int, n_in: int, blocks: int, bias_init=nn.initializers.zeros) -> dict:
    """``recurrent`` [N, blocks·N] (orthogonal blocks), ``input`` [M, blocks·N] (LeCun normal), ``bias``
    [blocks·N], declared in that order with ``declare`` (a Flax module's ``param``)."""
    n = units
    return {
        "recurrent": declare("recurrent", orthogonal_blocks(blocks), (n, blocks * n)),
        "input": declare("input", nn.initializers.lecun_normal(), (n_in, blocks * n)),
        "bias": declare("bias", bias_init, (blocks * n,)),
    }


def affine_input(w: dict, x: Float[Array, "... n_in"]) -> Float[Array, "... blocks_units"]:
    """``x U + b``: the input part of every gate (state-independent)."""
    return x @ w["input"] + w["bias"]


def is_matrix(name: str, leaf: Array) -> bool:
    """L2 applies to weight matrices (≥ 2 dims), not biases ([U] §2.2)."""
    return leaf.ndim >= 2


def _same(params: dict) -> dict:
    return params


# ---------------------------------------------------------------------------------------------- the spec

# Okabe–Ito (the colours of [U]'s six cells) continued with Tol's "muted" set, for cells that name none;
# black and yellow are the activations' colours (figures.ACTIVATION_COLORS), so they are not here
PALETTE = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9",
    "#CC6677", "#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#DDCC77",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "H")


@dataclass(frozen=True)
class CellSpec:
    """What popdyn needs to know of one cell.

    ``params(declare, units, n_in) -> dict`` declares the stored parameters with ``declare`` (a Flax
    module's ``param(name, init, shape)``; the order of the calls fixes the keys each gets);
    ``weights(params) -> dict`` the arrays the equations use (ornn: ``W = expm(A − Aᵀ)``);
    ``project(w, x)`` the input part; ``recur(cell, w, carry, xp, noise) -> carry'`` the state part, with
    ``cell`` the :class:`Cell` (``units``, ``f``, ``opts``) and ``noise`` None or standard normal draws
    [..., units] of this step (``stochastic`` cells, training only).
    """

    name: str
    blocks: int  # recurrent matmul width in units of N: the cost population.py balances shards by
    params: Callable[..., dict]
    recur: Callable[..., Any]
    project: Callable[[dict, Array], Array] = affine_input
    weights: Callable[[dict], dict] = _same
    state_factor: int = 1  # state size = state_factor · N; > 1: carried as that many [.., N] parts
    loop: Any = None  # popdyn.recurrence.Loop: the hoisted time loop; None: autodiff through lax.scan
    fused: Fused | None = None  # the loop as one compiled kernel, where it can run (else ``loop``)
    constrain: Callable[[dict], dict] | None = None  # cell params -> params, after every update and at init
    l2: Callable[[str, Array], bool] = is_matrix  # which cell leaves the L2 penalty sums over
    stochastic: bool = False  # recur draws noise (training forward only; analyses use noise=None)
    options: Mapping[str, Any] = field(default_factory=dict)  # per-cell options and their defaults
    check: Callable[[dict], None] | None = None  # raises ValueError on bad option values
    color: str | None = None  # figure colour; None: the next unused one of PALETTE
    marker: str | None = None  # figure marker; None: the next unused one of MARKERS
    base: str | None = None  # the cell whose equations this one computes (slstm: lstm); None: itself
    twin: bool = False  # its members get an untrained twin unless similarity.untrained says ([U] Fig. 4)
    rank: int = 100  # place in names() among the package's own cells (then by name); outside cells: last

    def state_size(self, units: int) -> int:
        return self.state_factor * units

    def split(self, state: Array):
        """Full state → carry (``[h; c]`` → ``(h, c)``)."""
        if self.state_factor == 1:
            return state
        n = state.shape[-1] // self.state_factor
        return tuple(state[..., k * n : (k + 1) * n] for k in range(self.state_factor))

    def merge(self, carry) -> Array:
        """Carry → full state."""
        return carry if self.state_factor == 1 else jnp.concatenate(carry, axis=-1)

    def carry0(self, h0: Array):
        """The carry of the zero state, from ``h0`` [.., N]."""
        return h0 if self.state_factor == 1 else (h0,) * self.state_factor


REGISTRY: dict[str, CellSpec] = {}


def register(spec: CellSpec) -> CellSpec:
    """Add ``spec`` under ``spec.name``; a name registered twice is an error."""
    if spec.name in REGISTRY:
        raise ValueError(f"cell {spec.name!r} is registered already")
    if not isinstance(spec.blocks, int) or spec.blocks < 1 or spec.state_factor < 1:
        raise ValueError(f"cell {spec.name!r}: blocks and state_factor must be positive integers")
    REGISTRY[spec.name] = spec
    return spec


def names() -> tuple[str, ...]:
    """Every registered cell, in registration order."""
    return tuple(REGISTRY)


def twins() -> tuple[str, ...]:
    """The cells whose members get an untrained twin by default (``CellSpec.twin``: vanilla, [U] Fig. 4)."""
    return tuple(n for n, s in REGISTRY.items() if s.twin)


def get(name: str) -> CellSpec:
    """The spec of ``name``; a ``ValueError`` naming it and listing the registered cells otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown arch {name!r}; allowed: {', '.join(names())}") from None


def __getattr__(attr: str):
    if attr == "ARCHS":  # the registered names now (names() is the call to use: outside cells come later)
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def base_arch(arch: str) -> str:
    """The arch whose equations and time loop ``arch`` uses (``slstm`` → lstm, ``ornn`` → vanilla)."""
    return get(arch).base or arch


def recurrent_kernel(arch: str, cell_params: dict) -> Array:
    """The recurrent kernel a cell multiplies its state by (``h @ K``): ``recurrent``, or for ornn
    ``orthogonal(skew)``."""
    return get(arch).weights(cell_params)["recurrent"]


def options(arch: str, given: Mapping | None = None) -> tuple[tuple[str, Any], ...]:
    """The options of ``arch``: its defaults overridden by ``given``, validated, as sorted (name, value)
    pairs (hashable: they close over compiled programs).  Unknown names are a ``ValueError``."""
    spec = get(arch)
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ValueError(f"unknown option {unknown[0]!r} of cell {arch!r}; allowed: {allowed}")
    for k, v in given.items():
        if isinstance(spec.options[k], numbers.Real) and not (
            isinstance(v, numbers.Real) and not isinstance(v, bool)
        ):
            raise ValueError(f"option {k!r} of cell {arch!r} must be a number, got {v!r}")
    merged = {**spec.options, **given}
    if spec.check is not None:
        spec.check(merged)
    return tuple(sorted((k, float(v) if isinstance(v, numbers.Real) else v) for k, v in given.items()))


def _assigned(attr: str, palette: tuple[str, ...]) -> dict[str, str]:
    taken = {getattr(s, attr) for s in REGISTRY.values() if getattr(s, attr)}
    free = iter([p for p in palette if p not in taken])
    return {s.name: getattr(s, attr) or next(free, palette[-1]) for s in REGISTRY.values()}


def color(arch: str, default: str = "tab:gray") -> str:
    """``arch``'s figure colour: its own, else the next of :data:`PALETTE` no registered cell names (in
    registration order); ``default`` for a name not registered."""
    return _assigned("color", PALETTE).get(arch, default)


def marker(arch: str, default: str = "o") -> str:
    """``arch``'s figure marker, chosen like :func:`color` from :data:`MARKERS`."""
    return _assigned("marker", MARKERS).get(arch, default)


# ---------------------------------------------------------------------------------------------- the module


class Cell(nn.Module):
    """One recurrent cell; ``__call__(state, x) -> state'`` is the one-step map ``F``.

    ``units`` is N; the state has ``state_size`` = N (2N for lstm).  ``options``: the cell's options as
    (name, value) pairs (:func:`options`); ``opts`` has them merged over the spec's defaults.
    """

    arch: str
    activation: str
    units: int
    n_in: int
    options: tuple = ()

    @property
    def spec(self) -> CellSpec:
        return get(self.arch)

    @property
    def state_size(self) -> int:
        return self.spec.state_size(self.units)

    @property
    def base(self) -> str:
        return base_arch(self.arch)

    @property
    def blocks(self) -> int:
        return self.spec.blocks

    @property
    def f(self) -> Callable[[Array], Array]:
        """The cell's activation f."""
        return ACT[self.activation].fn

    @property
    def opts(self) -> dict:
        return {**self.spec.options, **dict(self.options)}

    def setup(self):
        spec = get(self.arch)
        activation(self.activation)
        self.w = spec.weights(spec.params(self.param, self.units, self.n_in))

    def project(self, x: Float[Array, "... n_in"]) -> Float[Array, "... blocks_units"]:
        """Input part of every gate, ``x U + b`` (state-independent)."""
        return self.spec.project(self.w, x)

    def recur(
        self, state: Float[Array, "... state"], xp: Float[Array, "... blocks_units"], noise=None
    ) -> Float[Array, "... state"]:
        """State part of the step, given the projected input ``xp = project(x)``."""
        spec = self.spec
        return spec.merge(spec.recur(self, self.w, spec.split(state), xp, noise))

    def recur_carry(self, carry, xp: Float[Array, "... blocks_units"], noise=None):
        """The step on the carry (lstm: ``(h, c)`` kept apart, so that no step of a time loop concatenates
        or slices the state)."""
        return self.spec.recur(self, self.w, carry, xp, noise)

    def __call__(
        self, state: Float[Array, "... state"], x: Float[Array, "... n_in"], noise=None
    ) -> Float[Array, "... state"]:
        return self.recur(state, self.project(x), noise)

    def hidden(self, state: Float[Array, "... state"]) -> Float[Array, "... units"]:
        """The part of the state the readout sees (h; for lstm the first N of ``[h; c]``)."""
        return state[..., : self.units]


def make_cell(arch: str, activation_: str, units: int, n_in: int, options: tuple = ()) -> Cell:
    """A ``Cell`` for inputs of size ``n_in``; raises ``ValueError`` naming a bad arch or activation."""
    get(arch)
    activation(activation_)
    if int(units) < 1:
        raise ValueError(f"units must be a positive integer, got {units!r}")
    return Cell(arch=arch, activation=activation_, units=int(units), n_in=int(n_in), options=tuple(options))


# ---------------------------------------------------------------------------------------------- members


def _import_members() -> None:
    """Import every module of the package (sorted by name; ``_private`` helpers are imported by the cells
    that use them), re-export what each lists in ``__all__``, then order the registry by each spec's
    ``rank`` (ties: by name) — [U]'s four cells first, in [U]'s order, for listings and messages."""
    for module in import_members(__name__, __path__):
        globals().update({k: getattr(module, k) for k in getattr(module, "__all__", ())})
    ordered = sorted(REGISTRY.values(), key=lambda s: (s.rank, s.name))
    REGISTRY.clear()
    REGISTRY.update((s.name, s) for s in ordered)


_import_members()
