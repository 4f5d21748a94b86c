"""deeplab2's `tf.train.Example` layout for segmentation records (writing side).

Feature keys and encodings are those of deeplab2 (`common.py`, `data/data_utils.py`) so records
written here are read by deeplab2 and records written by deeplab2 are read by
`kmax_tf.data.reader`:

  image/encoded                     JPEG or PNG bytes, RGB
  image/filename, image/format      file stem; "jpeg" or "png"
  image/height, image/width         int64
  image/channels                    int64, always 3
  image/segmentation/class/encoded  panoptic: raw int32 `semantic * divisor + instance`, H*W*4
                                    bytes in native (little-endian) order; semantic-only: PNG
  image/segmentation/class/format   "raw" or "png"
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from kmax_tf import images

KEY_ENCODED_IMAGE = "image/encoded"
KEY_IMAGE_FILENAME = "image/filename"
KEY_IMAGE_FORMAT = "image/format"
KEY_IMAGE_HEIGHT = "image/height"
KEY_IMAGE_WIDTH = "image/width"
KEY_IMAGE_CHANNELS = "image/channels"
KEY_ENCODED_LABEL = "image/segmentation/class/encoded"
KEY_LABEL_FORMAT = "image/segmentation/class/format"

_PIL_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}


def encode_image(array: np.ndarray, image_format: str) -> bytes:
  """Encodes a uint8 `[H, W, 3]` array as JPEG (quality 95) or PNG bytes."""
  buffer = io.BytesIO()
  kwargs = {"quality": 95} if _PIL_FORMATS[image_format] == "JPEG" else {}
  Image.fromarray(array).save(buffer, format=_PIL_FORMATS[image_format], **kwargs)
  return buffer.getvalue()


def make_features(image_data: bytes, image_format: str, filename: str,
                  panoptic_label: np.ndarray | None = None,
                  semantic_png: bytes | None = None, source: str = "<bytes>") -> dict:
  """Checked feature values of one example (plain bytes/ints; no TensorFlow needed).

  Args:
    image_data: encoded JPEG/PNG. Non-RGB images (grey, palette, RGBA, CMYK, 16-bit grey) are
      converted to RGB (`kmax_tf.images.to_rgb`) and re-encoded in `image_format`, as deeplab2's
      converters do.
    image_format: "jpeg" or "png" (the value stored under image/format).
    filename: stem stored under image/filename.
    panoptic_label: optional int32 `[H, W]` panoptic map, stored raw.
    semantic_png: optional PNG semantic label (semantic-only datasets); exclusive with
      `panoptic_label`.
    source: name used in error messages.

  Returns:
    {feature key: bytes or int}; `serialize` turns it into a tf.train.Example.
  """
  if image_format not in _PIL_FORMATS:
    raise ValueError(f"{source}: unsupported image format {image_format!r}")
  if image_format == "jpg":
    image_format = "jpeg"
  image = images.open_image(image_data, source)
  # The reader decodes with TensorFlow, which ignores EXIF: store upright pixels.
  if image.mode != "RGB" or images.is_turned(image_data):
    image_data = encode_image(images.to_rgb(image), image_format)
  width, height = image.size
  features = {
      KEY_ENCODED_IMAGE: image_data,
      KEY_IMAGE_FILENAME: filename.encode(),
      KEY_IMAGE_FORMAT: image_format.encode(),
      KEY_IMAGE_HEIGHT: height,
      KEY_IMAGE_WIDTH: width,
      KEY_IMAGE_CHANNELS: 3,
  }
  if panoptic_label is not None and semantic_png is not None:
    raise ValueError(f"{source}: give either a panoptic label or a semantic PNG, not both")
  if panoptic_label is not None:
    if panoptic_label.shape != (height, width):
      raise ValueError(f"{source}: label shape {panoptic_label.shape} does not match the "
                       f"image size {(height, width)}")
    features[KEY_ENCODED_LABEL] = np.ascontiguousarray(panoptic_label, dtype="<i4").tobytes()
    features[KEY_LABEL_FORMAT] = b"raw"
  elif semantic_png is not None:
    label_size = images.open_image(semantic_png, source).size
    if label_size != (width, height):
      raise ValueError(f"{source}: label size {label_size[::-1]} does not match the image "
                       f"size {(height, width)}")
    features[KEY_ENCODED_LABEL] = semantic_png
    features[KEY_LABEL_FORMAT] = b"png"
  return features


def serialize(features: dict) -> bytes:
  """Serialized `tf.train.Example` of `make_features` output."""
  import tensorflow as tf  # Lazily: converter workers build features without TensorFlow.

  def feature(value):
    if isinstance(value, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

  return tf.train.Example(features=tf.train.Features(
      feature={key: feature(value) for key, value in features.items()})).SerializeToString()


def make_example(*args, **kwargs) -> bytes:
  """`serialize(make_features(...))`."""
  return serialize(make_features(*args, **kwargs))
