"""PQ-style class and dice terms against their formulas written in numpy."""
import numpy as np
import scipy.special
import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.losses.matching import MatchResult
from kmax_tf.losses.pq_style import class_term, class_term_targets, mask_dice_term

P, K, N, T = 24, 5, 6, 3
f32 = lambda x: tf.constant(x, tf.float32)


def _case(rng):
  """Random ground truth and a random matching: masks 0-3 valid, mask 3 left without a slot."""
  mask_id = rng.integers(-1, 4, size=(1, P))
  one_hot = np.eye(K)[np.maximum(mask_id, 0)] * (mask_id >= 0)[..., None]
  valid = np.array([[1, 1, 1, 1, 0]], np.float32)
  classes = np.array([0, 2, 1, 2, 0])
  class_one_hot = np.eye(T)[classes][None] * valid[..., None]
  non_void = ((rng.random((1, P)) < 0.7) | (mask_id >= 0)).astype(np.float32)
  gt = MaskGroundTruth(tf.constant(mask_id, tf.int32), f32(one_hot), f32(non_void), f32(valid),
                       f32(one_hot.sum(1)), f32(class_one_hot), f32(np.ones((1, P))))
  slot_for_mask = np.array([[4, 0, 2, -1, -1]])
  assignment = np.eye(N)[np.maximum(slot_for_mask, 0)] * (slot_for_mask >= 0)[..., None]
  pixel_slot = np.where(mask_id >= 0, slot_for_mask[0][np.maximum(mask_id, 0)], -1)
  result = MatchResult(f32(assignment), tf.constant(pixel_slot, tf.int32),
                       tf.constant(slot_for_mask, tf.int32), f32(rng.random((1, N))),
                       f32(rng.random((1, K)) * [[1, 1, 1, 0, 0]]))
  return gt, result, slot_for_mask[0], mask_id[0], non_void[0], classes


def test_mask_dice_term_formula():
  rng = np.random.default_rng(0)
  gt, result, slot_for_mask, mask_id, _, _ = _case(rng)
  logits = rng.normal(size=(1, P, N)).astype(np.float32)
  probs = scipy.special.softmax(logits[0], -1)
  in_mask = mask_id >= 0
  expected = 0.0
  for k in range(4):
    pixels = mask_id == k
    s = slot_for_mask[k]
    p_k = probs[:, s] if s >= 0 else np.zeros(P)  # slot-less mask: probability 0 everywhere
    dice = 1 - (2 * p_k[pixels].sum() + 1) / (p_k[in_mask].sum() + pixels.sum() + 1)
    expected += max(result.matched_class_prob.numpy()[0, k], 1e-5) * dice
  expected *= 0.75 / N
  np.testing.assert_allclose(mask_dice_term(f32(logits), gt, result, 0.75), [expected],
                             rtol=1e-5)


def test_class_term_formula():
  rng = np.random.default_rng(1)
  gt, result, slot_for_mask, _, non_void, classes = _case(rng)
  final_logits = rng.normal(size=(1, P, N)).astype(np.float32)
  head_logits = rng.normal(size=(1, N, T + 1)).astype(np.float32)
  targets, weights = class_term_targets(gt, result, f32(final_logits), 0.75)
  loss = class_term(f32(head_logits), targets, weights)

  probs = scipy.special.softmax(final_logits[0], -1)
  log_p = scipy.special.log_softmax(head_logits[0], -1)
  dice = result.matched_mask_dice.numpy()[0]
  terms = []
  for i in range(N):
    matched = [k for k in range(4) if slot_for_mask[k] == i]
    if matched:
      terms.append(-log_p[i, classes[matched[0]]] * 0.75 * max(dice[i], 1e-5))
    else:
      void_ratio = ((1 - non_void) * probs[:, i]).sum() / (probs[:, i].sum() + 1e-5)
      terms.append(-log_p[i, T] * 0.25 * max(void_ratio, 1e-5))
  np.testing.assert_allclose(loss, [np.mean(terms)], rtol=1e-5)
  # slot 0 <- mask 1 (class 2), slot 2 <- mask 2 (class 1), slot 4 <- mask 0 (class 0); rest void.
  np.testing.assert_array_equal(np.argmax(targets[0], -1), [2, 3, 1, 3, 0, 3])
