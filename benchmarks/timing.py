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


def alternating_medians(fns, rounds: int) -> list[float]:
  """Medians of `rounds` timed calls of each of `fns`, after one untimed call of each; the order
  alternates between rounds (forward, then reversed), so each sees the same machine load."""
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for index in range(rounds):
    order = range(len(fns)) if index % 2 == 0 else reversed(range(len(fns)))
    for which in order:
      start = time.perf_counter()
      fns[which]()
      times[which].append(time.perf_counter() - start)
  return [statistics.median(seconds) for seconds in times]
