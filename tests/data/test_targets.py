"""Per-sample targets against hand-worked labels."""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.data import targets

D = 256
THINGS = (4, 5)
# Row-major first occurrences: 5*D+2 (x), 4*D+1 (y), then 4*D+3 (z); crowd 4*D; stuff 2*D;
# void 0.
LABEL = np.array([
    [2 * D, 5 * D + 2, 5 * D + 2, 0],
    [4 * D + 1, 4 * D + 1, 4 * D, 4 * D],
    [2 * D, 4 * D + 3, 2 * D, 0],
], np.int32)


def _targets(label=LABEL, **kwargs):
  kwargs.setdefault("max_thing_id", 4)
  return {k: v.numpy() for k, v in targets.panoptic_targets(
      tf.constant(label), ignore_label=0, divisor=D, thing_ids=THINGS, **kwargs).items()}


def test_hand_worked_example():
  t = _targets()
  np.testing.assert_array_equal(t["semantic_gt"], LABEL // D)  # crowd keeps class 4
  np.testing.assert_array_equal(t["panoptic_gt"], LABEL)
  np.testing.assert_array_equal(t["is_crowd_gt"], LABEL == 4 * D)
  np.testing.assert_array_equal(t["thing_id_mask_gt"], [
      [-1, 0, 0, -1],
      [1, 1, -1, -1],
      [-1, 2, -1, -1]])
  np.testing.assert_array_equal(t["thing_id_class_gt"], [5, 4, 4, -1])
  np.testing.assert_array_equal(t["semantic_loss_weight"], np.ones(LABEL.shape))


def test_small_instance_weight():
  t = _targets(small_instance_threshold=2, small_instance_weight=3.0)
  # Only 4*D+3 has fewer than 2 pixels; crowd, stuff and void are never weighted.
  np.testing.assert_array_equal(t["semantic_loss_weight"], np.where(LABEL == 4 * D + 3, 3, 1))


def test_max_thing_id_bound():
  assert (_targets(max_thing_id=3)["thing_id_class_gt"] == [5, 4, 4]).all()  # exactly 3: ok
  with pytest.raises(tf.errors.InvalidArgumentError, match="more thing instances"):
    _targets(max_thing_id=2)


def test_stuff_with_instance_id_is_an_error():
  with pytest.raises(tf.errors.InvalidArgumentError, match="stuff class"):
    _targets(np.array([[2 * D + 1]], np.int32))


def test_linear_unique_matches_tf_unique():
  values = tf.constant(np.random.default_rng(0).integers(0, 3000, 5000), tf.int32)
  expected = tf.unique_with_counts(values)
  got = targets.unique_in_first_occurrence_order(values)
  for a, b in zip(got, expected):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
