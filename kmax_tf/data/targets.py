"""Per-sample training targets from an augmented panoptic label (the kMaX part of deeplab2's
`PanopticSampleGenerator`; the Panoptic-DeepLab centre/offset targets are not produced).

Label encoding: `panoptic = semantic * divisor + instance`; a thing pixel with instance 0 is crowd.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


def _isin(values: tf.Tensor, ids: Sequence[int]) -> tf.Tensor:
  """bool mask of `values` (non-negative ints) that are in `ids`, by table lookup.

  A lookup costs one gather per pixel; comparing against every id would build a
  `[H, W, len(ids)]` tensor (80 thing classes on COCO at 1281x1281 is 131M elements).
  """
  if not ids:
    return tf.zeros_like(values, tf.bool)
  size = max(ids) + 2  # the last entry (False) stands for every larger value
  table = tf.constant(np.isin(np.arange(size), list(ids)))
  return tf.gather(table, tf.minimum(values, size - 1))


def unique_in_first_occurrence_order(values: tf.Tensor):
  """`tf.unique_with_counts` of non-negative int32 `[N]` values, in linear time.

  Returns (unique values in order of first occurrence, index of each value's unique entry `[N]`,
  counts). `tf.unique` hashes every element; label ids are small non-negative ints (below
  num_classes * divisor), so counting and first positions per id take a bincount and a segment
  min instead, several times faster on 1281x1281 labels.
  """
  num_ids = tf.reduce_max(values) + 1
  counts = tf.math.bincount(values, minlength=num_ids, dtype=tf.int32)
  first = tf.math.unsorted_segment_min(tf.range(tf.size(values)), values, num_ids)
  present = tf.cast(tf.where(counts > 0)[:, 0], tf.int32)
  unique = tf.gather(present, tf.argsort(tf.gather(first, present)))
  position = tf.scatter_nd(unique[:, tf.newaxis], tf.range(tf.size(unique)), [num_ids])
  return unique, tf.gather(position, values), tf.gather(counts, unique)


def semantic_and_crowd(panoptic: tf.Tensor, *, divisor: int, thing_ids: Sequence[int]):
  """Returns (semantic, thing mask, crowd mask) of an int32 panoptic label of any shape."""
  semantic = panoptic // divisor
  thing = _isin(semantic, thing_ids)
  crowd = thing & (panoptic % divisor == 0)
  return semantic, thing, crowd


def panoptic_targets(panoptic: tf.Tensor, *, ignore_label: int, divisor: int,
                     thing_ids: Sequence[int], max_thing_id: int,
                     small_instance_threshold: int = 0, small_instance_weight: float = 1.0,
                     thing_id_annotations: bool = True) -> dict:
  """Targets of one sample.

  Args:
    panoptic: int32 `[H, W]` augmented panoptic label (padding is `ignore_label * divisor`).
    ignore_label, divisor, thing_ids: dataset facts.
    max_thing_id: length of `thing_id_class_gt`; more non-crowd thing instances than this is an
      error (exactly `max_thing_id` is accepted).
    small_instance_threshold, small_instance_weight: non-crowd thing instances with fewer pixels
      than the threshold get this weight in `semantic_loss_weight` (threshold 0 disables it).
    thing_id_annotations: produce `thing_id_mask_gt` / `thing_id_class_gt`.

  Returns:
    semantic_gt int32 `[H, W]` (crowd keeps its thing class), semantic_loss_weight float32
    `[H, W]`, panoptic_gt int32 `[H, W]` (unchanged, crowd included), is_crowd_gt bool `[H, W]`,
    and optionally thing_id_mask_gt int32 `[H, W]` (consecutive ids in order of first occurrence
    in row-major order, -1 elsewhere) and thing_id_class_gt int32 `[max_thing_id]` (-1 padded).
  """
  if not 0 <= ignore_label < divisor:
    raise ValueError(f"ignore_label {ignore_label} must lie in [0, divisor={divisor})")
  panoptic = tf.convert_to_tensor(panoptic, tf.int32)
  semantic, thing, crowd = semantic_and_crowd(panoptic, divisor=divisor, thing_ids=thing_ids)
  # Instances are the non-void ids with a non-zero instance part; a stuff pixel carrying an
  # instance id is malformed (deeplab2 asserts the same).
  flat = tf.reshape(panoptic, [-1])
  unique_ids, pixel_to_unique, counts = unique_in_first_occurrence_order(flat)
  unique_semantic = unique_ids // divisor
  is_instance = (unique_semantic != ignore_label) & (unique_ids % divisor != 0)
  is_stuff_instance = is_instance & ~_isin(unique_semantic, thing_ids)
  check_stuff = tf.debugging.Assert(
      ~tf.reduce_any(is_stuff_instance),
      ["stuff class with a non-zero instance id in the panoptic label:",
       tf.boolean_mask(unique_ids, is_stuff_instance)])

  weight = tf.ones(tf.shape(panoptic), tf.float32)
  if small_instance_threshold > 0 and small_instance_weight != 1.0:
    small = is_instance & (counts < small_instance_threshold)
    weight = tf.where(tf.reshape(tf.gather(small, pixel_to_unique), tf.shape(panoptic)),
                      tf.constant(small_instance_weight, tf.float32), weight)

  with tf.control_dependencies([check_stuff]):
    targets = {
        "semantic_gt": tf.identity(semantic),
        "semantic_loss_weight": weight,
        "panoptic_gt": panoptic,
        "is_crowd_gt": crowd,
    }
  if thing_id_annotations:
    rank = tf.cumsum(tf.cast(is_instance, tf.int32)) - 1
    num_things = tf.reduce_sum(tf.cast(is_instance, tf.int32))
    check_count = tf.debugging.Assert(
        num_things <= max_thing_id,
        ["more thing instances than max_thing_id:", num_things, max_thing_id])
    with tf.control_dependencies([check_count]):
      unique_thing_id = tf.where(is_instance, rank, -1)
      padding = -tf.ones([tf.maximum(max_thing_id - num_things, 0)], tf.int32)
    targets["thing_id_mask_gt"] = tf.reshape(
        tf.gather(unique_thing_id, pixel_to_unique), tf.shape(panoptic))
    classes = tf.boolean_mask(unique_semantic, is_instance)
    targets["thing_id_class_gt"] = tf.concat([classes, padding], axis=0)
    targets["thing_id_class_gt"].set_shape([max_thing_id])
  return targets
