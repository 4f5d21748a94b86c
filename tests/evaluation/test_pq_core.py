"""pq_core.match_segments on several images at once equals the sum of its one-image results."""
import numpy as np

from kmax_tf.evaluation import pq_core

NUM_CATEGORIES = 3


def random_image(rng, pixels=400):
  """One image's arguments: segments of few categories, several crowd segments per category
  (so which one forgives matters), void and unlisted pixels."""
  num_gt, num_pred = rng.integers(2, 7), rng.integers(1, 7)
  gt_index = rng.integers(0, num_gt + 2, pixels)
  pred_index = np.where(rng.random(pixels) < 0.2, rng.integers(0, num_pred + 1, pixels), 0)
  # Blocks of pixels shared by one GT and one prediction, so that some IoUs exceed 0.5.
  for g in range(1, num_gt + 1):
    block = rng.integers(0, pixels - 60)
    gt_index[block:block + 60] = g
    pred_index[block:block + 55] = rng.integers(1, num_pred + 1)
  gt_area = np.bincount(gt_index, minlength=num_gt + 2)[1:num_gt + 1].astype(np.float64)
  return dict(gt_index=gt_index, pred_index=pred_index,
              gt_category=rng.integers(0, NUM_CATEGORIES, num_gt), gt_area=gt_area,
              gt_crowd=rng.random(num_gt) < 0.4,
              pred_category=rng.integers(0, NUM_CATEGORIES, num_pred))


def test_several_images_at_once_equal_the_sum_of_single_images():
  rng = np.random.default_rng(0)
  images = [random_image(rng) for _ in range(6)]
  separate = sum(np.stack(pq_core.match_segments(**image, num_categories=NUM_CATEGORIES))
                 for image in images)
  num_gt = sum(len(image["gt_category"]) for image in images)
  gt_index, pred_index, gt_offset, pred_offset = [], [], 0, 0
  for image in images:
    g, p = image["gt_index"].copy(), image["pred_index"].copy()
    count = len(image["gt_category"])
    segment = (g >= 1) & (g <= count)
    g[segment] += gt_offset
    g[g == count + 1] = num_gt + 1  # "neither" pixels share one index
    p[p > 0] += pred_offset
    gt_index.append(g)
    pred_index.append(p)
    gt_offset += count
    pred_offset += len(image["pred_category"])
  batch = dict(gt_index=np.concatenate(gt_index), pred_index=np.concatenate(pred_index),
               num_categories=NUM_CATEGORIES,
               **{key: np.concatenate([image[key] for image in images])
                  for key in ("gt_category", "gt_area", "gt_crowd", "pred_category")})
  together = pq_core.match_segments(
      **batch,
      gt_image=np.repeat(np.arange(len(images)), [len(i["gt_category"]) for i in images]))
  np.testing.assert_allclose(np.stack(together), separate, rtol=1e-12)
  # The case must exercise matches, misses and false positives.
  assert separate[1].sum() > 0 and separate[2].sum() > 0 and separate[3].sum() > 0
  # Without gt_image the crowd segment that forgives is chosen across images: a different result.
  mixed = pq_core.match_segments(**batch)
  assert not np.array_equal(np.stack(mixed)[3], separate[3])
