"""Image files decoded as the user sees them: EXIF orientation applied, any mode and bit depth
turned into uint8 RGB. Used by the data converters and by `kmax-tf predict`."""
from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image, ImageOps


def open_image(data: bytes, source: str = "<bytes>") -> Image.Image:
  """Decodes encoded image bytes and applies their EXIF orientation (as deeplab2 does).

  Raises ValueError naming `source` when the bytes are not a readable image.
  """
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
    return ImageOps.exif_transpose(image)
  except Exception as e:  # PIL raises several unrelated types for bad data.
    raise ValueError(f"{source}: cannot decode image: {e}") from e


def is_turned(data: bytes) -> bool:
  """Whether the EXIF orientation of encoded image bytes turns or mirrors the stored pixels
  (decoders that ignore EXIF, such as TensorFlow's, would show them otherwise)."""
  with Image.open(io.BytesIO(data)) as image:
    return image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9)


def to_rgb(image: Image.Image) -> np.ndarray:
  """uint8 `[H, W, 3]` RGB of a PIL image of any mode (grey, palette, alpha, CMYK, 16-bit).

  16-bit grayscale (modes `I;16*`) keeps its high byte: Pillow's own conversion clips every
  value above 255 to white. Pillow already reads 16-bit RGB as 8-bit RGB (the high byte).
  """
  if image.mode.startswith("I;16"):
    grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  return np.asarray(image.convert("RGB"))


def read_rgb(path: str) -> np.ndarray:
  """uint8 `[H, W, 3]` RGB of the image file `path` (`open_image`, then `to_rgb`).

  Raises ValueError naming `path` when it cannot be read or decoded.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f"{path}: cannot read image: {e.strerror or e}") from e
  return to_rgb(open_image(data, path))
