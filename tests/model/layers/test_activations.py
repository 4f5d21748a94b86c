"""deeplab2's 'gelu' is the exact erf GELU."""
import numpy as np
import pytest
from scipy import special

from kmax_tf.model.layers import activations


def test_gelu_is_exact_erf_form():
  x = np.linspace(-4, 4, 17).astype(np.float32)
  expected = 0.5 * x * (1 + special.erf(x / np.sqrt(2)))
  np.testing.assert_allclose(np.asarray(activations.get_activation("gelu")(x)), expected,
                             rtol=1e-5, atol=1e-6)
  approx = np.asarray(activations.get_activation("approximated_gelu")(x))
  assert np.abs(approx - expected).max() > 1e-5


def test_identity_and_unknown():
  x = np.array([-1.0, 2.0], np.float32)
  np.testing.assert_array_equal(activations.get_activation("none")(x), x)
  with pytest.raises(ValueError, match="mish"):
    activations.get_activation("mish")
