"""Tests for kmax_tf.model.backbones.convnext (ConvNeXt pixel encoders)."""
import functools

import keras
import layer_harness
import numpy as np
import pytest
from scipy import signal, special

from kmax_tf.model.backbones import convnext

# Trainable parameter counts of deeplab2's ConvNeXt encoders (classification head excluded), as
# asserted by deeplab2's own test `model/pixel_encoder/convnext_test.py`
# (test_model_output_shape_and_num_params) at commit 64bc1c1.
DEEPLAB2_ENCODER_PARAMS = {
    "tiny": 27_818_592,
    "small": 49_453_152,
    "base": 87_564_416,
    "large": 196_227_264,
    "xlarge": 348_143_872,
}

STRIDES = {"stage1": 4, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}


def _closed_form_params(depths, dims):
  """Trainable parameters of a ConvNeXt encoder, from the architecture description alone."""
  count = 4 * 4 * 3 * dims[0] + dims[0]  # stem 4x4 conv (kernel + bias)
  count += 2 * dims[0]  # stem LayerNorm (gamma, beta)
  for i in range(3):  # downsamplers: LayerNorm on dims[i], then 2x2 conv dims[i] -> dims[i+1]
    count += 2 * dims[i] + 2 * 2 * dims[i] * dims[i + 1] + dims[i + 1]
  for depth, d in zip(depths, dims):
    per_block = (
        7 * 7 * d + d  # depthwise 7x7 conv with bias
        + 2 * d  # LayerNorm
        + 4 * d * d + 4 * d  # pointwise d -> 4d
        + 4 * d * d + d  # pointwise 4d -> d
        + d  # layer scale gamma
    )
    count += depth * per_block
  return count


def _num_trainable(model):
  return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@functools.lru_cache(maxsize=None)
def _build_without_values(variant, drop_path_keep_prob=1.0):
  # Variables get shapes but no values (no memory, no init time): enough to count parameters of
  # the large variants on a shared CPU box. Cached because several tests inspect the same build.
  with keras.StatelessScope(initialize_variables=False):
    return convnext.build_convnext(variant, drop_path_keep_prob=drop_path_keep_prob)


def _layer_norm(x, gamma, beta, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _patch_conv(x, kernel, bias):
  """Non-overlapping k x k stride-k convolution in numpy; x [B,H,W,C], H and W divisible by k."""
  b, h, w, c = x.shape
  k = kernel.shape[0]
  patches = x.reshape(b, h // k, k, w // k, k, c)
  return np.einsum("bykxlc,klco->byxo", patches, kernel) + bias


@pytest.fixture(scope="module")
def tiny_model():
  keras.utils.set_random_seed(0)
  return convnext.build_convnext("tiny", drop_path_keep_prob=1.0)


@pytest.mark.parametrize("height,width", [(65, 65), (97, 129)])
def test_endpoint_shapes_any_size_same_model(tiny_model, height, width):
  images = np.random.RandomState(0).randn(1, height, width, 3).astype("float32")
  outputs = tiny_model(images)
  dims = {"stage1": 96, "stage2": 96, "stage3": 192, "stage4": 384, "stage5": 768}
  assert sorted(outputs) == sorted(list(STRIDES) + [f"res{i}" for i in range(1, 6)])
  for key, stride in STRIDES.items():
    expected = (1, (height - 1) // stride + 1, (width - 1) // stride + 1, dims[key])
    assert tuple(outputs[key].shape) == expected, key
    # resK is the exact (erf) GELU of stageK.
    stage = np.asarray(outputs[key], dtype=np.float64)
    gelu = 0.5 * stage * (1.0 + special.erf(stage / np.sqrt(2.0)))
    np.testing.assert_allclose(outputs["res" + key[5:]], gelu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(convnext.CONVNEXT_VARIANTS))
def test_trainable_params_match_formula_and_deeplab2(variant):
  model = _build_without_values(variant, drop_path_keep_prob=0.6)
  depths, dims = convnext.CONVNEXT_VARIANTS[variant]
  assert _num_trainable(model) == _closed_form_params(depths, dims)
  assert _num_trainable(model) == DEEPLAB2_ENCODER_PARAMS[variant]
  assert not model.non_trainable_weights  # LayerNorm only: no BN statistics


def test_variable_shapes_follow_deeplab2():
  model = _build_without_values("tiny", drop_path_keep_prob=0.6)
  shapes = {v.path: tuple(v.shape) for v in model.weights}
  block = "convnext_tiny/convnext_stage_1/convnext_block_1_2/"
  assert shapes[block + "depthwise_conv/kernel"] == (7, 7, 1, 192)  # grouped-conv layout
  assert shapes[block + "layer_scale/layer_scale"] == (1, 1, 1, 192)
  assert shapes[block + "pointwise_conv1/kernel"] == (192, 768)
  assert shapes["convnext_tiny/stem/conv/kernel"] == (4, 4, 3, 96)
  assert shapes["convnext_tiny/downsampling_block_2/conv/kernel"] == (2, 2, 384, 768)


def test_drop_path_keep_schedule_is_linspace():
  model = _build_without_values("small", drop_path_keep_prob=0.6)
  assert model.name == "convnext_small"
  rates = [block.drop_path.keep_prob
           for stage in model.stages for block in stage.layers]
  num_blocks = 3 + 3 + 27 + 3
  assert len(rates) == num_blocks
  # Both ends included: block i keeps with 1 - (1 - p) * i / (n - 1).
  by_formula = 1.0 - 0.4 * np.arange(num_blocks) / (num_blocks - 1)
  np.testing.assert_allclose(rates, by_formula, rtol=0, atol=1e-12)
  np.testing.assert_allclose(rates, np.linspace(1.0, 0.6, num_blocks), rtol=0, atol=1e-12)
  assert rates[0] == 1.0 and rates[-1] == 0.6


def test_training_equals_inference_without_drop_path(tiny_model):
  images = np.random.RandomState(1).randn(2, 33, 33, 3).astype("float32")
  train = tiny_model(images, training=True)
  infer = tiny_model(images, training=False)
  for key in train:
    np.testing.assert_array_equal(train[key], infer[key])


def test_drop_path_mask_is_per_sample_zero_or_inverse_keep():
  keep = 0.7
  layer = convnext.DropPath(keep, seed=3)
  inputs = np.ones((400, 3, 4, 5), "float32")
  outputs = np.asarray(layer(inputs, training=True))
  per_sample = outputs.reshape(400, -1)
  assert np.all(per_sample == per_sample[:, :1])  # one draw per sample
  values = per_sample[:, 0]
  np.testing.assert_allclose(values[values != 0], 1.0 / keep, rtol=1e-6)
  kept = np.mean(values != 0)
  assert abs(kept - keep) < 4 * np.sqrt(keep * (1 - keep) / 400)  # binomial, 4 sigma
  np.testing.assert_array_equal(layer(inputs, training=False), inputs)


def test_block_drops_whole_residual_branch_per_sample():
  keras.utils.set_random_seed(2)
  # Layer scale 1 so the branch is not negligible next to the input.
  block = convnext.ConvNeXtBlock(8, drop_path_keep_prob=0.5, layer_scale_init_value=1.0)
  x = np.random.RandomState(2).randn(64, 5, 5, 8).astype("float32")
  branch = np.asarray(block(x, training=False)) - x
  dropped = np.asarray(block(x, training=True)) - x
  zeroed = np.all(np.abs(dropped) < 1e-6, axis=(1, 2, 3))
  assert 0 < zeroed.sum() < 64
  np.testing.assert_allclose(dropped[~zeroed], branch[~zeroed] / 0.5, rtol=1e-4, atol=1e-5)


def test_channelwise_conv_matches_numpy_depthwise_correlation():
  keras.utils.set_random_seed(4)
  layer = convnext.ChannelwiseConv2D(filters=3, kernel_size=7, padding="same", groups=3,
                                     bias_initializer="random_normal")
  x = np.random.RandomState(4).randn(2, 9, 11, 3).astype("float32")
  y = np.asarray(layer(x))
  kernel, bias = (np.asarray(v) for v in layer.weights)
  assert kernel.shape == (7, 7, 1, 3)
  for b in range(2):
    for c in range(3):
      expected = signal.correlate2d(x[b, :, :, c], kernel[:, :, 0, c], mode="same") + bias[c]
      np.testing.assert_allclose(y[b, :, :, c], expected, rtol=1e-4, atol=1e-5)


def test_stem_and_downsampler_padding_against_numpy():
  keras.utils.set_random_seed(5)
  model = convnext.ConvNeXt(depths=(1, 1, 1, 1), dims=(4, 6, 8, 10))
  model.build((None, None, None, 3))
  # Non-trivial LayerNorm betas: deeplab2 pads *before* the downsampler's LayerNorm, so the
  # padded row/column reaches the conv as beta, not zero.
  for layer in model.downsample_layers:
    norm = layer.get_layer("norm")
    norm.set_weights([np.random.rand(*w.shape) + 0.5 for w in norm.get_weights()])
  x = np.random.RandomState(5).randn(2, 33, 33, 3).astype("float32")
  outputs = model(x)

  stem = model.downsample_layers[0]
  kernel, bias = stem.get_layer("conv").get_weights()
  padded = np.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)))
  stem_out = _layer_norm(_patch_conv(padded, kernel, bias), *stem.get_layer("norm").get_weights())
  np.testing.assert_allclose(outputs["stage1"], stem_out, rtol=1e-4, atol=1e-4)

  down = model.downsample_layers[1]
  features = np.asarray(outputs["stage2"], np.float64)
  padded = np.pad(features, ((0, 0), (0, 1), (0, 1), (0, 0)))
  normed = _layer_norm(padded, *down.get_layer("norm").get_weights())
  expected = _patch_conv(normed, *down.get_layer("conv").get_weights())
  np.testing.assert_allclose(down(outputs["stage2"]), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (convnext.DropPath, dict(keep_prob=0.8, seed=7), (2, 3, 3, 5)),
    (convnext.LayerScale, dict(init_value=1e-3), (2, 3, 3, 5)),
    (convnext.ChannelwiseConv2D, dict(filters=5, kernel_size=7, padding="same", groups=5),
     (2, 7, 7, 5)),
    (convnext.ConvNeXtBlock, dict(dim=6, drop_path_keep_prob=0.9, layer_scale_init_value=0.5),
     (1, 7, 7, 6)),
    (convnext.ConvNeXt, dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), drop_path_keep_prob=0.9,
                             layer_scale_init_value=0.5), (1, 33, 33, 3)),
])
def test_layer_contract(cls, kwargs, shape):
  x = np.random.RandomState(8).randn(*shape).astype("float32")
  layer_harness.run_layer_test(cls, kwargs, (x,))


def test_mixed_bfloat16_policy():
  keras.utils.set_random_seed(9)
  x = np.random.RandomState(9).randn(2, 33, 33, 3).astype("float32")
  reference = convnext.ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))
  reference.build(x.shape)
  expected = reference(x)
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = convnext.ConvNeXt(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32),
                              drop_path_keep_prob=0.5)
    model.build(x.shape)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert all(v.dtype == "float32" for v in model.weights)
  model.set_weights(reference.get_weights())
  for training in (False, True):
    outputs = model(x, training=training)
    for key, value in outputs.items():
      assert value.dtype == "bfloat16", key
      assert np.all(np.isfinite(keras.ops.convert_to_numpy(
          keras.ops.cast(value, "float32"))))
  outputs = model(x, training=False)
  for key, value in expected.items():
    got = keras.ops.convert_to_numpy(keras.ops.cast(outputs[key], "float32"))
    # bfloat16 keeps ~3 significant digits; LayerNormed features are O(1).
    np.testing.assert_allclose(got, value, atol=0.1, rtol=0.05, err_msg=key)


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="huge"):
    convnext.build_convnext("huge")
  with pytest.raises(ValueError, match="drop_path_keep_prob"):
    convnext.build_convnext("tiny", drop_path_keep_prob=0.0)
  with pytest.raises(ValueError, match=r"expects \[B, H, W, 8\]"):
    convnext.ConvNeXtBlock(8).build((1, 5, 5, 4))
  with pytest.raises(ValueError, match="images"):
    convnext.ConvNeXt().build((None, 5, 3))
