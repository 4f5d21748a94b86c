"""Mask-ID cross-entropy against its per-pixel formula in numpy."""
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.losses.mask_id import mask_id_cross_entropy
from kmax_tf.losses.matching import MatchResult

f32 = lambda x: tf.constant(x, tf.float32)


def _case():
  """20 pixels (some void, some crowd: non-void in no mask), 4 masks, 5 slots."""
  rng = np.random.default_rng(0)
  pixels, masks, slots = 20, 4, 5
  mask_id = rng.integers(-1, masks, size=(1, pixels))
  non_void = ((rng.random((1, pixels)) < 0.6) | (mask_id >= 0)).astype(np.float32)
  one_hot = np.eye(masks)[np.maximum(mask_id, 0)] * (mask_id >= 0)[..., None]
  gt = MaskGroundTruth(tf.constant(mask_id, tf.int32), f32(one_hot), f32(non_void),
                       f32(np.ones((1, masks))), f32(one_hot.sum(1)), f32(np.zeros((1, masks, 2))),
                       f32(np.ones((1, pixels))))
  slot_for_mask = np.array([3, 0, -1, 4])  # mask 2 got no slot (logit -99999 in deeplab2)
  pixel_slot = np.where(mask_id >= 0, slot_for_mask[np.maximum(mask_id, 0)], -1)
  result = MatchResult(f32(np.zeros((1, masks, slots))), tf.constant(pixel_slot, tf.int32),
                       tf.constant(slot_for_mask[None], tf.int32), f32(np.zeros((1, slots))),
                       f32(np.zeros((1, masks))))
  logits = rng.normal(size=(1, pixels, slots)).astype(np.float32)
  return logits, mask_id, non_void, slot_for_mask, gt, result


@pytest.mark.parametrize("top_k", [1.0, 0.25])
def test_formula(top_k):
  logits, mask_id, non_void, slot_for_mask, gt, result = _case()
  pixels = logits.shape[1]
  lse = scipy.special.logsumexp(logits[0], -1)
  losses = np.zeros(pixels)
  for p in range(pixels):
    if mask_id[0, p] >= 0:
      s = slot_for_mask[mask_id[0, p]]
      losses[p] = lse[p] - (logits[0, p, s] if s >= 0 else -99999.0)
  kept = np.sort(losses * non_void[0])[::-1][:round(top_k * pixels)]
  expected = kept.sum() / np.count_nonzero(kept)
  np.testing.assert_allclose(mask_id_cross_entropy(f32(logits), gt, result, top_k), [expected],
                             rtol=1e-5)


def test_gradient_is_deeplab2s_softmax_minus_target_also_on_crowd_pixels():
  """deeplab2's fused softmax cross-entropy back-propagates softmax - target, so a crowd pixel
  (non-void, in no mask: all-zero target, loss 0) still gets the softmax over slots."""
  logits, mask_id, non_void, slot_for_mask, gt, result = _case()
  x = f32(logits)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = mask_id_cross_entropy(x, gt, result)
  slot = np.where(mask_id[0] >= 0, slot_for_mask[np.maximum(mask_id[0], 0)], -1)
  target = np.eye(logits.shape[2])[np.maximum(slot, 0)] * (slot >= 0)[:, None]
  counted = np.count_nonzero((mask_id[0] >= 0) & (non_void[0] > 0))
  expected = (scipy.special.softmax(logits[0], -1) - target) * non_void[0][:, None] / counted
  assert np.any((mask_id[0] < 0) & (non_void[0] > 0))  # crowd pixels are present
  np.testing.assert_allclose(tape.gradient(loss, x).numpy()[0], expected, atol=1e-6)
