"""popdyn's Procrustes shape distance against netrep's (Williams et al. 2021's own code).

netrep's ``LinearMetric(alpha=1, center_columns=True, zero_pad=True, score_method="angular")`` fitted and
scored pair by pair (NumPy, float64), against popdyn's blocked all-pairs pass (``similarity.all_pairs`` of
``procrustes``, float32), on a seeded synthetic population of ``--networks`` networks of mixed widths (16 to
``--max-width`` units, some wider than ``--samples``, the narrower zero-padded by both): prints the max abs
difference of the distances and the seconds of each (popdyn: compile, then a second timed call).

netrep is not a dependency and is never vendored: export it from a git checkout and name the folder,
    git --git-dir=/work/.mirror/ahwillia+netrep/repo archive HEAD | tar -x -C /tmp/netrep
    python benchmarks/procrustes_netrep.py --netrep /tmp/netrep         # or NETREP=/tmp/netrep
Without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from popdyn._devices import setup_host_devices
from popdyn.similarity import SimilarityOptions, all_pairs, prepare, stack


def population(n: int, samples: int, max_width: int, seed: int = 0) -> list[np.ndarray]:
    """Trained-like states: a shared 6-dimensional latent read through each network's own random map."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, 6))
    widths = rng.integers(16, max_width + 1, size=n)
    return [(np.tanh(z @ rng.standard_normal((6, w)) * 0.5 + rng.standard_normal(w) * 0.3)
             + 0.05 * rng.standard_normal((samples, w))).astype(np.float32) for w in widths]  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--netrep", default=os.environ.get("NETREP"), help="folder holding the netrep package")
    p.add_argument("--networks", type=int, default=16)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--max-width", type=int, default=300)
    p.add_argument("--block", type=int, default=8)
    args = p.parse_args(argv)
    if args.netrep:
        sys.path.insert(0, args.netrep)
    try:
        from netrep.metrics import LinearMetric
    except ImportError as e:
        print(f"netrep is not importable ({e}); export it (see this file's docstring) and pass --netrep DIR")
        return 0
    nets = population(args.networks, args.samples, args.max_width)
    n = len(nets)

    t0 = time.perf_counter()
    metric = LinearMetric(alpha=1.0, center_columns=True, zero_pad=True, score_method="angular")
    ref = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            ref[i, j] = ref[j, i] = metric.fit_score(nets[i].astype(np.float64), nets[j].astype(np.float64))
    t_netrep = time.perf_counter() - t0

    opts = SimilarityOptions()
    one = jax.jit(lambda x: prepare(x, opts, ("procrustes",)))

    def popdyn_pass():
        preps = [jax.tree.map(lambda a: np.asarray(a)[None], one(x)) for x in nets]
        return all_pairs(stack(preps), block=args.block)["procrustes"]

    t0 = time.perf_counter()
    popdyn_pass()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = popdyn_pass()
    t_popdyn = time.perf_counter() - t0
    pairs = np.triu_indices(n, 1)
    diff = np.abs(d[pairs] - ref[pairs])
    widths = sorted({x.shape[1] for x in nets})
    print(f"# Procrustes (angular) distance, {n} networks ({len(pairs[0])} pairs), {args.samples} samples, "
          f"widths {widths[0]}–{widths[-1]}; jax {jax.__version__} on {jax.devices()[0].device_kind}")  # fmt: skip
    print(f"distances {ref[pairs].min():.3f}–{ref[pairs].max():.3f} rad; max |popdyn − netrep| {diff.max():.2e} "
          f"(median {np.median(diff):.1e})")  # fmt: skip
    print(f"netrep  (NumPy float64, pair by pair): {t_netrep:.2f} s")
    print(
        f"popdyn  (blocked float32, block {args.block}): {t_popdyn:.2f} s (+ {max(first - t_popdyn, 0):.1f} s compile)"
    )
    return 0


if __name__ == "__main__":
    setup_host_devices()  # one XLA CPU device per core, before JAX starts (as the scripts do)
    sys.exit(main())
