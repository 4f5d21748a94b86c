"""Prediction heads (deeplab2 `decoder/max_deeplab.py` `MaXDeepLab` and `PanopticDeepLabSingleHead`).

`PredictionHead` turns pixel features and cluster-center features into the three panoptic outputs;
one instance is the final head, six more are the per-layer clustering predictors of the kMaX
decoder (same structure, separate weights).
"""
from __future__ import annotations

import math

import keras
from keras import ops

from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import norm

MASK_LOGITS = "pixel_space_mask_logits"
NORMALIZED_FEATURE = "pixel_space_normalized_feature"
CLASS_LOGITS = "transformer_class_logits"


def void_prior_bias(num_classes: int, void_prior_prob: float = 0.9):
  """Constant added to class logits: 0 for real classes, `log((C-1) p / (1-p))` on the last
  (void) channel, so that softmax puts probability p on void at initialization."""
  bias = [0.0] * num_classes
  bias[-1] = math.log((num_classes - 1) * void_prior_prob / (1.0 - void_prior_prob))
  return bias


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
  """`x / sqrt(max(sum(x^2), epsilon))`, the same guard as `tf.math.l2_normalize`."""
  return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


@keras.saving.register_keras_serializable(package="kmax_tf")
class PanopticHead(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`[B, H, W, C] -> [B, H, W, output_channels]`: 5x5 separable conv (+BN+act) to
  `head_channels`, then a 1x1 conv with bias (kernel TruncatedNormal(0.01))."""

  def __init__(self, head_channels: int, output_channels: int, activation: str = "gelu",
               norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.head_channels = head_channels
    self.output_channels = output_channels
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    self.conv_block = conv.SeparableConv2DSame(head_channels, 5, norm_layer=self.norm_layer,
                                               activation=activation, name="conv_block")
    self.final_conv = keras.layers.Conv2D(
        output_channels, 1, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="final_conv")

  def call(self, inputs, training=None):
    return self.final_conv(self.conv_block(inputs, training=training))

  def get_config(self):
    config = super().get_config()
    config.update(head_channels=self.head_channels, output_channels=self.output_channels,
                  activation=self.activation, norm_layer=self.norm_layer.get_config())
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class PredictionHead(keras.layers.Layer):
  """Mask-transformer prediction head.

  Inputs: `pixel_feature [B, h, w, Cp]`, `class_feature [B, N, D]`, `mask_feature [B, N, D]`.
  Outputs (float32):
    - `pixel_space_normalized_feature [B, h, w, E]`: L2-normalized BN(pixel head(pixel_feature)),
    - `pixel_space_mask_logits [B, h, w, N]`: BN(<normalized feature, mask kernel>) with ONE
      shared gamma/beta (BN over an added axis of size 1; gamma starts at 0.1),
    - `transformer_class_logits [B, N, num_classes]`: 1x1 projection + constant void prior.
  """

  def __init__(self, head_channels: int, embedding_channels: int, num_classes: int,
               activation: str = "gelu", norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.head_channels = head_channels
    self.embedding_channels = embedding_channels
    self.num_classes = num_classes
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    self.pixel_space_head = PanopticHead(head_channels, embedding_channels, activation,
                                         norm_layer=self.norm_layer, name="pixel_space_head")
    self.pixel_space_feature_batch_norm = self.norm_layer(name="pixel_space_feature_batch_norm")
    self.transformer_mask_head = conv.Conv1x1(embedding_channels, norm_layer=self.norm_layer,
                                              name="transformer_mask_head")
    self.transformer_class_head = conv.Conv1x1(
        num_classes, use_bias=True, use_bn=False,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name="transformer_class_head")
    # Mask logits drive softmaxes and the k-means argmax: normalize them in float32.
    self.pixel_space_mask_batch_norm = self.norm_layer(
        name="pixel_space_mask_batch_norm", gamma_initializer=keras.initializers.Constant(0.1),
        dtype="float32")
    self._void_prior = void_prior_bias(num_classes)

  def build(self, input_shape):
    self.pixel_space_mask_batch_norm.build((None, None, None, None, 1))

  def call(self, pixel_feature, class_feature, mask_feature, training=None):
    embedding = self.pixel_space_head(pixel_feature, training=training)
    embedding = self.pixel_space_feature_batch_norm(embedding, training=training)
    normalized = l2_normalize(ops.cast(embedding, "float32"))
    mask_kernel = self.transformer_mask_head(mask_feature, training=training)
    mask_logits = ops.einsum("bhwd,bnd->bhwn", ops.cast(normalized, mask_kernel.dtype),
                             mask_kernel)
    mask_logits = self.pixel_space_mask_batch_norm(
        ops.cast(mask_logits, "float32")[..., None], training=training)[..., 0]
    class_logits = ops.cast(self.transformer_class_head(class_feature), "float32")
    class_logits = class_logits + ops.convert_to_tensor(self._void_prior, "float32")
    return {MASK_LOGITS: mask_logits, NORMALIZED_FEATURE: normalized,
            CLASS_LOGITS: class_logits}

  def get_config(self):
    config = super().get_config()
    config.update(head_channels=self.head_channels, embedding_channels=self.embedding_channels,
                  num_classes=self.num_classes, activation=self.activation,
                  norm_layer=self.norm_layer.get_config())
    return config
