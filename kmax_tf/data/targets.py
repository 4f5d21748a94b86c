"""Per-sample training targets from an augmented panoptic label (the kMaX part of deeplab2's
`PanopticSampleGenerator`; the Panoptic-DeepLab centre/offset targets are not produced).

Label encoding: `panoptic = semantic * divisor + instance`; a thing pixel with instance 0 is crowd.

Every per-pixel output is one elementwise op or one lookup in a table indexed by panoptic id:
at crop 1281 a label has 1.6M pixels but only tens of ids, so per-id work is free and the cost
is the number of passes over the pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

# Up to this many runs of consecutive ids are tested with comparisons, more with a table lookup.
_MAX_COMPARED_RUNS = 4


def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
  """Sorted ids as inclusive (first, last) runs of consecutive values."""
  runs = []
  for value in sorted(set(int(i) for i in ids)):
    if runs and value == runs[-1][1] + 1:
      runs[-1] = (runs[-1][0], value)
    else:
      runs.append((value, value))
  return runs


def isin(values: tf.Tensor, ids: Sequence[int]) -> tf.Tensor:
  """bool mask of the non-negative int `values` that are in `ids`.

  Class id lists are mostly a few ranges (COCO things are 1..80): two comparisons per range are
  several times cheaper than a gather per pixel. Scattered ids use a table lookup (comparing
  against every id would build `[..., len(ids)]`).
  """
  if not ids:
    return tf.zeros_like(values, tf.bool)
  runs = _runs(ids)
  if len(runs) <= _MAX_COMPARED_RUNS:
    mask = None
    for first, last in runs:
      run = (values == first) if first == last else ((values >= first) & (values <= last))
      mask = run if mask is None else mask | run
    return mask
  size = max(ids) + 2  # the last entry (False) stands for every larger value
  table = tf.constant(np.isin(np.arange(size), list(ids)))
  return tf.gather(table, tf.minimum(values, size - 1))


def ids_in_first_occurrence_order(values: tf.Tensor) -> tf.Tensor:
  """The unique values of int32 `[N]` in order of first occurrence (`tf.unique(values)[0]`).

  An id first occurs where a run of equal values starts, and labels are piecewise constant, so
  `tf.unique` (which hashes every element) only has to see the run starts.
  """
  starts = tf.concat([[True], values[1:] != values[:-1]], axis=0)
  return tf.unique(tf.boolean_mask(values, starts))[0]


def id_table(ids: tf.Tensor, entries: tf.Tensor, size, default) -> tf.Tensor:
  """`[size]` table with `entries` at `ids` and `default` elsewhere."""
  return tf.tensor_scatter_nd_update(tf.fill([size], tf.cast(default, entries.dtype)),
                                     ids[:, tf.newaxis], entries)


def semantic_and_crowd(panoptic: tf.Tensor, *, divisor: int, thing_ids: Sequence[int]):
  """Returns (semantic, thing mask, crowd mask) of an int32 panoptic label of any shape."""
  semantic = panoptic // divisor
  thing = isin(semantic, thing_ids)
  crowd = thing & (panoptic == semantic * divisor)
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
  semantic, _, crowd = semantic_and_crowd(panoptic, divisor=divisor, thing_ids=thing_ids)
  # Instances are the non-void ids with a non-zero instance part; a stuff pixel carrying an
  # instance id is malformed (deeplab2 asserts the same).
  flat = tf.reshape(panoptic, [-1])
  unique_ids = ids_in_first_occurrence_order(flat)
  num_ids = tf.reduce_max(unique_ids) + 1
  unique_semantic = unique_ids // divisor
  is_instance = (unique_semantic != ignore_label) & (unique_ids % divisor != 0)
  is_stuff_instance = is_instance & ~isin(unique_semantic, thing_ids)
  check_stuff = tf.debugging.Assert(
      ~tf.reduce_any(is_stuff_instance),
      ["stuff class with a non-zero instance id in the panoptic label:",
       tf.boolean_mask(unique_ids, is_stuff_instance)])

  if small_instance_threshold > 0 and small_instance_weight != 1.0:
    counts = tf.gather(tf.math.bincount(flat, minlength=num_ids, dtype=tf.int32), unique_ids)
    small = is_instance & (counts < small_instance_threshold)
    weight_table = id_table(unique_ids, tf.where(small, small_instance_weight, 1.0), num_ids,
                             1.0)
    weight = tf.gather(weight_table, panoptic)
  else:
    weight = tf.ones(tf.shape(panoptic), tf.float32)

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
      thing_table = id_table(unique_ids, tf.where(is_instance, rank, -1), num_ids, -1)
      padding = -tf.ones([tf.maximum(max_thing_id - num_things, 0)], tf.int32)
    targets["thing_id_mask_gt"] = tf.gather(thing_table, panoptic)
    classes = tf.boolean_mask(unique_semantic, is_instance)
    targets["thing_id_class_gt"] = tf.concat([classes, padding], axis=0)
    targets["thing_id_class_gt"].set_shape([max_thing_id])
  return targets
