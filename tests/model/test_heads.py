"""Prediction heads: void prior, L2-normalized embeddings, shared mask-logit BN, shapes."""
import math

import layer_harness
import numpy as np
import pytest

from kmax_tf.model import heads
from kmax_tf.model.layers import norm


def test_void_prior_gives_void_probability_0_9():
  bias = np.asarray(heads.void_prior_bias(134))
  assert bias[:-1].tolist() == [0.0] * 133
  assert bias[-1] == pytest.approx(math.log(133 * 9))
  probs = np.exp(bias) / np.exp(bias).sum()
  assert probs[-1] == pytest.approx(0.9)


def test_l2_normalize_matches_numpy():
  x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
  expected = x / np.linalg.norm(x, axis=-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(heads.l2_normalize(x)), expected, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(heads.l2_normalize(np.zeros((2, 3)))), 0)


def test_prediction_head_outputs():
  rng = np.random.default_rng(1)
  head = heads.PredictionHead(16, 8, num_classes=5)
  pixels = rng.normal(size=(2, 9, 7, 12)).astype(np.float32)
  centers = rng.normal(size=(2, 6, 10)).astype(np.float32)
  out = head(pixels, centers, centers, training=False)
  assert out[heads.MASK_LOGITS].shape == (2, 9, 7, 6)
  assert out[heads.CLASS_LOGITS].shape == (2, 6, 5)
  feature = out[heads.NORMALIZED_FEATURE].numpy()
  assert feature.shape == (2, 9, 7, 8)
  np.testing.assert_allclose(np.linalg.norm(feature, axis=-1), 1.0, rtol=1e-5)
  # Mask logits = BN_shared(<feature, BN(W centers)>): gamma 0.1, fresh stats.
  kernel = centers @ head.transformer_mask_head.dense.kernel.numpy() / np.sqrt(1 + 1e-3)
  expected = 0.1 * np.einsum("bhwd,bnd->bhwn", feature, kernel) / np.sqrt(1 + 1e-3)
  np.testing.assert_allclose(out[heads.MASK_LOGITS].numpy(), expected, rtol=1e-4, atol=1e-5)
  assert head.pixel_space_mask_batch_norm.gamma.shape == (1,)  # one gamma for all slots
  dense = head.transformer_class_head.dense
  expected_class = centers @ dense.kernel.numpy() + dense.bias.numpy() + heads.void_prior_bias(5)
  np.testing.assert_allclose(out[heads.CLASS_LOGITS].numpy(), expected_class, rtol=1e-5,
                             atol=1e-5)


def test_head_parameter_count_matches_deeplab2_final_head():
  # deeplab2 COCO final heads: 173,576 trainable, measured on deeplab2 (commit 64bc1c1).
  head = heads.PredictionHead(256, 128, num_classes=134)
  head(np.zeros((1, 3, 3, 256), np.float32), np.zeros((1, 4, 256), np.float32),
       np.zeros((1, 4, 256), np.float32))
  assert sum(int(np.prod(w.shape)) for w in head.trainable_weights) == 173576


_NORM = norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)


def test_prediction_head_contract():
  rng = np.random.default_rng(6)
  inputs = (rng.normal(size=(2, 5, 4, 6)).astype(np.float32),
            rng.normal(size=(2, 3, 10)).astype(np.float32),
            rng.normal(size=(2, 3, 10)).astype(np.float32))
  # The outputs feed softmaxes and argmaxes: float32 under mixed precision too.
  layer_harness.run_layer_test(
      heads.PredictionHead, dict(head_channels=4, embedding_channels=3, num_classes=5,
                                 activation="relu", norm_layer=_NORM),
      inputs, mixed_dtypes="float32")


def test_panoptic_head_contract():
  x = np.random.default_rng(7).normal(size=(1, 5, 5, 4)).astype(np.float32)
  head = layer_harness.run_layer_test(
      heads.PanopticHead, dict(head_channels=6, output_channels=7, activation="relu",
                               norm_layer=_NORM), (x,))
  assert head(x).shape == (1, 5, 5, 7)
