"""Training throughput: a popdyn population vs. the same networks one at a time vs. a plain PyTorch loop.

Workload (every row): flip-flop (``make_task("flipflop", T=100, K=3)``), batch 64, 64 units, tanh, one
training step = sample a batch, forward, MSE + L2, backward, clip by global norm, SGD with momentum.

Engines
  popdyn      ``GroupTrainer(model, task, TrainSettings(steps=10**9, batch=64, chunk=C), P)``; the state is
              initialised, then ``tr.chunk(tr.shard(hp), state)`` is called once to compile (reported as
              *compile s* = first call − one steady chunk) and then timed over ``--steps`` steps with
              ``jax.block_until_ready``.  Run on all host devices (``--host-devices``, default one per
              core: the member axis is split over them) and on ``jax.devices()[:1]``.  The state is
              initialised by ``tr.init`` (one member at a time, see GroupTrainer).
  jit loop    ``jax.jit(partial(chunk_one, model, task, settings))`` of ONE network, called for each
              network in a Python loop.  Its cost is linear in the number of networks, so a few networks
              are timed and the per-network rate is reported for every P.
  torch loop  ``nn.RNN(tanh)`` / ``nn.GRU`` / ``nn.LSTM`` (ugrnn: a small ``nn.Module`` with a Python time
              loop, marked ``*``) + ``nn.Linear`` readout, ``SGD(momentum)`` + ``clip_grad_norm_``, MSE +
              L2 on the weight matrices, flip-flop batches drawn in torch; one network after another,
              ``torch.set_num_threads(cores)`` (``--torch-threads``).  No learning-rate schedule
              (popdyn's decays over 10**9 steps here, i.e. it is constant).  Optional:
              ``pip install -e .[bench]`` (``torch==2.13.0``).

network-steps/s = (networks trained × training steps) / wall-clock second — the throughput of the whole
engine, padding members excluded (P=1 on 2 devices trains one real and one padding network).

FLOP accounting (matmuls only; element-wise maths, sampling and the optimiser are ignored).  With batch B,
T steps, N units, n_in inputs, n_out outputs and G gate blocks (vanilla 1, ugrnn 2, gru 3, lstm 4), the
forward pass of one training step is

    recurrent  2·B·T·N·(G·N)     the fused recurrent kernel(s): vanilla [N,N], ugrnn [N,2N],
                                 gru [N,2N] + candidate [N,N], lstm [N,4N]
    input      2·B·T·n_in·(G·N)  the input projection of every gate
    readout    2·B·T·N·n_out

and forward + backward ≈ 3 × forward (the backward pass does two matmuls per forward matmul: one for the
input gradient, one for the weight gradient).  gru, N=64, B=64, T=100, K=3: 3 × 167.1 MFLOP ≈ 0.501
GFLOP per network-step.  torch's cells do the same matmuls, so the same count is used for every engine.
Achieved GFLOP/s = FLOP per network-step × network-steps/s, and "% peak" divides it by the machine's
float32 matmul peak, measured as the best of a few NumPy 2048×2048 ``a @ b`` (all BLAS threads).

    python benchmarks/train_throughput.py              # all four cells at P=32, P sweep 1..128 for gru
    python benchmarks/train_throughput.py --quick      # a few minutes: short timings, P up to 32
    python benchmarks/train_throughput.py --cells gru lstm --steps 100 --chunk 50 --out bench.md
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import inspect
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from popdyn import fused
from popdyn.model import Model
from popdyn.population import HParams
from popdyn.tasks import make_task
from popdyn.train import GroupTrainer, TrainSettings, chunk_one, init_one

ARCHS = ("vanilla", "ugrnn", "gru", "lstm")
BLOCKS = {"vanilla": 1, "ugrnn": 2, "gru": 3, "lstm": 4}  # gate blocks: columns of the kernels, in units of N
UNITS, BATCH, T, K, ACTIVATION = 64, 64, 100, 3, "tanh"
HP = dict(lr=0.01, decay=0.5, momentum=0.9, clip=1.0, l2=1e-4)
COMPARE_P = 32  # the popdyn-vs-torch comparison over cells (--compare-p)
SEED = 0


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def flops_per_network_step(arch: str, units: int | None = None, n_in: int = K, n_out: int = K) -> float:
    """Matmul FLOPs of one training step (forward + backward ≈ 3 × forward); see the module docstring."""
    units = units or UNITS
    bt, g = BATCH * T, BLOCKS[arch]
    forward = 2 * bt * units * g * units + 2 * bt * n_in * g * units + 2 * bt * units * n_out
    return 3.0 * forward


def accelerator_peak(n: int = 8192, repeats: int = 5) -> float:
    """Best float32 ``a @ b`` rate of JAX on its default (non-CPU) device in GFLOP/s."""
    a, b = (jax.random.normal(k, (n, n), jnp.float32) for k in jax.random.split(jax.random.key(SEED)))
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def matmul_peak(n: int = 2048, repeats: int = 5, threads: int | None = None) -> float:
    """Best float32 ``a @ b`` rate of NumPy's BLAS in GFLOP/s (``threads``: limit BLAS threads)."""
    rng = np.random.default_rng(SEED)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))

    def best():
        a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return 2 * n**3 / min(times) / 1e9

    if threads is None:
        return best()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return float("nan")
    with threadpool_limits(threads, user_api="blas"):
        return best()


@dataclass
class Result:
    cell: str
    engine: str
    P: int  # networks the rate is for (loops: networks actually timed)
    devices: str
    rate: float | None  # network-steps/s
    compile_s: float | None = None
    note: str = ""


# --------------------------------------------------------------------------------------------------
# popdyn


def hparams(n: int | None) -> HParams:
    """The same hyper-parameters for every member (``n=None``: one network's scalars)."""
    shape = () if n is None else (n,)
    return HParams(*(jnp.full(shape, HP[k], jnp.float32) for k in HParams._fields))


def popdyn_engine(member_batch: int | None, grad: str = "hoisted") -> str:
    name = "popdyn" if member_batch is None else f"popdyn map b={member_batch}"
    return name if grad == "hoisted" else f"{name} {grad}"


def time_population(
    arch: str, P: int, devices, args, task, member_batch: int | None = None, grad: str = "hoisted"
) -> Result:
    settings = TrainSettings(steps=10**9, batch=BATCH, chunk=args.chunk)
    # "xla-loop": the lstm's time loop as XLA ops (Model(kernel="xla")) instead of the fused CPU kernel
    kernel = {"kernel": "xla"} if grad == "xla-loop" else {}
    grad = "hoisted" if grad == "xla-loop" else grad
    model = Model(arch, ACTIVATION, UNITS, task.n_in, task.n_out, unroll=args.unroll, grad=grad, **kernel)
    extra = {} if member_batch is None else {"member_batch": member_batch}
    tr = GroupTrainer(model, task, settings, P, devices=devices, **extra)
    hp, keys = tr.pad(hparams(P), jax.random.split(jax.random.key(SEED), P))
    state = jax.block_until_ready(tr.init(hp, keys))
    hp = tr.shard(hp)

    t0 = time.perf_counter()
    state, losses = jax.block_until_ready(tr.chunk(hp, state))
    first = time.perf_counter() - t0
    traces = tr.traces
    t0 = time.perf_counter()
    for _ in range(args.n_chunks):
        state, losses = tr.chunk(hp, state)
        jax.block_until_ready((state, losses))
    elapsed = time.perf_counter() - t0

    per_chunk = elapsed / args.n_chunks
    notes = []
    if tr.size > P:
        notes.append(f"+{tr.size - P} padding")
    if tr.traces != traces:
        notes.append("RETRACED while timed")
    if not np.isfinite(np.asarray(losses)[:P]).all():
        notes.append("non-finite loss")
    return Result(
        arch,
        popdyn_engine(member_batch, "xla-loop" if kernel else grad),
        P,
        f"{len(tr.devices)}",
        P * args.chunk / per_chunk,
        max(0.0, first - per_chunk),
        ", ".join(notes),
    )


def time_jit_loop(arch: str, n_nets: int, args, task) -> Result:
    settings = TrainSettings(steps=10**9, batch=BATCH, chunk=args.chunk)
    model = Model(arch, ACTIVATION, UNITS, task.n_in, task.n_out, unroll=args.unroll)
    step = jax.jit(partial(chunk_one, model, task, settings))
    init = jax.jit(partial(init_one, model, settings))
    hp = hparams(None)
    states = [init(hp, k) for k in jax.random.split(jax.random.key(SEED), n_nets)]

    t0 = time.perf_counter()
    states[0], _ = jax.block_until_ready(step(hp, states[0]))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.n_chunks):
        for i in range(n_nets):
            states[i], _ = step(hp, states[i])
    jax.block_until_ready(states)
    elapsed = time.perf_counter() - t0
    per_chunk_per_net = elapsed / (args.n_chunks * n_nets)
    return Result(
        arch, "jit loop", n_nets, "1", args.chunk / per_chunk_per_net, max(0.0, first - per_chunk_per_net)
    )


# --------------------------------------------------------------------------------------------------
# plain PyTorch


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def time_torch_loop(arch: str, n_nets: int, steps: int, threads: int, device: str = "cpu") -> Result:
    import torch
    from torch import nn

    dev = torch.device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)

    class UGRNN(nn.Module):
        """``c = tanh(Wc h + Uc x + bc)``, ``g = σ(Wg h + Ug x + bg)``, ``h' = g⊙h + (1−g)⊙c`` (popdyn's ugrnn)."""

        def __init__(self):
            super().__init__()
            self.input = nn.Linear(K, 2 * UNITS)
            self.recurrent = nn.Linear(UNITS, 2 * UNITS, bias=False)

        def forward(self, x):
            xp = self.input(x)  # the whole sequence in one matmul, as popdyn does
            h = x.new_zeros(x.shape[0], UNITS)
            hs = []
            for t in range(x.shape[1]):
                pre = self.recurrent(h) + xp[:, t]
                c, g = torch.tanh(pre[:, :UNITS]), torch.sigmoid(pre[:, UNITS:])
                h = g * h + (1 - g) * c
                hs.append(h)
            return torch.stack(hs, 1), None

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = {
                "vanilla": lambda: nn.RNN(K, UNITS, nonlinearity="tanh", batch_first=True),
                "gru": lambda: nn.GRU(K, UNITS, batch_first=True),
                "lstm": lambda: nn.LSTM(K, UNITS, batch_first=True),
                "ugrnn": UGRNN,
            }[arch]()
            self.readout = nn.Linear(UNITS, K)

        def forward(self, x):
            return self.readout(self.rnn(x)[0])

    def flipflop(gen, p: float = 0.05):
        u = torch.rand(BATCH, T, K, generator=gen, device=dev)
        x = torch.where(u < p, torch.where(u < 0.5 * p, -1.0, 1.0), 0.0)
        steps_ = torch.arange(T, device=dev).view(1, T, 1).expand_as(x)
        last = torch.cummax(torch.where(x != 0, steps_, -1), dim=1).values
        held = torch.gather(x, 1, last.clamp(min=0))
        return x, torch.where(last >= 0, held, 0.0)

    def train(net, opt, gen, n):
        weights = [w for w in net.parameters() if w.ndim >= 2]
        for _ in range(n):
            x, y = flipflop(gen)
            loss = torch.mean((net(x) - y) ** 2) + HP["l2"] * sum(torch.sum(w**2) for w in weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), HP["clip"])
            opt.step()
        return float(loss.detach())

    nets = []
    for i in range(n_nets):
        net = Net().to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=HP["lr"], momentum=HP["momentum"])
        nets.append((net, opt, torch.Generator(device=dev).manual_seed(SEED + i)))
    train(*nets[0], 5)  # warm-up: allocator, threads, oneDNN primitives
    t0 = time.perf_counter()
    losses = [train(net, opt, gen, steps) for net, opt, gen in nets]
    elapsed = time.perf_counter() - t0
    note = "python time loop" if arch == "ugrnn" else ""
    if not np.isfinite(losses).all():
        note = ", ".join(filter(None, [note, "non-finite loss"]))
    where = f"{torch.get_num_threads()} threads" if dev.type == "cpu" else str(dev)
    return Result(arch, "torch loop", n_nets, where, n_nets * steps / elapsed, None, note)


# --------------------------------------------------------------------------------------------------
# tables


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def engine_label(r: Result) -> str:
    if r.engine.startswith("popdyn"):
        return f"{r.engine} ({r.devices} dev)"
    if r.engine == "torch loop" and r.cell == "ugrnn":
        return "torch loop*"
    return r.engine


def detail_table(results: list[Result], peak: float) -> str:
    rows = []
    for r in results:
        if r.rate is None:
            rows.append([r.cell, engine_label(r), str(r.P), r.devices, "—", "—", "—", "—", r.note])
            continue
        gflops = flops_per_network_step(r.cell) * r.rate / 1e9
        rows.append(
            [
                r.cell,
                engine_label(r),
                str(r.P),
                r.devices,
                fmt(r.compile_s),
                fmt(r.rate),
                fmt(gflops),
                fmt(100 * gflops / peak),
                r.note,
            ]
        )
    return table(
        ["cell", "engine", "P", "devices", "compile s", "network-steps/s", "GFLOP/s", "% peak", "note"], rows
    )


def find(results, cell, engine, P=None, devices=None) -> Result | None:
    for r in results:
        if (
            r.cell == cell
            and r.engine == engine
            and (P is None or r.P == P)
            and (devices is None or r.devices == devices)
        ):
            return r
    return None


def rate(r: Result | None) -> str:
    if r is None:
        return "—"
    return r.note if r.rate is None else fmt(r.rate)


def comparison_table(results, cells, variants, n_dev, compare_p) -> str:
    columns = [(popdyn_engine(*v), d) for v in variants for d in dict.fromkeys([n_dev, 1])]
    rows = []
    for cell in cells:
        pops = [find(results, cell, engine, compare_p, str(d)) for engine, d in columns]
        torch_r = find(results, cell, "torch loop")
        best = max((r.rate for r in pops if r and r.rate), default=None)
        ratio = f"{best / torch_r.rate:.1f}×" if best and torch_r and torch_r.rate else "—"
        rows.append(
            [cell + ("*" if cell == "ugrnn" else ""), *map(rate, pops)]
            + [rate(find(results, cell, "jit loop")), rate(torch_r), ratio]
        )
    return table(
        [
            "cell",
            *(f"{engine}, {d} dev" for engine, d in columns),
            "jit loop",
            "torch loop",
            "best popdyn ÷ torch",
        ],
        rows,
    )


def sweep_table(results, cell, sizes, n_dev, compare_p) -> str:
    loop, torch_r = find(results, cell, "jit loop"), find(results, cell, "torch loop")
    rows = []
    for P in sizes:
        linear = P <= compare_p
        rows.append(
            [
                str(P),
                rate(find(results, cell, "popdyn", P, str(n_dev))),
                rate(find(results, cell, "popdyn", P, "1")) if n_dev > 1 else "(same)",
                rate(loop) if linear else "—",
                rate(torch_r) if linear else "—",
            ]
        )
    return table(
        ["P", f"popdyn {n_dev} dev", "popdyn 1 dev", "jit loop (per network)", "torch loop (per network)"],
        rows,
    )


# --------------------------------------------------------------------------------------------------


def use_host_devices(n: int) -> None:
    """One XLA host device per core, so that "all devices" shards the members over the cores.

    As popdyn's entry points do (``popdyn._devices.setup_host_devices``), with the count of ``--host-devices``.  Must
    run before JAX starts its backends; ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` wins.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", max(1, n))
    except RuntimeError:
        print("note: JAX backends already started; --host-devices ignored", file=sys.stderr)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short timings, P up to 32 (a few minutes)")
    p.add_argument("--units", type=int, default=UNITS, help="units per network (default 64)")
    p.add_argument("--cells", nargs="+", choices=ARCHS, default=list(ARCHS), help="cells compared at P=32")
    p.add_argument("--sweep-cell", default="gru", choices=ARCHS, help="cell of the P sweep")
    p.add_argument("--sizes", nargs="+", type=int, help="population sizes of the sweep (default 1 8 32 128)")
    p.add_argument("--steps", type=int, help="timed training steps per measurement (default 50; quick 10)")
    p.add_argument("--chunk", type=int, help="steps per compiled call (default 25; quick 5)")
    p.add_argument(
        "--loop-nets", type=int, help="networks timed by the one-at-a-time loops (default 4; quick 2)"
    )
    p.add_argument(
        "--unroll", type=int, default=1, help="Model(unroll=...): lax.scan unroll of the time loop"
    )
    p.add_argument(
        "--host-devices",
        type=int,
        default=int(os.environ.get("POPDYN_CPU_DEVICES", cores())),
        help="XLA CPU devices for the 'all devices' rows (default: POPDYN_CPU_DEVICES, else one per core)",
    )
    p.add_argument(
        "--member-batch",
        type=int,
        nargs="*",
        help="extra popdyn rows at P=32 with GroupTrainer(member_batch=B) (default: 1 where supported)",
    )
    p.add_argument(
        "--autodiff",
        type=int,
        nargs="*",
        help="extra rows at P=32 with Model(grad='autodiff'), the plain-autodiff time loop, for these "
        "member_batch values (default: the first --member-batch value; 0 = vmap)",
    )
    p.add_argument(
        "--xla-loop",
        type=int,
        nargs="*",
        help="extra lstm rows at P=32 with Model(kernel='xla'): XLA's time loop instead of the fused CPU "
        "kernel (popdyn.fused), for these member_batch values (default: the first --member-batch value)",
    )
    p.add_argument("--compare-p", type=int, default=COMPARE_P, help="P of the cell comparison (32)")
    p.add_argument(
        "--torch-device", default="cpu", help="torch device of the torch loop (cpu; 'cuda' on a GPU machine)"
    )
    p.add_argument("--no-torch", action="store_true")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=cores(),
        help="torch.set_num_threads (default: one per core; on a busy machine 1 can be much faster)",
    )
    p.add_argument(
        "--hang-s", type=float, help="dump stacks and exit if one measurement takes longer (1800; quick 600)"
    )
    p.add_argument("--out", help="also write the report (markdown) to this file")
    args = p.parse_args(argv)
    q = args.quick
    args.chunk = args.chunk or (5 if q else 25)
    args.steps = args.steps or (10 if q else 50)
    args.n_chunks = max(1, math.ceil(args.steps / args.chunk))
    args.steps = args.n_chunks * args.chunk
    args.sizes = args.sizes or ([1, 8, 32] if q else [1, 8, 32, 128])
    args.loop_nets = args.loop_nets or (2 if q else 4)
    args.hang_s = args.hang_s or (600 if q else 1800)
    if args.member_batch is None:
        args.member_batch = [1] if "member_batch" in inspect.signature(GroupTrainer).parameters else []
    if args.autodiff is None:
        args.autodiff = args.member_batch[:1]
    args.autodiff = [b or None for b in args.autodiff]
    if args.xla_loop is None:
        args.xla_loop = args.member_batch[:1]
    args.xla_loop = [b or None for b in args.xla_loop]
    return args


def header(args, peak: float, peak1: float) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    tv = torch_version()
    lines = [
        f"# popdyn training throughput — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {cpu}, {cores()} cores; python {platform.python_version()}",
        f"- jax {jax.__version__}, devices {jax.devices()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
        f"- torch {tv}" if tv else "- torch: not installed (pip install -e .[bench])",
        (
            f"- numpy {np.__version__}: float32 2048² matmul peak {peak:.1f} GFLOP/s all threads, "
            f"{fmt(peak1)} GFLOP/s 1 thread"
            if jax.default_backend() == "cpu"
            else f"- % peak is of JAX's float32 8192² matmul on {jax.devices()[0].device_kind}: {peak:.1f} GFLOP/s"
        ),
        f"- workload: flip-flop T={T} K={K}, batch {BATCH}, {UNITS} units, {ACTIVATION}; "
        f"{args.steps} timed steps per measurement in chunks of {args.chunk}; loops time {args.loop_nets} networks",
        f"- popdyn: time-loop unroll {args.unroll}; 'popdyn' = vmap over the members of a device"
        + "".join(f", 'popdyn map b={b}' = GroupTrainer(member_batch={b})" for b in args.member_batch)
        + "; rows marked 'autodiff' use Model(grad='autodiff') (plain autodiff of the time loop), the others "
        "the default hoisted-weight-gradient backward (popdyn.recurrence); lstm rows run the fused CPU kernel "
        f"(popdyn.fused: {'built' if fused.available() else 'UNAVAILABLE, XLA loop'}) but those marked "
        "'xla-loop' (Model(kernel='xla'))",
        "- FLOP per network-step (3 × forward matmuls): "
        + ", ".join(f"{a} {flops_per_network_step(a) / 1e9:.3f} G" for a in ARCHS),
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    global UNITS
    args = parse_args(argv)
    UNITS = args.units
    use_host_devices(args.host_devices)
    task = make_task("flipflop", T=T, K=K)
    n_dev = len(jax.devices())
    device_sets = [jax.devices()] + ([jax.devices()[:1]] if n_dev > 1 else [])
    have_torch = not args.no_torch and torch_version() is not None

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    peak, peak1 = matmul_peak(), matmul_peak(threads=1)
    if jax.default_backend() != "cpu":  # % peak is then of the accelerator's float32 matmul
        log(f"numpy CPU peak {peak:.1f} GFLOP/s; % peak below is of the {jax.default_backend()} device")
        peak = peak1 = accelerator_peak()
    head = header(args, peak, peak1)
    print(head, flush=True)

    # (member_batch, grad) of each popdyn variant (member_batch None: vmap)
    variants = [(mb, "hoisted") for mb in [None, *args.member_batch]]
    variants += [(mb, "autodiff") for mb in args.autodiff]
    variants += [(mb, "xla-loop") for mb in args.xla_loop]
    plan = []  # (cell, engine, P, devices, (member_batch, grad))
    for cell in args.cells:
        runs = [v for v in variants if v[1] != "xla-loop" or cell == "lstm"]  # the kernel is the lstm's
        plan += [(cell, popdyn_engine(*v), args.compare_p, d, v) for v in runs for d in device_sets]
    plan += [(args.sweep_cell, "popdyn", P, d, (None, "hoisted")) for P in args.sizes for d in device_sets]
    loop_cells = list(dict.fromkeys([*args.cells, args.sweep_cell]))
    plan += [(c, "jit loop", args.loop_nets, None, None) for c in loop_cells]
    plan += [(c, "torch loop", args.loop_nets, None, None) for c in loop_cells]

    results: list[Result] = []
    for cell, engine, P, devices, variant in plan:
        if devices and find(results, cell, engine, P, str(len(devices))):
            continue  # the sweep cell at P=32 is already measured
        log(f"... {cell} {engine} P={P}" + (f" on {len(devices)} device(s)" if devices else ""))
        faulthandler.dump_traceback_later(args.hang_s, exit=True)
        t0 = time.perf_counter()
        try:
            if engine.startswith("popdyn"):
                r = time_population(cell, P, devices, args, task, *variant)
            elif engine == "jit loop":
                r = time_jit_loop(cell, P, args, task)
            elif have_torch:
                r = time_torch_loop(cell, P, args.steps, args.torch_threads, args.torch_device)
            else:
                why = "--no-torch" if args.no_torch else "pip install -e .[bench]"
                r = Result(cell, engine, P, "—", None, note=f"skipped ({why})")
        except Exception as e:  # one failing engine must not hide the others' numbers
            r = Result(
                cell,
                engine,
                P,
                str(len(devices)) if devices else "—",
                None,
                note=f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}",
            )
        finally:
            faulthandler.cancel_dump_traceback_later()
        log(
            f"    {fmt(r.rate)} network-steps/s, compile {fmt(r.compile_s)} s ({time.perf_counter() - t0:.0f} s) {r.note}"
        )
        results.append(r)

    report = "\n\n".join(
        [
            head,
            f"## popdyn vs. one at a time vs. PyTorch, P = {args.compare_p} (network-steps/s)",
            comparison_table(results, args.cells, variants, n_dev, args.compare_p),
            f"## P sweep, {args.sweep_cell} (network-steps/s; the loops' rate is per network and does not depend on P)",
            sweep_table(results, args.sweep_cell, args.sizes, n_dev, args.compare_p),
            "## Every measurement",
            detail_table(results, peak),
            "*: ugrnn has no torch built-in; a small nn.Module with a Python time loop.  "
            "compile s = first chunk call − one steady chunk; loops time P networks, their rate holds for any P.",
        ]
    )
    print("\n" + report[len(head) + 2 :])
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
