"""Augmentations keep image and label aligned; AutoAugment never touches labels."""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.data import augment

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [0, 255, 255]], np.float32)
PAD = 9999


def _block_scene(seed, height=48, width=64, block=8):
  rng = np.random.default_rng(seed)
  index = rng.integers(0, len(PALETTE), (height // block, width // block))
  index = np.kron(index, np.ones((block, block), np.int64))
  return PALETTE[index].astype(np.uint8), (index * 256).astype(np.int32)[..., None]


def _interior(label, radius=2):
  """Pixels whose (2r+1)^2 neighbourhood has one label value (away from interpolation borders;
  two successive resizes, to range and then by the random scale, blur up to 2 pixels)."""
  padded = np.pad(label, radius, mode="edge")
  same = np.ones(label.shape, bool)
  for dy in range(2 * radius + 1):
    for dx in range(2 * radius + 1):
      same &= padded[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
  return same


@pytest.mark.parametrize("seed", range(4))
def test_label_follows_image_colours(seed):
  image, label = _block_scene(seed)
  _, out_image, out_label = augment.preprocess(
      tf.constant(image), tf.constant(label), tf.constant([seed, 1], tf.int64),
      crop_size=(41, 41), is_training=True, label_pad_value=PAD, min_resize_value=(41, 41),
      max_resize_value=(41, 41), min_scale_factor=0.5, max_scale_factor=2.0,
      scale_factor_step_size=0.25)
  out_image, out_label = out_image.numpy(), out_label.numpy()[..., 0]
  assert out_image.shape == (41, 41, 3) and out_label.shape == (41, 41)
  inside = _interior(out_label)
  assert inside.mean() > 0.2
  padded = inside & (out_label == PAD)
  np.testing.assert_allclose(out_image[padded], 127.5)
  real = inside & (out_label != PAD)
  distances = ((out_image[real][:, None, :] - PALETTE[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(distances.argmin(-1) * 256, out_label[real])


def test_evaluation_resizes_and_pads_bottom_right():
  image, label = _block_scene(0)  # 48 x 64 -> long side 33 -> 24 x 33, padded to 41 x 41
  resized, out_image, out_label = augment.preprocess(
      tf.constant(image), tf.constant(label), None, crop_size=(41, 41), is_training=False,
      label_pad_value=PAD, max_resize_value=(33, 33))
  assert resized.shape == (24, 33, 3)
  np.testing.assert_array_equal(out_image.numpy()[:24, :33], resized.numpy())
  np.testing.assert_allclose(out_image.numpy()[24:], 127.5)
  np.testing.assert_array_equal(out_label.numpy()[:, 33:], PAD)


@pytest.mark.parametrize("policy", sorted(augment.POLICIES))
def test_autoaugment_never_touches_labels(policy):
  changed = 0
  for seed in range(6):
    image, label = _block_scene(seed)
    args = dict(crop_size=(33, 33), is_training=True, label_pad_value=PAD,
                min_scale_factor=0.75, max_scale_factor=1.25, scale_factor_step_size=0.25)
    seed_t = tf.constant([seed, 3], tf.int64)
    _, plain_image, plain = augment.preprocess(tf.constant(image), tf.constant(label), seed_t,
                                               **args)
    _, auto_image, auto = augment.preprocess(tf.constant(image), tf.constant(label), seed_t,
                                             autoaugment_policy_name=policy, **args)
    np.testing.assert_array_equal(plain.numpy(), auto.numpy())
    changed += int(not np.array_equal(plain_image.numpy(), auto_image.numpy()))
  assert changed > 0  # the policy did change some images


def test_policy_decoding():
  first = augment.POLICIES["simple_classification_policy"][0]
  assert first == [("Sharpness", 0.4, 7), ("Brightness", 0.2, 10)]
  scaled = augment.POLICIES["simple_classification_policy_magnitude_scale_0.2"][0]
  assert scaled[0][:2] == ("Sharpness", 0.4) and scaled[0][2] == pytest.approx(1.4)


def test_deeplab2_contrast_blends_towards_pixel_count_grey():
  image = tf.constant(np.full((16, 32, 3), 200, np.uint8))  # 512 pixels -> grey 2
  out = augment._deeplab2_contrast(image, 0.5).numpy()
  np.testing.assert_array_equal(out, np.full((16, 32, 3), int(2 + 0.5 * (200 - 2)), np.uint8))


def test_resized_shape_hand_cases():
  assert augment.resized_shape(100, 200, (50, 50), (50, 50)).numpy().tolist() == [25, 50]
  # max 65 with factor 16: 32 x 65, then 32 is rounded up to 16*2+1.
  assert augment.resized_shape(100, 200, None, (65, 65), 16).numpy().tolist() == [33, 65]
  assert augment.resized_shape(30, 40, None, (65, 65)).numpy().tolist() == [30, 40]  # no upscale


def test_random_scale_uses_the_linspace_values():
  values = {round(float(augment.random_scale_factor(tf.constant([i, 0], tf.int64), 0.3, 1.7,
                                                    0.1)), 4) for i in range(300)}
  # deeplab2 counts int((1.7 - 0.3) / 0.1 + 1) = int(14.999999999999998) = 14 values (not 15).
  assert values == {round(float(v), 4) for v in np.linspace(0.3, 1.7, 14, dtype=np.float32)}


@pytest.mark.parametrize("factor", [0.3, 1.0, 1.9])
def test_fast_sharpness_matches_official(factor):
  from official.vision.ops import augment as tfm_augment
  image = tf.constant(np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8))
  ours = augment._sharpness(image, factor).numpy().astype(int)
  official = tfm_augment.sharpness(image, factor).numpy().astype(int)
  # Same kernel; the float summation order may move a value across an integer (truncation).
  assert np.abs(ours - official).max() <= 1 and (ours == official).mean() > 0.97


def _reference_training(image, label, seed, crop, resize, scales, policy, pad_value):
  """deeplab2's training order on whole tensors (TF resize kernels, pad, slice, reverse), with
  the random draws of `augment.preprocess` for the same seed."""
  crop_h, crop_w = crop
  seeds = tf.random.split(tf.constant(seed, tf.int64), 6)
  image = tf.cast(image, tf.float32)[tf.newaxis]
  label = label[tf.newaxis]
  size = augment.resized_shape(image.shape[1], image.shape[2], resize, resize)
  image = tf.compat.v1.image.resize_bilinear(image, size, align_corners=True)
  label = tf.compat.v1.image.resize_nearest_neighbor(label, size, align_corners=True)
  scale = augment.random_scale_factor(seeds[0], *scales)
  size = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
  image = tf.compat.v1.image.resize_bilinear(image, size, align_corners=True)[0]
  label = tf.compat.v1.image.resize_nearest_neighbor(label, size, align_corners=True)[0]
  if policy:
    image = tf.cast(augment.autoaugment(tf.cast(image, tf.uint8), policy, seeds[1]), tf.float32)
  off_h, off_w, top, left, flip = augment.random_placement(seeds[2:], size[0], size[1],
                                                           crop_h, crop_w)
  paddings = [[off_h, tf.maximum(crop_h - size[0], 0) - off_h],
              [off_w, tf.maximum(crop_w - size[1], 0) - off_w], [0, 0]]
  image = tf.pad(image, paddings, constant_values=127.5)[top:top + crop_h, left:left + crop_w]
  label = tf.pad(label, paddings, constant_values=pad_value)[top:top + crop_h,
                                                             left:left + crop_w]
  if flip:
    image, label = image[:, ::-1], label[:, ::-1]
  return image.numpy(), label.numpy()


@pytest.mark.parametrize("policy", ["", "simple_classification_policy"])
def test_training_equals_whole_image_reference(policy):
  """The windowed computation equals deeplab2's order on whole images, pixel for pixel, for
  scaled images smaller and larger than the crop and both AutoAugment paths."""
  rng = np.random.default_rng(5)
  paths = set()
  for index in range(24 if policy else 8):
    height, width = rng.integers(20, 60, 2)
    image = tf.constant(rng.integers(0, 256, (height, width, 3)), tf.uint8)
    label = tf.constant(rng.integers(0, 5000, (height, width, 1)), tf.int32)
    seed = [index, 11]
    args = dict(crop=(37, 31), resize=(29, 29), scales=(0.5, 1.9, 0.2), policy=policy,
                pad_value=PAD)
    _, out_image, out_label = augment.preprocess(
        image, label, tf.constant(seed, tf.int64), crop_size=args["crop"], is_training=True,
        label_pad_value=PAD, min_resize_value=args["resize"], max_resize_value=args["resize"],
        min_scale_factor=0.5, max_scale_factor=1.9, scale_factor_step_size=0.2,
        autoaugment_policy_name=policy)
    ref_image, ref_label = _reference_training(image, label, seed, **args)
    np.testing.assert_array_equal(out_label.numpy(), ref_label)
    np.testing.assert_array_equal(out_image.numpy(), ref_image)
    if policy:
      aa_seed = tf.random.split(tf.constant(seed, tf.int64), 6)[1]
      paths.add(bool(augment.needs_whole_image(policy, aa_seed)))
  assert not policy or paths == {True, False}


def test_nearest_source_index_matches_the_resize_kernel():
  # Small sizes hit exact halves often (where roundf and round-half-to-even differ).
  for in_size in range(1, 25):
    for out_size in range(1, 25):
      ramp = tf.reshape(tf.range(in_size), [1, in_size, 1, 1])
      expected = tf.compat.v1.image.resize_nearest_neighbor(ramp, (out_size, 1),
                                                            align_corners=True)
      got = augment.nearest_source_index(in_size, out_size, tf.range(out_size))
      np.testing.assert_array_equal(got.numpy(), expected.numpy().ravel())


def _pil_equalize(image):
  from PIL import Image, ImageOps
  return np.asarray(ImageOps.equalize(Image.fromarray(image)))


@pytest.mark.parametrize("case", ["random", "few_values", "constant"])
def test_equalize_matches_pil(case):
  rng = np.random.default_rng(3)
  image = {"random": rng.integers(0, 256, (23, 31, 3)),
           "few_values": rng.choice([3, 90, 91, 250], (23, 31, 3)),
           "constant": np.full((5, 7, 3), 17)}[case].astype(np.uint8)
  if case == "few_values":
    image[..., 2] = 40  # one channel with a single value: step 0, unchanged
  np.testing.assert_array_equal(augment.equalize(tf.constant(image)).numpy(),
                                _pil_equalize(image))


def test_window_autoaugment_uses_the_whole_image_pixel_count():
  image = np.random.default_rng(4).integers(0, 256, (12, 14, 3)).astype(np.uint8)
  window = augment._deeplab2_contrast(tf.constant(image[2:6, 3:9]), 0.4, num_pixels=12 * 14)
  whole = augment._deeplab2_contrast(tf.constant(image), 0.4)
  np.testing.assert_array_equal(window.numpy(), whole.numpy()[2:6, 3:9])
