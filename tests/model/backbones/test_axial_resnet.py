"""Axial-ResNet-50: Inception stem, GELU, axial attention from input stride 16."""
import numpy as np
import pytest

from kmax_tf.model.backbones import axial_resnet
from kmax_tf.model.backbones import resnet


def test_axial_blocks_where_deeplab2_puts_them():
  types4, _ = resnet.stage_block_settings(8, 6, 16, 1.0, "linear")
  types5, _ = resnet.stage_block_settings(16, 3, 16, 1.0, "linear")
  assert types4 == ("bottleneck",) + ("axial",) * 5
  assert types5 == ("axial",) * 3


def test_narrow_axial_resnet_endpoints():
  model = axial_resnet.build_axial_resnet50(drop_path_keep_prob=0.8, width_multiplier=0.125,
                                            stem_width_multiplier=0.125, layer_multiplier=0.34)
  out = model(np.zeros((1, 33, 65, 3), np.float32))
  assert out["stage1"].shape == (1, 17, 33, 16)  # Inception stem: 128w channels
  assert out["stage5"].shape == (1, 2, 3, 256)
  assert model.activation == "gelu"
  stage4, stage5 = model.stages[2], model.stages[3]
  assert [b.block_type for b in stage4.blocks] == ["bottleneck", "axial"]
  assert [b.drop_path_keep_prob for b in stage5.blocks] == [pytest.approx(0.85)]
