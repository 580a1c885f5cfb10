"""Benchmark: the local-rank engine against the torch.func baseline, and against a FLOP floor.

``python -m localrank_utils.bench [--points 1000] [--device auto] [--threads 2] [--quick]``

On the paper's MNIST MLP (784-200-200-200-200-10, ReLU), on real MNIST test images, all five layers:

* baseline: what the paper's first author's public code does, ``torch.func.vmap(jacrev(...))`` for every
  layer's n_l x 784 Jacobian in float32, then ``torch.linalg.svdvals`` of each and a count above ε;
* engine: :func:`localrank_utils.rank.epsilon_ranks` (closed form M_l U S, one pass, certified
  Gram/SVD choice, precision chosen for ε).

It asserts that both give identical ranks for every sample and layer, prints the speed ratio, the
engine's distance from a floor = (FLOPs of the products and decompositions it cannot avoid) / (GEMM
FLOP/s measured in the same run, same dtype and threads), and the peak memory of the engine on
``--memory-points`` samples (a fresh process's peak RSS above its start on CPU;
``torch.cuda.max_memory_allocated`` on CUDA).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing as mp
import sys
import time
from dataclasses import asdict
from typing import Any

import torch

from .data import load_split
from .devices import resolve_device, seed_everything
from .models import MLP
from .rank import RankReport, epsilon_ranks

MNIST_WIDTHS = (784, 200, 200, 200, 200, 10)


def make_net(widths=MNIST_WIDTHS, *, train_steps: int = 200, activation: str = "relu", seed: int = 0,
             device: torch.device | str = "cpu") -> MLP:
    """The paper's MNIST MLP, trained ``train_steps`` Adam steps (lr 1e-3, batch 64) on 1 000 MNIST training
    images so that its spectra are those of a net that has learned something (0: at initialisation)."""
    model = MLP(widths, activation=activation, seed=seed)
    if train_steps > 0:
        x, y = load_split("mnist", "train", n=1000, seed=seed)
        gen = seed_everything(seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(train_steps):
            idx = torch.randint(0, x.shape[0], (64,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.to(device).eval()


def baseline_ranks(model: MLP, x: torch.Tensor, epsilons) -> list[torch.Tensor]:
    """torch.func: vmap(jacrev) Jacobians of every layer (chunks of 100, n_l, n_0), svdvals of each, count above ε."""
    return epsilon_ranks(model, x, epsilons, method="torch_func", chunk_size=100)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int = 1) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def gemm_peak(dtype: torch.dtype, device: torch.device, repeats: int = 3) -> float:
    """Achieved FLOP/s of plain GEMMs here and now: the best of a square product and one shaped like the
    engine's (many rows x 200 x 200)."""
    best = 0.0
    for m, k, n in ((1536, 1536, 1536), (100 * 200, 200, 200)):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        a @ b
        t, _ = _timed(lambda: a @ b, device, repeats)
        best = max(best, 2 * m * k * n / t)
    return best


def floor_flops(widths, r: int, n_samples: int) -> dict[str, float]:
    """FLOPs the engine's method cannot go below for ``n_samples`` points: the products M_l U S (dense,
    2 n_l n_{l-1} r per layer l >= 2), each Gram matrix of the smaller side m (m(m+1)k, symmetric), and one
    symmetric factorisation of it (m³/3, an LDLᵀ or Cholesky: the least that reveals how many eigenvalues
    lie above a threshold; the engine's two LDLᵀ, or a tridiagonal reduction at 4/3 m³, are more).
    Layer 1 needs none: its singular values are W_1's, computed once."""
    prop = sum(2 * b * a * r for a, b in zip(widths[1:-1], widths[2:]))
    gram = factor = 0.0
    for n_l in widths[2:]:
        m, k = min(n_l, r), max(n_l, r)
        gram += m * (m + 1) * k
        factor += m**3 / 3
    return {"products": n_samples * prop, "gram": n_samples * gram, "factorisation": n_samples * factor,
            "total": n_samples * (prop + gram + factor)}


def _rss_bytes(field: str) -> int:
    """VmRSS / VmHWM (peak RSS) of this process from /proc, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_peak(fn, device: torch.device) -> tuple[int, Any]:
    """(peak bytes above the start, result) of ``fn()``: on CUDA from the allocator; on Linux CPUs from the
    kernel's peak-RSS counter, reset first via /proc/self/clear_refs so that earlier work does not count."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, result
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        # glibc raises its mmap threshold after large frees (up to 32 MiB), after which freed blocks stay in
        # the heap and RSS measures the allocator's retention, not live memory: pin it (M_MMAP_THRESHOLD = -3)
        # to the default 128 KiB for this process, and hand freed heap back to the OS before the reading.
        libc.mallopt(-3, 128 * 1024)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    base = _rss_bytes("VmRSS")
    result = fn()
    return _rss_bytes("VmHWM") - base, result


def _memory_child(queue, points: int, device: str, threads: int, epsilon: float, state: dict,
                  max_memory: int | None) -> None:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    model = make_net(train_steps=0, device=dev)
    model.load_state_dict(state)
    x, _ = load_split("mnist", "test", n=points, device=dev)
    epsilon_ranks(model, x[:300], epsilon, max_memory=max_memory)  # map the kernels' code before the reading
    report = RankReport()
    peak, _ = measure_peak(lambda: epsilon_ranks(model, x, epsilon, report=report, max_memory=max_memory), dev)
    queue.put({"peak_bytes": int(peak), "chunk_size": report.chunk_size, "points": points,
               "max_memory": max_memory})


def peak_memory(model: MLP, points: int, device: torch.device, threads: int, epsilon: float,
                max_memory: int | None = None) -> dict:
    """The engine's peak working memory on ``points`` MNIST samples, measured in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    proc = ctx.Process(target=_memory_child, args=(queue, points, str(device), threads, epsilon, state, max_memory))
    proc.start()
    result = queue.get(timeout=1800)
    proc.join()
    return result


def run_benchmark(points: int = 1000, *, device: str = "auto", threads: int | None = None, epsilon: float = 0.01,
                  train_steps: int = 200, repeats: int = 2, memory_points: int | None = 10_000,
                  widths=MNIST_WIDTHS, seed: int = 0) -> dict[str, Any]:
    """One benchmark run; returns every measured number (see the module docstring)."""
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"points={points!r} must be an int >= 2.")
    if memory_points is not None and not 1 <= memory_points <= 10_000:
        raise ValueError(f"memory_points={memory_points!r} must be between 1 and 10 000 (the MNIST test set).")
    dev = resolve_device(device)
    if dev.type == "mps":
        dev = torch.device("cpu")  # MPS lacks float64, which the certified engine needs at small ε
    if threads is not None:
        torch.set_num_threads(threads)
    model = make_net(widths, train_steps=train_steps, seed=seed, device=dev)
    x, _ = load_split("mnist", "test", n=points, seed=seed, device=dev)
    epsilon_ranks(model, x[:8], epsilon)  # warm-up

    def engine_run() -> tuple[list[torch.Tensor], RankReport]:
        report = RankReport()  # one per run: a report accumulates
        return epsilon_ranks(model, x, epsilon, report=report), report

    t_engine, (engine, report) = _timed(engine_run, dev, repeats)
    print(f"engine: {t_engine:.3f} s for {points} points; running the torch.func baseline ...", flush=True)
    t_base, base = _timed(lambda: baseline_ranks(model, x, epsilon), dev, 1)
    mismatches = [int((a != b).sum()) for a, b in zip(engine, base)]
    dtype = getattr(torch, report.dtype)
    peak = gemm_peak(dtype, dev)
    r = min(widths[0], widths[1])
    flops = floor_flops(widths, r, points)
    out = {
        "device": str(dev), "threads": torch.get_num_threads(), "points": points, "epsilon": epsilon,
        "train_steps": train_steps, "widths": list(widths),
        "baseline_s": t_base, "engine_s": t_engine, "speedup": t_base / t_engine,
        "baseline_mean_rank": [float(b.float().mean()) for b in base],
        "engine_mean_rank": [float(e.float().mean()) for e in engine],
        "mismatches": mismatches, "report": asdict(report),
        "gemm_flops_per_s": peak, "floor_flops": flops, "floor_s": flops["total"] / peak,
    }
    out["floor_distance"] = t_engine / out["floor_s"]
    if memory_points:
        out["memory"] = peak_memory(model, memory_points, dev, torch.get_num_threads(), epsilon)
    return out


def time_pair(widths, x: torch.Tensor, *, epsilon: float = 0.01, seed: int = 0) -> dict[str, float]:
    """Seconds for the engine and for the torch.func baseline on one initialised MLP(widths), and whether
    their ranks agree: one point of the scaling figure."""
    model = MLP(widths, seed=seed).to(x.device).eval()
    epsilon_ranks(model, x[:2], epsilon)
    t_engine, fast = _timed(lambda: epsilon_ranks(model, x, epsilon), x.device, 1)
    t_base, slow = _timed(lambda: baseline_ranks(model, x, epsilon), x.device, 1)
    return {"engine_s": t_engine, "baseline_s": t_base, "equal": all(torch.equal(a, b) for a, b in zip(fast, slow))}


def scaling(sample_sizes, hidden_widths, depths, *, points: int, device: str = "auto", epsilon: float = 0.01,
            seed: int = 0, progress=None) -> dict[str, list[dict[str, float]]]:
    """Engine and baseline times against the number of samples (paper's net), the hidden width (four hidden
    layers, ``points`` samples) and the number of hidden layers (width 200, ``points`` samples)."""
    dev = resolve_device(device)
    x_all, _ = load_split("mnist", "test", n=max([points, *sample_sizes]), seed=seed, device=dev)
    jobs = ([("samples", n, MNIST_WIDTHS, n) for n in sample_sizes]
            + [("width", w, (784, *[w] * 4, 10), points) for w in hidden_widths]
            + [("depth", d, (784, *[200] * d, 10), points) for d in depths])
    out: dict[str, list[dict[str, float]]] = {"samples": [], "width": [], "depth": []}
    for kind, value, widths, n in (progress(jobs) if progress else jobs):
        out[kind].append({"value": value} | time_pair(widths, x_all[:n], epsilon=epsilon, seed=seed))
    return out


def format_result(res: dict[str, Any]) -> str:
    layers = [f"p{l + 1}" for l in range(len(res["engine_mean_rank"]))]
    lines = [
        f"MNIST MLP {'-'.join(map(str, res['widths']))} (ReLU, {res['train_steps']} Adam steps), "
        f"{res['points']} MNIST test images, ε = {res['epsilon']:g}, {res['device']}, {res['threads']} threads",
        "mean local rank per layer:",
        f"{'layer':<12}" + "".join(f"{n:>9}" for n in layers),
        f"{'torch.func':<12}" + "".join(f"{v:9.2f}" for v in res["baseline_mean_rank"]),
        f"{'engine':<12}" + "".join(f"{v:9.2f}" for v in res["engine_mean_rank"]),
        f"rank mismatches per layer: {res['mismatches']}",
        f"torch.func baseline  {res['baseline_s']:8.2f} s",
        f"engine               {res['engine_s']:8.3f} s   ({res['report']['dtype']}; sample-layers by active-set Gram "
        f"{res['report']['active_gram']}, Gram {res['report']['gram']}, SVD {res['report']['svd']}; "
        f"{res['report']['inertia']} counted by LDLᵀ inertia; {res['report']['recomputed_float64']} samples "
        f"uncertified, redone by float64 SVD; chunks of {res['report']['chunk_size']})",
        f"speed-up             {res['speedup']:8.1f} x",
        f"FLOP floor           {res['floor_s']:8.3f} s   ({res['floor_flops']['total'] / 1e9:.1f} GFLOP at the "
        f"measured {res['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s {res['report']['dtype']} GEMM)",
        f"engine / floor       {res['floor_distance']:8.1f} x",
    ]
    if "memory" in res:
        mem = res["memory"]
        lines.append(f"peak memory          {mem['peak_bytes'] / 2**20:8.0f} MiB for {mem['points']} points "
                     f"(chunks of {mem['chunk_size']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrank_utils.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=None, help="samples to rank (default 1000; 200 with --quick)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--epsilon", type=float, default=0.01, help="absolute threshold ε (default 0.01)")
    parser.add_argument("--train-steps", type=int, default=200, help="Adam steps before ranking (default 200; 0: initialisation)")
    parser.add_argument("--memory-points", type=int, default=None, help="samples for the peak-memory run "
                        "(default 10 000; 1 000 with --quick; 0 to skip)")
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    points = args.points or (200 if args.quick else 1000)
    memory = args.memory_points if args.memory_points is not None else (1000 if args.quick else 10_000)
    res = run_benchmark(points, device=args.device, threads=args.threads, epsilon=args.epsilon,
                        train_steps=args.train_steps, memory_points=memory or None,
                        repeats=1 if args.quick else 2)
    print(format_result(res))
    if args.json:
        from .results import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=1))
    assert res["mismatches"] == [0] * len(res["mismatches"]), f"ranks differ: {res['mismatches']}"
    print("ranks identical for every sample and layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
