"""ResNet encoder: endpoint strides/widths, block settings, layer multiplier."""
import numpy as np
import pytest

from kmax_tf.model.backbones import resnet


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
  assert resnet.ResNetEncoder.from_config(model.get_config()).get_config() == model.get_config()


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
