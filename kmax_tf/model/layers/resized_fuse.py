"""ResizedFuse (deeplab2 `resized_fuse.py`): brings features to one size and width and sums them.

A feature that already has `num_channels` channels is only resized; any other goes
act -> 1x1 conv + BN -> resize. Resizing is bilinear with aligned corners (exact between strides
for `s*k+1` sizes). deeplab2 also fuses a feature exactly twice as large with a stride-2 conv; the
kMaX pixel decoder only fuses coarser and same-size features, so that branch is not needed here.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from kmax_tf import geometry
from kmax_tf.model.layers import activations
from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import norm


@keras.saving.register_keras_serializable(package="kmax_tf")
class ResizedFuse(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`call([f_1 [B,h_i,w_i,c_i], ...], size=(H, W)) -> [B, H, W, num_channels]` (sum).

  Args:
    num_channels: output width.
    input_channels: channels of each input (decides which inputs get a projection).
    resize_inputs: per input, whether its spatial size differs from the target (False skips the
      identity resize of same-size inputs).
  """

  def __init__(self, num_channels: int, input_channels: Sequence[int],
               resize_inputs: Sequence[bool], activation: str = "gelu", norm_layer=None,
               **kwargs):
    super().__init__(**kwargs)
    if len(input_channels) != len(resize_inputs):
      raise ValueError(f"{self.name}: input_channels and resize_inputs differ in length")
    self.num_channels = num_channels
    self.input_channels = tuple(int(c) for c in input_channels)
    self.resize_inputs = tuple(bool(r) for r in resize_inputs)
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    self._activation_fn = activations.get_activation(activation)
    self.projections = [
        None if channels == num_channels else
        conv.Conv2DSame(num_channels, 1, norm_layer=self.norm_layer,
                        name=f"resized_conv_bn{index + 1}")
        for index, channels in enumerate(self.input_channels)]

  def call(self, inputs, size, training=None):
    if len(inputs) != len(self.input_channels):
      raise ValueError(f"{self.name}: expected {len(self.input_channels)} inputs, "
                       f"got {len(inputs)}")
    fused = []
    for feature, projection, resize in zip(inputs, self.projections, self.resize_inputs):
      if projection is not None:
        feature = projection(self._activation_fn(feature), training=training)
      if resize:
        feature = ops.cast(geometry.resize_align_corners(ops.cast(feature, "float32"), size),
                           feature.dtype)
      fused.append(feature)
    return sum(fused[1:], fused[0])

  def get_config(self):
    config = super().get_config()
    config.update(num_channels=self.num_channels, input_channels=list(self.input_channels),
                  resize_inputs=list(self.resize_inputs), activation=self.activation,
                  norm_layer=self.norm_layer.get_config())
    return config
