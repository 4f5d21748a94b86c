"""The per-image reduction deeplab2 applies to its pixel- and slot-wise losses."""
from __future__ import annotations

import tensorflow as tf


def check_top_k_percent(value: float, name: str) -> float:
  """Returns `value` if it is a fraction in [0, 1]; otherwise raises naming the config field."""
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name}.top_k_percent must lie in [0, 1], got {value}")
  return value


def mean_over_nonzero(losses: tf.Tensor, top_k_percent: float = 1.0) -> tf.Tensor:
  """Averages the non-zero entries of each image, optionally over its hardest entries only.

  Entries that are exactly zero (weight 0: void pixels, ignored slots) do not count in the
  denominator, so the result does not shrink with the amount of void in an image. With
  `top_k_percent < 1` only the `round(top_k_percent * n)` largest entries per image are kept
  first (hard-pixel mining). An image without any non-zero entry gives 0.

  Args:
    losses: `[B, ...]` float32 element losses, already multiplied by their weights.
    top_k_percent: fraction of entries kept per image.

  Returns:
    `[B]` float32.
  """
  losses = tf.reshape(losses, [tf.shape(losses)[0], -1])
  if top_k_percent != 1.0:
    num_elements = losses.shape[1]
    if num_elements is None:
      raise ValueError("mean_over_nonzero with top_k_percent < 1 needs a static number of "
                       f"elements, got shape {losses.shape}")
    # Python's round() halves to even, like tf.math.round in deeplab2.
    losses = tf.math.top_k(losses, round(top_k_percent * num_elements), sorted=False).values
  count = tf.reduce_sum(tf.cast(tf.not_equal(losses, 0.0), losses.dtype), axis=1)
  return tf.math.divide_no_nan(tf.reduce_sum(losses, axis=1), count)
