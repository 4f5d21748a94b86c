"""Activation lookup: deeplab2's 'gelu' is the exact (erf) GELU, 'approximated_gelu' the tanh one."""
from __future__ import annotations

import contextlib

import keras
from keras import ops

_SQRT_HALF = 0.7071067811865476
# Set by `tf_gelu_everywhere` while a model is built for TFLite.
_tf_gelu_everywhere = False


def exact_gelu(x):
  """`tf.nn.gelu(x, approximate=False)` bit for bit, `0.5 * x * erfc(-x / sqrt(2))`, in four
  element-wise ops instead of its five: the negation goes into the constant (`(-x) * c` and
  `x * (-c)` round alike). A separate Neg pass over every activation was ~5% of the COCO R50
  export's op time at 1281² with TensorFlow's Eigen kernels."""
  return (0.5 * x) * ops.erfc(x * ops.cast(-_SQRT_HALF, x.dtype))


@contextlib.contextmanager
def tf_gelu_everywhere():
  """Layers built inside use `tf.nn.gelu`'s op sequence for every exact GELU: TFLite's converter
  turns that sequence into its GELU builtin, but not `exact_gelu`'s (whose `Erfc` is no TFLite
  builtin). Same values up to float32 rounding."""
  global _tf_gelu_everywhere  # pylint: disable=global-statement
  previous, _tf_gelu_everywhere = _tf_gelu_everywhere, True
  try:
    yield
  finally:
    _tf_gelu_everywhere = previous


def get_activation(name: str | None, after_matmul: bool = False):
  """Returns a function `x -> act(x)`; None or 'none' give the identity.

  `after_matmul`: the activation follows a MatMul + bias. oneDNN's graph optimizer fuses
  MatMul + BiasAdd + GELU into one kernel when the GELU is `tf.nn.gelu`'s own op sequence (not
  `exact_gelu`'s), so that form is kept there; it has no such fusion after convolutions.
  """
  if name is None or name == "none":
    return lambda x: x
  if name == "gelu":
    if after_matmul or _tf_gelu_everywhere:
      return lambda x: keras.activations.gelu(x, approximate=False)
    return exact_gelu
  if name == "approximated_gelu":
    return lambda x: keras.activations.gelu(x, approximate=True)
  if name in ("relu", "swish", "silu", "elu", "sigmoid"):
    return keras.activations.get(name)
  raise ValueError(f"Unsupported activation {name!r}")
