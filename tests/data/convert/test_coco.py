"""COCO panoptic converter: tiny fixture in the COCO layout, converted and read back."""
import glob
import os

import numpy as np
import pytest

from kmax_tf.data.convert import coco

# deeplab2's coco_constants mapping: person (COCO 1) -> 1, car (COCO 3) -> 3, banner (COCO 92,
# the first stuff category) -> 81.
PERSON, CAR, BANNER = 1, 3, 81


def _make_coco(root, helpers, num_images=3):
  ids = helpers.scene_segment_ids()
  entries = []
  for i in range(num_images):
    name = f"{i:012d}"
    helpers.save_image(os.path.join(root, "train2017", name + ".jpg"),
                       helpers.random_image(*ids.shape, seed=i), "JPEG")
    segments = [{"id": 1, "category_id": 92, "iscrowd": 0},
                {"id": 2, "category_id": 1, "iscrowd": 0},
                {"id": 3, "category_id": 1, "iscrowd": 0},
                {"id": 4, "category_id": 3, "iscrowd": 1}]
    entries.append((name + ".png", i, ids, segments))
  helpers.write_panoptic_annotation(
      os.path.join(root, "annotations", "panoptic_train2017.json"),
      os.path.join(root, "annotations", "panoptic_train2017"), entries)
  return ids


def _expected(ids, keep_crowd):
  expected = np.zeros(ids.shape, np.int64)  # void where no segment
  expected[ids == 1] = BANNER * 256
  expected[ids == 2] = PERSON * 256 + 1
  expected[ids == 3] = PERSON * 256 + 2
  expected[ids == 4] = CAR * 256 if keep_crowd else 0
  return expected


@pytest.mark.parametrize("keep_crowd", [False, True])
def test_read_back_equals_annotations(tmp_path, helpers, keep_crowd):
  ids = _make_coco(str(tmp_path / "coco"), helpers)
  out = str(tmp_path / "out")
  [summary] = coco.convert(str(tmp_path / "coco"), out, ["train"], num_shards=2, workers=1,
                           treat_crowd_as_ignore=not keep_crowd, full_check=True)
  assert summary["images"] == 3 and summary["records_read_back"] == 3
  assert summary["crowd_segments"] == 3 and summary["segments"] == 12
  assert sorted(os.listdir(out)) == ["train-00000-of-00002.tfrecord",
                                     "train-00001-of-00002.tfrecord"]
  labels = helpers.read_labels(os.path.join(out, "train-*.tfrecord"))
  assert sorted(labels) == ["000000000000", "000000000001", "000000000002"]
  for name, (label, image_bytes) in labels.items():
    np.testing.assert_array_equal(label, _expected(ids, keep_crowd))
    # The image bytes are stored unchanged (already RGB JPEG).
    with open(os.path.join(tmp_path, "coco", "train2017", name + ".jpg"), "rb") as f:
      assert f.read() == image_bytes


def test_category_map_is_inverse_of_descriptor():
  mapping = coco.category_map()
  assert len(mapping) == 133 and sorted(mapping.values()) == list(range(1, 134))
  assert mapping[1] == PERSON and mapping[92] == BANNER and mapping[200] == 133


def test_area_mismatch_names_the_file(tmp_path, helpers):
  root = str(tmp_path / "coco")
  ids = helpers.scene_segment_ids()
  helpers.save_image(os.path.join(root, "train2017", "a.jpg"), helpers.random_image(*ids.shape))
  helpers.write_panoptic_annotation(
      os.path.join(root, "annotations", "panoptic_train2017.json"),
      os.path.join(root, "annotations", "panoptic_train2017"),
      [("a.png", 0, ids, [{"id": 1, "category_id": 92, "iscrowd": 0, "area": 5}])])
  with pytest.raises(ValueError, match=r"a\.png: segment 1 has \d+ pixels"):
    coco.convert(root, str(tmp_path / "out"), ["train"], num_shards=1, workers=1)
  # No shard that looks complete is left behind.
  assert not glob.glob(str(tmp_path / "out" / "train-*.tfrecord"))


def test_parallel_workers_give_same_records(tmp_path, helpers):
  _make_coco(str(tmp_path / "coco"), helpers, num_images=4)
  coco.convert(str(tmp_path / "coco"), str(tmp_path / "one"), ["train"], num_shards=2,
               workers=1)
  coco.convert(str(tmp_path / "coco"), str(tmp_path / "two"), ["train"], num_shards=2,
               workers=2)
  for shard in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"):
    with open(tmp_path / "one" / shard, "rb") as a, open(tmp_path / "two" / shard, "rb") as b:
      assert a.read() == b.read()
