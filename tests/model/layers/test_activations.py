"""deeplab2's 'gelu' is the exact erf GELU."""
import numpy as np
import pytest
from scipy import special
import tensorflow as tf

from kmax_tf.model.layers import activations


def test_gelu_is_exact_erf_form():
  x = np.linspace(-4, 4, 17).astype(np.float32)
  expected = 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
  np.testing.assert_allclose(np.asarray(activations.get_activation("gelu")(x)), expected,
                             rtol=1e-5, atol=1e-6)
  approx = np.asarray(activations.get_activation("approximated_gelu")(x))
  assert np.abs(approx - expected).max() > 1e-5


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_exact_gelu_is_tf_gelu_bit_for_bit(dtype):
  """deeplab2 calls tf.nn.gelu; the four-op form must give its bits, not just its values."""
  x = tf.cast(tf.constant(np.random.default_rng(0).normal(0.0, 4.0, 20000), tf.float32), dtype)
  expected = tf.nn.gelu(x, approximate=False)
  for after_matmul in (False, True):
    got = activations.get_activation("gelu", after_matmul=after_matmul)(x)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(tf.bitcast(got, tf.int16 if dtype != "float32" else tf.int32),
                                  tf.bitcast(expected, tf.int16 if dtype != "float32" else tf.int32))


def _op_types(activation):
  graph = tf.function(activation).get_concrete_function(tf.TensorSpec([4])).graph
  return {op.type for op in graph.get_operations()}


def test_tflite_builds_get_tf_gelu_op_sequence():
  """TFLite's converter fuses tf.nn.gelu's sequence (Neg ... Erfc) into its GELU builtin; the
  four-op form has no Neg and converts to nothing TFLite runs."""
  assert "Neg" not in _op_types(activations.get_activation("gelu"))
  with activations.tf_gelu_everywhere():
    assert "Neg" in _op_types(activations.get_activation("gelu"))
  assert "Neg" not in _op_types(activations.get_activation("gelu"))
  assert "Neg" in _op_types(activations.get_activation("gelu", after_matmul=True))


def test_identity_and_unknown():
  x = np.array([-1.0, 2.0], np.float32)
  np.testing.assert_array_equal(activations.get_activation("none")(x), x)
  with pytest.raises(ValueError, match="mish"):
    activations.get_activation("mish")
