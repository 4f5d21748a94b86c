"""ResizedFuse: same-width inputs are only resized (corner-aligned), others projected first."""
import layer_harness
import numpy as np

from kmax_tf import geometry
from kmax_tf.model.layers import norm
from kmax_tf.model.layers import resized_fuse


def test_same_width_inputs_are_resized_and_summed():
  rng = np.random.default_rng(0)
  coarse = rng.normal(size=(1, 3, 5, 4)).astype(np.float32)
  fine = rng.normal(size=(1, 5, 9, 4)).astype(np.float32)
  layer = resized_fuse.ResizedFuse(4, (4, 4), (True, False))
  y = layer([coarse, fine], size=(5, 9)).numpy()
  expected = geometry.resize_align_corners(coarse, (5, 9)).numpy() + fine
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # Corner alignment: coarse pixel (i, j) lands exactly on fine pixel (2i, 2j).
  np.testing.assert_allclose(y[0, ::2, ::2] - fine[0, ::2, ::2], coarse[0], atol=1e-5)
  assert not layer.trainable_weights


def test_other_widths_are_projected():
  layer = resized_fuse.ResizedFuse(4, (8, 6), (True, False))
  y = layer([np.ones((2, 3, 3, 8), np.float32), np.ones((2, 5, 5, 6), np.float32)], size=(5, 5))
  assert y.shape == (2, 5, 5, 4)
  kernels = sorted(tuple(w.shape) for w in layer.trainable_weights if len(w.shape) == 4)
  assert kernels == [(1, 1, 6, 4), (1, 1, 8, 4)]


def test_layer_contract():
  rng = np.random.default_rng(3)
  inputs = [rng.normal(size=(2, 3, 3, 8)).astype(np.float32),
            rng.normal(size=(2, 5, 5, 6)).astype(np.float32)]
  layer_harness.run_layer_test(
      resized_fuse.ResizedFuse,
      dict(num_channels=4, input_channels=(8, 6), resize_inputs=(True, False), activation="relu",
           norm_layer=norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)),
      (inputs,), call_kwargs=dict(size=(5, 5)))
