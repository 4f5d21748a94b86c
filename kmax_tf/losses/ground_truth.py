"""Per-mask ground truth at the prediction resolution, built inside the loss.

The data pipeline hands over pixel maps at crop resolution; here they become a fixed-size set of
`K = max_thing_id + num_stuff` ground-truth masks: thing instance `t` is mask `t`, stuff class
`stuff_class_ids[s]` is mask `max_thing_id + s`. Fixed K keeps every shape static (XLA/TPU).
A mask is valid only if it keeps at least one pixel after strided subsampling to the output
size; crowd and void pixels belong to no mask.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

from kmax_tf import geometry


@dataclasses.dataclass(frozen=True)
class MaskGroundTruth:
  """Ground truth of a batch at the output resolution (P = h * w pixels, K masks).

  Attributes:
    pixel_mask_id: int32 `[B, P]`, index of the mask containing each pixel, -1 if none.
    pixel_mask_one_hot: float32 `[B, P, K]`, one-hot of `pixel_mask_id` (all zero for -1).
    pixel_non_void: float32 `[B, P]`, 1 where the semantic label is not the ignore label
      (crowd pixels are non-void although they belong to no mask).
    mask_valid: float32 `[B, K]`, 1 for masks with a non-zero area at the output resolution
      and a class (>= 0).
    mask_area: float32 `[B, K]`, pixel count of each mask.
    mask_class_one_hot: float32 `[B, K, T]`, class of each valid mask over the T = things +
      stuff classes in `thing_class_ids + stuff_class_ids` order (all zero for invalid masks).
    inverse_pixel_mask_area: float32 `[B, P]`, `P / max(area of the pixel's mask, 1)`
      (= P for pixels in no mask).
  """
  pixel_mask_id: tf.Tensor
  pixel_mask_one_hot: tf.Tensor
  pixel_non_void: tf.Tensor
  mask_valid: tf.Tensor
  mask_area: tf.Tensor
  mask_class_one_hot: tf.Tensor
  inverse_pixel_mask_area: tf.Tensor


def _lookup(table: np.ndarray, ids: tf.Tensor) -> tf.Tensor:
  """`table[ids]`, with -1 for ids outside the table (e.g. ignore label 255)."""
  inside = (ids >= 0) & (ids < len(table))
  values = tf.gather(tf.constant(table, tf.int32), tf.clip_by_value(ids, 0, len(table) - 1))
  return tf.where(inside, values, -1)


def build_mask_ground_truth(semantic_gt: tf.Tensor, thing_id_mask_gt: tf.Tensor,
                            thing_id_class_gt: tf.Tensor, output_size: Sequence[int], *,
                            thing_class_ids: Sequence[int], stuff_class_ids: Sequence[int],
                            ignore_label: int) -> MaskGroundTruth:
  """Builds the K ground-truth masks of each image.

  Args:
    semantic_gt: int `[B, H, W]` semantic ids (crowd keeps its thing class).
    thing_id_mask_gt: int `[B, H, W]`, consecutive id of each non-crowd thing instance, -1
      elsewhere.
    thing_id_class_gt: `[B, max_thing_id]` semantic class of each thing id, -1 padded
      (float or int).
    output_size: `(h, w)` of the predictions; `H = s * (h - 1) + 1` for an integer stride s.
    thing_class_ids, stuff_class_ids: dataset semantic ids, in class-logit order.
    ignore_label: semantic id of void pixels.
  """
  height, width = output_size
  num_pixels = height * width
  max_thing_id = thing_id_class_gt.shape[-1]
  if max_thing_id is None:
    raise ValueError(f"thing_id_class_gt needs a static last dimension (max_thing_id), got shape "
                     f"{thing_id_class_gt.shape}")
  num_masks = max_thing_id + len(stuff_class_ids)
  class_ids = list(thing_class_ids) + list(stuff_class_ids)
  table_size = max(class_ids) + 1

  semantic = tf.cast(geometry.strided_downsample(semantic_gt, output_size), tf.int32)
  semantic = tf.reshape(semantic, [-1, num_pixels])
  thing_id = tf.cast(geometry.strided_downsample(thing_id_mask_gt, output_size), tf.int32)
  thing_id = tf.reshape(thing_id, [-1, num_pixels])

  stuff_position = np.full([table_size], -1, np.int32)
  stuff_position[list(stuff_class_ids)] = np.arange(len(stuff_class_ids))
  stuff_mask_id = _lookup(stuff_position, semantic)
  # Thing ids beyond max_thing_id cannot be represented; like one_hot, they join no mask.
  is_thing = (thing_id >= 0) & (thing_id < max_thing_id)
  pixel_mask_id = tf.where(is_thing, thing_id,
                           tf.where(stuff_mask_id >= 0, max_thing_id + stuff_mask_id, -1))
  pixel_mask_one_hot = tf.one_hot(pixel_mask_id, num_masks, dtype=tf.float32)
  pixel_non_void = tf.cast(tf.not_equal(semantic, ignore_label), tf.float32)

  mask_area = tf.reduce_sum(pixel_mask_one_hot, axis=1)
  mask_valid = tf.cast(mask_area > 0.5, tf.float32)
  pixel_mask_area = tf.einsum("bpk,bk->bp", pixel_mask_one_hot, mask_area)
  inverse_pixel_mask_area = num_pixels / tf.maximum(pixel_mask_area, 1.0)

  class_position = np.full([table_size], -1, np.int32)
  class_position[class_ids] = np.arange(len(class_ids))
  thing_classes = tf.cast(thing_id_class_gt, tf.int32)
  stuff_classes = tf.broadcast_to(tf.constant(list(stuff_class_ids), tf.int32)[None],
                                  [tf.shape(thing_classes)[0], len(stuff_class_ids)])
  mask_class = tf.concat([thing_classes, stuff_classes], axis=1)
  # As in deeplab2, a mask also counts as void when its class is -1 (unused thing id).
  mask_valid = mask_valid * tf.cast(mask_class >= 0, tf.float32)
  mask_position = tf.where(mask_valid > 0, _lookup(class_position, mask_class), -1)
  mask_class_one_hot = tf.one_hot(mask_position, len(class_ids), dtype=tf.float32)
  return MaskGroundTruth(
      pixel_mask_id=pixel_mask_id,
      pixel_mask_one_hot=pixel_mask_one_hot,
      pixel_non_void=pixel_non_void,
      mask_valid=mask_valid,
      mask_area=mask_area,
      mask_class_one_hot=mask_class_one_hot,
      inverse_pixel_mask_area=inverse_pixel_mask_area)
