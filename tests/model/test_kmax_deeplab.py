"""The meta-architecture on the tiny synthetic config: output contract, any input size with one
set of weights, padding, get_config, mixed precision."""
import keras
import layer_harness
import numpy as np
import pytest

from kmax_tf import config
from kmax_tf import configs
from kmax_tf.model import builder
from kmax_tf.model import heads
from kmax_tf.model import kmax_deeplab
from kmax_tf.model import transformer_decoder

KEYS = {heads.MASK_LOGITS, heads.NORMALIZED_FEATURE, heads.CLASS_LOGITS,
        kmax_deeplab.SEMANTIC_LOGITS}


def _tiny_options():
  return config.load_config(configs.config_path("synthetic/kmax_tiny.textproto"),
                            overrides={"DATA_DIR": "/tmp", "EXPERIMENT_NAME": "test"})


@pytest.fixture(scope="module")
def model():
  return builder.build_model(_tiny_options())


def _images(height, width, batch=1, seed=0):
  return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype(np.float32)


def test_inference_outputs(model):
  out = model(_images(65, 65, batch=2), training=False)
  assert set(out) == KEYS
  assert out[heads.MASK_LOGITS].shape == (2, 17, 17, 16)
  assert out[heads.NORMALIZED_FEATURE].shape == (2, 17, 17, 32)
  assert out[heads.CLASS_LOGITS].shape == (2, 16, 7)
  assert out[kmax_deeplab.SEMANTIC_LOGITS].shape == (2, 17, 17, 7)
  assert all(v.dtype == "float32" for v in out.values())


def test_without_semantic_logits_the_other_outputs_are_unchanged(model):
  images = _images(65, 65, seed=5)
  full = model(images, training=False)
  panoptic_only = model(images, training=False, semantic_logits=False)
  assert set(panoptic_only) == KEYS - {kmax_deeplab.SEMANTIC_LOGITS}
  for key, value in panoptic_only.items():
    np.testing.assert_array_equal(value, full[key], err_msg=key)
  with pytest.raises(ValueError, match="semantic_logits=False is for inference"):
    model(images, training=True, semantic_logits=False)


@pytest.mark.parametrize("height,width,padded", [(97, 129, (97, 129)), (70, 90, (97, 97))])
def test_same_weights_any_size_in_training(model, height, width, padded):
  out = model(_images(height, width), training=True)
  h, w = (padded[0] - 1) // 4 + 1, (padded[1] - 1) // 4 + 1
  assert out[heads.MASK_LOGITS].shape == (1, h, w, 16)
  aux = out[transformer_decoder.AUXILIARY_OUTPUTS]
  assert len(aux) == 3  # tiny config: one kMaX layer per stride
  for prediction in aux:
    assert set(prediction) == KEYS - {kmax_deeplab.SEMANTIC_LOGITS}
    assert prediction[heads.MASK_LOGITS].shape == (1, h, w, 16)
    assert prediction[heads.NORMALIZED_FEATURE].shape == (1, h, w, 32)


def test_odd_size_equals_explicit_padding_with_127_5(model):
  image = _images(70, 90, seed=3)
  padded = np.full((1, 97, 97, 3), 127.5, np.float32)
  padded[:, :70, :90] = image
  out = model(image, training=False)
  reference = model(padded, training=False)
  for key in KEYS:
    np.testing.assert_allclose(out[key].numpy(), reference[key].numpy(), rtol=1e-4, atol=1e-4)


def test_pad_to_output_stride():
  x = np.zeros((1, 70, 33, 3), np.float32)
  assert kmax_deeplab.pad_to_output_stride(x).shape == (1, 97, 33, 3)
  assert kmax_deeplab.pad_to_output_stride(np.zeros((1, 1, 65, 3))).shape == (1, 1, 65, 3)


def test_bad_input_shape(model):
  with pytest.raises(ValueError, match="images must be"):
    model(np.zeros((1, 33, 33), np.float32))


def test_layer_contract(model):
  # The parts are built float32 layers, shared by every instance the harness makes, so its
  # mixed-precision run checks only that a dtype policy survives the config (the parts' own
  # tests and test_mixed_float16_outputs_stay_float32_and_finite check the computation).
  parts = dict(encoder=model.encoder, pixel_decoder=model.pixel_decoder,
               transformer_decoder_=model.transformer_decoder, head=model.head,
               semantic_head=model.semantic_head, semantic_decoder=model.semantic_decoder)
  layer_harness.run_layer_test(kmax_deeplab.KMaXDeepLab, parts, (_images(33, 33),),
                               mixed_dtypes="float32")


def test_mixed_float16_outputs_stay_float32_and_finite():
  keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    mixed = builder.build_model(_tiny_options())
    out = mixed(_images(65, 65), training=True)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert mixed.encoder.stem.conv.compute_dtype == "float16"
  # Softmax/argmax inputs are normalized in float32, as deeplab2 does.
  assert mixed.head.pixel_space_mask_batch_norm.compute_dtype == "float32"
  layer = mixed.transformer_decoder.kmax_layers[0]
  assert layer.memory_attention.batch_norm_similarity.compute_dtype == "float32"
  assert layer.kmeans_attention.kmeans_memory_batch_norm_retrieved_value.compute_dtype == "float32"
  for values in [out] + list(out[transformer_decoder.AUXILIARY_OUTPUTS]):
    for key, value in values.items():
      if key != transformer_decoder.AUXILIARY_OUTPUTS:
        assert value.dtype == "float32", key
        assert np.isfinite(value.numpy()).all(), key


def test_mixed_bfloat16_decoder_layer():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    layer = transformer_decoder.KMaXDecoderLayer(16, 8, 32, head_channels=8,
                                                 embedding_channels=4, num_classes=5)
    pixels = np.random.default_rng(0).normal(size=(1, 9, 9, 8)).astype(np.float32)
    centers, prediction = layer(pixels, np.ones((1, 6, 16), np.float32), training=True)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert centers.dtype == "bfloat16"
  assert all(v.dtype == "float32" for v in prediction.values())
