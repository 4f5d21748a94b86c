"""ResNet encoder: endpoint strides/widths, block settings, layer multiplier."""
import layer_harness
import numpy as np
import pytest

from kmax_tf.model.backbones import resnet
from kmax_tf.model.layers import norm


def test_endpoints_of_a_narrow_resnet50():
  model = resnet.build_resnet50(width_multiplier=0.125, stem_width_multiplier=0.125,
                                layer_multiplier=0.34)
  out = model(np.zeros((1, 65, 33, 3), np.float32))
  widths = {"stage1": 8, "stage2": 32, "stage3": 64, "stage4": 128, "stage5": 256}
  for index, stride in enumerate((2, 4, 8, 16, 32), start=1):
    for prefix in ("stage", "res"):
      assert out[f"{prefix}{index}"].shape == (1, 64 // stride + 1, 32 // stride + 1,
                                               widths[f"stage{index}"])
  np.testing.assert_array_equal(out["res5"], np.maximum(out["stage5"], 0))
  assert [len(s.blocks) for s in model.stages] == [1, 1, 2, 1]


def test_layer_contract():
  x = np.random.default_rng(0).normal(size=(1, 33, 33, 3)).astype(np.float32)
  layer_harness.run_layer_test(
      resnet.ResNetEncoder,
      dict(block_counts=(1, 1, 1, 1), width_multiplier=0.25, stem_width_multiplier=0.25,
           stem_type="inception", activation="gelu", use_axial_beyond_stride=16,
           drop_path_keep_prob=0.8, drop_path_schedule="constant",
           norm_layer=norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)),
      (x,))


def test_layer_multiplier_floors_like_deeplab2_and_rejects_empty_stages():
  assert resnet.scale_block_counts((3, 4, 6, 3), 0.34) == (1, 1, 2, 1)
  assert resnet.scale_block_counts((3, 4, 6, 3), 1.0) == (3, 4, 6, 3)
  with pytest.raises(ValueError, match="without blocks"):
    resnet.scale_block_counts((3, 4, 6, 3), 0.2)


def test_resnet_has_no_attention_and_linear_drop_path_from_stride_16():
  types, keeps = resnet.stage_block_settings(8, 6, 0, 0.8, "linear")
  assert types == ("bottleneck",) * 6
  assert keeps == (1.0,) + (pytest.approx(0.85),) * 5
  types, keeps = resnet.stage_block_settings(16, 3, 0, 0.8, "linear")
  assert keeps == (pytest.approx(0.85), pytest.approx(0.8), pytest.approx(0.8))


def test_bad_stem_type():
  with pytest.raises(ValueError, match="stem_type"):
    resnet.ResNetEncoder(stem_type="deep")
