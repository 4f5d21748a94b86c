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
