"""Segment ids of COCO panoptic PNGs (`R + 256 G + 256^2 B`), decoded in batches.

Why not plain cv2/PIL: on 640x480 panoptic PNGs both spend ~4-10 ms per image, mostly in zlib's
row-by-row inflate, more than everything else PQ needs. Label maps are mostly rows equal to the
row above (filter "Up" with zero residuals), so this reader

- inflates the whole IDAT stream at once with libdeflate (the `deflate` package: 0.12 ms per
  640x480 label PNG where `zlib.decompress` takes 2-3.4 ms),
- keeps only the *key rows* (rows that differ from the row above), whose filtered scanlines
  form a valid PNG by themselves, and has libpng (through OpenCV) unfilter the key rows of a
  whole batch at once from an uncompressed PNG,
- returns `(key_rows, ids)`: the image's row `r` is `ids[searchsorted(key_rows, r, "right") - 1]`.

Anything else (palette, grey, 16 bit, interlaced) is decoded whole by OpenCV and reduced the
same way.
"""
from __future__ import annotations

import struct
from typing import Sequence

import cv2
import deflate
import numpy as np

from kmax_tf import panoptic_files

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP, _PAETH = 2, 4  # PNG filter types (None 0, Sub 1, Up 2, Average 3, Paeth 4)
_STORED_BLOCK = 65535  # bytes in a full stored (uncompressed) deflate block
_BYTES_PER_PIXEL = {2: 3, 6: 4}  # colour type -> bytes per pixel at bit depth 8 (RGB, RGBA)


def inflate(data: bytes, size: int) -> np.ndarray:
  """zlib stream -> uint8 `[size]`; raises ValueError unless it holds exactly `size` bytes."""
  try:
    raw = deflate.zlib_decompress(data, size)
  except deflate.DeflateError as e:
    raise ValueError(f"corrupt image data ({e})") from e
  if len(raw) != size:
    raise ValueError(f"corrupt image data ({len(raw)} of {size} bytes)")
  return np.frombuffer(raw, np.uint8)


def _chunks(png: bytes):
  """(height, width, colour type, bit depth, interlace, IDAT bytes) of a PNG."""
  if png[:8] != _SIGNATURE:
    raise ValueError("not a PNG file")
  pos, header, data = 8, None, []
  while pos + 8 <= len(png):
    length, kind = struct.unpack_from(">I4s", png, pos)
    if kind == b"IHDR":
      header = struct.unpack_from(">IIBBBBB", png, pos + 8)
    elif kind == b"IDAT":
      data.append(png[pos + 8:pos + 8 + length])
    elif kind == b"IEND":
      break
    pos += 12 + length
  if header is None or not data:
    raise ValueError("PNG without IHDR or IDAT chunk")
  width, height, depth, colour, _, _, interlace = header
  return height, width, colour, depth, interlace, b"".join(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
  return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", deflate.crc32(kind + body))


def _key_rows_png(width: int, colour: int, scanlines: np.ndarray) -> np.ndarray:
  """PNG bytes (uint8 `[N]`) whose scanlines (filter byte + residuals) are `scanlines`
  `[rows, stride]`, stored uncompressed so that libpng spends its time unfiltering.

  Written into one array: `zlib.compress(level=0)` and bytes concatenation copy the data
  several times and took longer than decoding it. libdeflate's checksums are ~3x faster than
  zlib's.
  """
  data = scanlines.reshape(-1)
  full_blocks, last_size = divmod(data.size, _STORED_BLOCK)
  zlib_size = 2 + 5 * (full_blocks + 1) + data.size + 4
  head = _SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(scanlines), 8, colour,
                                                  0, 0, 0))
  png = np.empty(len(head) + 8 + zlib_size + 4 + 12, np.uint8)
  png[:len(head)] = np.frombuffer(head, np.uint8)
  pos = len(head)
  png[pos:pos + 8] = np.frombuffer(struct.pack(">I", zlib_size) + b"IDAT", np.uint8)
  idat_start = pos + 4
  pos += 8
  png[pos:pos + 2] = (0x78, 0x01)  # zlib header: deflate, 32K window, no preset dictionary
  pos += 2
  # Stored deflate blocks: BFINAL/BTYPE byte, LEN and its complement (little-endian), data.
  blocks = png[pos:pos + full_blocks * (5 + _STORED_BLOCK)].reshape(full_blocks,
                                                                    5 + _STORED_BLOCK)
  blocks[:, :5] = (0, 0xFF, 0xFF, 0, 0)
  blocks[:, 5:] = data[:full_blocks * _STORED_BLOCK].reshape(full_blocks, _STORED_BLOCK)
  pos += blocks.size
  png[pos:pos + 5] = np.frombuffer(struct.pack("<BHH", 1, last_size, 0xFFFF ^ last_size),
                                   np.uint8)
  pos += 5
  png[pos:pos + last_size] = data[data.size - last_size:]
  pos += last_size
  png[pos:pos + 4] = np.frombuffer(struct.pack(">I", deflate.adler32(data)), np.uint8)
  pos += 4
  png[pos:pos + 4] = np.frombuffer(struct.pack(">I", deflate.crc32(png[idat_start:pos])),
                                   np.uint8)
  png[pos + 4:] = np.frombuffer(_chunk(b"IEND", b""), np.uint8)
  return png


def decode_batch(pngs: Sequence[bytes], names: Sequence[str] | None = None):
  """PNG file contents -> list of `(key_rows int64 [K], ids uint32 [K, W], height)`.

  `names` (for error messages) default to the list positions.
  """
  names = list(names) if names is not None else [f"#{i}" for i in range(len(pngs))]
  results = [None] * len(pngs)
  groups: dict[tuple[int, int], list] = {}  # (width, colour) -> [(index, key, scanlines, height)]
  for index, (png, name) in enumerate(zip(pngs, names)):
    try:
      height, width, colour, depth, interlace, data = _chunks(png)
      bpp = _BYTES_PER_PIXEL.get(colour)
      if depth != 8 or bpp is None or interlace:
        results[index] = _decode_generic(png, height)
        continue
      stride = width * bpp + 1
      raw = inflate(data, height * stride).reshape(height, stride)
    except (ValueError, struct.error) as e:
      raise ValueError(f"Cannot decode PNG {name}: {e}") from e
    if raw[:, 0].max() > _PAETH:
      raise ValueError(f"Cannot decode PNG {name}: unknown filter type {raw[:, 0].max()}")
    # Rows other than key rows are filter Up with zero residuals: copies of the row above.
    is_key = (raw[:, 0] != _UP) | (raw[:, 1:].max(axis=1) > 0)
    is_key[0] = True
    key = np.flatnonzero(is_key)
    groups.setdefault((width, colour), []).append((index, key, raw[key], height))
  for (width, colour), members in groups.items():
    # The row above a key row equals the previous key row, so an image's key rows, filters
    # unchanged, are a valid PNG of their own. Stacking several images' key rows, each image
    # preceded by a zero row (what PNG puts above row 0), lets one libpng call unfilter a batch.
    separator = np.zeros((1, members[0][2].shape[1]), np.uint8)
    scanlines = np.concatenate([part for member in members for part in (separator, member[2])])
    image = cv2.imdecode(_key_rows_png(width, colour, scanlines), cv2.IMREAD_COLOR)
    if image is None:
      raise ValueError("Cannot decode PNG " + ", ".join(names[m[0]] for m in members)
                       + ": OpenCV rejects their rows")
    ids = panoptic_files.rgb_to_ids(image, order="BGR")
    start = 0
    for index, key, _, height in members:
      results[index] = (key, ids[start + 1:start + 1 + len(key)], height)
      start += 1 + len(key)
  return results


def _decode_generic(png: bytes, height: int):
  """Whole-image OpenCV decode for PNG variants the key-row path leaves out."""
  image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError("OpenCV cannot decode it")
  ids = panoptic_files.rgb_to_ids(image, order="BGR")
  changed = np.ones(height, bool)
  changed[1:] = (ids[1:] != ids[:-1]).any(axis=1)
  key = np.flatnonzero(changed)
  return key, ids[key], height

