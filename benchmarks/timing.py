"""CUDA-event timing shared by the GPU benchmarks."""

from __future__ import annotations

import statistics

import torch


def event_ms(fn, warmup: int = 2, reps: int = 5) -> float:
    """Median device time (ms) of ``fn`` over ``reps`` calls after ``warmup`` calls, with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
