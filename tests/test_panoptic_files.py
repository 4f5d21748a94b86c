"""kmax_tf.panoptic_files: segment id <-> RGB against the COCO formula, the PNG/JSON writers and
the overlays on hand-worked maps."""
import json

import numpy as np
import pytest
from PIL import Image

from kmax_tf import panoptic_files
from kmax_tf.datasets import get_dataset

DATASET = get_dataset("synthetic_panoptic")  # 0 void (ignored), 1-3 stuff, 4-6 things
DIVISOR = DATASET.panoptic_label_divisor  # 256


def test_ids_and_colours_follow_the_coco_formula():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  wide = rgb.astype(np.int64)
  expected = wide[..., 0] + 256 * wide[..., 1] + 256 ** 2 * wide[..., 2]
  ids = panoptic_files.rgb_to_ids(rgb)
  assert ids.dtype == np.uint32
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_array_equal(panoptic_files.rgb_to_ids(rgb[..., ::-1], order="BGR"), expected)
  np.testing.assert_array_equal(panoptic_files.ids_to_rgb(expected), rgb)
  # Any shape, including empty ones and single colours.
  assert panoptic_files.rgb_to_ids(np.array([1, 2, 3], np.uint8)) == 1 + 2 * 256 + 3 * 65536
  assert panoptic_files.rgb_to_ids(np.zeros((2, 0, 3), np.uint8)).shape == (2, 0)
  with pytest.raises(ValueError, match="uint8"):
    panoptic_files.rgb_to_ids(rgb.astype(np.int64))
  with pytest.raises(ValueError, match="order"):
    panoptic_files.rgb_to_ids(rgb, order="RGBA")
  with pytest.raises(ValueError, match="2\\^24"):
    panoptic_files.ids_to_rgb(np.array([1 << 24]))


def test_save_panoptic_png_and_json(tmp_path):
  panoptic = np.array([[1 * DIVISOR, 1 * DIVISOR, 4 * DIVISOR + 1],
                       [0, 4 * DIVISOR + 2, 4 * DIVISOR + 1],
                       [0 * DIVISOR + 5, 0, 1 * DIVISOR]])  # class 0 is void, whatever instance
  annotation = panoptic_files.save_panoptic_png(str(tmp_path), "a", panoptic, DATASET)
  # Segment id = panoptic id + 1: sky 257, disc #1 1026, disc #2 1027; void 0.
  colours = np.asarray(Image.open(tmp_path / "panoptic" / "a.png"))
  np.testing.assert_array_equal(colours[..., 0] + 256 * colours[..., 1].astype(np.int64),
                                [[257, 257, 1026], [0, 1027, 1026], [0, 0, 257]])
  assert not colours[..., 2].any()
  assert annotation == {"image_id": "a", "file_name": "a.png", "segments_info": [
      {"id": 257, "category_id": 1, "iscrowd": 0, "area": 3, "bbox": [0, 0, 3, 3]},
      {"id": 1026, "category_id": 4, "iscrowd": 0, "area": 2, "bbox": [2, 0, 1, 2]},
      {"id": 1027, "category_id": 4, "iscrowd": 0, "area": 1, "bbox": [1, 1, 1, 1]}]}
  panoptic_files.write_panoptic_json(str(tmp_path), [annotation], DATASET)
  with open(tmp_path / "panoptic.json", encoding="utf-8") as f:
    written = json.load(f)
  assert written["annotations"] == [annotation]
  assert [(c["id"], c["name"], c["isthing"]) for c in written["categories"]] == [
      (1, "sky", 0), (2, "grass", 0), (3, "sand", 0), (4, "disc", 1), (5, "square", 1),
      (6, "triangle", 1)]


def test_panoptic_overlay_blends_class_colours():
  image = np.full((1, 3, 3), 100, np.uint8)
  panoptic = np.array([[0, 1 * DIVISOR, 4 * DIVISOR + 1]])
  overlay = panoptic_files.panoptic_overlay(image, panoptic, DATASET)
  # Void keeps the image; sky (70, 130, 180) is averaged with it; disc #1 (220, 20, 60) is
  # shifted by (1 * (37, 17, 53)) % 64 - 32 = (5, -15, 21) first: (225, 5, 81).
  np.testing.assert_array_equal(overlay[0], [[100, 100, 100], [85, 115, 140], [162, 52, 90]])


def test_labelled_overlay_writes_class_names():
  image = np.full((40, 60, 3), 128, np.uint8)
  panoptic = np.full((40, 60), 1 * DIVISOR)  # one sky segment
  plain = panoptic_files.panoptic_overlay(image, panoptic, DATASET)
  labelled = panoptic_files.labelled_overlay(image, panoptic, DATASET)
  changed = np.any(labelled != plain, axis=-1)
  # Text is drawn around the centroid only.
  assert changed.any() and not changed[:, :10].any() and not changed[:, -10:].any()
