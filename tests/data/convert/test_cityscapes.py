"""Cityscapes converter: fixture in the createPanopticImgs --use-train-id layout."""
import os

import numpy as np

from kmax_tf.data.convert import cityscapes

ROAD, CAR, PERSON = 0, 13, 11  # train ids


def test_read_back_equals_annotations(tmp_path, helpers):
  root = str(tmp_path / "cityscapes")
  ids = helpers.scene_segment_ids()
  entries = []
  for i, city in enumerate(["aachen", "bonn"]):
    stem = f"{city}_000000_00001{i}"
    helpers.save_image(os.path.join(root, "leftImg8bit", "train", city,
                                    stem + "_leftImg8bit.png"),
                       helpers.random_image(*ids.shape, seed=i), "PNG")
    segments = [{"id": 1, "category_id": ROAD, "iscrowd": 0},
                {"id": 2, "category_id": CAR, "iscrowd": 0},
                {"id": 3, "category_id": PERSON, "iscrowd": 0},
                {"id": 4, "category_id": CAR, "iscrowd": 1}]
    entries.append((stem + "_gtFine_panoptic.png", stem, ids, segments))
  helpers.write_panoptic_annotation(
      os.path.join(root, "gtFine", "cityscapes_panoptic_train_trainId.json"),
      os.path.join(root, "gtFine", "cityscapes_panoptic_train_trainId"), entries)

  [summary] = cityscapes.convert(root, str(tmp_path / "out"), ["train"], num_shards=1,
                                 workers=1, full_check=True)
  assert summary["records_read_back"] == 2
  labels = helpers.read_labels(str(tmp_path / "out" / "train-00000-of-00001.tfrecord"))
  assert sorted(labels) == ["aachen_000000_000010", "bonn_000000_000011"]
  expected = np.full(ids.shape, 255 * 1000)  # void is train id 255, divisor 1000
  expected[ids == 1] = ROAD * 1000
  expected[ids == 2] = CAR * 1000 + 1
  expected[ids == 3] = PERSON * 1000 + 1
  for label, _ in labels.values():
    np.testing.assert_array_equal(label, expected)
