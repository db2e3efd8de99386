"""Complete fixed-point sets of trained networks: popdyn's analysis beside FixedPointFinder's.

For each chosen trained network of a run directory (``--run-dir``), both finders start from the same
``--initial`` initial states per network, drawn as popdyn draws them (states visited on the task's probe
inputs plus Gaussian noise of std ``dynamics.noise``), at the task's condition x* (flip-flop: zero input):

  popdyn   ``popdyn.analyses.dynamics.analyze_group`` with the run's dynamics defaults (``dynamics.*`` of
           ``conf/dynamics/default.yaml`` unless overridden with ``--set key=value``): the whole analysis
           of the group — Adam descent, Newton steps, selection, Jacobians, eigenvalues and the
           flip-flop transition runs —, compilation included (one group program per arch, as a sweep
           runs it); time per network = the group's wall time / networks; then the same group again in
           the same process (*compiled*: its programs already built — the compute alone, what a group of
           shapes already compiled in that process costs); then the same group in a new process that
           finds both programs in JAX's persistent compilation cache (*cached*: what every later
           process costs — a second sweep, the untrained twins, the other jobs of a multirun). The
           first timing starts from an empty cache (a fresh temporary folder, or ``--cache-dir``).
  FFF      FixedPointFinder's PyTorch version (Golub & Sussillo 2018; ``FixedPointFinderTorch`` with its
           defaults: Adam from lr 1.0 with ReduceLROnPlateau, tol_q 1e-12, tol_dq 1e-20, at most 5,000
           steps, tol_unique 1e-3, distance-outlier exclusion, Jacobians and their eigen-decomposition),
           one network after another, on a PyTorch transcription of popdyn's cell (same parameters,
           same equations; checked against popdyn's step before timing).  FixedPointFinder is not on PyPI:
           point ``--fff`` (or ``$FIXED_POINT_FINDER``) at a checkout of
           https://github.com/mattgolub/fixed-point-finder.

Counts per network: FFF's distinct points (it keeps every optimised point, converged or not), those of them
that are true fixed points (``q < dynamics.q_tol`` evaluated in float64 with popdyn's step) and how many of
those are stable (every |λ| < 1 of popdyn's Jacobian at that point), and popdyn's distinct points, stable
points, and how many of FFF's true points popdyn has (a popdyn point within ``10 · unique_tol``).

    python benchmarks/fixed_point_sets.py --run-dir results/universality/flipflop --fff ~/fixed-point-finder
    python benchmarks/fixed_point_sets.py --run-dir RUN --archs vanilla,gru --networks 4
    python benchmarks/fixed_point_sets.py --cost 64,256 --archs vanilla,gru,lstm --networks 4

``--cost 64,256`` instead measures what the default analysis costs per network at those widths — wall time
(compilation included, a group of ``--networks``) and the process's peak memory, each row in a fresh
process set up as popdyn's entry points are (one XLA CPU device per core) with an empty compilation
cache — on randomly initialised flip-flop networks (``Model.init``, key 0) of ``--archs``: the descents
from ``n_initial`` states, Newton on the distinct candidates, and the linearisation and transition runs
of the points found (few for an untrained network; on trained ones the points found add their share,
measured by the main mode).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from popdyn import store
from popdyn._devices import setup_host_devices
from popdyn.analyses import dynamics
from popdyn.analyses.dynamics import initial_states
from popdyn.config import build_sweep


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", help="a trained run (scripts/sweep.py ... analyze=false will do)")
    p.add_argument("--cost", help="comma-separated widths: time and peak memory of the default analysis")
    p.add_argument("--fff", default=os.environ.get("FIXED_POINT_FINDER"), help="FixedPointFinder checkout")
    p.add_argument("--archs", default="vanilla,gru", help="comma-separated archs of the run to compare")
    p.add_argument("--networks", type=int, default=4, help="networks per arch (the first ones by member id)")
    p.add_argument(
        "--initial", type=int, default=None, help="initial states per network (default: dynamics.n_initial)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a dynamics.* option")
    p.add_argument("--no-fff", action="store_true", help="popdyn only")
    p.add_argument(
        "--repeat",
        default="4",
        help="comma-separated: also time popdyn on a group of this many copies of the networks each "
        "(compilation amortised; 15 × 8 networks = 120, a group of [U]'s grid)",
    )
    p.add_argument("--out", help="also write the report to this Markdown file")
    p.add_argument(
        "--cache-dir",
        help="JAX's persistent compilation cache for popdyn's programs (default: a new temporary folder, "
        "so that the first group compiles)",
    )
    p.add_argument("--time-only", help=argparse.SUPPRESS)  # internal: one arch's group time, as JSON
    return p.parse_args(argv)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(text.lower(), text)


# ------------------------------------------------------------------------------------------- PyTorch
def torch_cell(arch: str, activation: str, cell: dict):
    """A ``torch.nn.Module`` with FixedPointFinderTorch's interface, ``(inputs [B, 1, M], state [1, B, D])
    -> (outputs [B, 1, D], state' [1, B, D])``, computing popdyn's one-step map ``F(state, x)`` (layout of
    ``popdyn.cells``: ``h @ K``, fused gate blocks; lstm state ``[h; c]``)."""
    import torch

    f = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    params = {k: torch.nn.Parameter(torch.as_tensor(np.asarray(v, np.float32)), requires_grad=False)
              for k, v in cell.items()}  # fmt: skip
    n = params["recurrent"].shape[0]

    class Cell(torch.nn.Module):
        batch_first = True

        def __init__(self):
            super().__init__()
            self.p = torch.nn.ParameterDict(params)

        def step(self, h, x):
            p = self.p
            xp = x @ p["input"] + p["bias"]
            if arch == "vanilla":
                return f(h @ p["recurrent"] + xp)
            if arch == "ugrnn":
                pre = h @ p["recurrent"] + xp
                c, g = f(pre[:, :n]), torch.sigmoid(pre[:, n:])
                return g * h + (1 - g) * c
            if arch == "gru":
                rg = torch.sigmoid(h @ p["recurrent"] + xp[:, : 2 * n])
                r, g = rg[:, :n], rg[:, n:]
                c = f((r * h) @ p["candidate"] + xp[:, 2 * n :])
                return g * h + (1 - g) * c
            hh, cc = h[:, :n], h[:, n:]
            pre = hh @ p["recurrent"] + xp
            gates = torch.sigmoid(pre[:, : 3 * n])
            i, fg, o = gates[:, :n], gates[:, n : 2 * n], gates[:, 2 * n :]
            c_new = fg * cc + i * f(pre[:, 3 * n :])
            return torch.cat([o * f(c_new), c_new], dim=1)

        def forward(self, inputs, state):
            out = self.step(state[0], inputs[:, 0])
            return out[:, None], out[None]

    if arch not in ("vanilla", "ugrnn", "gru", "lstm"):
        raise SystemExit(f"no PyTorch transcription of {arch!r}")
    return Cell()


def fff_find(fff_dir: str, module, h0: np.ndarray, x_star: np.ndarray):
    """FixedPointFinderTorch with its defaults from ``h0`` at input ``x_star``: (points [n, D], seconds)."""
    import torch

    if fff_dir not in sys.path:
        sys.path.insert(0, fff_dir)
    from FixedPointFinderTorch import FixedPointFinderTorch

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call whatever `verbose` says
        finder = FixedPointFinderTorch(module, verbose=False, super_verbose=False)
        unique, _ = finder.find_fixed_points(h0.astype(np.float32), x_star[None].astype(np.float32))
    return np.asarray(unique.xstar, np.float64), time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ counting
def q64(step, cell, points: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``q = ½‖F(h, x) − h‖²`` of each point, in float64 (NumPy) from popdyn's step run at float32 with
    the points rounded to float32 — a point is judged by the map both finders see."""
    f = jax.jit(jax.vmap(lambda h: step(cell, h, jnp.asarray(x))))
    out = np.asarray(f(jnp.asarray(points, jnp.float32)), np.float64)
    return 0.5 * np.sum((out - points.astype(np.float32).astype(np.float64)) ** 2, axis=1)


def stable(step, cell, points: np.ndarray, x: np.ndarray) -> np.ndarray:
    if not len(points):
        return np.zeros(0, bool)
    jac = jax.jit(jax.vmap(jax.jacobian(lambda h: step(cell, h, jnp.asarray(x)))))
    j = np.asarray(jac(jnp.asarray(points, jnp.float32)), np.float64)
    return np.array([np.abs(np.linalg.eigvals(m)).max() < 1.0 for m in j])


def composed(overrides: list[str]) -> dict:
    """The config ``scripts/sweep.py`` would build from ``overrides`` (Hydra's compose over ``conf/``)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def cost_one(arch: str, units: int, networks: int) -> dict:
    """The default analysis of ``networks`` random flip-flop networks (one group), in this process."""
    import resource

    from popdyn.model import Model

    sweep = build_sweep(composed(["+grid=flipflop", f"grid.arch=[{arch}]", "grid.activation=[tanh]",
                                  f"grid.units=[{units}]", "grid.l2=[1e-4]", f"grid.seeds={networks}"]))  # fmt: skip
    group = sweep.groups[0]
    model = Model.for_task(group.arch, group.activation, group.units, sweep.task, sweep.unroll)
    params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), networks))
    gp = store.GroupParams(model, jax.tree.map(np.asarray, params), np.arange(networks))
    t0 = time.perf_counter()
    out = dynamics.analyze_group(sweep, gp)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    return {"arch": arch, "units": units, "networks": networks, "devices": jax.device_count(),
            "s_per_net": seconds / networks, "peak_gib": peak,
            "points": float(np.median(out["n_fixed_points"]))}  # fmt: skip


def cost(args) -> None:
    rows = []
    here = str(Path(__file__).resolve().parent)
    for units in (int(u) for u in args.cost.split(",")):
        for arch in args.archs.split(","):
            # as popdyn's entry points run: one XLA CPU device per core, and a compilation cache that
            # starts empty (a new temporary folder per row), so that each row compiles its programs
            code = (f"import json, sys; sys.path.insert(0, {here!r}); import fixed_point_sets as f; "
                    f"f.setup_host_devices(); "
                    f"print(json.dumps(f.cost_one({arch!r}, {units}, {args.networks})))")  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="popdyn-jax-") as cache:
                env = os.environ | {"POPDYN_COMPILATION_CACHE": cache}
                r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   env=env)  # fmt: skip
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr, flush=True)
    opts = build_sweep(composed(["+grid=flipflop"])).fixed_points
    lines = [
        f"default dynamics (n_initial={opts.n_initial}, steps={opts.steps}, max_points={opts.max_points}), "
        f"random flip-flop networks, {os.cpu_count()} cores ({rows[0]['devices']} XLA CPU devices, an "
        f"empty compilation cache per row), jax {jax.__version__}",
        "",
        "| arch | units | networks | s per network (compilation included) | peak memory of the process (GiB) "
        "| fixed points (median) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['arch']} | {r['units']} | {r['networks']} | {r['s_per_net']:.2f} | {r['peak_gib']:.2f} "
        f"| {r['points']:g} |"
        for r in rows
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


def main(argv=None):
    args = parse_args(argv)
    if args.cost:
        return cost(args)
    if not args.run_dir:
        raise SystemExit("--run-dir is needed (or --cost)")
    # popdyn's programs go to a cache that starts empty, so that the first timing compiles them
    os.environ["POPDYN_COMPILATION_CACHE"] = args.cache_dir or tempfile.mkdtemp(prefix="popdyn-jax-")
    setup_host_devices()  # one XLA CPU device per core, before JAX starts (as the scripts do)
    if args.time_only:
        sweep, groups = _sweep_and_groups(args)
        print(json.dumps({"s": per_network(sweep, _subgroup(groups, args.time_only, args))[1]}))
        return
    if not args.no_fff and not args.fff:
        raise SystemExit("FixedPointFinder not found: pass --fff PATH (a checkout) or --no-fff")
    if not args.no_fff:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    sweep, groups = _sweep_and_groups(args)
    opts = sweep.fixed_points
    task = sweep.task
    x_star = np.asarray(task.x_star[0])
    repeats = [int(r) for r in str(args.repeat).split(",") if int(r) > 1]
    rows = []
    for arch in args.archs.split(","):
        sub = _subgroup(groups, arch, args)
        n = len(sub.member)
        out, t_popdyn = per_network(sweep, sub)
        t_compiled = per_network(sweep, sub)[1]  # the same group again: programs built, compute alone
        t_cached = cached_seconds(arch, argv)  # a new process, both programs in the persistent cache
        t_big = {}
        for r in repeats:  # the same networks again, as one bigger group: what a sweep's group costs
            big = store.GroupParams(
                sub.model,
                jax.tree.map(lambda a, r=r: np.concatenate([a] * r), sub.params),
                np.arange(n * r),
            )
            t_big[r] = per_network(sweep, big)[1]
        keys = dynamics.member_keys(sweep.seed, sub.member)
        for m in range(n):
            params = jax.tree.map(lambda a, m=m: a[m], sub.params)
            k_init, _ = jax.random.split(jax.random.wrap_key_data(keys[m]))
            h0 = np.asarray(initial_states(sub.model, task, params, k_init, opts)[0], np.float64)
            ours = out["fp_states"][m, 0][out["fp_valid"][m, 0]]
            row = {"arch": arch, "member": int(sub.member[m]), "popdyn": len(ours),
                   "popdyn_stable": int(out["n_stable"][m, 0]), "popdyn_s": t_popdyn,
                   "popdyn_compiled_s": t_compiled, "popdyn_cached_s": t_cached,
                   "truncated": bool(out["fp_truncated"][m, 0])}  # fmt: skip
            row |= {f"popdyn_x{r}_s": t for r, t in t_big.items()}
            if not args.no_fff:
                module = torch_cell(
                    arch, sub.model.activation, {k: np.asarray(v) for k, v in params["cell"].items()}
                )
                check = module.step(torch.as_tensor(h0[:4], dtype=torch.float32),
                                    torch.as_tensor(np.repeat(x_star[None], 4, 0))).numpy()  # fmt: skip
                ref = np.asarray(jax.vmap(sub.model.step, (None, 0, None))(params["cell"], h0[:4], x_star))
                np.testing.assert_allclose(check, ref, rtol=1e-4, atol=1e-5)
                pts, t_fff = fff_find(args.fff, module, h0, x_star)
                true = pts[q64(sub.model.step, params["cell"], pts, x_star) < opts.q_tol]
                st = stable(sub.model.step, params["cell"], true, x_star)
                have = [
                    np.min(np.linalg.norm(ours - p, axis=1), initial=np.inf) < 10 * opts.unique_tol
                    for p in true
                ]
                row |= {"fff": len(pts), "fff_true": len(true), "fff_stable": int(st.sum()),
                        "fff_missed": int(len(true) - np.sum(have)), "fff_s": t_fff}  # fmt: skip
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    report = table(rows, args, opts)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


def _sweep_and_groups(args):
    """The run's sweep with today's dynamics defaults (and ``--set``, ``--initial``) and its groups."""
    run_dir = Path(args.run_dir)
    config = store.read_config(run_dir)
    # today's dynamics defaults (conf/dynamics/default.yaml), not those the run was analysed with
    config["dynamics"] = composed(["+grid=flipflop"]).get("dynamics") or {}
    for item in args.set:
        key, _, value = item.partition("=")
        config.setdefault("dynamics", {})[key] = _value(value)
    sweep = build_sweep(config)
    if args.initial:
        sweep = replace(sweep, fixed_points=replace(sweep.fixed_points, n_initial=args.initial))
    return sweep, store.load_params(run_dir)


def _subgroup(groups, arch: str, args) -> store.GroupParams:
    """The first ``--networks`` members of the run's first ``arch`` group."""
    names = [g for g in groups if groups[g].model.arch == arch]
    if not names:
        raise SystemExit(f"no {arch} group in {args.run_dir}; it has {', '.join(groups)}")
    gp = groups[names[0]]
    n = min(args.networks, len(gp.member))
    return store.GroupParams(gp.model, jax.tree.map(lambda a: np.asarray(a)[:n], gp.params), gp.member[:n])


def cached_seconds(arch: str, argv) -> float:
    """Per network: the same group analysed in a new process with this one's compilation cache."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = [sys.executable, __file__, *argv, "--cache-dir", os.environ["POPDYN_COMPILATION_CACHE"],
           "--time-only", arch]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["s"]


def per_network(sweep, gp) -> tuple[dict, float]:
    """``dynamics.analyze_group`` of ``gp``: its output and wall time per network."""
    t0 = time.perf_counter()
    out = dynamics.analyze_group(sweep, gp)
    return out, (time.perf_counter() - t0) / len(gp.member)


def table(rows, args, opts) -> str:
    repeats = [int(r) for r in str(args.repeat).split(",") if int(r) > 1]
    cols = ["arch", "member", "popdyn", "popdyn_stable", "truncated", "popdyn_s", "popdyn_compiled_s",
            "popdyn_cached_s"]  # fmt: skip
    cols += [f"popdyn_x{r}_s" for r in repeats]
    if not args.no_fff:
        cols += ["fff", "fff_true", "fff_stable", "fff_missed", "fff_s"]
    names = {"popdyn": "popdyn points", "popdyn_stable": "popdyn stable", "popdyn_s": "popdyn s/net",
             "popdyn_compiled_s": "popdyn s/net, compiled", "popdyn_cached_s": "popdyn s/net, cached",
             **{f"popdyn_x{r}_s": f"popdyn s/net, group ×{r}" for r in repeats},
             "fff": "FFF points", "fff_true": f"FFF q<{opts.q_tol:g}", "fff_stable": "FFF stable",
             "fff_missed": "FFF true not in popdyn", "fff_s": "FFF s/net"}  # fmt: skip

    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = [
        f"{args.networks} networks per arch, {opts.n_initial} initial states, dynamics: max_points="
        f"{opts.max_points}, steps={opts.steps}, compact_after={opts.compact_after}, q_tol={opts.q_tol:g}, unique_tol={opts.unique_tol:g}; "
        f"jax {jax.__version__}, {jax.device_count()} device(s), {os.cpu_count()} cores",
        "",
        "| " + " | ".join(names.get(c, c) for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    if not args.no_fff:
        for arch in dict.fromkeys(r["arch"] for r in rows):
            sel = [r for r in rows if r["arch"] == arch]
            fff, ours, warm, cached = (
                np.mean([r[k] for r in sel])
                for k in ("fff_s", "popdyn_s", "popdyn_compiled_s", "popdyn_cached_s")
            )
            fff_median = np.median([r["fff_s"] for r in sel])
            big = {r: np.mean([x[f"popdyn_x{r}_s"] for x in sel]) for r in repeats}
            bigger = "".join(f"; a group {r}× larger: {t:.2f} s, {fff / t:.1f}×" for r, t in big.items())
            counts = [r["popdyn"] - r["fff_true"] for r in sel]
            lines.append(
                f"\n{arch}: FFF {fff:.2f} s per network (median {fff_median:.2f}), popdyn {ours:.2f} s "
                f"({fff / ours:.1f}×{bigger}; compiled: {warm:.2f} s, {fff / warm:.1f}×; cached in a new "
                f"process: {cached:.2f} s, {fff / cached:.1f}×); "
                f"popdyn's true points minus FFF's: {min(counts)} to {max(counts)}, FFF's true points popdyn "
                f"lacks: {sum(r['fff_missed'] for r in sel)} in all"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
