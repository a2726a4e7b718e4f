"""The machine a benchmark ran on: CPU name, threads, torch version, and its measured float32 matmul rate,
the ceiling that the other benches report their achieved GFLOP/s against."""
import platform
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def matmul_gflops(n: int = 2048, iters: int = 10, device: str = "cpu") -> float:
    """float32 GFLOP/s of an n x n matmul (2 n^3 flops each), best of `iters` after one warm-up."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def describe(device: str = "cpu") -> str:
    return (f"{cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {device}; "
            f"float32 matmul {matmul_gflops(device=device):.0f} GFLOP/s (2048^3)")
