"""All-pairs SVCCA and CKA of a population: popdyn's blocked passes vs. a per-pair NumPy loop.

Workload: a synthetic population of up to max(``--sizes``) networks sized like the paper's, every random
draw seeded (NumPy ``default_rng(0)`` for the population, ``default_rng((0, i))`` for network i's states,
so a network's states can be regenerated at any time and populations of every size are nested: P takes
networks 0 … P−1).  Each network has ``--samples`` probe states (default ``similarity.samples``, 512) of
width 64, 128 or 256 units (uniform), a quarter of them "lstm" with the state ``[h; c]`` of twice that
width.  States are trained-like: a low-dimensional signal ``z = latent @ W + b`` shared through a common
S × 8 latent (decaying spectrum) with a random W per network (gain 0.2–0.6), ``h = tanh(z)`` and
``c = z`` for lstm, plus noise of 0.02 — so SVCCA keeps ~7–30 principal components at 95 % variance.

popdyn (what ``popdyn.analysis.compare_run`` runs)
  prepare    ``jax.vmap(similarity.prepare)`` over chunks of ``--block`` networks of one group (one arch
             and width), as ``_prepare_group`` does; each basis cut to its chunk's largest k and zero-padded
             to the population's (the same arrays as cutting to the group's largest k and padding to the
             population's, as ``_prepare_group`` / ``compare_run`` do, with less memory held at once).
             States are generated chunk by chunk (not timed: ``states s`` in the log line), so memory
             stays bounded by the prepared population.  A chunk shape seen for the first time is run twice:
             the second call is timed, first − second counts as compile.
  all-pairs  ``similarity.all_pairs(prepared, (metric,), block)`` for SVCCA and for CKA apart (the two passes
             of ``all_pairs(prepared, ("svcca", "cka"))``, which are independent), each called twice: the
             compiled programs depend on the population (its size, and for SVCCA the widths that the
             networks' k give the blocks), so the warm-up is the same call; the second is timed and
             first − second counts as compile.

NumPy reference: one pair at a time from the raw states, float64 — centre, SVD, keep the top components
reaching 95 % of the variance, CCA of the reduced data by QR + SVD (mean canonical correlation), linear CKA
``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` — timed on ``--ref-pairs`` random pairs and scaled to P(P−1)/2 pairs.
Its per-network part (centre, SVD, QR, ‖XᵀX‖) is timed apart, once per network (each pair counts both
networks' times, as the loop recomputes them), so the table also gives a NumPy loop that caches that part
per network (P × per-network + pairs × per-pair).  The NumPy loop runs first, for every size, in the fresh
process: multi-threaded BLAS slows down many-fold when anything else wants the cores.  ``÷`` = NumPy time
÷ popdyn prepare + all-pairs.  The same sampled pairs check popdyn's distances against the reference (max |Δ|; pairs where the
two disagree on k are counted: a cumulative variance fraction within float32 rounding of 0.95).

Memory: ``RSS before → peak`` is the resident memory before a size's prepare and its peak during prepare +
all-pairs: the kernel's VmHWM, restarted for each size through ``/proc/self/clear_refs`` (where that is not
possible, ``getrusage(RUSAGE_SELF).ru_maxrss``, the process maximum so far; sizes run in increasing order).
``prepared`` is the stacked bases + packed Gram matrices (S(S+1)/2 floats per network) that ``all_pairs``
holds.

    python benchmarks/similarity.py                 # P = 100, 1,000, 2,880
    python benchmarks/similarity.py --quick         # P = 50, 200; 50 reference pairs
    python benchmarks/similarity.py --sizes 1000 --ref-pairs 100 --block 128
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import resource
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from popdyn import similarity
from popdyn._devices import setup_host_devices
from popdyn.similarity import Basis, SimilarityOptions, all_pairs, packed_gram, principal_basis

METRICS = ("svcca", "cka")  # the two metrics this benchmark times and checks against NumPy


class Prepared(NamedTuple):
    """The stacked SVCCA bases and CKA Grams of a population (what similarity.prepare gives for these two)."""

    basis: np.ndarray
    k: np.ndarray
    gram: np.ndarray


def prepare(x, keep_variance: float) -> Prepared:
    """One network's SVCCA basis and CKA Gram (similarity.prepare for ("svcca", "cka"))."""
    b = principal_basis(x, keep_variance)
    return Prepared(b.basis, b.k, packed_gram(x))


def _metrics(prep: Prepared) -> dict:
    """The stacked population as similarity.all_pairs takes it: ``{metric: its pytree}``."""
    return {"svcca": Basis(prep.basis, prep.k), "cka": prep.gram}


sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import matmul_peak  # noqa: E402  (the same peak as there)

SEED = 0
WIDTHS = (64, 128, 256)
LSTM_FRACTION = 0.25
LATENT = 8
GAIN = (0.2, 0.6)
NOISE = 0.02
GIB = 2.0**30


def parse_args(argv=None):
    defaults = SimilarityOptions()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 2880], help="population sizes P")
    p.add_argument("--samples", type=int, default=defaults.samples, help="probe states per network")
    p.add_argument("--keep-variance", type=float, default=defaults.of("svcca").keep_variance)
    p.add_argument("--block", type=int, default=defaults.block, help="networks per block (similarity.block)")
    p.add_argument("--ref-pairs", type=int, default=200, help="pairs timed by the NumPy loop")
    p.add_argument("--quick", action="store_true", help="P = 50, 200 and 50 reference pairs")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.ref_pairs = [50, 200], min(args.ref_pairs, 50)
    args.sizes = sorted(args.sizes)
    return args


# ---------------------------------------------------------------------------------- the population
class Population:
    """Network i: ``units[i]`` units, ``lstm[i]`` (state ``[h; c]``, twice as wide), states on demand."""

    def __init__(self, n: int, samples: int, seed: int = SEED):
        rng = np.random.default_rng(seed)
        self.seed, self.samples = seed, samples
        self.units = rng.choice(WIDTHS, n)
        self.lstm = rng.permutation(n) < round(LSTM_FRACTION * n)
        self.gain = rng.uniform(*GAIN, n)
        latent = rng.standard_normal((samples, LATENT)) * (1.0 + np.arange(LATENT)) ** -0.7
        self.latent = latent / latent.std()

    def width(self, i: int) -> int:
        return int(self.units[i]) * (2 if self.lstm[i] else 1)

    def states(self, i: int) -> np.ndarray:
        """[samples, width] float32; the same array every call."""
        r = np.random.default_rng((self.seed, i))
        n = int(self.units[i])
        z = self.latent @ (self.gain[i] * r.standard_normal((LATENT, n))) + 0.3 * r.standard_normal(n)
        x = np.concatenate([np.tanh(z), z], axis=1) if self.lstm[i] else np.tanh(z)
        return (x + NOISE * r.standard_normal(x.shape)).astype(np.float32)


def _status_gib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith(field + ":"))
        return int(line.split()[1]) * 1024 / GIB  # kB
    except (OSError, StopIteration):
        return None


def reset_peak() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) from the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_gib("VmHWM") is not None
    except OSError:
        return False


def peak_gib(reset: bool) -> float:
    """Peak resident memory since :func:`reset_peak` (VmHWM), else the process maximum (ru_maxrss, KiB)."""
    hwm = _status_gib("VmHWM") if reset else None
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


_vmapped = {}  # keep_variance → jit(vmap(prepare))
_seen = set()  # (keep_variance, chunk shape) already compiled


def prepare_population(pop: Population, p: int, args) -> tuple[Prepared, dict]:
    """The stacked :class:`Prepared` of networks 0 … p−1, in network order, and timings."""
    kv = args.keep_variance
    if kv not in _vmapped:
        _vmapped[kv] = jax.jit(jax.vmap(lambda x: prepare(x, kv)))
    many = _vmapped[kv]
    groups = {}
    for i in range(p):
        groups.setdefault((bool(pop.lstm[i]), int(pop.units[i])), []).append(i)
    n_gram = args.samples * (args.samples + 1) // 2
    gram = np.empty((p, n_gram), np.float32)
    k = np.empty(p, np.int32)
    bases = []  # (indices, basis cut to the chunk's largest k)
    t = {"states": 0.0, "prepare": 0.0, "compile": 0.0}
    for _, idx in sorted(groups.items()):
        for c in range(0, len(idx), args.block):
            chunk = idx[c : c + args.block]
            t0 = time.perf_counter()
            x = jnp.asarray(np.stack([pop.states(i) for i in chunk]))
            t["states"] += time.perf_counter() - t0
            new = (kv, x.shape) not in _seen
            if new:  # first call of this shape: compile + run, then time the second
                t0 = time.perf_counter()
                jax.block_until_ready(many(x))
                first = time.perf_counter() - t0
            t0 = time.perf_counter()
            prep = many(x)
            kk = np.asarray(prep.k)
            kmax = int(kk.max())
            bases.append((chunk, np.ascontiguousarray(np.asarray(prep.basis)[:, :, :kmax])))
            gram[chunk], k[chunk] = np.asarray(prep.gram), kk
            dt = time.perf_counter() - t0
            t["prepare"] += dt
            if new:
                t["compile"] += max(first - dt, 0.0)
                _seen.add((kv, x.shape))
            del x, prep
    t0 = time.perf_counter()
    width = max(b.shape[-1] for _, b in bases)
    basis = np.zeros((p, args.samples, width), np.float32)
    for chunk, b in bases:
        basis[chunk, :, : b.shape[-1]] = b
    t["prepare"] += time.perf_counter() - t0
    return Prepared(basis, k, gram), t


# ---------------------------------------------------------------------------------- NumPy reference
def numpy_network(x: np.ndarray, keep: float):
    """Per-network part: centred states, orthonormal basis of the reduced data, k, ‖XᵀX‖_F."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    frac = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(frac, keep)) + 1  # smallest k reaching `keep` of the variance
    q, _ = np.linalg.qr(u[:, :k] * s[:k])  # the reduced data, orthonormalised for the CCA
    return x, q, k, np.linalg.norm(x.T @ x)


def numpy_pair(a, b) -> tuple[float, float]:
    """Per-pair part: (SVCCA distance, CKA distance)."""
    x, qx, _, nx = a
    y, qy, _, ny = b
    rho = np.linalg.svd(qx.T @ qy, compute_uv=False)  # canonical correlations, min(kx, ky) of them
    cka = np.linalg.norm(y.T @ x) ** 2 / (nx * ny)
    return 1.0 - float(np.mean(rho)), 1.0 - float(cka)


_network_refs = {}  # (network, keep_variance) → (numpy_network result, its seconds), shared by every size


def _network_ref(pop: Population, i: int, keep: float):
    """A network's per-network part, timed once (the loop recomputes it for every pair: its time counts
    once per pair all the same)."""
    if (i, keep) not in _network_refs:
        x = pop.states(i)
        t0 = time.perf_counter()
        out = numpy_network(x, keep)
        _network_refs[i, keep] = out, time.perf_counter() - t0
    return _network_refs[i, keep]


def numpy_reference(pop: Population, p: int, args) -> dict:
    """Time the per-pair loop on ``--ref-pairs`` random pairs of networks 0 … p−1, keeping its distances."""
    rng = np.random.default_rng((SEED, p))
    n_pairs = p * (p - 1) // 2
    flat = rng.choice(n_pairs, min(args.ref_pairs, n_pairs), replace=False)
    i, j = np.triu_indices(p, 1)
    a, b = i[flat], j[flat]
    t_net = t_pair = 0.0
    values, ks = [], []
    for ia, ib in zip(a, b):
        (na, ta), (nb, tb) = (
            _network_ref(pop, ia, args.keep_variance),
            _network_ref(pop, ib, args.keep_variance),
        )
        t0 = time.perf_counter()
        values.append(numpy_pair(na, nb))
        t_net, t_pair = t_net + ta + tb, t_pair + time.perf_counter() - t0
        ks.append((na[2], nb[2]))
    n = len(flat)
    per_net, per_pair = t_net / (2 * n), t_pair / n  # seconds per network part and per pair part
    return {
        "pairs": n,
        "a": a,
        "b": b,
        "values": np.array(values),  # [n, len(METRICS)] distances
        "k": np.array(ks),
        "per_net": per_net,
        "per_pair": per_net * 2 + per_pair,
        "loop": n_pairs * (2 * per_net + per_pair),
        "cached": p * per_net + n_pairs * per_pair,
    }


def check(ref: dict, dist: dict, k: np.ndarray) -> tuple[dict, int]:
    """Max |popdyn − NumPy| per metric over the reference pairs, and how many pairs disagree on a k."""
    err = {
        m: float(np.max(np.abs(dist[m][ref["a"], ref["b"]] - ref["values"][:, c])))
        for c, m in enumerate(METRICS)
    }
    k_differ = int(np.sum((ref["k"][:, 0] != k[ref["a"]]) | (ref["k"][:, 1] != k[ref["b"]])))
    return err, k_differ


# ---------------------------------------------------------------------------------- all-pairs
def time_all_pairs(prep: Prepared, args) -> tuple[dict, dict, dict]:
    """``all_pairs`` one metric at a time (its passes are independent): distances, steady seconds and
    compile seconds (first call − second call) per metric."""
    dist, steady, compile_s = {}, {}, {}
    for m in METRICS:
        t0 = time.perf_counter()
        all_pairs(_metrics(prep), (m,), args.block)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist[m] = all_pairs(_metrics(prep), (m,), args.block)[m]
        steady[m] = time.perf_counter() - t0
        compile_s[m] = max(first - steady[m], 0.0)
    return dist, steady, compile_s


def run_size(pop: Population, p: int, args, ref: dict) -> dict:
    gc.collect()
    rss_before = _status_gib("VmRSS") or float("nan")
    reset = reset_peak()
    prep, t = prepare_population(pop, p, args)
    rss_prep = peak_gib(reset)
    dist, steady, compile_pairs = time_all_pairs(prep, args)
    rss_pairs = peak_gib(reset)
    nbytes = sum(a.nbytes for a in prep)
    err, k_differ = check(ref, dist, prep.k)
    row = {
        "P": p,
        "pairs": p * (p - 1) // 2,
        "kmax": prep.basis.shape[-1],
        "kmed": float(np.median(prep.k)),
        "states": t["states"],
        "prepare": t["prepare"],
        "metric_s": steady,
        "all_pairs": sum(steady.values()),
        "compile_prep": t["compile"],
        "compile_pairs": sum(compile_pairs.values()),
        "rss_before": rss_before,
        "peak_reset": reset,
        "rss_prep": rss_prep,
        "rss": rss_pairs,
        "prepared_gib": nbytes / GIB,
        "ref": ref,
        "err": err,
        "k_differ": k_differ,
    }
    del prep, dist
    gc.collect()
    return row


def main(argv=None):
    args = parse_args(argv)
    pop = Population(max(args.sizes), args.samples)
    peak = matmul_peak()
    rss0 = _status_gib("VmRSS") or float("nan")
    package = Path(similarity.__file__).parent
    src = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(package.glob("*.py")))).hexdigest()[:10]
    print(
        f"# all-pairs SVCCA + CKA: {args.samples} probe states, keep {args.keep_variance} of the variance, "
        f"block {args.block}; widths {WIDTHS} units, {LSTM_FRACTION:.0%} lstm (×2); jax {jax.__version__}, "
        f"numpy {np.__version__} on {jax.devices()[0].device_kind} ({len(jax.devices())} devices; all-pairs "
        f"on one); popdyn/similarity/*.py sha1 {src}; float32 matmul peak {peak:.1f} GFLOP/s; RSS at start {rss0:.2f} GiB\n",
        flush=True,
    )
    refs = {}  # the NumPy loop first, in a fresh process, on every size's sampled pairs
    for p in args.sizes:
        refs[p] = r = numpy_reference(pop, p, args)
        print(
            f"NumPy P={p}: {r['pairs']} pairs, {1e3 * r['per_pair']:.1f} ms/pair "
            f"({1e3 * r['per_net']:.1f} ms per network part)",
            flush=True,
        )
    _network_refs.clear()
    rows = []
    for p in args.sizes:
        row = run_size(pop, p, args, refs[p])
        rows.append(row)
        r, ms = row["ref"], row["metric_s"]
        print(
            f"P={p}: k median {row['kmed']:.0f}, max {row['kmax']}; states {row['states']:.1f} s (not timed), "
            f"prepare {row['prepare']:.2f} s, all-pairs {row['all_pairs']:.2f} s (svcca "
            f"{ms['svcca']:.2f} + cka {ms['cka']:.2f}), compile {row['compile_prep']:.1f} + "
            f"{row['compile_pairs']:.1f} s; RSS before {row['rss_before']:.2f} "
            f"GiB, peak ({'VmHWM since then' if row['peak_reset'] else 'process ru_maxrss'}) after prepare "
            f"{row['rss_prep']:.2f} GiB, after all-pairs {row['rss']:.2f} GiB; vs NumPy on {r['pairs']} pairs: "
            f"max |Δ| svcca {row['err']['svcca']:.1e}, cka {row['err']['cka']:.1e}; {row['k_differ']} pairs "
            f"differ in k",
            flush=True,
        )
    print()
    print(
        "| P | pairs | k median / max | prepare s | SVCCA s | CKA s | popdyn s | pairs/s | compile s "
        "| RSS before → peak GiB | prepared GiB | NumPy ms/pair | NumPy loop s (scaled) | ÷ NumPy loop "
        "| NumPy cached s | ÷ cached | max abs Δ svcca / cka |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r = row["ref"]
        total = row["prepare"] + row["all_pairs"]
        print(
            f"| {row['P']:,} | {row['pairs']:,} | {row['kmed']:.0f} / {row['kmax']} | {row['prepare']:.2f} "
            f"| {row['metric_s']['svcca']:.2f} | {row['metric_s']['cka']:.2f} | {total:.2f} | {row['pairs'] / total:,.0f} "
            f"| {row['compile_prep'] + row['compile_pairs']:.1f} | {row['rss_before']:.2f} → {row['rss']:.2f} | {row['prepared_gib']:.2f} "
            f"| {1e3 * r['per_pair']:.1f} | {r['loop']:,.0f} | {r['loop'] / total:,.0f}× | {r['cached']:,.0f} "
            f"| {r['cached'] / total:,.1f}× | {row['err']['svcca']:.1e} / {row['err']['cka']:.1e} |"
        )


if __name__ == "__main__":
    setup_host_devices()  # one XLA CPU device per core, before JAX starts (as the scripts do)
    main()
