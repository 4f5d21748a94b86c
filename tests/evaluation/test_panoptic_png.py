"""panoptic_png against an independent PNG writer (filters applied row by row in plain numpy)
and against OpenCV's decoder."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from kmax_tf import panoptic_files
from kmax_tf.evaluation import panoptic_png


def paeth(a, b, c):
  p = a + b - c
  pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
  return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode(pixels, filters):
  """PNG bytes of uint8 `[H, W, bpp]` (bpp 3 or 4), row r filtered with `filters[r]` (0-4)."""
  height, width, bpp = pixels.shape
  flat = pixels.reshape(height, width * bpp).astype(np.int64)
  data = bytearray()
  for r in range(height):
    above = flat[r - 1] if r else np.zeros(width * bpp, np.int64)
    row = flat[r]
    out = []
    for x in range(width * bpp):
      a = row[x - bpp] if x >= bpp else 0
      c = above[x - bpp] if x >= bpp else 0
      b = above[x]
      predictor = [0, a, b, (a + b) // 2, paeth(a, b, c)][filters[r]]
      out.append((row[x] - predictor) % 256)
    data += bytes([filters[r]]) + bytes(out)

  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body))
  header = struct.pack(">IIBBBBB", width, height, 8, {3: 2, 4: 6}[bpp], 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data))
          + chunk(b"IEND", b""))


def label_map(rng, height, width, bpp):
  """Rectangles of random colours (plus random noise rows) like a panoptic PNG."""
  pixels = np.zeros((height, width, bpp), np.uint8)
  for _ in range(6):
    y0, x0 = rng.integers(0, height), rng.integers(0, width)
    pixels[y0:y0 + rng.integers(1, height), x0:x0 + rng.integers(1, width)] = rng.integers(
        0, 256, bpp)
  pixels[rng.integers(0, height)] = rng.integers(0, 256, (width, bpp))
  return pixels


def ids_of(pixels):
  return panoptic_files.rgb_to_ids(pixels[..., :3])


def full_map(key_rows, ids, height):
  """The id map `[height, W]` of `decode_batch` output: each row repeats the last key row at or
  above it."""
  is_key = np.zeros(height, np.int64)
  is_key[key_rows] = 1
  return ids[np.cumsum(is_key) - 1]


def test_every_filter_mix_decodes_exactly():
  rng = np.random.default_rng(0)
  images, pngs = [], []
  for i in range(8):
    bpp = 4 if i == 5 else 3
    pixels = label_map(rng, 12, 9, bpp)
    # Image 3 also uses the Average filter; others only None, Sub, Up and Paeth, with long Paeth
    # chains (several Paeth rows between None/Sub rows).
    choices = [0, 1, 2, 3, 4] if i == 3 else [0, 1, 2, 4, 4, 4]
    filters = rng.choice(choices, 12)
    images.append(pixels)
    pngs.append(encode(pixels, filters))
  decoded = panoptic_png.decode_batch(pngs)
  for pixels, png, (key, ids, height) in zip(images, pngs, decoded):
    assert height == 12 and key[0] == 0
    np.testing.assert_array_equal(full_map(key, ids, height), ids_of(pixels))
    # Rows left out repeat the row above.
    full = ids_of(pixels)
    left_out = np.setdiff1d(np.arange(12), key)
    np.testing.assert_array_equal(full[left_out], full[left_out - 1])


def test_matches_opencv_on_compressed_label_maps(tmp_path):
  rng = np.random.default_rng(1)
  pngs, expected = [], []
  for i in range(4):
    pixels = label_map(rng, 40, 50, 3)
    path = str(tmp_path / f"{i}.png")
    cv2.imwrite(path, pixels[..., ::-1])  # libpng picks its own filters per row
    with open(path, "rb") as f:
      pngs.append(f.read())
    expected.append(ids_of(pixels))
  for want, (key, ids, height) in zip(expected, panoptic_png.decode_batch(pngs)):
    np.testing.assert_array_equal(full_map(key, ids, height), want)


def test_grey_png_goes_through_opencv(tmp_path):
  grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
  cv2.imwrite(str(tmp_path / "g.png"), grey)
  with open(tmp_path / "g.png", "rb") as f:
    (key, ids, height), = panoptic_png.decode_batch([f.read()])
  np.testing.assert_array_equal(full_map(key, ids, height), grey.astype(np.int64) * 65793)


def test_corrupt_data_names_the_file():
  png = encode(np.zeros((2, 2, 3), np.uint8), [0, 0])
  broken = png[:50] + bytes(10) + png[60:]
  with pytest.raises(ValueError, match="Cannot decode PNG bad.png"):
    panoptic_png.decode_batch([broken], ["bad.png"])
  with pytest.raises(ValueError, match="not a PNG"):
    panoptic_png.decode_batch([b"GIF89a"], ["x.gif"])


def test_batches_spanning_several_stored_deflate_blocks():
  # Noise makes every row a key row: 2 images x (1 separator + 128 rows) x 514 bytes is more
  # than two 65535-byte stored blocks, so the batch PNG has full blocks and a partial one.
  rng = np.random.default_rng(2)
  images = [rng.integers(0, 256, (128, 171, 3), dtype=np.uint8) for _ in range(2)]
  pngs = [encode(pixels, rng.choice([0, 1, 2, 3, 4], 128)) for pixels in images]
  for pixels, (key, ids, height) in zip(images, panoptic_png.decode_batch(pngs)):
    np.testing.assert_array_equal(full_map(key, ids, height), ids_of(pixels))


@pytest.mark.parametrize("rows", [255, 256])
def test_stored_png_at_an_exact_block_boundary(rows):
  # 255 scanlines of 514 bytes are exactly two stored blocks (the last block is then empty).
  scanlines = np.random.default_rng(rows).integers(0, 256, (rows, 514), dtype=np.uint8)
  scanlines[:, 0] = 0  # filter None: the decoded pixels are the bytes themselves
  image = cv2.imdecode(panoptic_png._key_rows_png(171, 2, scanlines), cv2.IMREAD_UNCHANGED)
  np.testing.assert_array_equal(image[..., ::-1].reshape(rows, 513), scanlines[:, 1:])
