"""`kmax_axial_resnet50`: MaX-S backbone with GELU (deeplab2 `axial_resnet50`).

Inception stem, (3, 4, 6, 3) blocks; blocks whose input stride is >= 16 use axial attention
(stage 4 blocks 2-6 and all of stage 5, whose first block strides inside the attention).
"""
from __future__ import annotations

from kmax_tf.model.backbones import resnet


def build_axial_resnet50(drop_path_keep_prob: float = 1.0, width_multiplier: float = 1.0,
                         stem_width_multiplier: float = 1.0, layer_multiplier: float = 1.0,
                         norm_layer=None, name: str = "axial_resnet50") -> resnet.ResNetEncoder:
  return resnet.ResNetEncoder(
      resnet.scale_block_counts((3, 4, 6, 3), layer_multiplier), width_multiplier,
      stem_width_multiplier, stem_type="inception", activation="gelu",
      use_axial_beyond_stride=16, drop_path_keep_prob=drop_path_keep_prob,
      norm_layer=norm_layer, name=name)
