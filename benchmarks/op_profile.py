"""Per-op-type time of one call of a TensorFlow function, from a `tf.profiler` trace.

Used by the benchmark scripts (run as `python benchmarks/<name>.py`). The trace's `tf_Compute`
threads carry one event per executed op (name = node name, display name = op type); intra-op
(Eigen) threads are left out, since their work happens inside those events. With several
inter-op threads ops overlap, so the per-category sums are shares of op time, not of wall time.
"""
import collections
import glob
import os
import re
import tempfile

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

CATEGORIES = ("conv", "matmul_einsum", "elementwise", "resize", "post_processing")
# oneDNN's graph rewrite renames ops (`_MklNativeConv2D`, `_MklEinsum`, `_MklNativeFusedConv2D`);
# stripping the prefix gives the op they replace.
_ONEDNN_PREFIX = re.compile(r"^_Mkl(Native)?")
# Ops whose event spans a nested function's ops, which have events of their own.
_CALLS = frozenset({"StatefulPartitionedCall", "PartitionedCall", "While", "StatelessWhile", "If",
                    "StatelessIf"})


def category(op_type: str, node_name: str, network_scope: str) -> str:
  """The category of one executed op: ops outside `network_scope` (the model's name scope)
  are post-processing (with the input checks, padding and cropping around the network)."""
  if network_scope not in node_name:
    return "post_processing"
  op = _ONEDNN_PREFIX.sub("", op_type).lstrip("_")
  if "Conv2D" in op or "Conv2d" in op:
    return "conv"
  if "MatMul" in op or op == "Einsum":
    return "matmul_einsum"
  if op.startswith("Resize"):
    return "resize"
  return "elementwise"


def profile(fn, network_scope: str):
  """Runs `fn()` once under the profiler.

  Returns (seconds of op time per category, [(op type, seconds, executions)] largest first).
  The executions tell fused kernels from unfused chains (`_MklNativeFusedConv2D` against
  `_MklNativeConv2DWithBias` + `Relu`).
  """
  by_category = dict.fromkeys(CATEGORIES, 0.0)
  by_op = collections.Counter()
  executions = collections.Counter()
  with tempfile.TemporaryDirectory() as logdir:
    tf.profiler.experimental.start(logdir)
    try:
      fn()
    finally:
      tf.profiler.experimental.stop()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
      space = xplane_pb2.XSpace()
      with open(path, "rb") as f:
        space.ParseFromString(f.read())
      for plane in space.planes:
        for line in plane.lines:
          if not line.name.startswith("tf_Compute"):
            continue
          for event in line.events:
            metadata = plane.event_metadata[event.metadata_id]
            # No display name: executor bookkeeping, not an op.
            if not metadata.display_name or metadata.display_name in _CALLS:
              continue
            seconds = event.duration_ps * 1e-12
            by_category[category(metadata.display_name, metadata.name, network_scope)] += seconds
            by_op[metadata.display_name] += seconds
            executions[metadata.display_name] += 1
  return by_category, [(op, seconds, executions[op]) for op, seconds in by_op.most_common()]
