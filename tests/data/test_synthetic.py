"""Synthetic dataset: deterministic per seed, valid labels, records decode with the reader."""
import argparse
import os

import numpy as np

from kmax_tf import datasets
from kmax_tf.commands import data as data_command
from kmax_tf.data import reader, synthetic


def test_deterministic_per_seed():
  a = synthetic.draw_scene(synthetic.scene_rng(3, "train", 5))
  b = synthetic.draw_scene(synthetic.scene_rng(3, "train", 5))
  c = synthetic.draw_scene(synthetic.scene_rng(4, "train", 5))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_scene_labels():
  descriptor = datasets.get_dataset("synthetic_panoptic")
  seen = set()
  for index in range(20):
    image, panoptic = synthetic.draw_scene(synthetic.scene_rng(0, "train", index), 64)
    semantic, instance = panoptic // 256, panoptic % 256
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # Void frame, black in the image.
    assert (semantic[:2] == 0).all() and (semantic[:, -2:] == 0).all()
    assert (image[0] == 0).all()
    inner = semantic[2:-2, 2:-2]
    assert (inner > 0).all() and (inner < descriptor.num_classes).all()
    things = np.isin(semantic, descriptor.thing_class_ids)
    assert (instance[things] > 0).all() and (instance[~things] == 0).all()  # no crowd
    seen.update(np.unique(semantic).tolist())
  assert seen == set(range(7))


def test_thing_colours_identify_their_class():
  """Each thing class has its own colour range (what makes the dataset quick to learn)."""
  for index in range(10):
    image, panoptic = synthetic.draw_scene(synthetic.scene_rng(1, "val", index), 64)
    for thing, (low, high) in synthetic._THING_COLOR_RANGES.items():
      pixels = image[panoptic // 256 == thing].astype(float)
      if len(pixels):
        mean = pixels.mean(0)
        assert (mean > np.array(low) - 15).all() and (mean < np.array(high) + 15).all()


def test_command_writes_records_the_reader_accepts(tmp_path):
  args = argparse.Namespace(output_dir=str(tmp_path), num_train=5, num_eval=2, image_size=32,
                            seed=1, image_format="jpeg")
  assert data_command._synthetic(args) == 0
  assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00001.tfrecord",
                                          "val-00000-of-00001.tfrecord"]
  result = reader.validate_records(reader.list_files(str(tmp_path / "*.tfrecord")),
                                   datasets.get_dataset("synthetic_panoptic"))
  assert result["per_file"] == [5, 2] and not result["bad"]
  with open(tmp_path / "train-00000-of-00001.tfrecord", "rb") as f:
    first = f.read()
  data_command._synthetic(args)
  with open(tmp_path / "train-00000-of-00001.tfrecord", "rb") as f:
    assert f.read() == first
