"""Batch-1 CPU inference latency of the COCO ResNet-50 kMaX model; prints one JSON line.

Modes: eager Keras call, `tf.function` (one shape-polymorphic trace for every size),
`tf.function(jit_compile=True)` (XLA, compiled per input shape), and `panoptic`: the
`tf.function` without the auxiliary semantic branch (`semantic_logits=False`, what `kmax-tf
predict`, the evaluator and `kmax-tf export --no_semantic_logits` run; the panoptic, semantic
and instance predictions are the same). Each size is timed after warm-up
calls (tracing/compilation excluded and reported separately); ratios are against eager in the
same process. deeplab2 reference on a 2-core CPU: 0.72 s at 641^2, 2.68 s at 1281^2.

  python benchmarks/inference.py [--sizes 641 1281] [--repeats 3]
      [--modes eager function xla panoptic]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

from kmax_tf import config  # pylint: disable=wrong-import-position
from kmax_tf.model import builder  # pylint: disable=wrong-import-position

_CONFIG = (pathlib.Path(__file__).resolve().parents[1] / "configs" / "coco" / "kmax_deeplab" /
           "kmax_meta_r50_os32.textproto")
_DEEPLAB2_SECONDS = {641: 0.72, 1281: 2.68}


def _runners(model):
  signature = [tf.TensorSpec([None, None, None, 3], tf.float32)]
  function = tf.function(lambda x: model(x, training=False), input_signature=signature)
  xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
  panoptic = tf.function(lambda x: model(x, training=False, semantic_logits=False),
                         input_signature=signature)
  return {"eager": lambda x: model(x, training=False), "function": function, "xla": xla,
          "panoptic": panoptic}


def _time(run, images, repeats):
  start = time.perf_counter()
  tf.nest.map_structure(lambda t: t.numpy(), run(images))  # warm-up: trace / compile
  first = time.perf_counter() - start
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), run(images))
    seconds.append(time.perf_counter() - start)
  return first, statistics.median(seconds)


def _matmul_gflops() -> float:
  """Throughput of a float32 2048^2 matmul: how fast (and how loaded) this machine is now."""
  a = tf.random.uniform((2048, 2048))
  tf.linalg.matmul(a, a).numpy()
  start = time.perf_counter()
  for _ in range(5):
    tf.linalg.matmul(a, a).numpy()
  return round(5 * 2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9, 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[641, 1281])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--modes", nargs="+", default=["eager", "function", "xla", "panoptic"],
                      choices=["eager", "function", "xla", "panoptic"])
  args = parser.parse_args()
  model = builder.build_model(config.load_config(_CONFIG, validate=False))
  runners = _runners(model)
  result = {"benchmark": "inference_latency", "config": "coco/kmax_meta_r50_os32",
            "batch": 1, "cpus": os.cpu_count(), "machine": platform.machine(),
            "tensorflow": tf.__version__, "repeats": args.repeats,
            "matmul_gflops": _matmul_gflops(), "sizes": {}}
  for size in args.sizes:
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)),
                         tf.float32)
    entry = {}
    for mode in args.modes:
      first, median = _time(runners[mode], images, args.repeats)
      entry[f"{mode}_s"] = round(median, 4)
      entry[f"{mode}_first_call_s"] = round(first, 3)
    if "eager" in entry and len(args.modes) > 1:
      for mode in args.modes:
        entry[f"{mode}_vs_eager"] = round(entry[f"{mode}_s"] / entry["eager_s"], 3)
    if size in _DEEPLAB2_SECONDS:
      entry["deeplab2_s"] = _DEEPLAB2_SECONDS[size]
      best = min(entry[f"{mode}_s"] for mode in args.modes)
      entry["best_vs_deeplab2"] = round(best / _DEEPLAB2_SECONDS[size], 3)
    result["sizes"][str(size)] = entry
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  main()
