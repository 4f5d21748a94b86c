"""match(): the kMaX matching cost and its optimum, against numpy + scipy on a padded square."""
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.losses.matching import match, matched_pixel_log_probs

import reference_matching  # tests/helpers


def _random_gt(rng, pixels, masks, classes, valid_count):
  mask_id = rng.integers(-1, valid_count, size=(1, pixels))
  mask_id[0, :valid_count] = np.arange(valid_count)  # every valid mask has a pixel
  one_hot = np.eye(masks)[np.maximum(mask_id, 0)] * (mask_id >= 0)[..., None]
  area = one_hot.sum(1)
  valid = (area > 0).astype(np.float32)
  class_one_hot = np.eye(classes)[rng.integers(0, classes, size=(1, masks))] * valid[..., None]
  non_void = (rng.random((1, pixels)) < 0.8) | (mask_id >= 0)
  f = lambda x: tf.constant(x, tf.float32)
  return MaskGroundTruth(
      pixel_mask_id=tf.constant(mask_id, tf.int32), pixel_mask_one_hot=f(one_hot),
      pixel_non_void=f(non_void), mask_valid=f(valid), mask_area=f(area),
      mask_class_one_hot=f(class_one_hot), inverse_pixel_mask_area=f(np.ones((1, pixels))))


@pytest.mark.parametrize("masks, slots, valid_count", [(8, 5, 4), (8, 5, 7), (4, 9, 3)])
def test_optimum_matches_padded_square_problem(masks, slots, valid_count):
  rng = np.random.default_rng(masks * slots + valid_count)
  pixels, classes = 30, 4
  gt = _random_gt(rng, pixels, masks, classes, valid_count)
  mask_logits = rng.normal(size=(1, pixels, slots)).astype(np.float32) * 2
  class_logits = rng.normal(size=(1, slots, classes + 1)).astype(np.float32)
  result = match(gt, tf.constant(mask_logits), tf.constant(class_logits))

  g = gt.pixel_mask_one_hot.numpy()[0]
  probs = scipy.special.softmax(mask_logits[0], -1) * gt.pixel_non_void.numpy()[0][:, None]
  dice, class_sim, expected, _ = reference_matching.match(
      g, probs, gt.mask_class_one_hot.numpy()[0],
      scipy.special.softmax(class_logits[0], -1)[:, :-1], gt.mask_valid.numpy()[0] > 0)
  np.testing.assert_array_equal(result.assignment.numpy()[0], expected)
  np.testing.assert_allclose(result.matched_mask_dice[0], (dice * expected).max(0), rtol=1e-5)
  np.testing.assert_allclose(result.matched_class_prob[0], (class_sim * expected).max(1),
                             rtol=1e-5)
  # Pixels read their mask's slot; masks left without a slot (7 valid, 5 slots) read -1.
  slot_of_mask = np.where(expected.any(1), expected.argmax(1), -1)
  mask_id = gt.pixel_mask_id.numpy()[0]
  np.testing.assert_array_equal(result.pixel_slot[0],
                                np.where(mask_id >= 0, slot_of_mask[mask_id], -1))
  log_probs = matched_pixel_log_probs(tf.constant(mask_logits), gt, result).numpy()[0]
  lse = scipy.special.logsumexp(mask_logits[0], -1)
  picked = mask_logits[0][np.arange(pixels), np.maximum(slot_of_mask[mask_id], 0)]
  want = np.where(mask_id < 0, 0.0,
                  np.where(slot_of_mask[mask_id] >= 0, picked, -99999.0) - lse)
  np.testing.assert_allclose(log_probs, want, rtol=1e-5, atol=1e-4)


def test_non_finite_predictions_still_give_an_assignment():
  """NaN logits (a diverged run) must not crash the solver; the loss reports the NaN instead."""
  rng = np.random.default_rng(0)
  gt = _random_gt(rng, pixels=20, masks=5, classes=3, valid_count=3)
  mask_logits = tf.fill([1, 20, 4], np.nan)
  class_logits = tf.constant(rng.normal(size=(1, 4, 4)), tf.float32)
  result = match(gt, mask_logits, class_logits)
  slots = result.slot_for_mask.numpy()[0]
  valid = slots[slots >= 0]
  assert len(valid) == 3 and len(set(valid)) == 3 and valid.max() < 4



@pytest.mark.parametrize("seed", [0, 1])
def test_coco_sized_problem_is_solved_exactly_in_float32(seed):
  """181 masks (128 thing ids + 53 stuff), 128 slots, 12 valid masks and near-uniform logits as
  at the start of training (similarities ~1e-4). With deeplab2's +999 rows for invalid masks the
  float32 solve lost the similarities below the float32 spacing at 999 (6e-5) and returned
  assignments worse than the optimum; deeplab2's own solver does the same: on the batch of
  `benchmarks/vs_deeplab2.py --train` (COCO R50, crop 129, seed 0) its assignments summed to a
  similarity of 0.000777 and 0.010619 against the optimum 0.000857 and 0.010638 (scipy, float64),
  which kmax-tf now finds."""
  masks, slots, classes, pixels = 181, 128, 133, 400
  rng = np.random.default_rng(seed)
  gt = _random_gt(rng, pixels, masks, classes, valid_count=12)
  mask_logits = rng.normal(size=(1, pixels, slots)).astype(np.float32) * 0.5
  class_logits = rng.normal(size=(1, slots, classes + 1)).astype(np.float32) * 0.5
  result = match(gt, tf.constant(mask_logits), tf.constant(class_logits))

  g = gt.pixel_mask_one_hot.numpy()[0].astype(np.float64)
  probs = scipy.special.softmax(mask_logits[0].astype(np.float64), -1) * (
      gt.pixel_non_void.numpy()[0][:, None])
  dice = g.T @ probs / ((g.sum(0)[:, None] + probs.sum(0)[None]) / 2 + 1e-5)
  similarity = dice * (gt.mask_class_one_hot.numpy()[0] @ scipy.special.softmax(
      class_logits[0].astype(np.float64), -1)[:, :-1].T)
  valid = gt.mask_valid.numpy()[0] > 0
  rows, cols = scipy.optimize.linear_sum_assignment(np.where(valid[:, None], -similarity, 1.0))
  best = similarity[rows[valid[rows]], cols[valid[rows]]].sum()
  assert 1e-5 < similarity[valid].max() < 1e-3  # the regime where +-999 lost precision
  got = (similarity * result.assignment.numpy()[0]).sum()
  assert got == pytest.approx(best, rel=1e-6)
