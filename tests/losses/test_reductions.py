"""mean_over_nonzero: deeplab2's per-image reduction, checked on hand-worked arrays."""
import numpy as np
import pytest

from kmax_tf.losses.reductions import check_top_k_percent, mean_over_nonzero


def test_mean_ignores_zero_entries_per_image():
  losses = np.array([[1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 6.0]], np.float32)
  np.testing.assert_allclose(mean_over_nonzero(losses), [2.0, 0.0, 3.0])


def test_top_k_keeps_the_hardest_entries():
  losses = np.array([[[5.0, 1.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 4.0]]], np.float32)
  # round(0.5 * 4) = 2 entries per image: {5, 3} -> 4; {4, 0} -> 4 (zero not counted).
  np.testing.assert_allclose(mean_over_nonzero(losses, 0.5), [4.0, 4.0])


def test_top_k_percent_out_of_range_names_the_field():
  with pytest.raises(ValueError, match="semantic_loss.top_k_percent"):
    check_top_k_percent(1.5, "semantic_loss")
