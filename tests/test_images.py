"""Image files as uint8 RGB: 16-bit scaling, EXIF orientation, errors naming the file."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kmax_tf import images


def _png_rgb16(array):
  """A 16-bit RGB PNG of uint16 `[H, W, 3]` (Pillow cannot write one)."""
  height, width, _ = array.shape
  rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in array)

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

  header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
          + chunk(b"IEND", b""))


def test_16_bit_grey_png_keeps_the_high_byte(tmp_path):
  grey = np.random.default_rng(0).integers(0, 1 << 16, (9, 13), dtype=np.uint16)
  Image.fromarray(grey).save(tmp_path / "grey16.png")
  assert Image.open(tmp_path / "grey16.png").mode == "I;16"
  rgb = images.read_rgb(str(tmp_path / "grey16.png"))
  assert rgb.dtype == np.uint8 and rgb.shape == (9, 13, 3)
  np.testing.assert_array_equal(rgb, np.repeat((grey >> 8)[..., None], 3, axis=-1))


def test_16_bit_rgb_png_keeps_the_high_byte(tmp_path):
  rgb16 = np.random.default_rng(1).integers(0, 1 << 16, (5, 7, 3), dtype=np.uint16)
  (tmp_path / "rgb16.png").write_bytes(_png_rgb16(rgb16))
  np.testing.assert_array_equal(images.read_rgb(str(tmp_path / "rgb16.png")), rgb16 >> 8)


@pytest.mark.parametrize("orientation,turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
  # Four flat quadrants survive JPEG coding; `turn` quarter turns counter-clockwise show the
  # stored pixels as a viewer does (6: rotate 90 degrees clockwise, 8: counter-clockwise).
  stored = np.zeros((40, 64, 3), np.uint8)
  stored[:20, :32], stored[:20, 32:], stored[20:, :32] = 60, 120, 180
  exif = Image.Exif()
  exif[0x0112] = orientation
  Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=95, exif=exif)
  rgb = images.read_rgb(str(tmp_path / "photo.jpg"))
  expected = np.rot90(stored, turn)
  assert rgb.shape == expected.shape
  assert np.abs(rgb.astype(int) - expected).mean() < 2


def test_unreadable_files_name_the_path(tmp_path):
  (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
  with pytest.raises(ValueError, match="junk.png: cannot decode image"):
    images.read_rgb(str(tmp_path / "junk.png"))
  with pytest.raises(ValueError, match="missing.png: cannot read image: No such file"):
    images.read_rgb(str(tmp_path / "missing.png"))
