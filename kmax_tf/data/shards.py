"""Sharded TFRecord output with deeplab2's file names, written atomically.

A shard is written under a hidden temporary name in the output directory and renamed to
`{split}-{index:05d}-of-{num_shards:05d}.tfrecord` only once it is complete and closed, so an
interrupted conversion never leaves a file that matches the `{split}-*.tfrecord` pattern but is
truncated.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")


def shard_name(split: str, index: int, num_shards: int) -> str:
  return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def split_evenly(items: Sequence[T], num_shards: int) -> list[Sequence[T]]:
  """Splits `items` into `num_shards` contiguous chunks of ceil(n / num_shards) (deeplab2's rule).

  Trailing chunks may be empty when there are fewer items than shards.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  per_shard = -(-len(items) // num_shards)
  return [items[i * per_shard:(i + 1) * per_shard] for i in range(num_shards)]


def write_shard(path: str, serialized_examples: Iterable[bytes]) -> int:
  """Writes the records to `path` via a temporary file; returns the number written."""
  import tensorflow as tf
  directory, name = os.path.split(path)
  temp_path = os.path.join(directory, f".{name}.incomplete-{os.getpid()}")
  count = 0
  try:
    with tf.io.TFRecordWriter(temp_path) as writer:
      for record in serialized_examples:
        writer.write(record)
        count += 1
    os.replace(temp_path, path)
  finally:
    if os.path.exists(temp_path):
      os.remove(temp_path)
  return count
