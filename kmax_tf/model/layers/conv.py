"""Convolution helpers with optional batch norm and activation (deeplab2 `convolutions.py`).

- `Conv2DSame`: 'same' output size for stride 1; for stride > 1 a *symmetric* zero padding of
  `(k - 1) * rate / 2` followed by a 'valid' convolution, so that a `s*k+1` input maps to `k+1`
  outputs whose centres sit on input pixels (Keras 'same' would pad bottom/right only).
  Large atrous rates (ASPP's 6/12/18) are computed as a sum of shifted 1x1 convolutions, see
  `Conv2DSame`.
- `Conv1x1`: a 1x1 projection over the last axis of `[B, L, C]` (deeplab2's `Conv1D`).
- `SeparableConv2DSame`: depthwise kxk (+BN+act) then pointwise 1x1 (+BN+act).
"""
from __future__ import annotations

import keras
from keras import ops

from kmax_tf.model.layers import activations
from kmax_tf.model.layers import composite
from kmax_tf.model.layers import norm

# From this atrous rate on, a stride-1 conv is a sum of `k*k` shifted 1x1 convs instead of TF's
# space-to-batch dilated conv. Space-to-batch splits the map into rate^2 sub-images; their
# input-gradient kernel is pathologically slow on CPU: for a 13x13x2048 -> 256 3x3 conv (ASPP at
# crop 385) forward+backward took 0.32 / 1.9 / 2.9 s at rates 6 / 12 / 18 against 0.17-0.21 s as
# shifted taps, and at 41x41 (crop 1281) the taps' forward is as fast or faster (0.12 s against
# 0.11-0.26 s). At rate 2 (pixel decoder) space-to-batch is ~2x faster, so it keeps it.
# Measured with TF 2.20 on 2 idle cores (tf.function, median of 3).
_TAP_SUM_MIN_RATE = 4


def _overlap(length, offset: int):
  """Length of `range(length)` shifted by `offset` intersected with itself (int or tensor)."""
  if isinstance(length, int):
    return max(length - abs(offset), 0)
  return ops.maximum(length - abs(offset), 0)


@keras.saving.register_keras_serializable(package="kmax_tf")
class Conv2DSame(keras.layers.Layer):
  """`[B, H, W, Cin] -> [B, H', W', filters]` conv (+ BN) (+ activation).

  With BN the convolution has no bias (deeplab2 raises on both). A stride-1 conv with
  `dilation_rate >= _TAP_SUM_MIN_RATE` sums `kernel_size**2` shifted 1x1 convolutions over the
  input windows each tap overlaps (same result and the same `conv/kernel` variable; see the
  constant for why).
  """

  def __init__(self, filters: int, kernel_size: int = 1, strides: int = 1,
               dilation_rate: int = 1, use_bias: bool = False, use_bn: bool = True,
               norm_layer=None, bn_gamma_initializer="ones", activation: str | None = None,
               kernel_initializer="he_normal", **kwargs):
    super().__init__(**kwargs)
    if use_bn and use_bias:
      raise ValueError(f"{self.name}: a convolution followed by BN must not have a bias")
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.dilation_rate = dilation_rate
    self.use_bias = use_bias
    self.use_bn = use_bn
    self.norm_layer = norm.get(norm_layer)
    self.bn_gamma_initializer = bn_gamma_initializer
    self.activation = activation
    self.kernel_initializer = kernel_initializer
    self._padding = (kernel_size - 1) * dilation_rate // 2 if strides > 1 else 0
    self.conv = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
        padding="valid" if strides > 1 else "same", use_bias=use_bias,
        kernel_initializer=kernel_initializer, name="conv")
    self.batch_norm = (self.norm_layer(name="batch_norm", gamma_initializer=bn_gamma_initializer)
                       if use_bn else None)
    self._activation_fn = activations.get_activation(activation)
    self._sum_shifted_taps = (strides == 1 and kernel_size > 1 and
                              dilation_rate >= _TAP_SUM_MIN_RATE)

  def build(self, input_shape):
    if self._sum_shifted_taps:  # `call` reads the kernel without calling `self.conv`
      self.conv.build(input_shape)

  def call(self, inputs, training=None):
    x = inputs
    if self._padding:
      pad = self._padding
      x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    x = self._shifted_tap_conv(x) if self._sum_shifted_taps else self.conv(x)
    if self.batch_norm is not None:
      x = self.batch_norm(x, training=training)
    return self._activation_fn(x)

  def _shifted_tap_conv(self, x):
    """'same' dilated conv of `[B, H, W, Cin]` as a sum of shifted 1x1 convs.

    Each tap multiplies only the input window it overlaps (empty when its offset is at least
    the map size, as for ASPP's rate 18 on a 13x13 map) and zero-pads its result back to
    `[B, H, W, filters]`, so neither pass touches a padded copy of the input.
    """
    rate, size = self.dilation_rate, self.kernel_size
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    kernel = ops.cast(self.conv.kernel, x.dtype)
    total = None
    for row in range(size):
      for col in range(size):
        dy, dx = (row - (size - 1) // 2) * rate, (col - (size - 1) // 2) * rate
        window_h, window_w = _overlap(height, dy), _overlap(width, dx)
        if any(isinstance(n, int) and n == 0 for n in (window_h, window_w)):
          continue  # statically empty: the tap contributes nothing
        window = ops.slice(x, (0, height - window_h if dy > 0 else 0,
                               width - window_w if dx > 0 else 0, 0),
                           (ops.shape(x)[0], window_h, window_w, ops.shape(x)[3]))
        # A matmul, not a 1x1 conv: a window can be empty at run time (an exported model sees
        # any size), and oneDNN's Conv2D returns an empty input unchanged, `[B, 0, w, Cin]`
        # instead of `[B, 0, w, filters]`, which breaks the sum. MatMul keeps the channel count
        # for empty inputs under both oneDNN and Eigen, and is as fast as the conv here.
        term = ops.matmul(window, kernel[row, col])
        # Output pixel (i, j) reads input (i + dy, j + dx): the window lands `-dy` rows down.
        top, left = height - window_h if dy < 0 else 0, width - window_w if dx < 0 else 0
        term = ops.pad(term, [[0, 0], [top, height - window_h - top],
                              [left, width - window_w - left], [0, 0]])
        total = term if total is None else total + term
    return total

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                  dilation_rate=self.dilation_rate, use_bias=self.use_bias, use_bn=self.use_bn,
                  norm_layer=self.norm_layer.get_config(),
                  bn_gamma_initializer=self.bn_gamma_initializer, activation=self.activation,
                  kernel_initializer=keras.initializers.serialize(
                      keras.initializers.get(self.kernel_initializer)))
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class Conv1x1(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`[B, L, Cin] -> [B, L, filters]` 1x1 projection (+ BN) (+ activation)."""

  def __init__(self, filters: int, use_bias: bool = False, use_bn: bool = True, norm_layer=None,
               bn_gamma_initializer="ones", activation: str | None = None,
               kernel_initializer="he_normal", bn_dtype=None, **kwargs):
    super().__init__(**kwargs)
    if use_bn and use_bias:
      raise ValueError(f"{self.name}: a projection followed by BN must not have a bias")
    self.filters = filters
    self.use_bias = use_bias
    self.use_bn = use_bn
    self.norm_layer = norm.get(norm_layer)
    self.bn_gamma_initializer = bn_gamma_initializer
    self.activation = activation
    self.kernel_initializer = kernel_initializer
    self.bn_dtype = bn_dtype
    self.dense = keras.layers.Dense(filters, use_bias=use_bias,
                                    kernel_initializer=kernel_initializer, name="conv")
    self.batch_norm = (self.norm_layer(name="batch_norm", gamma_initializer=bn_gamma_initializer,
                                       dtype=bn_dtype) if use_bn else None)
    self._activation_fn = activations.get_activation(activation, after_matmul=True)

  def call(self, inputs, training=None):
    # The projection, its batch norm and activation run on `[B*L, Cin]`: a Dense on `[B, L, C]`
    # is Reshape + MatMul + Reshape in TensorFlow, and a bias (or a batch norm folded into one for
    # serving) after that Reshape cannot join the MatMul in grappler's fused MatMul + BiasAdd.
    # The MatMul is the same either way, and so are its float32 results.
    x = self.dense(ops.reshape(inputs, (-1, inputs.shape[-1])))
    if self.batch_norm is not None:
      x = self.batch_norm(x, training=training)
    x = self._activation_fn(x)
    return ops.reshape(x, tuple(ops.shape(inputs)[:-1]) + (self.filters,))

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, use_bias=self.use_bias, use_bn=self.use_bn,
                  norm_layer=self.norm_layer.get_config(),
                  bn_gamma_initializer=self.bn_gamma_initializer, activation=self.activation,
                  kernel_initializer=keras.initializers.serialize(
                      keras.initializers.get(self.kernel_initializer)),
                  bn_dtype=self.bn_dtype)
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class SeparableConv2DSame(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`[B, H, W, Cin] -> [B, H, W, filters]`: depthwise kxk + BN + act, pointwise 1x1 + BN + act.

  Stride 1 only (every kMaX use); the depthwise kernel has no bias because BN follows.
  """

  def __init__(self, filters: int, kernel_size: int = 5, norm_layer=None,
               activation: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.norm_layer = norm.get(norm_layer)
    self.activation = activation
    self.depthwise = keras.layers.DepthwiseConv2D(kernel_size, padding="same", use_bias=False,
                                                  name="depthwise")
    self.depthwise_bn = self.norm_layer(name="depthwise_batch_norm")
    self.pointwise = Conv2DSame(filters, 1, norm_layer=self.norm_layer, activation=activation,
                                name="pointwise")
    self._activation_fn = activations.get_activation(activation)

  def call(self, inputs, training=None):
    x = self.depthwise(inputs)
    x = self._activation_fn(self.depthwise_bn(x, training=training))
    return self.pointwise(x, training=training)

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, kernel_size=self.kernel_size,
                  norm_layer=self.norm_layer.get_config(), activation=self.activation)
    return config
