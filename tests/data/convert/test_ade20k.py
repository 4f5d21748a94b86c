"""ADE20K converter: fixture in the layout of Mask2Former's prepare_ade20k_pan_seg.py."""
import os

import numpy as np

from kmax_tf import datasets
from kmax_tf.data.convert import ade20k


def test_read_back_equals_annotations(tmp_path, helpers):
  root = str(tmp_path / "ade")
  descriptor = datasets.get_dataset("ade20k_panoptic")
  thing = descriptor.thing_class_ids[0]  # semantic id; the JSON stores semantic - 1
  stuff = descriptor.stuff_class_ids[0]
  ids = helpers.scene_segment_ids()
  helpers.save_image(os.path.join(root, "images", "training", "ADE_train_00000001.jpg"),
                     helpers.random_image(*ids.shape), "JPEG")
  segments = [{"id": 1, "category_id": stuff - 1, "iscrowd": 0},
              {"id": 2, "category_id": thing - 1, "iscrowd": 0},
              {"id": 3, "category_id": thing - 1, "iscrowd": 0},
              {"id": 4, "category_id": 255, "iscrowd": 0}]
  helpers.write_panoptic_annotation(
      os.path.join(root, "ade20k_panoptic_train.json"),
      os.path.join(root, "ade20k_panoptic_train"),
      [("ADE_train_00000001.png", "ADE_train_00000001", ids, segments)])

  [summary] = ade20k.convert(root, str(tmp_path / "out"), ["train"], num_shards=1, workers=1,
                             full_check=True)
  assert summary["records_read_back"] == 1
  [(label, _)] = helpers.read_labels(str(tmp_path / "out" / "train-*.tfrecord")).values()
  expected = np.zeros(ids.shape)
  expected[ids == 1] = stuff * 1000
  expected[ids == 2] = thing * 1000 + 1
  expected[ids == 3] = thing * 1000 + 2
  np.testing.assert_array_equal(label, expected)
