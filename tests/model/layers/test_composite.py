"""BuiltOnFirstCall: a nest of composite layers traces each op once and builds the same weights."""
import keras
import numpy as np

from kmax_tf.model.layers import composite


class CountingDense(keras.layers.Dense):
  calls = 0

  def call(self, inputs):
    CountingDense.calls += 1
    return super().call(inputs)


def _nest(base):
  """Three levels of `base` composites around one counting Dense layer."""

  class Inner(base):
    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.dense = CountingDense(3, name="dense")
      self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, inputs):
      return self.norm(self.dense(inputs))

  class Middle(base):
    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.inner = Inner(name="inner")

    def call(self, inputs):
      return self.inner(inputs) * 2.0

  class Outer(base):
    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.middle = Middle(name="middle")
      self.head = keras.layers.Dense(2, name="head")

    def call(self, inputs):
      return self.head(self.middle(inputs))

  return Outer(name="outer")


def _build(base):
  """(leaf calls during a symbolic build, {weight path: value}) with the same seed."""
  keras.utils.set_random_seed(0)
  layer = _nest(base)
  CountingDense.calls = 0
  layer(keras.Input((4,)))
  return CountingDense.calls, {w.path: w.numpy() for w in layer.weights}


class _Composite(composite.BuiltOnFirstCall, keras.layers.Layer):
  pass


def test_each_op_is_traced_once_and_the_weights_are_keras_own():
  calls, weights = _build(_Composite)
  keras_calls, keras_weights = _build(keras.layers.Layer)
  assert calls == 1
  assert keras_calls > 1  # Keras' own build traces the leaf once more per unbuilt level.
  assert list(weights) == list(keras_weights)
  assert list(weights) == ["outer/middle/inner/dense/kernel", "outer/middle/inner/dense/bias",
                           "outer/middle/inner/norm/gamma", "outer/middle/inner/norm/beta",
                           "outer/head/kernel", "outer/head/bias"]
  for path, value in keras_weights.items():
    np.testing.assert_array_equal(weights[path], value, err_msg=path)
