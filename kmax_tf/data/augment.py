"""Image/label preprocessing and augmentation, deeplab2's `preprocess_image_and_label` order.

Training: resize to range -> random scale -> AutoAugment (colour ops only) -> pad to at least the
crop size at a random offset (image 127.5, label `label_pad_value`) -> random crop -> random
horizontal flip. Evaluation: resize to range (max defaults to the crop size) -> pad bottom/right
to the crop size.

Images are float32 `[H, W, 3]` in 0..255 and labels int32 `[H, W, 1]`. Images are resized
bilinearly and labels by nearest neighbour, both with align_corners=True as in deeplab2.

Training computes the same result without materialising the intermediate sizes: the label is
two gathers from the source label through the composed nearest-neighbour index maps (padding,
crop and flip included), and AutoAugment runs on the part of the scaled image that lands in the
crop (plus a 1-pixel margin for Sharpness) unless an operation needing the whole image's
histogram (Equalize, AutoContrast) is drawn. At COCO's crop 1281 and scale up to 1.7 the scaled
image has up to 2.2x the crop's pixels, and every intermediate label pass was at that size.

All randomness is stateless and driven by a per-sample `seed` (int64 `[2]`): the same seed gives
the same augmentation, which is what `build_dataset(deterministic=True)` relies on.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from official.vision.ops import augment as tfm_augment

from kmax_tf import geometry

MEAN_PIXEL = 127.5
FLIP_PROBABILITY = 0.5


def _pair(value) -> tuple[int, int] | None:
  """deeplab2's resize-value convention: None/empty/any 0 -> None; one value -> (v, v)."""
  if value is None:
    return None
  if isinstance(value, int):
    value = (value,)
  value = tuple(int(v) for v in value)
  if not value:
    return None
  if len(value) == 1:
    value = value * 2
  if len(value) != 2:
    raise ValueError(f"resize value must have 1 or 2 entries, got {value}")
  if value[0] <= 0 or value[1] <= 0:
    return None
  return value


def _resize_image(image: tf.Tensor, size) -> tf.Tensor:
  return geometry.resize_align_corners(image[tf.newaxis], size, "bilinear")[0]


def _resize_label(label: tf.Tensor, size) -> tf.Tensor:
  return geometry.resize_align_corners(label[tf.newaxis], size, "nearest")[0]


def resized_shape(height, width, min_size=None, max_size=None, factor=None) -> tf.Tensor:
  """Output `[2]` int32 size of deeplab2's `resize_to_range` (same float32 rounding).

  With `min_size` the image is scaled so both sides reach it; then, with `max_size`, scaled down
  (never up) so both sides fit; with `factor` each side is rounded up to `factor * k + 1`.
  """
  min_size, max_size = _pair(min_size), _pair(max_size)
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)

  def scaled(length, factor_):
    return tf.cast(tf.floor(tf.cast(length, tf.float32) * tf.cast(factor_, tf.float32)), tf.int32)

  if min_size:
    scale = tf.maximum(min_size[0] / height, min_size[1] / width)
    height, width = scaled(height, scale), scaled(width, scale)
  if max_size:
    if factor:
      max_size = tuple(m - (m - 1) % factor for m in max_size)
    scale = tf.minimum(max_size[0] / height, max_size[1] / width)
    scale = tf.minimum(tf.cast(scale, tf.float32), 1.0)
    height, width = scaled(height, scale), scaled(width, scale)
  shape = tf.stack([height, width])
  if factor:
    shape += (factor - (shape - 1) % factor) % factor
  return shape


def random_scale_factor(seed, min_scale: float, max_scale: float, step: float) -> tf.Tensor:
  """One factor from `linspace(min, max, int((max - min) / step + 1))`; uniform if step is 0."""
  if min_scale < 0 or min_scale > max_scale:
    raise ValueError(f"invalid scale range [{min_scale}, {max_scale}]")
  if min_scale == max_scale:
    return tf.constant(min_scale, tf.float32)
  if step == 0:
    return tf.random.stateless_uniform([], seed, min_scale, max_scale)
  num_steps = int((max_scale - min_scale) / step + 1)
  index = tf.random.stateless_uniform([], seed, 0, num_steps, dtype=tf.int32)
  return tf.linspace(tf.constant(min_scale, tf.float32), max_scale, num_steps)[index]


def nearest_source_index(in_size, out_size, index) -> tf.Tensor:
  """Source index of each output `index` in TF's align-corners nearest-neighbour resize.

  The kernel computes `min(roundf(index * ((in - 1) / (out - 1))), in - 1)` in float32, with
  `roundf` rounding halves away from zero (not to even).
  """
  scale = tf.cast(in_size - 1, tf.float32) / tf.cast(tf.maximum(out_size - 1, 1), tf.float32)
  position = tf.cast(index, tf.float32) * scale
  floor = tf.floor(position)
  rounded = tf.cast(floor, tf.int32) + tf.cast(position - floor >= 0.5, tf.int32)
  return tf.minimum(rounded, in_size - 1)


def pad_to_size(image, label, offset_height, offset_width, target_height, target_width,
                label_pad_value: int):
  """Pads image with 127.5 and label with `label_pad_value` around the given offset."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  bottom = target_height - offset_height - height
  right = target_width - offset_width - width
  checks = [
      tf.debugging.assert_non_negative(bottom, message="padding target smaller than image"),
      tf.debugging.assert_non_negative(right, message="padding target smaller than image"),
  ]
  with tf.control_dependencies(checks):
    paddings = [[offset_height, bottom], [offset_width, right], [0, 0]]
  image = tf.pad(image, paddings, constant_values=MEAN_PIXEL)
  if label is not None:
    label = tf.pad(label, paddings, constant_values=label_pad_value)
  return image, label


def random_placement(seeds, height, width, crop_height: int, crop_width: int):
  """Random padding offset, crop corner and flip of deeplab2's training preprocessing.

  The scaled `height x width` image is padded at (offset_height, offset_width) to at least the
  crop size, the crop's top-left corner is (top, left) in the padded image, and `flip` mirrors
  the crop horizontally.

  Args:
    seeds: int64 `[4, 2]`: padding rows, padding columns, crop corner, flip.
    height, width: int32 scalars, the scaled image size.
    crop_height, crop_width: the crop size.

  Returns:
    (offset_height, offset_width, top, left) int32 scalars and flip, a bool scalar.
  """
  offset_height = tf.random.stateless_uniform(
      [], seeds[0], 0, tf.maximum(crop_height - height, 1), tf.int32)
  offset_width = tf.random.stateless_uniform(
      [], seeds[1], 0, tf.maximum(crop_width - width, 1), tf.int32)
  corner_seeds = tf.random.split(seeds[2], 2)
  top = tf.random.stateless_uniform(
      [], corner_seeds[0], 0, tf.maximum(height, crop_height) - crop_height + 1, tf.int32)
  left = tf.random.stateless_uniform(
      [], corner_seeds[1], 0, tf.maximum(width, crop_width) - crop_width + 1, tf.int32)
  flip = tf.random.stateless_uniform([], seeds[3]) <= FLIP_PROBABILITY
  return offset_height, offset_width, top, left, flip


def _window(length, crop: int, offset, corner):
  """Image rows [start, stop) inside the crop, and the crop row where `start` lands."""
  start = tf.maximum(corner - offset, 0)
  stop = tf.minimum(corner - offset + crop, length)
  return start, stop, tf.maximum(offset - corner, 0)


# ---- AutoAugment (colour-only operation space of deeplab2's `autoaugment_policy.py`) ----

_OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "Color",
               "Contrast", "Brightness", "Sharpness")
_PROBABILITIES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Five sub-policies of two (operation index, probability index, magnitude) triples.
_SIMPLE_CLASSIFICATION_POLICY = (8, 2, 7, 7, 1, 10,
                                 1, 0, 9, 6, 1, 10,
                                 8, 1, 9, 5, 1, 9,
                                 4, 1, 7, 1, 3, 9,
                                 8, 1, 1, 1, 1, 7)
_MAX_LEVEL = 10.0


def decode_policy(codes: Sequence[int], magnitude_scale: float = 1.0):
  """Turns the integer encoding into [[(operation, probability, magnitude) x 2], ...]."""
  if len(codes) % 6:
    raise ValueError("policy length must be a multiple of 6")
  policy = []
  for start in range(0, len(codes), 6):
    sub_policy = []
    for op, prob, magnitude in (codes[start:start + 3], codes[start + 3:start + 6]):
      sub_policy.append((_OPERATIONS[op], _PROBABILITIES[prob], magnitude * magnitude_scale))
    policy.append(sub_policy)
  return policy


POLICIES = {
    "simple_classification_policy": decode_policy(_SIMPLE_CLASSIFICATION_POLICY),
    "simple_classification_policy_magnitude_scale_0.2": decode_policy(
        _SIMPLE_CLASSIFICATION_POLICY, magnitude_scale=0.2),
}


def _deeplab2_contrast(image: tf.Tensor, factor: float, num_pixels=None) -> tf.Tensor:
  """Contrast as deeplab2 applies it.

  `official.vision.ops.augment.contrast` blends towards the per-channel mean
  (`tf.image.adjust_contrast`); deeplab2 (like the original TPU AutoAugment code) blends towards a
  flat grey of value `min(num_pixels / 256, 255)` (the sum of its 256-bin histogram / 256), so it
  is written here to keep deeplab2's behaviour. `num_pixels` is that of the whole image when
  `image` is a window of it (default: the pixels of `image`).
  """
  if num_pixels is None:
    num_pixels = tf.shape(image)[0] * tf.shape(image)[1]
  num_pixels = tf.cast(num_pixels, tf.float32)
  grey = tf.cast(tf.clip_by_value(num_pixels / 256.0, 0.0, 255.0), tf.uint8)
  degenerate = tf.fill(tf.shape(image), grey)
  return tfm_augment.blend(degenerate, image, factor)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL's `ImageOps.equalize` of a uint8 `[H, W, 3]` image, as `official...augment.equalize`.

  Written here because official's version histograms and maps each channel separately through
  int32 copies (~2x slower at 1281x961): one bincount of `value + 256 * channel` gives the three
  histograms and one gather applies the three look-up tables.

  Per channel (PIL): step = (pixels - count of the highest non-empty bin) // 255; if step is 0
  the channel is unchanged, else value v maps to (pixels below v + step // 2) // step, clipped
  to 255.
  """
  index = tf.cast(image, tf.int32) + tf.constant([0, 256, 512])
  histogram = tf.reshape(tf.math.bincount(tf.reshape(index, [-1]), minlength=768,
                                          maxlength=768, dtype=tf.int32), [3, 256])
  highest = 255 - tf.argmax(tf.reverse(tf.cast(histogram > 0, tf.int32), [1]), axis=1,
                            output_type=tf.int32)
  step = (tf.reduce_sum(histogram, axis=1)
          - tf.gather(histogram, highest, batch_dims=1)) // 255
  below = tf.cumsum(histogram, axis=1, exclusive=True)
  lut = tf.minimum((below + step[:, tf.newaxis] // 2) // tf.maximum(step, 1)[:, tf.newaxis], 255)
  lut = tf.where(step[:, tf.newaxis] == 0, tf.range(256)[tf.newaxis], lut)
  return tf.cast(tf.gather(tf.reshape(lut, [-1]), index), tf.uint8)


def _sharpness(image: tf.Tensor, factor: float) -> tf.Tensor:
  """PIL Sharpness as `official.vision.ops.augment.sharpness` computes it, written with shifted
  sums: its `depthwise_conv2d` takes ~0.4 s on a 1281x961 image on CPU, this ~10x less.

  The smoothing kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 is (3x3 box sum + 4 * centre) / 13;
  border pixels keep their original value; the result is blended with the image by `factor`.
  """
  x = tf.cast(image, tf.float32)
  rows = x[:-2] + x[1:-1] + x[2:]
  box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
  smooth = (box + 4.0 * x[1:-1, 1:-1]) / 13.0
  smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.zeros(tf.shape(x)[:2] - 2, tf.bool), [[1, 1], [1, 1]], constant_values=True)
  smooth = tf.where(border[..., tf.newaxis], image, smooth)
  return tfm_augment.blend(smooth, image, factor)


def _enhance_factor(level: float) -> float:
  return (level / _MAX_LEVEL) * 1.8 + 0.1


# Operations whose result at a pixel depends on the whole image (histogram, extremes); the
# others are per pixel, or (Sharpness) depend on the 3x3 neighbourhood and the image border.
_WHOLE_IMAGE_OPERATIONS = ("AutoContrast", "Equalize")


def _operation(name: str, level: float, num_pixels=None):
  """uint8 image -> uint8 image function for one policy entry (official ops where they match)."""
  if name == "AutoContrast":
    return tfm_augment.autocontrast
  if name == "Equalize":
    return equalize
  if name == "Invert":
    return tfm_augment.invert
  if name == "Posterize":
    bits = int((level / _MAX_LEVEL) * 4)
    return lambda image: tfm_augment.posterize(image, bits)
  if name == "Solarize":
    threshold = int((level / _MAX_LEVEL) * 256)
    return lambda image: tfm_augment.solarize(image, threshold)
  factor = _enhance_factor(level)
  if name == "Contrast":
    return lambda image: _deeplab2_contrast(image, factor, num_pixels)
  function = {"Color": tfm_augment.color, "Brightness": tfm_augment.brightness,
              "Sharpness": _sharpness}[name]
  return lambda image: function(image, factor)


def _policy_draws(policy_name: str, seed):
  """(chosen sub-policy index, `[ops per sub-policy]` uniform draws deciding each op)."""
  if policy_name not in POLICIES:
    raise ValueError(f"Unknown autoaugment policy {policy_name!r}; known: {sorted(POLICIES)}")
  policy = POLICIES[policy_name]
  seeds = tf.random.split(seed, 1 + 2 * len(policy[0]))
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(policy), tf.int32)
  draws = tf.stack([tf.random.stateless_uniform([], seeds[1 + k])
                    for k in range(len(policy[0]))])
  return choice, draws


def needs_whole_image(policy_name: str, seed) -> tf.Tensor:
  """bool scalar: `autoaugment(image, policy_name, seed)` applies an Equalize/AutoContrast."""
  choice, draws = _policy_draws(policy_name, seed)
  probabilities = tf.constant([[p if name in _WHOLE_IMAGE_OPERATIONS else 0.0
                                for name, p, _ in sub] for sub in POLICIES[policy_name]])
  return tf.reduce_any(draws < tf.gather(probabilities, choice))


def autoaugment(image: tf.Tensor, policy_name: str, seed, num_pixels=None) -> tf.Tensor:
  """Applies one randomly chosen sub-policy to a uint8 `[H, W, 3]` image.

  Every operation of these policies changes colours only, so the label is not an argument: it
  cannot be touched. `image` may be a window of a larger image of `num_pixels` pixels if
  `needs_whole_image` is False for this seed and the window has a 1-pixel margin (or the image
  border) on each side: every pixel inside the margin then gets the value it gets in the whole
  image.
  """
  choice, draws = _policy_draws(policy_name, seed)

  def make_branch(sub_policy):
    def branch():
      result = image
      for k, (name, probability, level) in enumerate(sub_policy):
        operation = _operation(name, level, num_pixels)
        result = tf.cond(draws[k] < probability, lambda op=operation, x=result: op(x),
                         lambda x=result: x)
      return result
    return branch

  result = tf.switch_case(choice, [make_branch(sub) for sub in POLICIES[policy_name]])
  result.set_shape(image.shape)
  return result


def preprocess(image, label, seed, *, crop_size, is_training: bool, label_pad_value: int,
               min_resize_value=None, max_resize_value=None, resize_factor=None,
               min_scale_factor: float = 1.0, max_scale_factor: float = 1.0,
               scale_factor_step_size: float = 0.0, autoaugment_policy_name: str = ""):
  """deeplab2's preprocessing of one sample.

  Args:
    image: uint8 or float `[H, W, 3]`.
    label: int32 `[H, W, 1]` panoptic label (may be None at evaluation).
    seed: int64 `[2]` stateless seed (unused at evaluation).
    crop_size: (height, width) output size.
    is_training: augment (True) or resize-and-pad only (False).
    label_pad_value: label value of padded pixels (`ignore_label * divisor`).
    min_resize_value, max_resize_value, resize_factor: deeplab2's `resize_to_range`
      arguments; at evaluation an unset maximum defaults to the crop size.
    min_scale_factor, max_scale_factor, scale_factor_step_size: random scale range.
    autoaugment_policy_name: "" or a key of `POLICIES`.

  Returns:
    resized_image: float32 image after resizing only (`[h, w, 3]`, before padding).
    image: float32 `[crop_h, crop_w, 3]`.
    label: int32 `[crop_h, crop_w, 1]` (None if no label was given).
  """
  crop_height, crop_width = int(crop_size[0]), int(crop_size[1])
  if is_training and label is None:
    raise ValueError("training preprocessing needs a label")
  image = tf.cast(image, tf.float32)
  resized_image = image
  max_size = _pair(max_resize_value)
  if max_size is None and not is_training:
    max_size = (crop_height, crop_width)
  if max_size and (max_size[0] > crop_height or max_size[1] > crop_width):
    raise ValueError(f"max_resize_value {max_size} exceeds the crop size "
                     f"{(crop_height, crop_width)}")
  resized = bool(_pair(min_resize_value) or max_size)
  if resized:
    size = resized_shape(tf.shape(image)[0], tf.shape(image)[1], min_resize_value, max_size,
                         resize_factor)
    image = _resize_image(image, size)
    resized_image = image
    if label is not None and not is_training:  # training resizes the label further below
      label = _resize_label(label, size)

  if not is_training:
    image, label = pad_to_size(image, label, 0, 0, crop_height, crop_width, label_pad_value)
    image.set_shape([crop_height, crop_width, 3])
    if label is not None:
      label.set_shape([crop_height, crop_width, 1])
    return resized_image, image, label

  seeds = tf.random.split(seed, 6)
  scale = random_scale_factor(seeds[0], min_scale_factor, max_scale_factor,
                              scale_factor_step_size)
  source_label, source_size = label, tf.shape(label)[:2]
  resized_size = tf.shape(image)[:2]
  scaled_size, scaled_image = resized_size, image
  scaling = not min_scale_factor == max_scale_factor == 1.0
  if scaling:
    scaled_size = tf.cast(tf.cast(resized_size, tf.float32) * scale, tf.int32)
    scaled_image = _resize_image(image, scaled_size)
  height, width = scaled_size[0], scaled_size[1]
  offset_height, offset_width, top, left, flip = random_placement(
      seeds[2:], height, width, crop_height, crop_width)
  row_start, row_stop, row_position = _window(height, crop_height, offset_height, top)
  col_start, col_stop, col_position = _window(width, crop_width, offset_width, left)

  if autoaugment_policy_name:
    # deeplab2 truncates to uint8 for the colour ops and returns to float afterwards.
    def on_whole_image():
      whole = autoaugment(tf.cast(scaled_image, tf.uint8), autoaugment_policy_name, seeds[1])
      return whole[row_start:row_stop, col_start:col_stop]

    def on_window():
      top_margin = tf.minimum(row_start, 1)
      left_margin = tf.minimum(col_start, 1)
      window = scaled_image[row_start - top_margin:tf.minimum(row_stop + 1, height),
                            col_start - left_margin:tf.minimum(col_stop + 1, width)]
      window = autoaugment(tf.cast(window, tf.uint8), autoaugment_policy_name, seeds[1],
                           num_pixels=height * width)
      return window[top_margin:top_margin + row_stop - row_start,
                    left_margin:left_margin + col_stop - col_start]

    window = tf.cond(needs_whole_image(autoaugment_policy_name, seeds[1]), on_whole_image,
                     on_window)
  else:
    window = scaled_image[row_start:row_stop, col_start:col_stop]
  window = tf.cond(flip, lambda: tf.reverse(window, [1]), lambda: window)
  right_space = crop_width - col_position - (col_stop - col_start)
  left_pad = tf.where(flip, right_space, col_position)
  image = tf.pad(
      tf.cast(window, tf.float32),
      [[row_position, crop_height - row_position - (row_stop - row_start)],
       [left_pad, crop_width - left_pad - (col_stop - col_start)], [0, 0]],
      constant_values=MEAN_PIXEL)
  image.set_shape([crop_height, crop_width, 3])

  # The label is the source label looked up through the composed nearest-neighbour index maps;
  # crop pixels outside the image read an extra row/column holding the padding value.
  def source_indices(crop_length: int, corner, offset, axis: int):
    index = corner - offset + tf.range(crop_length)
    inside = (index >= 0) & (index < scaled_size[axis])
    index = tf.clip_by_value(index, 0, scaled_size[axis] - 1)
    if scaling:
      index = nearest_source_index(resized_size[axis], scaled_size[axis], index)
    if resized:
      index = nearest_source_index(source_size[axis], resized_size[axis], index)
    return tf.where(inside, index, source_size[axis])

  rows = source_indices(crop_height, top, offset_height, 0)
  cols = source_indices(crop_width, left, offset_width, 1)
  cols = tf.where(flip, tf.reverse(cols, [0]), cols)
  padded_label = tf.pad(source_label, [[0, 1], [0, 1], [0, 0]], constant_values=label_pad_value)
  label = tf.gather(tf.gather(padded_label, rows), cols, axis=1)
  label.set_shape([crop_height, crop_width, 1])
  return resized_image, image, label
