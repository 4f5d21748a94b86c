"""Checkpoints with deeplab2's exact variable names and shapes, without deeplab2.

`tests/data/deeplab2_variables/*.json` list the (key, shape) pairs of checkpoints written by
deeplab2 itself (see the README there); `write_checkpoint` fills them with random values.
"""
import json
import pathlib

import numpy as np
import tensorflow as tf

from kmax_tf import convert_deeplab2

LISTINGS = pathlib.Path(__file__).resolve().parents[1] / "data" / "deeplab2_variables"
GLOBAL_STEP = 1234


def listing(name: str) -> dict:
  """The listing `tests/data/deeplab2_variables/<name>.json`: {"form", "variables", ...}."""
  with open(LISTINGS / f"{name}.json", encoding="utf-8") as f:
    return json.load(f)


def write_checkpoint(variables, prefix, seed=0):
  """Writes a TF checkpoint with these raw keys; returns `{key: value}` of the model values.

  Bookkeeping/optimizer entries are written as scalars: only their names matter to the converter
  (it must skip them), and full-size optimizer slots would triple the test's I/O.
  """
  rng = np.random.default_rng(seed)
  names, tensors, values = [], [], {}
  for key, shape in variables:
    if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
      continue
    if convert_deeplab2.is_model_value(key):
      value = rng.standard_normal(shape, dtype=np.float32)
      values[key] = value
    else:
      value = np.array(GLOBAL_STEP if key.startswith("global_step/") else 0, np.int64)
    names.append(key)
    tensors.append(tf.constant(value))
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=tensors)
  return values
