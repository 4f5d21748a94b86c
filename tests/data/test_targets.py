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


def test_first_occurrence_order_matches_tf_unique():
  rng = np.random.default_rng(0)
  # Piecewise-constant runs (as in labels) and isolated values, including runs that recur.
  values = np.repeat(rng.integers(0, 3000, 800), rng.integers(1, 9, 800))
  for array in (values, rng.integers(0, 50, 500), np.array([7])):
    got = targets.ids_in_first_occurrence_order(tf.constant(array, tf.int32))
    np.testing.assert_array_equal(got.numpy(), tf.unique(tf.constant(array, tf.int32))[0])


@pytest.mark.parametrize("ids", [(1, 2, 3, 80), tuple(range(1, 81)), (2, 5, 9, 11, 13, 40)])
def test_isin_matches_numpy(ids):  # ranges use comparisons, scattered ids a table
  values = np.random.default_rng(1).integers(0, 140, (37, 29))
  np.testing.assert_array_equal(targets.isin(tf.constant(values), ids).numpy(),
                                np.isin(values, ids))


def test_thing_ids_against_numpy_on_random_label():
  rng = np.random.default_rng(2)
  label = np.kron(rng.choice([0, 2 * D, 4 * D, 4 * D + 1, 5 * D + 7, 4 * D + 9, 5 * D + 3],
                             (9, 11)), np.ones((3, 2), np.int64)).astype(np.int32)
  flat = label.ravel()
  ids, first = np.unique(flat, return_index=True)
  order = ids[np.argsort(first)]
  instances = [i for i in order if i // D in THINGS and i % D]
  threshold = int(np.median([(flat == i).sum() for i in instances])) + 1
  t = _targets(label, max_thing_id=8, small_instance_threshold=threshold,
               small_instance_weight=2.5)
  expected = np.full(flat.shape, -1)
  for rank, pid in enumerate(instances):
    expected[flat == pid] = rank
  np.testing.assert_array_equal(t["thing_id_mask_gt"].ravel(), expected)
  np.testing.assert_array_equal(t["thing_id_class_gt"],
                                [i // D for i in instances] + [-1] * (8 - len(instances)))
  small = np.isin(flat, [i for i in instances if (flat == i).sum() < threshold])
  assert small.any() and not small.all()
  np.testing.assert_array_equal(t["semantic_loss_weight"].ravel(), np.where(small, 2.5, 1.0))
  np.testing.assert_array_equal(t["is_crowd_gt"], np.isin(label, [4 * D, 5 * D]))
