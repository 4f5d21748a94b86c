"""Pixel decoder: stage strides/widths, LayerNorm'd skips, deeplab2's parameter count."""
import layer_harness
import numpy as np
import pytest

from kmax_tf.model import pixel_decoder
from kmax_tf.model.layers import norm


def _endpoints(widths, sides):
  return {f"stage{i + 1}": np.random.default_rng(i).normal(size=(1, s, s, w)).astype(np.float32)
          for i, (w, s) in enumerate(zip(widths, sides))}


def test_four_stage_decoder_shapes():
  decoder = pixel_decoder.KMaXPixelDecoder((16, 8, 4, 2), (1, 2, 1, 1))
  out = decoder(_endpoints((4, 8, 16, 32, 64), (33, 17, 9, 5, 3)), training=False)
  assert out["decoder_stage1"].shape == (1, 3, 3, 64)
  assert out["decoder_stage2"].shape == (1, 5, 5, 32)
  assert out["decoder_stage3"].shape == (1, 9, 9, 16)
  assert out["decoder_output"].shape == (1, 17, 17, 8)
  assert [len(s.blocks) for s in decoder.stages] == [1, 2, 1, 1]
  assert decoder.stages[2].blocks[0].conv2_bn_act.dilation_rate == 2
  assert decoder.stages[0].blocks[0].block_type == "axial"


def test_five_stage_decoder_with_stride4_stem_does_not_resize():
  decoder = pixel_decoder.KMaXPixelDecoder(
      (16, 8, 8, 4, 2), (1, 1, 1, 1, 1), ("axial", "axial", "bottleneck", "bottleneck",
                                          "bottleneck"),
      endpoint_strides={"stage1": 4, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32})
  out = decoder(_endpoints((4, 8, 16, 32, 64), (17, 17, 9, 5, 3)), training=False)
  assert out["decoder_output"].shape == (1, 17, 17, 8)
  assert decoder.skip_connections[-1].resize_inputs == (False, False)


def test_deeplab2_coco_pixel_decoder_parameter_count():
  # deeplab2 COCO R50 pixel decoder: 21,151,040 trainable, measured on deeplab2 (commit 64bc1c1).
  decoder = pixel_decoder.KMaXPixelDecoder()
  decoder(_endpoints((64, 256, 512, 1024, 2048), (17, 9, 5, 3, 2)))
  assert sum(int(np.prod(w.shape)) for w in decoder.trainable_weights) == 21151040


def test_errors():
  with pytest.raises(ValueError, match="same length"):
    pixel_decoder.KMaXPixelDecoder((16, 8, 4, 2), (1, 1, 1))
  decoder = pixel_decoder.KMaXPixelDecoder((16, 8, 4, 2), (1, 1, 1, 1))
  with pytest.raises(ValueError, match="stage2"):
    decoder({k: v for k, v in _endpoints((4, 8, 16, 32, 64), (33, 17, 9, 5, 3)).items()
             if k != "stage2"})


def test_layer_contract():
  layer_harness.run_layer_test(
      pixel_decoder.KMaXPixelDecoder,
      dict(dims=(16, 8, 4, 2), num_blocks=(1, 2, 1, 1),
           block_types=("axial", "bottleneck", "bottleneck", "bottleneck"),
           endpoint_strides={"stage1": 4, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32},
           norm_layer=norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)),
      (_endpoints((4, 8, 16, 32, 64), (17, 17, 9, 5, 3)),))
