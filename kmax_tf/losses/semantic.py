"""Auxiliary semantic loss: per-pixel softmax cross-entropy on the semantic head.

Labels and per-pixel weights (`semantic_loss_weight`: 1, or the small-instance weight) come at
crop resolution and are strided-subsampled to the logits' size; ignore-label pixels get weight 0.
The loss is the mean over pixels with a non-zero weighted loss, optionally over the hardest
`top_k_percent` (Cityscapes: 0.2).

Every pixel enters the objective. deeplab2 also parses `semantic_sample_k` and
`semantic_sample_temperature` (set to 4096 / 2.0 in its COCO and ADE20K configs), but its loss
builder never passes them to the loss, so deeplab2 trains with all pixels. kmax-tf keeps that
objective: the two fields are parsed and deliberately not used.
"""
from __future__ import annotations

import tensorflow as tf

from kmax_tf import geometry
from kmax_tf.losses.reductions import mean_over_nonzero


def semantic_cross_entropy(semantic_logits: tf.Tensor, semantic_gt: tf.Tensor,
                           pixel_weights: tf.Tensor, *, ignore_label: int,
                           top_k_percent: float = 1.0) -> tf.Tensor:
  """Weighted semantic cross-entropy.

  Args:
    semantic_logits: float32 `[B, h, w, C]`.
    semantic_gt: int `[B, H, W]` semantic ids; ids outside `[0, C)` give an empty target.
    pixel_weights: float `[B, H, W]`.
    ignore_label: semantic id whose pixels are ignored.
    top_k_percent: fraction of the hardest pixels kept.

  Returns:
    `[B]` float32.
  """
  size = semantic_logits.shape[1:3]
  labels = tf.cast(geometry.strided_downsample(semantic_gt, size), tf.int32)
  weights = tf.cast(geometry.strided_downsample(pixel_weights, size), tf.float32)
  weights *= tf.cast(tf.not_equal(labels, ignore_label), tf.float32)
  targets = tf.one_hot(labels, semantic_logits.shape[-1], dtype=tf.float32)
  cross_entropy = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=semantic_logits)
  return mean_over_nonzero(cross_entropy * weights, top_k_percent)
