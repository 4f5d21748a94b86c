"""ConvNeXt pixel encoders (Liu et al., "A ConvNet for the 2020s", CVPR 2022) for kMaX-DeepLab.

The layer tree, variable names and variable shapes follow deeplab2's
`model/pixel_encoder/convnext.py` as kMaX builds it (`zero_padding_for_downstream=True`), so that a
later checkpoint converter can map deeplab2 variables one to one:

    convnext_<variant>/
      stem                    ZeroPadding2D((1, 2), (1, 2)) -> Conv2D 4x4/4 -> LayerNorm
      downsampling_block_{0,1,2}
                              ZeroPadding2D((0, 1), (0, 1)) -> LayerNorm -> Conv2D 2x2/2
      convnext_stage_{0..3}/convnext_block_{i}_{j}
                              depthwise_conv -> norm -> pointwise_conv1 -> GELU
                              -> pointwise_conv2 -> layer_scale -> drop path -> + input

The asymmetric zero padding makes a `32k+1` input give features of side `(H - 1) / s + 1` at
stride `s` (1281 -> 321, 161, 81, 41). Spatial sizes are never fixed at build time, so one model
runs at every input size.
"""
from __future__ import annotations

import numpy as np
import keras
from keras import ops

from kmax_tf.model.layers.drop_path import DropPath

# Stage depths and widths per variant; the same table as deeplab2's `get_model`.
CONVNEXT_VARIANTS = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}

_LAYER_NORM_EPSILON = 1e-6
_KERNEL_STDDEV = 0.02


def _kernel_initializer():
  return keras.initializers.TruncatedNormal(stddev=_KERNEL_STDDEV)


def drop_path_keep_rates(drop_path_keep_prob: float, num_blocks: int) -> list[float]:
  """Per-block drop-path keep rates, linear from 1.0 (first block) to the last block's value.

  Both end points are included, as with deeplab2's `tf.linspace(1.0, p, num_blocks)`.
  """
  return [float(rate) for rate in np.linspace(1.0, drop_path_keep_prob, num_blocks)]


@keras.saving.register_keras_serializable(package="kmax_tf")
class LayerScale(keras.layers.Layer):
  """Learnable per-channel scale (CaiT-style layer scale), initialised to a small constant.

  The variable is named `layer_scale` with shape `[1, 1, 1, C]`, as deeplab2 stores it.

  Args:
    init_value: initial value of every scale entry (ConvNeXt uses 1e-6).

  Input/output: `[B, H, W, C]`.
  """

  def __init__(self, init_value: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    self.init_value = float(init_value)

  def build(self, input_shape):
    if len(input_shape) != 4 or input_shape[-1] is None:
      raise ValueError(
          f"LayerScale '{self.name}' expects [B, H, W, C] with known C, got {input_shape}.")
    self.gamma = self.add_weight(
        name="layer_scale",
        shape=(1, 1, 1, input_shape[-1]),
        initializer=keras.initializers.Constant(self.init_value))

  def call(self, inputs):
    return inputs * self.gamma

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({"init_value": self.init_value})
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class ChannelwiseConv2D(keras.layers.Conv2D):
  """Depthwise convolution stored as a fully grouped `Conv2D` (`groups == filters == C`).

  The kernel keeps the grouped-conv shape `[kh, kw, 1, C]` used by deeplab2's checkpoints, but
  the convolution runs through `ops.depthwise_conv` (kernel reshaped to `[kh, kw, C, 1]`, the
  same memory layout). TensorFlow has no native grouped convolution on CPU and Keras falls back
  to XLA for it, which measured ~28x slower than the depthwise kernel for a [1, 161, 161, 96]
  input with a 7x7 kernel.

  Input/output: `[B, H, W, C]` (padding and strides as for `Conv2D`).
  """

  def build(self, input_shape):
    if input_shape[-1] != self.filters or self.groups != self.filters:
      raise ValueError(
          f"ChannelwiseConv2D '{self.name}' needs groups == filters == input channels, got "
          f"groups={self.groups}, filters={self.filters}, input shape {input_shape}.")
    super().build(input_shape)

  def convolution_op(self, inputs, kernel):
    kernel_h, kernel_w = self.kernel_size
    depthwise_kernel = ops.reshape(kernel, (kernel_h, kernel_w, self.filters, 1))
    return ops.depthwise_conv(
        inputs, depthwise_kernel, strides=self.strides, padding=self.padding,
        data_format=self.data_format, dilation_rate=self.dilation_rate)


@keras.saving.register_keras_serializable(package="kmax_tf")
class ConvNeXtBlock(keras.layers.Layer):
  """One ConvNeXt residual block (channels last).

  `x + drop_path(gamma * Dense_C(GELU(Dense_4C(LayerNorm(DWConv7x7(x))))))`, GELU exact (erf).

  Args:
    dim: channel count C of input and output.
    drop_path_keep_prob: keep probability of the residual branch (see `DropPath`).
    layer_scale_init_value: initial value of the layer-scale `gamma`.

  Input/output: `[B, H, W, C]`.
  """

  def __init__(self, dim: int, drop_path_keep_prob: float = 1.0,
               layer_scale_init_value: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    self.dim = int(dim)
    self.drop_path_keep_prob = float(drop_path_keep_prob)
    self.layer_scale_init_value = float(layer_scale_init_value)
    self.depthwise_conv = ChannelwiseConv2D(
        filters=dim, kernel_size=7, padding="same", groups=dim,
        kernel_initializer=_kernel_initializer(), bias_initializer="zeros",
        dtype=self.dtype_policy, name="depthwise_conv")
    self.norm = keras.layers.LayerNormalization(
        epsilon=_LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm")
    self.pointwise_conv1 = keras.layers.Dense(
        4 * dim, kernel_initializer=_kernel_initializer(), bias_initializer="zeros",
        dtype=self.dtype_policy, name="pointwise_conv1")
    self.act = keras.layers.Activation("gelu", dtype=self.dtype_policy, name="act")
    self.pointwise_conv2 = keras.layers.Dense(
        dim, kernel_initializer=_kernel_initializer(), bias_initializer="zeros",
        dtype=self.dtype_policy, name="pointwise_conv2")
    self.gamma = LayerScale(layer_scale_init_value, dtype=self.dtype_policy, name="layer_scale")
    self.drop_path = DropPath(drop_path_keep_prob, dtype=self.dtype_policy, name="drop_path")

  def build(self, input_shape):
    if len(input_shape) != 4 or input_shape[-1] != self.dim:
      raise ValueError(
          f"ConvNeXtBlock '{self.name}' expects [B, H, W, {self.dim}], got {input_shape}.")
    hidden_shape = tuple(input_shape[:-1]) + (4 * self.dim,)
    self.depthwise_conv.build(input_shape)
    self.norm.build(input_shape)
    self.pointwise_conv1.build(input_shape)
    self.pointwise_conv2.build(hidden_shape)
    self.gamma.build(input_shape)

  def call(self, inputs, training=None):
    x = self.depthwise_conv(inputs)
    x = self.norm(x)
    x = self.pointwise_conv1(x)
    x = self.act(x)
    x = self.pointwise_conv2(x)
    x = self.gamma(x)
    return inputs + self.drop_path(x, training=training)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "dim": self.dim,
        "drop_path_keep_prob": self.drop_path_keep_prob,
        "layer_scale_init_value": self.layer_scale_init_value,
    })
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class ConvNeXt(keras.Model):
  """ConvNeXt encoder with kMaX's downstream zero padding; returns deeplab2 endpoints.

  Args:
    depths: number of blocks in each of the 4 stages.
    dims: channel count of each of the 4 stages.
    drop_path_keep_prob: keep probability of the last block; earlier blocks are linearly
      closer to 1.0 (see `drop_path_keep_rates`).
    layer_scale_init_value: initial layer-scale value of every block.

  Call: `images [B, H, W, 3]` (already normalised, `H, W = 32k + 1` for exact strides), any size.
  Returns a dict with, for `h_s = (H - 1) / s + 1`:
    `stage1` stem output `[B, h_4, w_4, dims[0]]`;
    `stage2..stage5` stage outputs at strides 4, 8, 16, 32 with `dims[0..3]` channels;
    `res1..res5` = exact GELU of `stage1..stage5`.
  """

  def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768),
               drop_path_keep_prob: float = 1.0, layer_scale_init_value: float = 1e-6,
               **kwargs):
    super().__init__(**kwargs)
    if len(depths) != 4 or len(dims) != 4:
      raise ValueError(
          f"ConvNeXt needs 4 stage depths and 4 dims, got depths={depths}, dims={dims}.")
    if not 0.0 < drop_path_keep_prob <= 1.0:
      raise ValueError(
          f"ConvNeXt drop_path_keep_prob must be in (0, 1], got {drop_path_keep_prob}.")
    self.depths = tuple(int(d) for d in depths)
    self.dims = tuple(int(d) for d in dims)
    self.drop_path_keep_prob = float(drop_path_keep_prob)
    self.layer_scale_init_value = float(layer_scale_init_value)
    policy = self.dtype_policy

    def conv(filters, size, name):
      return keras.layers.Conv2D(
          filters, kernel_size=size, strides=size, kernel_initializer=_kernel_initializer(),
          bias_initializer="zeros", dtype=policy, name=name)

    def layer_norm(name):
      return keras.layers.LayerNormalization(
          epsilon=_LAYER_NORM_EPSILON, dtype=policy, name=name)

    # Padding 1 before / 2 after (stem) and 0 / 1 (2x2 downsamplers) maps a 32k+1 side to
    # (side - 1) / stride + 1; without it the valid 4x4/4 and 2x2/2 convs drop the last pixel.
    self.downsample_layers = [keras.Sequential([
        keras.layers.ZeroPadding2D(((1, 2), (1, 2)), dtype=policy, name="zero_padding"),
        conv(self.dims[0], 4, "conv"),
        layer_norm("norm"),
    ], name="stem")]
    for i in range(3):
      self.downsample_layers.append(keras.Sequential([
          keras.layers.ZeroPadding2D(((0, 1), (0, 1)), dtype=policy, name="zero_padding"),
          layer_norm("norm"),
          conv(self.dims[i + 1], 2, "conv"),
      ], name=f"downsampling_block_{i}"))

    keep_rates = drop_path_keep_rates(self.drop_path_keep_prob, sum(self.depths))
    self.stages = []
    first_block = 0
    for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
      self.stages.append(keras.Sequential([
          ConvNeXtBlock(dim, keep_rates[first_block + j], self.layer_scale_init_value,
                        dtype=policy, name=f"convnext_block_{i}_{j}")
          for j in range(depth)
      ], name=f"convnext_stage_{i}"))
      first_block += depth
    self._act = keras.layers.Activation("gelu", dtype=policy, name="gelu")

  def build(self, input_shape):
    if len(input_shape) != 4:
      raise ValueError(f"ConvNeXt '{self.name}' expects images [B, H, W, C], got "
                       f"shape {input_shape}.")
    shape = (None, None, None, input_shape[-1])
    for downsample, stage, dim in zip(self.downsample_layers, self.stages, self.dims):
      downsample.build(shape)
      shape = (None, None, None, dim)
      stage.build(shape)

  def call(self, images, training=None):
    endpoints = {}
    x = images
    for i, (downsample, stage) in enumerate(zip(self.downsample_layers, self.stages)):
      x = downsample(x, training=training)
      if i == 0:
        endpoints["stage1"] = x
        endpoints["res1"] = self._act(x)
      x = stage(x, training=training)
      endpoints[f"stage{i + 2}"] = x
      endpoints[f"res{i + 2}"] = self._act(x)
    return endpoints

  def get_config(self):
    return {
        **super().get_config(),
        "depths": list(self.depths),
        "dims": list(self.dims),
        "drop_path_keep_prob": self.drop_path_keep_prob,
        "layer_scale_init_value": self.layer_scale_init_value,
    }


def build_convnext(variant: str, drop_path_keep_prob: float = 1.0,
                   name: str | None = None) -> keras.Model:
  """Builds a ConvNeXt encoder as kMaX-DeepLab uses it, with all variables created.

  Args:
    variant: "tiny", "small", "base", "large" or "xlarge" (a "convnext_" prefix, as in the
      deeplab2 encoder name, is accepted).
    drop_path_keep_prob: keep probability of the last block (`backbone.drop_path_keep_prob`).
    name: model name; defaults to "convnext_<variant>" like deeplab2.

  Returns:
    A built `ConvNeXt` model; see its docstring for the endpoint dict.
  """
  key = variant.lower().removeprefix("convnext_")
  if key not in CONVNEXT_VARIANTS:
    raise ValueError(f"Unknown ConvNeXt variant {variant!r}; expected one of "
                     f"{sorted(CONVNEXT_VARIANTS)}.")
  depths, dims = CONVNEXT_VARIANTS[key]
  model = ConvNeXt(depths, dims, drop_path_keep_prob=drop_path_keep_prob,
                   name=name or f"convnext_{key}")
  model.build((None, None, None, 3))
  return model
