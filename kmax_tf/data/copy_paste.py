"""Panoptic copy-paste (kMaX-DeepLab, ECCV 2022): paste random segments of a second sample.

A random subset of the second sample's segments (each unique panoptic id is a segment) is pasted
onto the first sample's image and label; the subset is then adjusted per kind of segment:
padding (the second sample is padded with `padding_value`, distinct from void) is never pasted,
and thing / stuff / void segments follow their option:
  "none": never paste,  "random": keep the random choice,  "all": always paste.

Pasted thing instances get instance id `divisor - 1 - id`, original ones keep theirs; both samples
must have instance ids below `divisor // 2`, so the ids of the result are unique per segment.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

OPTIONS = ("none", "random", "all")


def _isin(values: tf.Tensor, ids: Sequence[int]) -> tf.Tensor:
  if not ids:
    return tf.zeros_like(values, tf.bool)
  return tf.reduce_any(values[:, tf.newaxis] == tf.constant(list(ids), values.dtype), axis=-1)


def _apply_option(keep: tf.Tensor, in_class: tf.Tensor, option: str) -> tf.Tensor:
  if option == "none":
    return keep & ~in_class
  if option == "random":
    return keep
  if option == "all":
    return keep | in_class
  raise ValueError(f"copy-paste option must be one of {OPTIONS}, got {option!r}")


def panoptic_copy_paste(image, label, paste_image, paste_label, seed, *, divisor: int,
                        ignore_label: int, padding_value: int, thing_ids: Sequence[int],
                        stuff_ids: Sequence[int], thing_option: str = "random",
                        stuff_option: str = "random", void_option: str = "none"):
  """Pastes segments of (paste_image, paste_label) onto (image, label).

  Args:
    image, paste_image: float32 `[H, W, 3]` (same size).
    label, paste_label: int32 `[H, W, 1]` panoptic labels; `paste_label` is padded with
      `padding_value`.
    seed: int64 `[2]` stateless seed.
    divisor, ignore_label, thing_ids, stuff_ids: dataset facts.
    thing_option, stuff_option, void_option: one of OPTIONS.

  Returns:
    (image float32 `[H, W, 3]`, label int32 `[H, W, 1]`).
  """
  seeds = tf.random.split(seed, 2)
  unique_ids, pixel_to_unique = tf.unique(tf.reshape(paste_label, [-1]))
  num_unique = tf.shape(unique_ids)[0]
  num_keep = tf.random.stateless_uniform([], seeds[0], 0, num_unique + 1, tf.int32)
  # A uniformly random subset of `num_keep` segments: those whose random key ranks lowest.
  keys = tf.random.stateless_uniform([num_unique], seeds[1])
  keep = tf.argsort(tf.argsort(keys)) < num_keep

  unique_semantic = unique_ids // divisor
  keep = _apply_option(keep, unique_ids == padding_value, "none")
  keep = _apply_option(keep, _isin(unique_semantic, thing_ids), thing_option)
  keep = _apply_option(keep, _isin(unique_semantic, stuff_ids), stuff_option)
  keep = _apply_option(keep, unique_ids == ignore_label * divisor, void_option)
  pasted = tf.reshape(tf.gather(keep, pixel_to_unique), tf.shape(paste_label))

  instance = label % divisor
  paste_instance = paste_label % divisor
  check = tf.debugging.Assert(
      (tf.reduce_max(instance) < divisor // 2) & (tf.reduce_max(paste_instance) < divisor // 2),
      ["panoptic copy-paste needs instance ids below divisor // 2 =", divisor // 2])
  with tf.control_dependencies([check]):
    paste_instance = tf.where(paste_instance == 0, 0, divisor - 1 - paste_instance)
  remapped = (paste_label // divisor) * divisor + paste_instance
  image = tf.where(pasted, paste_image, image)
  label = tf.where(pasted, remapped, label)
  return image, label
