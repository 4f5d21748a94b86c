"""`folder` converter: a custom COCO-panoptic dataset with its own categories."""
import json
import os

import numpy as np

from kmax_tf.data import reader
from kmax_tf.data.convert import folder


def test_read_back_and_categories_file(tmp_path, helpers):
  ids = helpers.scene_segment_ids()
  categories = [{"id": 7, "name": "water", "isthing": 0, "color": [0, 0, 255]},
                {"id": 3, "name": "boat", "isthing": 1, "color": [255, 0, 0]}]
  images = [{"id": 11, "file_name": "harbour.png"}]
  helpers.save_image(str(tmp_path / "images" / "harbour.png"), helpers.random_image(*ids.shape),
                     "PNG")
  segments = [{"id": 1, "category_id": 7, "iscrowd": 0},
              {"id": 2, "category_id": 3, "iscrowd": 0},
              {"id": 3, "category_id": 3, "iscrowd": 0},
              {"id": 4, "category_id": 3, "iscrowd": 1}]
  helpers.write_panoptic_annotation(str(tmp_path / "panoptic.json"), str(tmp_path / "png"),
                                    [("ann_0011.png", 11, ids, segments)], categories, images)
  out = str(tmp_path / "out")
  summary = folder.convert(str(tmp_path / "images"), str(tmp_path / "panoptic.json"),
                           str(tmp_path / "png"), out, split="train", num_shards=1, workers=1,
                           treat_crowd_as_ignore=False)
  assert summary["images"] == 1

  with open(os.path.join(out, folder.CATEGORIES_FILE)) as f:
    info = json.load(f)
  assert info["num_classes"] == 3 and info["ignore_label"] == 0
  assert [(c["id"], c["source_id"], c["isthing"]) for c in info["categories"]] == [
      (1, 7, 0), (2, 3, 1)]
  descriptor = folder.descriptor_from_info(info)
  assert descriptor.thing_class_ids == (2,) and descriptor.stuff_class_ids == (1,)

  [(label, _)] = helpers.read_labels(os.path.join(out, "train-*.tfrecord")).values()
  expected = np.zeros(ids.shape)
  expected[ids == 1] = 1 * 256
  expected[ids == 2] = 2 * 256 + 1
  expected[ids == 3] = 2 * 256 + 2
  expected[ids == 4] = 2 * 256  # crowd kept as instance 0
  np.testing.assert_array_equal(label, expected)
  result = reader.validate_records(reader.list_files(os.path.join(out, "train-*")), descriptor)
  assert result["records"] == 1 and not result["bad"]
