"""Drop path (stochastic depth) on residual branches, deeplab2 `drop_path.py` semantics."""
from __future__ import annotations

import keras
from keras import ops


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
  """Training: `x * floor(keep + U[0,1)) / keep` with one draw per sample (mask `[B, 1, ...]`).

  Inference, or keep_prob == 1: identity.
  """

  def __init__(self, keep_prob: float = 1.0, seed: int | None = None, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 < keep_prob <= 1.0:
      raise ValueError(f"{self.name}: keep_prob must be in (0, 1], got {keep_prob}")
    self.keep_prob = keep_prob
    self.seed = seed
    self._seed_generator = keras.random.SeedGenerator(seed) if keep_prob < 1.0 else None

  def call(self, inputs, training=None):
    if not training or self.keep_prob >= 1.0:
      return inputs
    shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    noise = keras.random.uniform(shape, dtype=inputs.dtype, seed=self._seed_generator)
    mask = ops.floor(self.keep_prob + noise)
    return inputs * mask / ops.cast(self.keep_prob, inputs.dtype)

  def get_config(self):
    config = super().get_config()
    config.update(keep_prob=self.keep_prob, seed=self.seed)
    return config
