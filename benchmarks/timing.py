"""Timing helper shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""
import statistics
import time


def median_seconds(fn, repeats: int, warmup: int = 0) -> float:
  """Median wall time of `repeats` calls of `fn`, after `warmup` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)
