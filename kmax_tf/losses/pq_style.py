"""PQ-style loss of MaX-DeepLab: a class term and a mask dice term.

The PQ-style similarity `p_i(c_k) * dice(m_k, m_i)` of a matched pair is maximised by two terms
whose other factor is held fixed (stop-gradient, from the final output's matching):
- class term: cross-entropy of each slot's class logits towards its matched mask's class,
  weighted by `alpha * max(matched dice, 1e-5)`; unmatched slots are pushed to void with weight
  `(1 - alpha) * max(void ratio, 1e-5)`, where the void ratio is the share of the slot's mass on
  void pixels (so slots covering void are barely asked to predict void). Averaged over slots with
  a non-zero loss.
- mask dice term: `sum_k max(matched class prob_k, 1e-5) * (1 - soft dice_k)` over valid masks,
  with smooth 1 and only pixels that belong to some mask; scaled by `alpha / N` so that both terms
  share weight and normalisation.
"""
from __future__ import annotations

import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.losses.matching import MatchResult, matched_pixel_log_probs
from kmax_tf.losses.reductions import mean_over_nonzero

_WEIGHT_FLOOR = 1e-5
_RATIO_EPSILON = 1e-5
_DICE_SMOOTH = 1.0


def class_term_targets(gt: MaskGroundTruth, result: MatchResult, final_mask_logits: tf.Tensor,
                       alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
  """Targets and weights of the class term, shared by every decoder output.

  Args:
    gt: ground truth (T thing+stuff classes).
    result: matching of the final output.
    final_mask_logits: float32 `[B, P, N]` mask logits of the final output (for the void ratio).
    alpha: weight of matched slots; unmatched ones get `1 - alpha`.

  Returns:
    targets: float32 `[B, N, T + 1]` one-hot class of each slot (void last for unmatched slots).
    weights: float32 `[B, N]`, without gradient.
  """
  positive_one_hot = tf.einsum("bkn,bkt->bnt", result.assignment, gt.mask_class_one_hot)
  positive = tf.reduce_max(positive_one_hot, axis=-1)
  targets = tf.concat([positive_one_hot, (1.0 - positive)[:, :, None]], axis=-1)

  slot_probs = tf.nn.softmax(tf.stop_gradient(final_mask_logits), axis=-1)
  void_mass = tf.einsum("bp,bpn->bn", 1.0 - gt.pixel_non_void, slot_probs)
  void_ratio = void_mass / (tf.reduce_sum(slot_probs, axis=1) + _RATIO_EPSILON)
  weights = (positive * alpha * tf.maximum(result.matched_mask_dice, _WEIGHT_FLOOR) +
             (1.0 - positive) * (1.0 - alpha) * tf.maximum(void_ratio, _WEIGHT_FLOOR))
  return targets, weights


def class_term(class_logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """Weighted slot cross-entropy, averaged over slots with a non-zero loss.

  Args:
    class_logits: float32 `[B, N, T + 1]` of one decoder output.
    targets, weights: from `class_term_targets`.

  Returns:
    `[B]` float32 (unscaled by the config weight).
  """
  cross_entropy = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=class_logits)
  return mean_over_nonzero(cross_entropy * weights)


def mask_dice_term(mask_logits: tf.Tensor, gt: MaskGroundTruth, result: MatchResult,
                   alpha: float) -> tf.Tensor:
  """Class-probability-weighted dice loss of each valid mask against its matched slot.

  Args:
    mask_logits: float32 `[B, P, N]` pixel-to-slot logits of one decoder output.
    gt: ground truth; result: matching of the final output.
    alpha: the class term's positive weight, applied here too.

  Returns:
    `[B]` float32 (unscaled by the config weight), including the `alpha / N` normalisation.
  """
  num_slots = mask_logits.shape[-1]
  in_some_mask = tf.cast(gt.pixel_mask_id >= 0, tf.float32)
  # Probability of the matched slot at every pixel of the mask: only these enter the
  # intersection, so gather per pixel instead of permuting the whole [B, P, N] map.
  matched_probs = tf.exp(matched_pixel_log_probs(mask_logits, gt, result)) * in_some_mask
  intersection = tf.einsum("bp,bpk->bk", matched_probs, gt.pixel_mask_one_hot)
  slot_mass = tf.einsum("bp,bpn->bn", in_some_mask, tf.nn.softmax(mask_logits, axis=-1))
  matched_slot_mass = tf.where(
      result.slot_for_mask >= 0,
      tf.gather(slot_mass, tf.maximum(result.slot_for_mask, 0), batch_dims=1), 0.0)
  dice_loss = 1.0 - ((2.0 * intersection + _DICE_SMOOTH) /
                     (matched_slot_mass + gt.mask_area + _DICE_SMOOTH))
  weights = gt.mask_valid * tf.maximum(result.matched_class_prob, _WEIGHT_FLOOR)
  return tf.reduce_sum(dice_loss * weights, axis=-1) * (alpha / num_slots)
