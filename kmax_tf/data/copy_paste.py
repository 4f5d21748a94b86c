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

from kmax_tf.data import targets

OPTIONS = ("none", "random", "all")


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
  flat_paste = tf.reshape(paste_label, [-1])
  # The segments, as sorted ids (deeplab2 lists them in order of appearance; the subset below is
  # uniformly random either way). A bincount is several times cheaper than `tf.unique`.
  num_ids = tf.reduce_max(flat_paste) + 1
  counts = tf.math.bincount(flat_paste, minlength=num_ids, dtype=tf.int32)
  unique_ids = tf.cast(tf.where(counts > 0)[:, 0], tf.int32)
  num_unique = tf.shape(unique_ids)[0]
  num_keep = tf.random.stateless_uniform([], seeds[0], 0, num_unique + 1, tf.int32)
  # A uniformly random subset of `num_keep` segments: those whose random key ranks lowest.
  keys = tf.random.stateless_uniform([num_unique], seeds[1])
  keep = tf.argsort(tf.argsort(keys)) < num_keep

  unique_semantic = unique_ids // divisor
  keep = _apply_option(keep, unique_ids == padding_value, "none")
  keep = _apply_option(keep, targets.isin(unique_semantic, thing_ids), thing_option)
  keep = _apply_option(keep, targets.isin(unique_semantic, stuff_ids), stuff_option)
  keep = _apply_option(keep, unique_ids == ignore_label * divisor, void_option)

  unique_instance = unique_ids % divisor
  check = tf.debugging.Assert(
      (tf.reduce_max(label % divisor) < divisor // 2)
      & (tf.reduce_max(unique_instance) < divisor // 2),
      ["panoptic copy-paste needs instance ids below divisor // 2 =", divisor // 2])
  with tf.control_dependencies([check]):
    remapped = unique_semantic * divisor + tf.where(
        unique_instance == 0, 0, divisor - 1 - unique_instance)
  # Per id: its new id if pasted, else -1; one lookup per pixel gives both mask and label.
  new_id = tf.gather(targets.id_table(unique_ids, tf.where(keep, remapped, -1), num_ids, -1),
                     paste_label)
  pasted = new_id >= 0
  label = tf.where(pasted, new_id, label)
  # Select with a `[pixels]` condition on `[pixels, 3]` rows: a broadcast `tf.where` over the
  # channels is several times slower.
  image = tf.reshape(tf.raw_ops.Select(
      condition=tf.reshape(pasted, [-1]), x=tf.reshape(paste_image, [-1, 3]),
      y=tf.reshape(image, [-1, 3])), tf.shape(image))
  return image, label
