"""kMaX transformer decoder: center self-attention vs numpy, layer order, outputs, counts."""
import layer_harness
import numpy as np
import pytest
from scipy import special

from kmax_tf.model import heads
from kmax_tf.model import transformer_decoder
from kmax_tf.model.layers import norm

EPS = 1e-3
_NORM = norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)


def _softmax(x, axis):
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def test_center_self_attention_matches_numpy():
  rng = np.random.default_rng(0)
  layer = transformer_decoder.CenterSelfAttention(2, 6, activation="relu")
  q, k = rng.normal(size=(2, 2, 5, 2, 4)).astype(np.float32)
  v = rng.normal(size=(2, 5, 2, 3)).astype(np.float32)
  layer(q, k, v)
  gamma = np.array([0.5, 2.0], np.float32)
  layer.batch_norm_similarity.gamma.assign(gamma)
  y = layer(q, k, v, training=False).numpy()
  scale = 1 / np.sqrt(1 + EPS)
  logits = np.einsum("blhd,bmhd->bhlm", q, k) * scale * gamma[None, :, None, None]  # no 1/sqrt(d)
  w = _softmax(logits, axis=-1)
  expected = np.maximum(np.einsum("bhlm,bmhd->blhd", w, v).reshape(2, 5, 6) * scale, 0)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def _endpoints(batch=2):
  rng = np.random.default_rng(1)
  shapes = {"decoder_stage1": (3, 3, 32), "decoder_stage2": (5, 5, 16),
            "decoder_stage3": (9, 9, 8), "decoder_output": (17, 17, 4), "stage5": (3, 3, 12)}
  return {k: rng.normal(size=(batch,) + s).astype(np.float32) for k, s in shapes.items()}


def _decoder(**kwargs):
  settings = dict(num_blocks=(1, 2, 1), num_mask_slots=6, channels=16, ffn_channels=32,
                  head_channels=8, embedding_channels=4, num_classes=5)
  settings.update(kwargs)
  return transformer_decoder.KMaXTransformerDecoder(**settings)


def test_decoder_outputs_and_auxiliary_predictions():
  decoder = _decoder()
  endpoints = _endpoints()
  out = decoder(endpoints, training=False)
  assert out["transformer_class_feature"].shape == (2, 6, 16)
  assert out["transformer_mask_feature"].shape == (2, 6, 16)
  np.testing.assert_array_equal(out["feature_panoptic"], endpoints["decoder_output"])
  np.testing.assert_array_equal(out["feature_semantic"], endpoints["stage5"])
  aux = out[transformer_decoder.AUXILIARY_OUTPUTS]
  assert [p[heads.MASK_LOGITS].shape[1] for p in aux] == [3, 5, 5, 9]
  assert all(p[heads.CLASS_LOGITS].shape == (2, 6, 5) for p in aux)
  assert [layer.name for layer in decoder.kmax_layers] == [
      "kmax_layer_os32_0", "kmax_layer_os16_0", "kmax_layer_os16_1", "kmax_layer_os8_0"]


def test_fresh_layer_is_gelu_of_centers_plus_nothing():
  # Every residual branch ends in a BN with gamma 0: a fresh layer returns act(act(centers)).
  layer = transformer_decoder.KMaXDecoderLayer(16, 8, 32, head_channels=8,
                                               embedding_channels=4, num_classes=5)
  centers = np.random.default_rng(2).normal(size=(1, 6, 16)).astype(np.float32)
  new_centers, prediction = layer(np.zeros((1, 3, 3, 8), np.float32), centers, training=False)
  gelu = lambda x: 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
  np.testing.assert_allclose(new_centers.numpy(), gelu(gelu(centers)), rtol=1e-4, atol=1e-5)
  assert prediction[heads.MASK_LOGITS].shape == (1, 3, 3, 6)


def test_inference_is_deterministic_with_drop_path():
  decoder = _decoder(drop_path_keep_prob=0.5)
  endpoints = _endpoints(batch=8)
  first = decoder(endpoints, training=False)["transformer_class_feature"].numpy()
  again = decoder(endpoints, training=False)["transformer_class_feature"].numpy()
  np.testing.assert_array_equal(first, again)
  assert all(dp.keep_prob == 0.5 for layer in decoder.kmax_layers for dp in layer.drop_paths)


def test_deeplab2_coco_counts():
  # deeplab2 COCO: 10,706,016 (decoder) + 6 x 173,576 (clustering predictors), measured on
  # deeplab2 (commit 64bc1c1).
  decoder = transformer_decoder.KMaXTransformerDecoder()
  shapes = {"decoder_stage1": (2, 2, 2048), "decoder_stage2": (3, 3, 1024),
            "decoder_stage3": (5, 5, 512), "decoder_output": (9, 9, 256), "stage5": (2, 2, 8)}
  decoder({k: np.zeros((1,) + s, np.float32) for k, s in shapes.items()})
  predictors = sum(int(np.prod(w.shape)) for layer in decoder.kmax_layers
                   for w in layer.clustering_predictor.trainable_weights)
  total = sum(int(np.prod(w.shape)) for w in decoder.trainable_weights)
  assert predictors == 6 * 173576
  assert total - predictors == 10706016


def test_center_self_attention_contract():
  rng = np.random.default_rng(3)
  q, k = rng.normal(size=(2, 2, 5, 2, 4)).astype(np.float32)
  v = rng.normal(size=(2, 5, 2, 3)).astype(np.float32)
  layer_harness.run_layer_test(
      transformer_decoder.CenterSelfAttention,
      dict(num_heads=2, value_depth=6, activation="relu", norm_layer=_NORM), (q, k, v))


def test_decoder_layer_contract():
  rng = np.random.default_rng(4)
  inputs = (rng.normal(size=(1, 3, 3, 8)).astype(np.float32),
            rng.normal(size=(1, 6, 16)).astype(np.float32))
  # (centers, {mask logits, normalized feature, class logits}): the predictions stay float32.
  layer_harness.run_layer_test(
      transformer_decoder.KMaXDecoderLayer,
      dict(channels=16, num_heads=2, ffn_channels=32, drop_path_keep_prob=0.9, head_channels=8,
           embedding_channels=4, num_classes=5, activation="relu", norm_layer=_NORM),
      inputs, mixed_dtypes=["bfloat16"] + ["float32"] * 3)


def test_decoder_contract():
  # Flattened outputs: 4 layers x 3 float32 predictions, then (in key order) the pixel-decoder
  # endpoints passed on, the features, stage5 and the two bfloat16 center features.
  layer_harness.run_layer_test(
      transformer_decoder.KMaXTransformerDecoder,
      dict(num_blocks=(1, 2, 1), num_mask_slots=6, channels=16, ffn_channels=32,
           drop_path_keep_prob=0.9, head_channels=8, embedding_channels=4, num_classes=5,
           norm_layer=_NORM),
      (_endpoints(batch=1),), mixed_dtypes=["float32"] * 12 + ["bfloat16"] * 9)


def test_errors():
  with pytest.raises(ValueError, match="3 entries"):
    _decoder(num_blocks=(2, 2))
  with pytest.raises(ValueError, match="divisible"):
    transformer_decoder.KMaXDecoderLayer(channels=20)
