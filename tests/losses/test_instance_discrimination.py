"""Pixel-contrastive instance discrimination: formula, sampling, and the ln(k) regime at init."""
import keras
import numpy as np
import scipy.special
import tensorflow as tf

from kmax_tf.losses.ground_truth import MaskGroundTruth
from kmax_tf.losses.instance_discrimination import instance_discrimination_loss, sample_pixels

f32 = lambda x: tf.constant(x, tf.float32)


def _gt(mask_id, non_void):
  masks = int(mask_id.max()) + 1
  one_hot = np.eye(masks)[np.maximum(mask_id, 0)] * (mask_id >= 0)[..., None]
  area = one_hot.sum(1)
  pixel_area = np.einsum("bpk,bk->bp", one_hot, area)
  return MaskGroundTruth(
      tf.constant(mask_id, tf.int32), f32(one_hot), f32(non_void), f32(area > 0), f32(area),
      f32(np.zeros((1, masks, 1))), f32(mask_id.shape[1] / np.maximum(pixel_area, 1)))


def _unit(rng, shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_formula_with_given_samples():
  rng = np.random.default_rng(0)
  mask_id = np.array([[0, 0, 1, 2, -1, 1, 0, 2, -1, 1]])  # -1 at 4: crowd, at 8: void
  non_void = (np.arange(10) != 8).astype(np.float32)[None]
  features = _unit(rng, (1, 10, 5))
  samples = np.array([[4, 0, 1, 2, 5, 3, 9]])
  loss = instance_discrimination_loss(f32(features), _gt(mask_id, non_void),
                                      tf.constant(samples, tf.int32), temperature=0.3)
  ids = mask_id[0, samples[0]]
  f = features[0, samples[0]]
  log_p = scipy.special.log_softmax(f @ f.T / 0.3, axis=-1)
  rows = []
  for a in range(len(ids)):
    if ids[a] < 0:
      continue  # the crowd row has no target; it still appears in the other rows' softmax
    same = ids == ids[a]
    rows.append(-(log_p[a, same]).sum() / same.sum())
  np.testing.assert_allclose(loss, [np.mean(rows)], rtol=1e-5)


def test_sampling_skips_void_and_favours_small_masks():
  mask_id = np.array([[0] * 90 + [1] * 5 + [-1] * 5])
  non_void = np.array([[1.0] * 95 + [0.0] * 5])
  gt = _gt(mask_id, non_void)
  generator = keras.random.SeedGenerator(0)
  picks = np.concatenate([sample_pixels(gt, 5, 1.5, generator).numpy()[0] for _ in range(40)])
  assert picks.max() < 95  # never void
  for draw in picks.reshape(40, 5):
    assert len(set(draw.tolist())) == 5
  # Sampling weight (1/area)^1.5: mask 1 weighs (90/5)^1.5 = 76x a pixel of mask 0, so
  # most of the 5 draws come from its 5 pixels although it covers 5% of the image.
  assert np.mean(picks >= 90) > 0.5


def test_sampling_is_gumbel_top_k_and_reproducible_from_the_seed():
  # Each call draws U in (0, 1) of [B, P] once from the generator (on one device exactly
  # keras.random.uniform's numbers) and keeps the top k of log-weight - log(-log U).
  rng = np.random.default_rng(3)
  mask_id = rng.integers(-1, 4, size=(2, 30))
  non_void = (rng.uniform(size=(2, 30)) > 0.2).astype(np.float32)
  gt = _gt(mask_id, non_void)
  generator, reference = keras.random.SeedGenerator(7), keras.random.SeedGenerator(7)
  draws = []
  for _ in range(2):
    draw = sample_pixels(gt, 6, 1.5, generator).numpy()
    u = keras.random.uniform((2, 30), minval=1e-12, maxval=1.0, seed=reference).numpy()
    keys = (1.5 * np.log(gt.inverse_pixel_mask_area.numpy()) - 99999.0 * (1 - non_void)
            - np.log(-np.log(u)))
    np.testing.assert_array_equal(draw, np.argsort(-keys, axis=1, kind="stable")[:, :6])
    draws.append(draw)
  assert not np.array_equal(draws[0], draws[1])
  np.testing.assert_array_equal(sample_pixels(gt, 6, 1.5, keras.random.SeedGenerator(7)),
                                draws[0])


def test_random_init_gives_about_ln_k():
  """At initialisation the loss sits near ln(k).

  With random unit embeddings in D dimensions, cross-pixel cosines are ~N(0, 1/D), so the
  logits of a row are ~0 except the self-similarity 1/0.3: the softmax over the k samples is
  nearly uniform and the cross-entropy is ln(k - 1 + e^(1/0.3)) minus a small same-mask term,
  i.e. ln(k) + O(e^3.3 / k). deeplab2 measures ln(4096) = 8.3 per head on COCO at step 1
  (first-step total ~73); with k = 1024 here the prediction is ln(1024 + 27) = 6.96.
  """
  rng = np.random.default_rng(1)
  num_pixels, k = 4096, 1024
  mask_id = rng.integers(0, 60, size=(1, num_pixels))
  gt = _gt(mask_id, np.ones((1, num_pixels), np.float32))
  features = _unit(rng, (1, num_pixels, 128))
  samples = sample_pixels(gt, k, 1.5, keras.random.SeedGenerator(1))
  loss = instance_discrimination_loss(f32(features), gt, samples).numpy()[0]
  assert abs(loss - np.log(k)) < 0.15, (loss, np.log(k))


def _dense_reference(features, mask_id, samples, temperature):
  """The loss with the explicit [k, k] target matrix (deeplab2's formulation), in TF: TF's fused
  softmax cross-entropy (as deeplab2), every sampled row weighted 1, the mean over non-zero rows.
  The fused op back-propagates softmax - target, so crowd rows (all-zero target, loss 0) still
  pass a gradient."""
  ids = tf.gather(tf.constant(mask_id, tf.int32), samples, batch_dims=1)
  same = tf.cast((ids[:, :, None] == ids[:, None, :]) & (ids >= 0)[:, :, None], tf.float32)
  targets = same / tf.maximum(tf.reduce_sum(same, -1, keepdims=True), 1.0)
  f = tf.gather(features, samples, batch_dims=1)
  rows = tf.nn.softmax_cross_entropy_with_logits(targets, tf.matmul(f, f, transpose_b=True) /
                                                 temperature)
  return tf.reduce_sum(rows, 1) / tf.reduce_sum(tf.cast(tf.not_equal(rows, 0.0), tf.float32), 1)


def test_batch_of_two_and_gradients_match_dense_targets():
  # Image 1 reuses mask ids of image 0: the per-mask sums must not mix images.
  rng = np.random.default_rng(2)
  mask_id = np.array([[0, 1, 1, 2, -1, 0, 2, 1], [1, 1, 0, -1, 2, 2, 0, 0]])
  gt = _gt(mask_id, np.ones((2, 8), np.float32))
  features = tf.constant(_unit(rng, (2, 8, 4)))
  samples = tf.constant([[4, 0, 1, 2, 3, 6], [3, 0, 1, 2, 4, 7]], tf.int32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(features)
    ours = instance_discrimination_loss(features, gt, samples, temperature=0.3)
    reference = _dense_reference(features, mask_id, samples, 0.3)
  np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5)
  np.testing.assert_allclose(tape.gradient(ours, features).numpy(),
                             tape.gradient(reference, features).numpy(), rtol=1e-4, atol=1e-6)
