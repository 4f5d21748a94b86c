"""Tiny fixtures in the real on-disk formats, written by the tests themselves."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from kmax_tf import panoptic_files


def save_image(path, array, fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(array, np.uint8)).save(path, format=fmt)


def write_panoptic_annotation(json_path, png_dir, entries, categories=None, images=None):
  """entries: list of (annotation file_name, image_id, segment id map [H, W], segments_info)."""
  os.makedirs(png_dir, exist_ok=True)
  annotations = []
  for file_name, image_id, ids, segments in entries:
    save_image(os.path.join(png_dir, file_name), panoptic_files.ids_to_rgb(ids), "PNG")
    for s in segments:
      s.setdefault("area", int((ids == s["id"]).sum()))
    annotations.append({"file_name": file_name, "image_id": image_id, "segments_info": segments})
  data = {"annotations": annotations}
  if categories is not None:
    data["categories"] = categories
  if images is not None:
    data["images"] = images
  os.makedirs(os.path.dirname(json_path), exist_ok=True)
  with open(json_path, "w") as f:
    json.dump(data, f)


def scene_segment_ids(height=12, width=16):
  """Segment-id map: background 1, two thing boxes 2 and 3, a crowd box 4, a void strip 0."""
  ids = np.ones((height, width), np.int64)
  ids[1:5, 1:6] = 2
  ids[6:11, 2:7] = 3
  ids[2:6, 9:14] = 4
  ids[:, -1] = 0
  return ids


def random_image(height, width, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def read_labels(pattern):
  """{image/filename: (int32 label [H, W], image bytes)} of every record matching `pattern`."""
  import glob
  import tensorflow as tf
  labels = {}
  for path in sorted(glob.glob(pattern)):
    for record in tf.data.TFRecordDataset(path):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      height = feature["image/height"].int64_list.value[0]
      width = feature["image/width"].int64_list.value[0]
      assert feature["image/segmentation/class/format"].bytes_list.value[0] == b"raw"
      label = np.frombuffer(feature["image/segmentation/class/encoded"].bytes_list.value[0],
                            "<i4").reshape(height, width)
      name = feature["image/filename"].bytes_list.value[0].decode()
      labels[name] = (label, feature["image/encoded"].bytes_list.value[0])
  return labels


@pytest.fixture
def helpers():
  class Helpers:
    pass
  h = Helpers()
  h.save_image = save_image
  h.write_panoptic_annotation = write_panoptic_annotation
  h.scene_segment_ids = scene_segment_ids
  h.random_image = random_image
  h.read_labels = read_labels
  return h
