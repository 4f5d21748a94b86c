"""Geometry shared by the model, losses, data pipeline and post-processing.

kMaX works on sizes of the form `stride * k + 1` (641, 1281, 1025x2049): every feature map at
stride `s` then has `(size - 1) / s + 1` pixels and corner-aligned resizing between strides maps
pixel centres exactly onto each other. Arbitrary input sizes are padded (bottom/right) up to the
next such size and predictions are cropped back.
"""
from __future__ import annotations

import tensorflow as tf


def padded_length(length, stride: int = 32):
  """Smallest `stride * k + 1 >= length`, for an int or an int32 tensor of lengths."""
  if not isinstance(length, tf.Tensor) and length < 1:
    raise ValueError(f"length must be positive, got {length}")
  return -(-(length - 1) // stride) * stride + 1


def resize_align_corners(images: tf.Tensor, size, method: str = "bilinear") -> tf.Tensor:
  """Resizes `[B, H, W, C]` (or `[H, W, C]`) with corner pixels aligned.

  TF2's `tf.image.resize` has no `align_corners`; deeplab2 resizes with align_corners=True
  everywhere (feature fusion, auxiliary outputs, post-processing, augmentation), so the v1 kernels
  are used here. `method` is "bilinear" or "nearest".
  """
  if method == "bilinear":
    return tf.compat.v1.image.resize_bilinear(images, size, align_corners=True)
  if method == "nearest":
    return tf.compat.v1.image.resize_nearest_neighbor(images, size, align_corners=True)
  raise ValueError(f"Unknown resize method {method!r}; use 'bilinear' or 'nearest'")


def strided_downsample(tensor: tf.Tensor, target_size) -> tf.Tensor:
  """Subsamples `[B, H, W, ...]` to `target_size` by taking every s-th pixel.

  Used for labels: with `H = s * (h - 1) + 1` this picks exactly the label under each feature
  pixel centre, without mixing ids the way interpolation would.
  """
  height, width = tensor.shape[1], tensor.shape[2]
  target_height, target_width = target_size
  if height is None or width is None:
    raise ValueError("strided_downsample needs static spatial sizes")
  if target_height == height and target_width == width:
    return tensor
  if target_height < 2 or target_width < 2 or (
      (height - 1) % (target_height - 1) or (width - 1) % (target_width - 1)):
    raise ValueError(
        f"Cannot subsample {height}x{width} to {target_height}x{target_width}: sizes must be "
        "stride*k+1 with an integer stride")
  stride_h = (height - 1) // (target_height - 1)
  stride_w = (width - 1) // (target_width - 1)
  return tensor[:, ::stride_h, ::stride_w]
