"""Mask-ID cross-entropy: each pixel classified over slots towards its matched slot.

The pixel's target is the slot matched to its ground-truth mask (softmax over all N slots; a
mask left without a slot has logit -99999 as in deeplab2). Void pixels have weight 0 and crowd
pixels, which belong to no mask, have an empty target, so neither counts; the loss is the mean
over pixels with a non-zero loss, optionally over the hardest `top_k_percent` only.
"""
from __future__ import annotations

import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.losses.matching import MatchResult, matched_pixel_log_probs
from kmax_tf.losses.reductions import mean_over_nonzero


def mask_id_cross_entropy(mask_logits: tf.Tensor, gt: MaskGroundTruth, result: MatchResult,
                          top_k_percent: float = 1.0) -> tf.Tensor:
  """Args: `mask_logits` float32 `[B, P, N]` of one decoder output. Returns `[B]` float32."""
  cross_entropy = -matched_pixel_log_probs(mask_logits, gt, result)
  return mean_over_nonzero(cross_entropy * gt.pixel_non_void, top_k_percent)
