"""Auxiliary semantic decoder: ASPP on the stride-32 backbone feature plus low-level fusions
(deeplab2 `decoder/aspp.py` and `PanopticDeepLabSingleDecoder`)."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops
import tensorflow as tf

from kmax_tf import geometry
from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import norm
from kmax_tf.ops import replica_random

CONV_TYPES = ("depthwise_separable_conv", "standard_conv")


@keras.saving.register_keras_serializable(package="kmax_tf")
class ReplicaDropout(keras.layers.Dropout):
  """`keras.layers.Dropout` whose masks differ between the replicas of a distributed step.

  Same arguments, config and single seed-state variable as the Keras layer (so variable names and
  checkpoints are unchanged); on one device it drops exactly the elements the Keras layer drops.
  Under a distribution strategy the Keras layer would give every replica the same mask (see
  `ops.replica_random`); deeplab2's dropout draws per replica.

  Input/output: any shape, same dtype.
  """

  def call(self, inputs, training=False):
    if not training or self.rate == 0:
      return inputs
    if self.rate == 1:
      # stateless_dropout rejects rate 1; the Keras layer returns zeros.
      return ops.zeros_like(inputs)
    noise_shape = None
    if self.noise_shape is not None:
      noise_shape = [tf.shape(inputs)[axis] if size is None else size
                     for axis, size in enumerate(self.noise_shape)]
    return tf.nn.experimental.stateless_dropout(
        inputs, rate=self.rate, seed=replica_random.replica_seed(self.seed_generator),
        noise_shape=noise_shape)


@keras.saving.register_keras_serializable(package="kmax_tf")
class ASPP(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`[B, h, w, C] -> [B, h, w, channels]` atrous spatial pyramid pooling.

  Branches (each conv + BN + act): 1x1; three 3x3 with the given atrous rates; global average
  pooling -> 1x1 -> broadcast back. Concatenated, projected by 1x1 conv + BN + act, Dropout(0.1).
  With `only_1x1_projection` the whole module is that single projection.
  """

  def __init__(self, channels: int, atrous_rates: Sequence[int], activation: str = "gelu",
               only_1x1_projection: bool = False, norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if not only_1x1_projection and len(atrous_rates) != 3:
      raise ValueError(f"{self.name}: ASPP needs exactly 3 atrous rates, got "
                       f"{tuple(atrous_rates)}")
    self.channels = channels
    self.atrous_rates = tuple(int(r) for r in atrous_rates)
    self.activation = activation
    self.only_1x1_projection = only_1x1_projection
    self.norm_layer = norm.get(norm_layer)
    nl = self.norm_layer
    self.proj_conv_bn_act = conv.Conv2DSame(channels, 1, norm_layer=nl, activation=activation,
                                            name="proj_conv_bn_act")
    self.branches = []
    if not only_1x1_projection:
      self.branches.append(conv.Conv2DSame(channels, 1, norm_layer=nl, activation=activation,
                                           name="conv_bn_act"))
      for index, rate in enumerate(self.atrous_rates):
        self.branches.append(conv.Conv2DSame(channels, 3, dilation_rate=rate, norm_layer=nl,
                                             activation=activation, name=f"aspp_conv{index + 1}"))
      self.pool_conv_bn_act = conv.Conv2DSame(channels, 1, norm_layer=nl, activation=activation,
                                              name="aspp_pool")
      self.dropout = ReplicaDropout(0.1)

  def call(self, inputs, training=None):
    if self.only_1x1_projection:
      return self.proj_conv_bn_act(inputs, training=training)
    results = [branch(inputs, training=training) for branch in self.branches]
    pooled = ops.mean(inputs, axis=(1, 2), keepdims=True)
    pooled = self.pool_conv_bn_act(pooled, training=training)
    results.append(ops.broadcast_to(pooled, ops.shape(results[0])))
    x = self.proj_conv_bn_act(ops.concatenate(results, axis=-1), training=training)
    return self.dropout(x, training=training)

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, atrous_rates=list(self.atrous_rates),
                  activation=self.activation, only_1x1_projection=self.only_1x1_projection,
                  norm_layer=self.norm_layer.get_config())
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class SemanticDecoder(composite.BuiltOnFirstCall, keras.layers.Layer):
  """Endpoint dict -> `[B, h_l, w_l, decoder_channels]` at the last low-level feature's size.

  x = ASPP(endpoints[high_level_key]); for each low-level key (coarse to fine):
  x = fuse(concat(resize(x), act(BN(W_1x1 endpoints[key])))) with a 5x5 (separable) conv+BN+act.
  """

  def __init__(self, high_level_key: str, low_level_keys: Sequence[str],
               low_level_channels: Sequence[int], aspp_channels: int, decoder_channels: int,
               atrous_rates: Sequence[int], conv_type: str = "depthwise_separable_conv",
               aspp_only_1x1_projection: bool = False, activation: str = "gelu",
               norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if len(low_level_keys) != len(low_level_channels):
      raise ValueError(f"{self.name}: {len(low_level_keys)} low-level features but "
                       f"{len(low_level_channels)} projection widths")
    if conv_type not in CONV_TYPES:
      raise ValueError(f"{self.name}: conv_type {conv_type!r} not in {CONV_TYPES}")
    self.high_level_key = high_level_key
    self.low_level_keys = tuple(low_level_keys)
    self.low_level_channels = tuple(int(c) for c in low_level_channels)
    self.aspp_channels = aspp_channels
    self.decoder_channels = decoder_channels
    self.atrous_rates = tuple(int(r) for r in atrous_rates)
    self.conv_type = conv_type
    self.aspp_only_1x1_projection = aspp_only_1x1_projection
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    nl = self.norm_layer
    self.aspp = ASPP(aspp_channels, self.atrous_rates, activation, aspp_only_1x1_projection,
                     norm_layer=nl, name="aspp")
    self.projections, self.fusions = [], []
    for index, channels in enumerate(self.low_level_channels):
      self.projections.append(conv.Conv2DSame(channels, 1, norm_layer=nl, activation=activation,
                                              name=f"low_level_conv{index}"))
      if conv_type == "depthwise_separable_conv":
        fusion = conv.SeparableConv2DSame(decoder_channels, 5, norm_layer=nl,
                                          activation=activation, name=f"fusion_conv{index}")
      else:
        fusion = conv.Conv2DSame(decoder_channels, 5, norm_layer=nl, activation=activation,
                                 name=f"fusion_conv{index}")
      self.fusions.append(fusion)

  def call(self, endpoints, training=None):
    x = self.aspp(endpoints[self.high_level_key], training=training)
    for key, projection, fusion in zip(self.low_level_keys, self.projections, self.fusions):
      low = projection(endpoints[key], training=training)
      x = ops.cast(geometry.resize_align_corners(ops.cast(x, "float32"), ops.shape(low)[1:3]),
                   low.dtype)
      x = fusion(ops.concatenate([x, low], axis=-1), training=training)
    return x

  def get_config(self):
    config = super().get_config()
    config.update(high_level_key=self.high_level_key, low_level_keys=list(self.low_level_keys),
                  low_level_channels=list(self.low_level_channels),
                  aspp_channels=self.aspp_channels, decoder_channels=self.decoder_channels,
                  atrous_rates=list(self.atrous_rates), conv_type=self.conv_type,
                  aspp_only_1x1_projection=self.aspp_only_1x1_projection,
                  activation=self.activation, norm_layer=self.norm_layer.get_config())
    return config
