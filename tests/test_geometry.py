"""Tests for kmax_tf.geometry."""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import geometry


@pytest.mark.parametrize("length,expected", [(1, 1), (2, 33), (33, 33), (34, 65), (640, 641),
                                             (641, 641), (1024, 1025), (1281, 1281)])
def test_padded_length(length, expected):
  assert geometry.padded_length(length) == expected


def test_padded_length_of_tensors():
  lengths = [1, 2, 33, 34, 640, 641, 1024, 1281]
  np.testing.assert_array_equal(geometry.padded_length(tf.constant(lengths)),
                                [geometry.padded_length(length) for length in lengths])
  with pytest.raises(ValueError, match="must be positive"):
    geometry.padded_length(0)


def test_resize_align_corners_keeps_corners_and_interpolates_linearly():
  # A linear ramp resized with aligned corners stays an exact linear ramp.
  ramp = np.linspace(0.0, 4.0, 5, dtype=np.float32)
  image = np.tile(ramp[None, :, None], (5, 1, 1))[None]
  resized = geometry.resize_align_corners(image, (9, 9)).numpy()[0, 0, :, 0]
  np.testing.assert_allclose(resized, np.linspace(0.0, 4.0, 9), atol=1e-6)
  nearest = geometry.resize_align_corners(image, (9, 9), method="nearest").numpy()
  assert set(np.unique(nearest)) <= set(ramp)
  with pytest.raises(ValueError, match="Unknown resize method"):
    geometry.resize_align_corners(image, (9, 9), method="cubic")


def test_strided_downsample_picks_labels_under_feature_centres():
  labels = tf.reshape(tf.range(9 * 17), [1, 9, 17])
  small = geometry.strided_downsample(labels, (3, 5)).numpy()
  expected = np.arange(9 * 17).reshape(9, 17)[::4, ::4]
  np.testing.assert_array_equal(small[0], expected)
  with pytest.raises(ValueError, match="Cannot subsample 9x17 to 4x5"):
    geometry.strided_downsample(labels, (4, 5))
