"""Benchmark: TF Hungarian matcher vs scipy for 128xN costs, and kMaX loss forward+backward time.

Prints one JSON line. Matcher times are per matrix (median of repeats) for the XLA-compiled
batched solver (batch 1 and batch 8, per matrix), the graph-mode solver, and scipy in the same
process; `ratio_*` are TF time / scipy time. The loss timing uses a COCO-like head (128 slots,
133+1 classes, max_thing_id 128) at a small 257x257 crop (65x65 outputs, 1024 sampled pixels)
with 6 auxiliary outputs, batch 2, jit-compiled.
"""
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import tensorflow as tf  # noqa: E402

from kmax_tf.losses.kmax_loss import KMaXLoss, TermOptions  # noqa: E402
from kmax_tf.ops import batched_linear_sum_assignment  # noqa: E402
import timing  # benchmarks/timing.py, next to this script




def _matcher(rng, num_cols, repeats=5):
  costs = rng.random((8, 128, num_cols)).astype(np.float32)
  one = tf.constant(costs[:1])
  batch = tf.constant(costs)
  xla = tf.function(batched_linear_sum_assignment, jit_compile=True)
  graph = tf.function(batched_linear_sum_assignment)
  xla(one).numpy(), xla(batch).numpy(), graph(one).numpy()  # compile / trace
  scipy_time = timing.median_seconds(lambda: scipy.optimize.linear_sum_assignment(costs[0]), repeats * 4)
  xla_time = timing.median_seconds(lambda: xla(one).numpy(), repeats)
  xla_batch_time = timing.median_seconds(lambda: xla(batch).numpy(), repeats) / len(costs)
  graph_time = timing.median_seconds(lambda: graph(one).numpy(), repeats)
  return {"scipy_s": scipy_time, "xla_s": xla_time, "xla_batch8_per_matrix_s": xla_batch_time,
          "graph_s": graph_time, "ratio_xla": xla_time / scipy_time,
          "ratio_xla_batch8": xla_batch_time / scipy_time}


def _loss_step(rng, batch=2, crop=257, out=65, slots=128, repeats=3):
  things, stuff = tuple(range(1, 81)), tuple(range(81, 134))
  loss = KMaXLoss(thing_class_ids=things, stuff_class_ids=stuff, ignore_label=0,
                  max_thing_id=128, num_semantic_classes=134, pq_style=TermOptions(3.0),
                  mask_id=TermOptions(0.3), instance_discrimination=TermOptions(1.0),
                  semantic=TermOptions(1.0), instance_discrimination_sample_k=1024,
                  instance_discrimination_sample_temperature=1.5, num_auxiliary_outputs=6)
  semantic = rng.integers(0, 134, size=(batch, crop, crop)).astype(np.int32)
  blocks = rng.integers(0, 40, size=(batch, crop // 16 + 1, crop // 16 + 1))
  thing_id = np.kron(blocks, np.ones((16, 16), int))[:, :crop, :crop]
  thing_id = np.where(np.isin(semantic, things), thing_id, -1).astype(np.int32)
  thing_class = np.full((batch, 128), -1, np.float32)
  thing_class[:, :40] = rng.integers(1, 81, size=(batch, 40))
  targets = {"semantic_gt": semantic, "thing_id_mask_gt": thing_id,
             "thing_id_class_gt": thing_class,
             "semantic_loss_weight": np.ones((batch, crop, crop), np.float32)}

  def head():
    features = tf.math.l2_normalize(tf.random.normal([batch, out, out, 128]), -1)
    return {"pixel_space_mask_logits": tf.random.normal([batch, out, out, slots]),
            "pixel_space_normalized_feature": features,
            "transformer_class_logits": tf.random.normal([batch, slots, 134])}

  outputs = head()
  outputs["semantic_logits"] = tf.random.normal([batch, out, out, 134])
  outputs["auxiliary_outputs_pred"] = tuple(head() for _ in range(6))

  @tf.function(jit_compile=True)
  def step(outputs):
    with tf.GradientTape() as tape:
      tape.watch(outputs)
      total = tf.reduce_mean(loss(targets, outputs)["total_loss"])
    return total, tape.gradient(total, outputs)

  start = time.perf_counter()
  step(outputs)[0].numpy()
  compile_time = time.perf_counter() - start
  step_time = timing.median_seconds(lambda: step(outputs)[0].numpy(), repeats)
  return {"shape": f"B{batch} {out}x{out} N{slots} K181 aux6 sample_k1024",
          "compile_s": compile_time, "forward_backward_s": step_time}


def main():
  rng = np.random.default_rng(0)
  result = {f"matcher_128x{n}": _matcher(rng, n) for n in (10, 50, 100)}
  result["loss_xla"] = _loss_step(rng)
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  main()
