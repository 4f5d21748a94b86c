"""(Axial-)ResNet pixel encoder (deeplab2 `encoder/axial_resnet.py` in classification mode) and
`kmax_resnet50`.

ResNet-50 here has no max-pool: the stem is a 7x7 stride-2 conv and *every* stage, stage 2
included, strides in the 3x3 conv of its first block. For a `32k+1` input every endpoint at
stride s has `(H-1)/s+1` pixels.
"""
from __future__ import annotations

import math
from typing import Sequence

import keras

from kmax_tf.model.layers import activations
from kmax_tf.model.layers import blocks
from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import drop_path
from kmax_tf.model.layers import norm
from kmax_tf.model.layers import stems

# Input stride of stages 2..5 and the stride from which drop path applies (deeplab2 defaults).
_STAGE_INPUT_STRIDES = (2, 4, 8, 16)
_DROP_PATH_BEYOND_STRIDE = 16
STEM_TYPES = ("conv7x7", "inception")


def scale_block_counts(block_counts: Sequence[int], layer_multiplier: float) -> tuple[int, ...]:
  """deeplab2's `scale_int_list`: `int(n * multiplier)` (floor), rejecting empty stages."""
  counts = tuple(int(n * layer_multiplier) for n in block_counts)
  if min(counts) < 1:
    raise ValueError(f"backbone_layer_multiplier={layer_multiplier} leaves a stage of "
                     f"{tuple(block_counts)} without blocks: {counts}")
  return counts


def stage_block_settings(input_stride: int, num_blocks: int, use_axial_beyond_stride: int,
                         drop_path_keep_prob: float, drop_path_schedule: str):
  """Block types and drop-path keep probs of one stage.

  A block uses axial attention and drop path from its *input* stride: the first (strided) block
  of a stage sees the stage's input stride, the others twice that. The linear schedule gives
  `1 - (1 - p) * (log2(stride) - 1) / 4`.
  """
  types, keep_probs = [], []
  current = input_stride
  for index in range(num_blocks):
    use_axial = use_axial_beyond_stride > 0 and current >= use_axial_beyond_stride
    types.append("axial" if use_axial else "bottleneck")
    if current >= _DROP_PATH_BEYOND_STRIDE:
      keep_probs.append(drop_path.keep_prob_for_stage(
          drop_path_keep_prob, drop_path_schedule, int(round(math.log2(current) - 1))))
    else:
      keep_probs.append(1.0)
    if index == 0:
      current *= 2
  return tuple(types), tuple(keep_probs)


@keras.saving.register_keras_serializable(package="kmax_tf")
class ResNetEncoder(composite.BuiltOnFirstCall, keras.Model):
  """`images [B, H, W, 3]` (normalised) -> dict of `stageK` (not activated) and `resK = act(stageK)`.

  Strides: stage1 2, stage2 4, stage3 8, stage4 16, stage5 32; widths 64w, 4*(64, 128, 256, 512)w.
  """

  def __init__(self, block_counts: Sequence[int] = (3, 4, 6, 3), width_multiplier: float = 1.0,
               stem_width_multiplier: float = 1.0, stem_type: str = "conv7x7",
               activation: str = "relu", use_axial_beyond_stride: int = 0,
               drop_path_keep_prob: float = 1.0, drop_path_schedule: str = "linear",
               norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if stem_type not in STEM_TYPES:
      raise ValueError(f"{self.name}: stem_type {stem_type!r} not in {STEM_TYPES}")
    if len(block_counts) != 4:
      raise ValueError(f"{self.name}: block_counts needs 4 stages, got {block_counts}")
    self.block_counts = tuple(int(n) for n in block_counts)
    self.width_multiplier = width_multiplier
    self.stem_width_multiplier = stem_width_multiplier
    self.stem_type = stem_type
    self.activation = activation
    self.use_axial_beyond_stride = use_axial_beyond_stride
    self.drop_path_keep_prob = drop_path_keep_prob
    self.drop_path_schedule = drop_path_schedule
    self.norm_layer = norm.get(norm_layer)
    self._activation_fn = activations.get_activation(activation)
    if stem_type == "conv7x7":
      self.stem = conv.Conv2DSame(int(round(64 * stem_width_multiplier)), 7, strides=2,
                                  norm_layer=self.norm_layer, name="stem")
    else:
      self.stem = stems.InceptionStem(stem_width_multiplier, activation,
                                      norm_layer=self.norm_layer, name="stem")
    self.stages = []
    for index, (input_stride, num_blocks) in enumerate(
        zip(_STAGE_INPUT_STRIDES, self.block_counts)):
      types, keep_probs = stage_block_settings(input_stride, num_blocks,
                                               use_axial_beyond_stride, drop_path_keep_prob,
                                               drop_path_schedule)
      self.stages.append(blocks.BlockGroup(
          int(round(input_stride * 32 * width_multiplier)), types, strides=2,
          drop_path_keep_probs=keep_probs, activation=activation, norm_layer=self.norm_layer,
          name=f"stage{index + 2}"))

  def call(self, inputs, training=None):
    x = self.stem(inputs, training=training)
    endpoints = {"stage1": x, "res1": self._activation_fn(x)}
    for index, stage in enumerate(self.stages):
      x = stage(x, training=training)
      endpoints[f"stage{index + 2}"] = x
      endpoints[f"res{index + 2}"] = self._activation_fn(x)
    return endpoints

  def get_config(self):
    return {**super().get_config(), "block_counts": list(self.block_counts),
            "width_multiplier": self.width_multiplier,
            "stem_width_multiplier": self.stem_width_multiplier, "stem_type": self.stem_type,
            "activation": self.activation,
            "use_axial_beyond_stride": self.use_axial_beyond_stride,
            "drop_path_keep_prob": self.drop_path_keep_prob,
            "drop_path_schedule": self.drop_path_schedule,
            "norm_layer": self.norm_layer.get_config()}


def build_resnet50(drop_path_keep_prob: float = 1.0, width_multiplier: float = 1.0,
                   stem_width_multiplier: float = 1.0, layer_multiplier: float = 1.0,
                   norm_layer=None, name: str = "resnet50") -> ResNetEncoder:
  """`kmax_resnet50`: 7x7 stem, (3, 4, 6, 3) bottleneck blocks, ReLU, no attention."""
  return ResNetEncoder(scale_block_counts((3, 4, 6, 3), layer_multiplier), width_multiplier,
                       stem_width_multiplier, stem_type="conv7x7", activation="relu",
                       use_axial_beyond_stride=0, drop_path_keep_prob=drop_path_keep_prob,
                       norm_layer=norm_layer, name=name)
