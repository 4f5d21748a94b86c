"""ASPP and the auxiliary semantic decoder: shapes, pooling branch, parameter count, dropout."""
import keras
import layer_harness
import numpy as np
import pytest

from kmax_tf.model import heads
from kmax_tf.model import semantic_decoder
from kmax_tf.model.layers import norm

_NORM = norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)


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
  with pytest.raises(ValueError, match="conv_type"):
    semantic_decoder.SemanticDecoder("stage5", [], [], 8, 10, (1, 2, 3), conv_type="dense")


def test_coco_semantic_decoder_and_head_match_deeplab2_count():
  # deeplab2 COCO R50: ASPP decoder + semantic head = 15,856,742 trainable, measured on
  # deeplab2 (commit 64bc1c1).
  endpoints = {"stage5": np.zeros((1, 2, 2, 2048), np.float32),
               "res3": np.zeros((1, 5, 5, 512), np.float32),
               "res2": np.zeros((1, 9, 9, 256), np.float32)}
  decoder = semantic_decoder.SemanticDecoder("stage5", ["res3", "res2"], [64, 32], 256, 256,
                                             (6, 12, 18))
  head = heads.PanopticHead(256, 134)
  head(decoder(endpoints))
  count = sum(int(np.prod(w.shape)) for layer in (decoder, head) for w in layer.trainable_weights)
  assert count == 15856742


def test_replica_dropout_on_one_device_is_keras_dropout():
  # Two-replica behaviour: tests/trainer/test_distribution.py.
  x = np.random.default_rng(0).normal(size=(200, 50)).astype(np.float32)
  ours = semantic_decoder.ReplicaDropout(0.25, seed=4)
  theirs = keras.layers.Dropout(0.25, seed=4)
  first, second = (ours(x, training=True).numpy() for _ in range(2))
  for y in (first, second):
    np.testing.assert_array_equal(y, theirs(x, training=True))
  assert not np.array_equal(first, second)
  kept = first != 0
  np.testing.assert_allclose(first[kept], x[kept] / 0.75, rtol=1e-6)
  # Binomial(10000, 0.25) drops: standard deviation 0.0043 of the fraction.
  assert abs(1 - kept.mean() - 0.25) < 0.02
  np.testing.assert_array_equal(ours(x, training=False), x)
  per_row = semantic_decoder.ReplicaDropout(0.5, noise_shape=(None, 1), seed=1)
  y = per_row(x, training=True).numpy()
  assert np.all((y == 0) == (y[:, :1] == 0))
  np.testing.assert_array_equal(
      y, keras.layers.Dropout(0.5, noise_shape=(None, 1), seed=1)(x, training=True))
  np.testing.assert_array_equal(semantic_decoder.ReplicaDropout(1.0)(x, training=True), 0 * x)


def test_aspp_dropout_is_active_in_training_only():
  aspp = semantic_decoder.ASPP(16, (1, 2, 3))
  assert isinstance(aspp.dropout, semantic_decoder.ReplicaDropout) and aspp.dropout.rate == 0.1
  x = np.random.default_rng(1).normal(size=(2, 4, 4, 8)).astype(np.float32)
  # The projection ends in BN + GELU, which is exactly 0 nowhere here: zeros are dropped units.
  assert np.count_nonzero(aspp(x, training=False)) == 512
  # Binomial(512, 0.1) drops: standard deviation 0.013 of the fraction.
  assert abs(np.mean(aspp(x, training=True).numpy() == 0) - 0.1) < 0.055
  # The dropout's seed state is its only variable, named by Keras' generator counter
  # (`seed_generator_<n>/seed_generator_state`, not by the layer) as for keras.layers.Dropout.
  weights = {id(v) for v in aspp.weights}
  seed_states = [v.path for v in aspp.variables if id(v) not in weights]
  assert len(seed_states) == 1 and seed_states[0].endswith("/seed_generator_state")


@pytest.mark.parametrize("cls,kwargs,inputs", [
    (semantic_decoder.ReplicaDropout, dict(rate=0.5, noise_shape=(None, 1, 1, 4), seed=1),
     np.ones((2, 3, 3, 4), np.float32)),
    (semantic_decoder.ASPP, dict(channels=8, atrous_rates=(1, 2, 3), activation="relu",
                                 only_1x1_projection=True, norm_layer=_NORM),
     np.random.default_rng(2).normal(size=(2, 5, 3, 4)).astype(np.float32)),
    (semantic_decoder.ASPP, dict(channels=8, atrous_rates=(1, 2, 6), activation="relu"),
     np.random.default_rng(3).normal(size=(2, 5, 3, 4)).astype(np.float32)),
    (semantic_decoder.SemanticDecoder,
     dict(high_level_key="stage5", low_level_keys=["res3", "res2"], low_level_channels=[6, 3],
          aspp_channels=8, decoder_channels=10, atrous_rates=(1, 2, 3), conv_type="standard_conv",
          aspp_only_1x1_projection=True, activation="relu", norm_layer=_NORM),
     {"stage5": np.random.default_rng(4).normal(size=(1, 3, 2, 16)).astype(np.float32),
      "res3": np.random.default_rng(5).normal(size=(1, 9, 5, 8)).astype(np.float32),
      "res2": np.random.default_rng(6).normal(size=(1, 17, 9, 4)).astype(np.float32)}),
])
def test_layer_contract(cls, kwargs, inputs):
  layer_harness.run_layer_test(cls, kwargs, (inputs,))
