"""Drop path (stochastic depth) on residual branches, deeplab2 `drop_path.py` semantics."""
from __future__ import annotations

import keras
from keras import ops

from kmax_tf.ops import replica_random


def keep_prob_for_stage(keep_prob_last_stage: float, schedule: str, stage: int,
                        num_stages: int = 4) -> float:
  """'constant': the same keep prob everywhere; 'linear': `1 - (1 - p) * stage / num_stages`."""
  if schedule == "constant":
    return keep_prob_last_stage
  if schedule == "linear":
    return 1.0 - (1.0 - keep_prob_last_stage) * stage / num_stages
  raise ValueError(f"Unknown drop path schedule {schedule!r}; use 'constant' or 'linear'")


@keras.saving.register_keras_serializable(package="kmax_tf")
class DropPath(keras.layers.Layer):
  """Stochastic depth: drops the whole residual branch per sample while training.

  Training output is `x * floor(keep + U[0, 1)) / keep` with one uniform draw per sample (mask
  shape `[B, 1, ..., 1]`), so each sample is either zeroed or scaled by `1 / keep` and the
  expectation is unchanged. Inference (and `keep == 1`) returns `x` unchanged. Under a
  distribution strategy each replica draws its own masks (`ops.replica_random`), as deeplab2's
  stateful draws do; on one device the masks are those of `keras.random.uniform`.

  Args:
    keep_prob: probability of keeping a sample's branch, in (0, 1].
    seed: optional int seed for the mask draws.

  Input/output: `[B, ...]`, same shape and dtype.
  """

  def __init__(self, keep_prob: float = 1.0, seed: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 < keep_prob <= 1.0:
      raise ValueError(f"DropPath '{self.name}': keep_prob must be in (0, 1], got {keep_prob}.")
    self.keep_prob = float(keep_prob)
    self.seed = seed
    # Only stochastic layers carry a seed-state variable (identity ones stay variable-free).
    self.seed_generator = keras.random.SeedGenerator(seed) if self.keep_prob < 1.0 else None

  def call(self, inputs, training=None):
    if not training or self.keep_prob == 1.0:
      return inputs
    mask_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    # The mask is drawn in float32: bfloat16 cannot represent keep + U[0, 1) finely enough
    # to keep the drop probability equal to 1 - keep.
    uniform = replica_random.uniform(mask_shape, self.seed_generator, dtype="float32")
    mask = ops.floor(self.keep_prob + uniform) / self.keep_prob
    return inputs * ops.cast(mask, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"keep_prob": self.keep_prob, "seed": self.seed})
    return config
