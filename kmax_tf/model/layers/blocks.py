"""Residual bottleneck / axial-attention blocks and block groups (deeplab2 `axial_blocks.py`,
`axial_block_groups.py`).

Blocks are pre-activation style: the block activates its (non-activated) input, and returns the
residual sum *without* activation; the next consumer activates it.
"""
from __future__ import annotations

from typing import Sequence

import keras

from kmax_tf.model.layers import activations
from kmax_tf.model.layers import axial_attention
from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import drop_path
from kmax_tf.model.layers import norm

BLOCK_TYPES = ("bottleneck", "axial")


@keras.saving.register_keras_serializable(package="kmax_tf")
class ResidualBlock(keras.layers.Layer):
  """`[B, H, W, Cin] -> [B, H', W', filters_list[2]]` bottleneck residual block.

  Path: act(x) -> 1x1 conv+BN+act -> (3x3 conv+BN+act | axial attention + act) -> 1x1 conv +
  BN (gamma 0, so the block starts as its shortcut) -> drop path -> + shortcut.
  The shortcut is a strided 1x1 conv + BN of act(x) when channels change, otherwise act(x)
  (subsampled `[::s, ::s]` when strided).
  """

  def __init__(self, filters_list: Sequence[int], strides: int = 1, dilation_rate: int = 1,
               block_type: str = "bottleneck", activation: str = "relu",
               drop_path_keep_prob: float = 1.0, norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if len(filters_list) != 3:
      raise ValueError(f"{self.name}: filters_list must have 3 entries, got {filters_list}")
    if block_type not in BLOCK_TYPES:
      raise ValueError(f"{self.name}: block_type {block_type!r} not in {BLOCK_TYPES}")
    self.filters_list = tuple(int(f) for f in filters_list)
    self.strides = strides
    self.dilation_rate = dilation_rate
    self.block_type = block_type
    self.activation = activation
    self.drop_path_keep_prob = drop_path_keep_prob
    self.norm_layer = norm.get(norm_layer)
    self._activation_fn = activations.get_activation(activation)
    f0, f1, f2 = self.filters_list
    self.conv1_bn_act = conv.Conv2DSame(f0, 1, norm_layer=self.norm_layer, activation=activation,
                                        name="conv1_bn_act")
    if block_type == "axial":
      self.attention = axial_attention.AxialAttention2D(f1, strides=strides,
                                                        norm_layer=self.norm_layer,
                                                        name="attention")
    else:
      self.conv2_bn_act = conv.Conv2DSame(f1, 3, strides=strides, dilation_rate=dilation_rate,
                                          norm_layer=self.norm_layer, activation=activation,
                                          name="conv2_bn_act")
    self.conv3_bn = conv.Conv2DSame(f2, 1, norm_layer=self.norm_layer,
                                    bn_gamma_initializer="zeros", name="conv3_bn")
    self.drop_path = (drop_path.DropPath(drop_path_keep_prob, name="drop_path")
                      if drop_path_keep_prob < 1.0 else None)
    self.shortcut = None

  def build(self, input_shape):
    if input_shape[-1] != self.filters_list[2]:
      self.shortcut = conv.Conv2DSame(self.filters_list[2], 1, strides=self.strides,
                                      norm_layer=self.norm_layer, name="shortcut")

  def call(self, inputs, training=None):
    x = self._activation_fn(inputs)
    if self.shortcut is not None:
      shortcut = self.shortcut(x, training=training)
    elif self.strides > 1:
      shortcut = x[:, ::self.strides, ::self.strides]
    else:
      shortcut = x
    x = self.conv1_bn_act(x, training=training)
    if self.block_type == "axial":
      x = self._activation_fn(self.attention(x, training=training))
    else:
      x = self.conv2_bn_act(x, training=training)
    x = self.conv3_bn(x, training=training)
    if self.drop_path is not None:
      x = self.drop_path(x, training=training)
    return x + shortcut

  def get_config(self):
    config = super().get_config()
    config.update(filters_list=list(self.filters_list), strides=self.strides,
                  dilation_rate=self.dilation_rate, block_type=self.block_type,
                  activation=self.activation, drop_path_keep_prob=self.drop_path_keep_prob,
                  norm_layer=self.norm_layer.get_config())
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class BlockGroup(composite.BuiltOnFirstCall, keras.layers.Layer):
  """A stack of `ResidualBlock`s: `[B, H, W, Cin] -> [B, H/strides, W/strides, 4 * filters]`.

  Args:
    filters: base width f; bottleneck blocks use `[f, f, 4f]`, axial blocks `[2f, f, 4f]`.
    block_types: one of BLOCK_TYPES per block (its length is the number of blocks).
    strides: stride of the first block.
    dilation_rate: atrous rate of the 3x3 convs of bottleneck blocks.
    drop_path_keep_probs: keep probability per block (1.0 = no drop path).
  """

  def __init__(self, filters: int, block_types: Sequence[str], strides: int = 1,
               dilation_rate: int = 1, drop_path_keep_probs: Sequence[float] | None = None,
               activation: str = "relu", norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.block_types = tuple(block_types)
    self.strides = strides
    self.dilation_rate = dilation_rate
    if drop_path_keep_probs is None:
      drop_path_keep_probs = (1.0,) * len(self.block_types)
    if len(drop_path_keep_probs) != len(self.block_types):
      raise ValueError(f"{self.name}: {len(drop_path_keep_probs)} drop-path keep probs for "
                       f"{len(self.block_types)} blocks")
    self.drop_path_keep_probs = tuple(float(p) for p in drop_path_keep_probs)
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    self.blocks = []
    for index, (block_type, keep_prob) in enumerate(
        zip(self.block_types, self.drop_path_keep_probs)):
      first_width = filters * 2 if block_type == "axial" else filters
      self.blocks.append(ResidualBlock(
          (first_width, filters, filters * 4), strides=strides if index == 0 else 1,
          dilation_rate=dilation_rate, block_type=block_type, activation=activation,
          drop_path_keep_prob=keep_prob, norm_layer=self.norm_layer, name=f"block{index + 1}"))

  def call(self, inputs, training=None):
    x = inputs
    for block in self.blocks:
      x = block(x, training=training)
    return x

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, block_types=list(self.block_types),
                  strides=self.strides, dilation_rate=self.dilation_rate,
                  drop_path_keep_probs=list(self.drop_path_keep_probs),
                  activation=self.activation, norm_layer=self.norm_layer.get_config())
    return config
