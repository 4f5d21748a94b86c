"""Inception stem: three 3x3 convs, the first strided, widths scaled by the multiplier."""
import layer_harness
import numpy as np

from kmax_tf.model.layers import norm
from kmax_tf.model.layers import stems


def test_shapes_and_widths():
  stem = stems.InceptionStem(width_multiplier=0.25, activation="gelu")
  y = stem(np.zeros((1, 33, 17, 3), np.float32))
  assert y.shape == (1, 17, 9, 32)
  kernels = [tuple(w.shape) for w in stem.trainable_weights if len(w.shape) == 4]
  assert kernels == [(3, 3, 3, 16), (3, 3, 16, 16), (3, 3, 16, 32)]


def test_layer_contract():
  x = np.random.default_rng(4).normal(size=(1, 9, 7, 3)).astype(np.float32)
  layer_harness.run_layer_test(
      stems.InceptionStem,
      dict(width_multiplier=0.125, activation="gelu",
           norm_layer=norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)),
      (x,))
