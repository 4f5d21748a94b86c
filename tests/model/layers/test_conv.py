"""Conv helpers: symmetric padding for strided convs, 1x1 projections, separable convs."""
import keras
import layer_harness
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.model.layers import conv
from kmax_tf.model.layers import norm


def _numpy_conv(x, kernel, stride, pad, rate=1):
  """Plain cross-correlation of [H, W, Cin] with [k, k, Cin, Cout] (taps `rate` apart) after
  symmetric zero padding."""
  x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  span = (kernel.shape[0] - 1) * rate + 1
  out_h = (x.shape[0] - span) // stride + 1
  out_w = (x.shape[1] - span) // stride + 1
  out = np.zeros((out_h, out_w, kernel.shape[-1]))
  for i in range(out_h):
    for j in range(out_w):
      patch = x[i * stride:i * stride + span:rate, j * stride:j * stride + span:rate]
      out[i, j] = np.tensordot(patch, kernel, axes=3)
  return out


@pytest.mark.parametrize("size", [9, 10])
def test_strided_conv_pads_symmetrically(size):
  rng = np.random.default_rng(0)
  layer = conv.Conv2DSame(4, 3, strides=2, use_bn=False)
  x = rng.normal(size=(1, size, size, 2)).astype(np.float32)
  y = layer(x).numpy()[0]
  expected = _numpy_conv(x[0], layer.conv.kernel.numpy(), 2, 1)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  if size == 9:  # a 2k+1 input gives k+1 outputs centred on input pixels 0, 2, ...
    assert y.shape[:2] == (5, 5)


def test_stride_one_is_same_padding_with_bn_and_activation():
  layer = conv.Conv2DSame(3, 3, activation="relu")
  y = layer(np.ones((2, 7, 5, 2), np.float32), training=False).numpy()
  assert y.shape == (2, 7, 5, 3)
  assert (y >= 0).all()
  assert layer.conv.bias is None  # BN follows, so no bias


@pytest.mark.parametrize("rate", [2, 6, 12])
def test_atrous_conv_matches_numpy(rate):
  # Rate 2 runs TF's dilated conv; 6 and 12 the sum of shifted taps, where on a 9x10 map the
  # rate-12 off-centre taps read only padding.
  rng = np.random.default_rng(rate)
  layer = conv.Conv2DSame(4, 3, dilation_rate=rate, use_bn=False)
  x = rng.normal(size=(2, 9, 10, 3)).astype(np.float32)
  y = layer(x).numpy()
  assert layer._sum_shifted_taps == (rate >= 4)  # pylint: disable=protected-access
  kernel = layer.conv.kernel.numpy()
  for image in range(2):
    np.testing.assert_allclose(y[image], _numpy_conv(x[image], kernel, 1, rate, rate),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(5, 5), (1, 1), (40, 3)])
def test_atrous_conv_of_unknown_size_matches_numpy(size):
  # Traced for any size, as in an exported model: taps whose window is empty only at run time
  # (rate 6 against sides of 1-5) must contribute nothing, whatever the CPU kernels do with an
  # empty input (oneDNN's Conv2D returned it unchanged, with the input's channel count).
  rng = np.random.default_rng(size[0])
  layer = conv.Conv2DSame(8, 3, dilation_rate=6, use_bn=False)
  layer.build((1, None, None, 16))
  function = tf.function(layer, input_signature=[tf.TensorSpec([1, None, None, 16])])
  x = rng.normal(size=(1,) + size + (16,)).astype(np.float32)
  y = function(x).numpy()
  np.testing.assert_allclose(y[0], _numpy_conv(x[0], layer.conv.kernel.numpy(), 1, 6, 6),
                             rtol=1e-5, atol=1e-5)


def test_shifted_taps_gradients_match_keras_dilated_conv():
  rng = np.random.default_rng(3)
  layer = conv.Conv2DSame(4, 3, dilation_rate=6, use_bn=False)
  x = tf.constant(rng.normal(size=(1, 8, 11, 3)).astype(np.float32))
  layer(x)
  reference = keras.layers.Conv2D(4, 3, dilation_rate=6, padding="same", use_bias=False)
  reference(x)
  reference.kernel.assign(layer.conv.kernel)
  weights = tf.constant(rng.normal(size=(1, 8, 11, 4)).astype(np.float32))
  gradients = []
  for fn, kernel in ((layer, layer.conv.kernel), (reference, reference.kernel)):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(fn(x) * weights)
    gradients.append(tape.gradient(loss, [x, kernel]))
  for ours, theirs in zip(*gradients):
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_bias_with_bn_is_rejected():
  with pytest.raises(ValueError, match="bias"):
    conv.Conv2DSame(3, use_bias=True, use_bn=True)


def test_conv1x1_is_a_matrix_product():
  rng = np.random.default_rng(1)
  layer = conv.Conv1x1(5, use_bias=True, use_bn=False)
  x = rng.normal(size=(2, 7, 3)).astype(np.float32)
  y = layer(x).numpy()
  expected = x @ layer.dense.kernel.numpy() + layer.dense.bias.numpy()
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_separable_conv_shapes_and_parameter_count():
  layer = conv.SeparableConv2DSame(8, 5, activation="gelu")
  y = layer(np.zeros((1, 9, 11, 4), np.float32))
  assert y.shape == (1, 9, 11, 8)
  # depthwise 5*5*4 + BN(4) gamma/beta + pointwise 4*8 + BN(8) gamma/beta.
  assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 100 + 8 + 32 + 16


_NORM = norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (conv.Conv2DSame, dict(filters=4, kernel_size=3, strides=2, norm_layer=_NORM,
                           bn_gamma_initializer="random_uniform", activation="gelu",
                           kernel_initializer="glorot_uniform"), (2, 9, 7, 3)),
    (conv.Conv2DSame, dict(filters=4, kernel_size=3, dilation_rate=6, use_bias=True, use_bn=False,
                           activation="relu"), (1, 8, 9, 3)),
    (conv.Conv1x1, dict(filters=4, use_bias=True, use_bn=False, activation="relu",
                        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.1),
                        bn_dtype="float32"), (2, 7, 3)),
    (conv.Conv1x1, dict(filters=4, norm_layer=_NORM, bn_gamma_initializer="random_uniform"),
     (2, 7, 3)),
    (conv.SeparableConv2DSame, dict(filters=4, kernel_size=3, norm_layer=_NORM,
                                    activation="relu"), (2, 9, 7, 3)),
])
def test_layer_contract(cls, kwargs, shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  layer_harness.run_layer_test(cls, kwargs, (x,))
