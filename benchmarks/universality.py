"""[U]'s claims on a population trained here: what the paper says beside what popdyn measures.

Trains (or resumes) a CPU-sized flip-flop population with the real command line — ``scripts/sweep.py
+grid=flipflop`` narrowed to {vanilla, ugrnn, gru, lstm} × tanh × 64 units × l2 1e-4 × ``--seeds`` seeds,
no search (``grid.trials=0``: lr 0.05, decay 0.5, momentum 0.9, clip 1), ``--steps`` SGD steps — which
analyses it with popdyn's defaults (fixed points, topology, SVCCA / CKA / topology distances, untrained
vanilla twins, the statistics of ``popdyn.statistics``), then prints:

- how many networks solved the task (final training MSE below ``--solved`` × the MSE of predicting 0);
- fixed points per architecture: all and stable (median and range), and how many sets were cut;
- for every distance (SVCCA, CKA, topology) and every grid factor with two or more values: PERMANOVA
  R² with its bootstrap interval over seeds, pseudo-F, permutation p, and the leave-one-out
  nearest-neighbour accuracy against chance — [U]'s "individuality" (geometry depends on the
  architecture) and "universality" (topology does not) as numbers;
- trained against untrained networks ([U] Fig. 4): the same statistics for the factor ``trained``, and
  the mean SVCCA distance of trained networks to untrained twins and to trained networks of another
  architecture.

    python benchmarks/universality.py                          # ≈ 15 min on 2 CPU cores
    python benchmarks/universality.py --seeds 4 --steps 1000   # quicker, weaker
    python benchmarks/universality.py --out benchmarks/results/universality.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("vanilla", "ugrnn", "gru", "lstm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", default=str(ROOT / "results" / "universality" / "flipflop"))
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--units", type=int, default=64)
    p.add_argument(
        "--solved", type=float, default=0.1, help="solved: final MSE below this × the zero baseline"
    )
    p.add_argument("--out", help="also write the report to this Markdown file")
    p.add_argument("overrides", nargs="*", help="further Hydra overrides for scripts/sweep.py")
    return p.parse_args(argv)


def command(args) -> list[str]:
    return [
        sys.executable, str(ROOT / "scripts" / "sweep.py"), "+grid=flipflop",
        f"grid.arch=[{','.join(ARCHS)}]", "grid.activation=[tanh]", f"grid.units=[{args.units}]",
        "grid.l2=[1e-4]", f"grid.seeds={args.seeds}", "grid.trials=0",
        "grid.hparams={lr:0.05,decay:0.5,momentum:0.9,clip:1.0}", f"train.steps={args.steps}",
        "progress=false", f"hydra.run.dir={args.run_dir}", *args.overrides,
    ]  # fmt: skip


def shown(cmd: list[str]) -> str:
    """The command as one would type it in the repository's root (paths relative to it)."""

    def rel(arg: str) -> str:
        key, eq, value = arg.rpartition("=") if arg.startswith("hydra.run.dir=") else ("", "", arg)
        path = Path(value)
        if path.is_absolute() and path.is_relative_to(ROOT):
            value = str(path.relative_to(ROOT))
        return f"{key}{eq}{value}"

    return " ".join(["python", *(rel(c) for c in cmd[1:])])


def fmt_range(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "–"
    return f"{np.median(values):g} [{values.min():g}–{values.max():g}]"


def report(ds, sim, args, seconds: float, cmd: list[str]) -> str:
    import jax

    from popdyn.tasks import make_task, zero_baseline

    task = make_task("flipflop", **{k: v for k, v in ds.attrs.get("task_params", {}).items()})
    baseline = zero_baseline(task, jax.random.key(0))
    healthy = ~ds.diverged.values
    solved = healthy & (ds.final_loss.values < args.solved * baseline)
    lines = [
        "# [U]'s claims on a population trained here",
        "",
        f"Command: `{shown(cmd)}` ({seconds / 60:.1f} min including training, analysis and figures).",
        "",
        "## Networks and their fixed points",
        "",
        f"Solved: final training MSE < {args.solved:g} × the zero baseline ({baseline:.3f}).",
        "",
        "| arch | networks | diverged | solved | final MSE median | fixed points | stable | cut sets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in ARCHS:
        sel = ds.arch.values == arch
        if not sel.any():
            continue
        ok = sel & healthy
        lines.append(
            f"| {arch} | {int(sel.sum())} | {int((sel & ~healthy).sum())} | {int((sel & solved).sum())} "
            f"| {np.median(ds.final_loss.values[ok]) if ok.any() else float('nan'):.4f} "
            f"| {fmt_range(ds.n_fixed_points.values[ok, 0].astype(float))} "
            f"| {fmt_range(ds.n_stable.values[ok, 0].astype(float))} "
            f"| {int(ds.fp_truncated.values[ok].any(axis=1).sum())} |"
        )
    lines += [
        "",
        "[U] §3.1: a network that solved 3-bit flip-flop holds its 2³ = 8 memories as 8 stable fixed points, "
        "with saddles between them (27 fixed points in the ideal cube).",
        "",
        "## How much the architecture explains each distance",
        "",
        "PERMANOVA over the trained networks (diverged and not compared left out), R² with its 95 % "
        "bootstrap interval over seeds; leave-one-out 1-nearest-neighbour accuracy of the label against "
        "its chance level.",
        "",
        "| distance | factor | networks | R² [95 % CI] | pseudo-F | p | 1-NN accuracy [CI] | chance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = ds.statistics
    for metric in table.metric.values:
        for factor in table.factor.values:
            s = {
                k: float(table.sel(metric=metric, factor=factor, statistic=k)) for k in table.statistic.values
            }
            if not np.isfinite(s["R2"]):
                continue
            lines.append(
                f"| {metric} | {factor} | {s['n']:.0f} | {s['R2']:.3f} [{s['R2_low']:.3f}, {s['R2_high']:.3f}] "
                f"| {s['pseudo_F']:.2f} | {s['p_value']:.3g} "
                f"| {s['nn_accuracy']:.3f} [{s['nn_low']:.3f}, {s['nn_high']:.3f}] | {s['nn_chance']:.3f} |"
            )
    lines += ["", "## Trained against untrained ([U] Fig. 4)", ""]
    if not sim.trained.values.all():
        d = sim.svcca_distance.values
        trained = sim.trained.values
        arch = sim.arch.values
        untrained_arch = sorted(set(arch[~trained]))
        for a in untrained_arch:
            mine = trained & (arch == a)
            to_twins = d[np.ix_(mine, ~trained & (arch == a))]
            to_others = d[np.ix_(mine, trained & (arch != a))]
            lines.append(
                f"Mean SVCCA distance of trained {a} networks to untrained {a} twins: "
                f"{np.nanmean(to_twins):.3f}; to trained networks of the other archs: {np.nanmean(to_others):.3f}."
            )
    else:
        lines.append("No untrained twins in this run (similarity.untrained=[]).")
    lines += [
        "",
        "[U]: representational geometry (SVCCA) differs by architecture (individuality, Figs. 1d, 2c, 3c); "
        "fixed-point topology does not (universality, Figs. 1f, 2e, 3d); SVCCA can rank an untrained "
        "network closer to a trained one than trained networks of another kind are to each other (Fig. 4).",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    cmd = command(args)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.returncode)
    seconds = time.perf_counter() - t0
    from popdyn import store

    ds = store.load(args.run_dir)
    ds.attrs["task_params"] = {
        k: v for k, v in store.read_config(args.run_dir)["task"].items() if k != "name"
    }
    text = report(ds, store.load_similarity(args.run_dir), args, seconds, cmd)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
