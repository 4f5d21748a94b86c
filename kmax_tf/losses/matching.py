"""Hungarian matching of ground-truth masks to mask slots with kMaX's PQ-style cost.

The similarity of ground-truth mask k and slot i is `dice(k, i) * p_i(class_k)`: the soft dice
between the mask and the slot's softmax-over-slots probability map (restricted to non-void
pixels), times the probability the slot gives to the mask's class. The matching maximises the
summed similarity over valid masks. It is computed once, on the final decoder output; the
auxiliary outputs reuse the same assignment and the same stop-gradient weights.

deeplab2 pads the `[K, N]` cost to a square with -999, after writing +999 (when N < K) or -999
(when N >= K) into the rows of invalid masks. Any constant that exceeds every valid cost (which
lies in [-1, 0]) gives the same optimum for the valid masks, so the rows of invalid masks here
cost 1 and the rectangular problem is solved directly. The small constant matters in float32:
next to +-999 the spacing of float32 (6e-5) is as large as the similarities of an untrained
model (1e-4), and both deeplab2's solver and this one then return assignments up to 3% worse
than the optimum (benchmarks/vs_deeplab2.py --train, COCO R50: 12 of 21 masks matched
differently). Only the pairs (valid mask, real slot) matter to the losses, so they are what
`MatchResult` keeps.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.ops import batched_linear_sum_assignment

# Cost of every pair of an invalid mask: above every valid cost (-dice * p in [-1, 0]), so valid
# masks always win the slots, and small enough to keep float32 precision (see above).
_INVALID_ROW_COST = 1.0
# Logit a slot-less mask receives in deeplab2's padded permutation (exp underflows to 0).
MISSING_SLOT_LOGIT = -99999.0
_DICE_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class MatchResult:
  """Outcome of matching K ground-truth masks with N slots (all without gradient).

  Attributes:
    assignment: float32 `[B, K, N]`, 1 where valid mask k is matched to slot i.
    pixel_slot: int32 `[B, P]`, slot matched to the mask containing each pixel; -1 if the pixel
      is in no mask or its mask got no slot (more valid masks than slots).
    slot_for_mask: int32 `[B, K]`, slot of each valid mask, -1 if unmatched or invalid.
    matched_mask_dice: float32 `[B, N]`, dice of each slot with its matched mask (0 if none).
    matched_class_prob: float32 `[B, K]`, probability the matched slot gives to the mask's class
      (0 if none).
  """
  assignment: tf.Tensor
  pixel_slot: tf.Tensor
  slot_for_mask: tf.Tensor
  matched_mask_dice: tf.Tensor
  matched_class_prob: tf.Tensor


def soft_dice_similarity(pixel_mask_one_hot: tf.Tensor, slot_probs: tf.Tensor) -> tf.Tensor:
  """`[B, P, K]` binary masks and `[B, P, N]` soft masks -> `[B, K, N]` dice (epsilon 1e-5)."""
  intersection = tf.einsum("bpk,bpn->bkn", pixel_mask_one_hot, slot_probs)
  half_sizes = (tf.reduce_sum(pixel_mask_one_hot, axis=1)[:, :, None] +
                tf.reduce_sum(slot_probs, axis=1)[:, None, :]) / 2
  return intersection / (half_sizes + _DICE_EPSILON)


def match(gt: MaskGroundTruth, mask_logits: tf.Tensor, class_logits: tf.Tensor) -> MatchResult:
  """Matches ground-truth masks to slots.

  Args:
    gt: ground truth at the prediction resolution (P pixels, K masks, T thing+stuff classes).
    mask_logits: float32 `[B, P, N]` pixel-to-slot logits of the final output.
    class_logits: float32 `[B, N, T + 1]` slot class logits (void last) of the final output.
  """
  num_slots = mask_logits.shape[-1]
  mask_logits = tf.stop_gradient(mask_logits)
  class_logits = tf.stop_gradient(class_logits)

  slot_probs = tf.nn.softmax(mask_logits, axis=-1) * gt.pixel_non_void[:, :, None]
  dice = soft_dice_similarity(gt.pixel_mask_one_hot, slot_probs)
  class_probs = tf.nn.softmax(class_logits, axis=-1)[:, :, :-1]
  class_similarity = tf.einsum("bkt,bnt->bkn", gt.mask_class_one_hot, class_probs)

  valid = gt.mask_valid[:, :, None]
  cost = -dice * class_similarity * valid + (1.0 - valid) * _INVALID_ROW_COST
  # Diverged predictions give NaN costs, on which the solver's path search has no answer. Any
  # assignment will do then: the loss is NaN through the logits anyway, and the trainer stops
  # with a clear message instead of an indexing error deep inside the solver.
  cost = tf.where(tf.math.is_finite(cost), cost, tf.zeros_like(cost))
  slot_for_row = batched_linear_sum_assignment(cost)

  slot_for_mask = tf.where(gt.mask_valid > 0, slot_for_row, -1)
  assignment = tf.one_hot(slot_for_mask, num_slots, dtype=tf.float32)
  pixel_slot = tf.where(gt.pixel_mask_id >= 0,
                        tf.gather(slot_for_mask, tf.maximum(gt.pixel_mask_id, 0), batch_dims=1),
                        -1)
  return MatchResult(
      assignment=assignment,
      pixel_slot=pixel_slot,
      slot_for_mask=slot_for_mask,
      matched_mask_dice=tf.reduce_sum(dice * assignment, axis=1),
      matched_class_prob=tf.reduce_sum(class_similarity * assignment, axis=2))


def matched_pixel_log_probs(mask_logits: tf.Tensor, gt: MaskGroundTruth,
                            result: MatchResult) -> tf.Tensor:
  """Log-probability of each pixel's ground-truth mask under the softmax over slots.

  This is deeplab2's log-softmax of the logits permuted into ground-truth order, read at the
  pixel's mask: a mask without a slot gets the logit -99999, as in deeplab2's padded
  permutation. Pixels in no mask (crowd, void) give 0 with the gradient -softmax: deeplab2's
  fused `softmax_cross_entropy_with_logits` back-propagates `softmax - target` whatever the
  target's sum, so on a non-void pixel in no mask (an all-zero target row) its mask-ID loss is
  0 but its gradient is the softmax over slots. Void pixels have weight 0 in every user.

  Args:
    mask_logits: float32 `[B, P, N]` pixel-to-slot logits of one decoder output.

  Returns:
    float32 `[B, P]`.
  """
  log_norm = tf.reduce_logsumexp(mask_logits, axis=-1)
  slot_logit = tf.gather(mask_logits, tf.maximum(result.pixel_slot, 0), batch_dims=2)
  slot_logit = tf.where(result.pixel_slot >= 0, slot_logit, MISSING_SLOT_LOGIT)
  return tf.where(gt.pixel_mask_id >= 0, slot_logit - log_norm,
                  tf.stop_gradient(log_norm) - log_norm)
