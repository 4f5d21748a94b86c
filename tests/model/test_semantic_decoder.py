"""ASPP and the auxiliary semantic decoder: shapes, pooling branch, parameter count."""
import numpy as np
import pytest

from kmax_tf.model import heads
from kmax_tf.model import semantic_decoder


def test_aspp_shapes_and_pooling_branch():
  aspp = semantic_decoder.ASPP(8, (1, 2, 3))
  x = np.random.default_rng(0).normal(size=(2, 5, 3, 4)).astype(np.float32)
  assert aspp(x, training=False).shape == (2, 5, 3, 8)
  pooled = aspp.pool_conv_bn_act(x.mean(axis=(1, 2), keepdims=True), training=False)
  assert pooled.shape == (2, 1, 1, 8)
  only = semantic_decoder.ASPP(8, (), only_1x1_projection=True)
  assert only(x).shape == (2, 5, 3, 8) and not only.branches
  with pytest.raises(ValueError, match="3 atrous rates"):
    semantic_decoder.ASPP(8, (6, 12))


def test_decoder_fuses_to_the_finest_low_level_size():
  endpoints = {"stage5": np.zeros((1, 3, 2, 16), np.float32),
               "res3": np.zeros((1, 9, 5, 8), np.float32),
               "res2": np.zeros((1, 17, 9, 4), np.float32)}
  decoder = semantic_decoder.SemanticDecoder("stage5", ["res3", "res2"], [6, 3], 8, 10, (1, 2, 3))
  assert decoder(endpoints, training=False).shape == (1, 17, 9, 10)
  clone = semantic_decoder.SemanticDecoder.from_config(decoder.get_config())
  assert clone.get_config() == decoder.get_config()
  with pytest.raises(ValueError, match="conv_type"):
    semantic_decoder.SemanticDecoder("stage5", [], [], 8, 10, (1, 2, 3), conv_type="dense")


def test_coco_semantic_decoder_and_head_match_deeplab2_count():
  # deeplab2 COCO R50: ASPP decoder + semantic head = 15,856,742 trainable (SPEC 11.1).
  endpoints = {"stage5": np.zeros((1, 2, 2, 2048), np.float32),
               "res3": np.zeros((1, 5, 5, 512), np.float32),
               "res2": np.zeros((1, 9, 9, 256), np.float32)}
  decoder = semantic_decoder.SemanticDecoder("stage5", ["res3", "res2"], [64, 32], 256, 256,
                                             (6, 12, 18))
  head = heads.PanopticHead(256, 134)
  head(decoder(endpoints))
  count = sum(int(np.prod(w.shape)) for layer in (decoder, head) for w in layer.trainable_weights)
  assert count == 15856742
