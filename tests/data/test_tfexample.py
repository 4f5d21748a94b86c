"""Example writing: deeplab2 keys, raw little-endian int32 labels, RGB conversion, checks."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kmax_tf.data import tfexample


def test_features_and_rgb_conversion():
  grey = io.BytesIO()
  Image.fromarray(np.full((3, 4), 9, np.uint8)).save(grey, format="PNG")
  label = np.arange(12, dtype=np.int32).reshape(3, 4) * 1000
  example = tf.train.Example.FromString(
      tfexample.make_example(grey.getvalue(), "png", "img", panoptic_label=label))
  f = example.features.feature
  assert f["image/height"].int64_list.value[0] == 3 and f["image/width"].int64_list.value[0] == 4
  assert f["image/channels"].int64_list.value[0] == 3
  assert f["image/format"].bytes_list.value[0] == b"png"
  assert f["image/filename"].bytes_list.value[0] == b"img"
  assert f["image/segmentation/class/format"].bytes_list.value[0] == b"raw"
  raw = f["image/segmentation/class/encoded"].bytes_list.value[0]
  np.testing.assert_array_equal(np.frombuffer(raw, "<i4").reshape(3, 4), label)
  decoded = Image.open(io.BytesIO(f["image/encoded"].bytes_list.value[0]))
  assert decoded.mode == "RGB" and (np.asarray(decoded) == 9).all()


def test_bad_inputs_name_the_source():
  png = tfexample.encode_image(np.zeros((3, 4, 3), np.uint8), "png")
  with pytest.raises(ValueError, match="x.png: label shape"):
    tfexample.make_features(png, "png", "x", panoptic_label=np.zeros((4, 4), np.int32),
                            source="x.png")
  with pytest.raises(ValueError, match="y.jpg: cannot decode image"):
    tfexample.make_features(b"not an image", "jpeg", "y", source="y.jpg")


def test_16_bit_grey_image_is_scaled_not_clipped():
  grey16 = np.random.default_rng(0).integers(0, 1 << 16, (3, 4), dtype=np.uint16)
  png = io.BytesIO()
  Image.fromarray(grey16).save(png, format="PNG")
  features = tfexample.make_features(png.getvalue(), "png", "g16")
  decoded = np.asarray(Image.open(io.BytesIO(features["image/encoded"])))
  np.testing.assert_array_equal(decoded, np.repeat((grey16 >> 8)[..., None], 3, axis=-1))


def test_exif_turned_jpeg_is_stored_upright():
  stored = np.zeros((40, 64, 3), np.uint8)
  stored[:20] = 200
  exif = Image.Exif()
  exif[0x0112] = 6  # shown turned a quarter clockwise
  jpeg = io.BytesIO()
  Image.fromarray(stored).save(jpeg, format="JPEG", quality=95, exif=exif)
  features = tfexample.make_features(jpeg.getvalue(), "jpeg", "turned")
  # What the reader sees: TensorFlow's decoder ignores EXIF.
  decoded = tf.io.decode_jpeg(features["image/encoded"]).numpy()
  assert (features["image/height"], features["image/width"]) == (64, 40) == decoded.shape[:2]
  assert np.abs(decoded.astype(int) - np.rot90(stored, -1)).mean() < 2
