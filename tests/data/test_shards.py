"""Shard naming, splitting and atomic writing."""
import os

import pytest

from kmax_tf.data import shards


def test_names_and_split():
  assert shards.shard_name("train", 3, 1000) == "train-00003-of-01000.tfrecord"
  assert [list(c) for c in shards.split_evenly(range(7), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
  assert [list(c) for c in shards.split_evenly(range(2), 3)] == [[0], [1], []]


def test_failed_shard_leaves_no_file(tmp_path):
  def records():
    yield b"one"
    raise RuntimeError("worker failed")
  path = str(tmp_path / shards.shard_name("val", 0, 1))
  with pytest.raises(RuntimeError):
    shards.write_shard(path, records())
  assert os.listdir(tmp_path) == []
  assert shards.write_shard(path, iter([b"a", b"b"])) == 2
  assert os.listdir(tmp_path) == ["val-00000-of-00001.tfrecord"]
