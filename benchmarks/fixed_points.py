"""Fixed points of a group of networks: one compiled program vs. a loop over networks vs. plain PyTorch.

Workload: P GRU networks (64 units, tanh, flip-flop inputs, random init ``Model.init`` from key 0 — the
cost of the search does not depend on training), ``--initial`` initial states each (states visited on the
probe inputs plus noise), ``--steps`` Adam steps on ``q(h) = ½‖F(h, x*) − h‖²`` with ``dq_tol = 0`` so that
every engine does exactly ``steps`` steps, no Newton steps (FixedPointFinder has none).

Engines
  popdyn     ``population_program(find_fixed_points …)`` over the P networks on one device: one compiled
             program, ``vmap`` or ``lax.map`` (one member at a time) over the members; and, where there
             are several devices, as ``popdyn.analysis`` runs a group: the Adam descent sharded over
             every device, the rest (Newton, eig through host callbacks) on one.
  jit loop   ``jax.jit(find_fixed_points)`` for ONE network, called for each network in a Python loop.
  torch      FixedPointFinder's method in plain PyTorch: ``torch.nn.GRUCell``-equivalent step, Adam on the
             batch of states of one network, then the same q, one network after another.

FLOPs: each Adam step evaluates F and its gradient on n states: ≈ 3 × 2·n·N·(3N) matmul FLOPs (gru).

    python benchmarks/fixed_points.py                    # P = 32, 256 initial states, 500 steps
    python benchmarks/fixed_points.py --P 8 --steps 100  # quick
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np

from popdyn._devices import setup_host_devices
from popdyn.analyses.dynamics import FixedPointOptions, descend, find_fixed_points, initial_states, refine
from popdyn.model import Model
from popdyn.population import population_program
from popdyn.tasks import make_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import accelerator_peak, matmul_peak  # noqa: E402  (the same peak as there)

UNITS = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--P", type=int, default=32, help="networks in the group")
    p.add_argument("--initial", type=int, default=256, help="initial states per network")
    p.add_argument("--steps", type=int, default=500, help="Adam steps")
    p.add_argument("--loop-nets", type=int, default=4, help="networks timed by the loops")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-device", default="cpu")
    return p.parse_args(argv)


def setup(args):
    task = make_task("flipflop")
    model = Model("gru", "tanh", UNITS, task.n_in, task.n_out)
    keys = jax.random.split(jax.random.key(0), args.P)
    params = jax.vmap(model.init)(keys)
    opts = FixedPointOptions(
        n_initial=args.initial, steps=args.steps, dq_tol=0.0, newton_steps=0, max_points=32
    )
    h0 = jax.jit(jax.vmap(lambda p, k: initial_states(model, task, p, k, opts)[0]))(params, keys)
    return task, model, params, opts, h0


def timed(fn, *a):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*a))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*a))
    return time.perf_counter() - t0, first


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()
    task, model, params, opts, h0 = setup(args)
    print(
        f"... setup (P = {args.P} networks, initial states): {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    x = task.x_star[0]
    one = partial(find_fixed_points, model.step, options=opts)
    rows = _Rows()

    def program(p, h):
        return one(p["cell"], x, h)

    one_dev = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("member",))
    for mb in (None, 1):
        t, first = timed(population_program(program, one_dev, mb), params, h0)
        rows.append((f"popdyn ({'vmap' if mb is None else 'lax.map'}, 1 dev)", args.P, t, first))
    if len(jax.devices()) > 1:  # as popdyn.analysis runs a group: descent sharded, the rest on one device
        all_dev = jax.sharding.Mesh(np.array(jax.devices()), ("member",))
        n_dev = len(jax.devices())
        for mb in (None, 1):
            down = population_program(lambda p, h: descend(model.step, p["cell"], x, h, opts), all_dev, mb)
            fin = population_program(
                lambda p, h0, h: refine(model.step, p["cell"], x, h0, h, opts), one_dev, mb
            )

            def split(p, h0, down=down, fin=fin):
                h = np.asarray(down(p, h0))  # gathered to the host, as analyze_group does
                return fin(p, h0, h)

            t, first = timed(split, params, h0)
            label = f"popdyn ({'vmap' if mb is None else 'lax.map'}, descent on {n_dev} dev)"
            rows.append((label, args.P, t, first))

    single = jax.jit(program)
    n = min(args.loop_nets, args.P)
    pick = [jax.tree.map(lambda a, i=i: a[i], params) for i in range(n)]
    jax.block_until_ready(single(pick[0], h0[0]))
    t0 = time.perf_counter()
    for i in range(n):
        jax.block_until_ready(single(pick[i], h0[i]))
    rows.append(("jit loop (per network)", n, time.perf_counter() - t0, None))

    if not args.no_torch:
        try:
            rows.append(("torch loop, FixedPointFinder-style", n, torch_loop(params, h0, n, args), None))
        except ImportError:
            rows.append(("torch loop (pip install -e .[bench])", n, None, None))

    flops = 3 * 2 * args.initial * UNITS * 3 * UNITS * args.steps  # per network
    peak = matmul_peak() if jax.default_backend() == "cpu" else accelerator_peak()
    print(f"# fixed points: gru-{UNITS}, {args.initial} initial states, {args.steps} Adam steps; "
          f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({len(jax.devices())} devices); "
          f"float32 matmul peak {peak:.1f} GFLOP/s\n")  # fmt: skip
    loop = next(t / k for name, k, t, _ in rows if name.startswith("jit loop"))
    print(
        "| engine | networks timed | seconds | s per network | networks/s | GFLOP/s | % peak | ÷ jit loop "
        "| compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, k, t, first in rows:
        if t is None:
            print(f"| {name} | {k} | — | — | — | — | — | — | — |")
            continue
        per = t / k
        comp = "—" if first is None else f"{first - t:.1f}"
        gflops = flops / per / 1e9
        print(f"| {name} | {k} | {t:.2f} | {per:.3f} | {1 / per:.2f} | {gflops:.1f} | "
              f"{100 * gflops / peak:.0f} | {loop / per:.2f}× | {comp} |")  # fmt: skip


class _Rows(list):
    """The table's rows, each also reported on stderr as it is measured (a run cut short still says
    where its time went)."""

    def append(self, row):
        name, k, t, first = row
        timing = (
            "—" if t is None else f"{t:.2f} s" + ("" if first is None else f" (first call {first:.1f} s)")
        )
        print(f"... {name}, {k} networks: {timing}", file=sys.stderr, flush=True)
        super().append(row)


def torch_loop(params, h0, n, args) -> float:
    """Adam on a batch of states of one network at a time, as FixedPointFinder does (no Newton)."""
    import torch

    dev = torch.device(args.torch_device)

    def to(a):
        return torch.tensor(np.asarray(a), device=dev)

    total = 0.0
    for i in range(n):
        c = jax.tree.map(lambda a, i=i: np.asarray(a[i]), params["cell"])
        w_rg, w_c, u, b = to(c["recurrent"]), to(c["candidate"]), to(c["input"]), to(c["bias"])
        xp = torch.zeros(u.shape[0], device=dev) @ u + b
        h = to(h0[i]).clone().requires_grad_(True)
        opt = torch.optim.Adam([h], lr=0.05)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.01 ** (1 / args.steps))

        def step(h, w_rg=w_rg, w_c=w_c, xp=xp):
            rg = torch.sigmoid(h @ w_rg + xp[: 2 * UNITS])
            r, g = rg[:, :UNITS], rg[:, UNITS:]
            cand = torch.tanh((r * h) @ w_c + xp[2 * UNITS :])
            return g * h + (1 - g) * cand

        t0 = time.perf_counter()
        for _ in range(args.steps):
            q = 0.5 * ((step(h) - h) ** 2).sum(dim=1)
            opt.zero_grad(set_to_none=True)
            q.sum().backward()
            opt.step()
            sched.step()
        float(q.sum())
        total += time.perf_counter() - t0
    return total


if __name__ == "__main__":
    setup_host_devices()  # one XLA CPU device per core, before JAX starts (as the scripts do)
    main()
