"""A kmax-tf checkpoint of a built model for the export tests."""
import numpy as np
import tensorflow as tf

from kmax_tf import weight_io


def save_with_random_statistics(model, prefix: str) -> str:
  """Gives `model` non-trivial batch-norm moving means (so a weight an export failed to load
  would show) and saves it as a kmax-tf training checkpoint; returns the checkpoint's prefix."""
  rng = np.random.default_rng(0)
  for variable in model.variables:
    if "moving_mean" in variable.path:
      variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
  return tf.train.Checkpoint(model=weight_io.ModelVariables(model)).save(prefix)
