"""Post-processing against an independent numpy re-implementation of deeplab2's mask-wise
post-processing and merge (`model/post_processor/max_deeplab.py`).

The reference below follows deeplab2's algorithm literally (paste masks one by one on a canvas,
bincount area filters, per image), while kmax_tf.postprocess uses a while-loop over keep
decisions and segment sums, batched.
"""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import geometry, postprocess
from kmax_tf.datasets import get_dataset
from kmax_tf.protos import evaluator_pb2

DATASET = get_dataset("synthetic_panoptic")  # things 4,5,6; stuff 1,2,3; void 0; divisor 256
CLASS_IDS = np.array(DATASET.thing_class_ids + DATASET.stuff_class_ids)
NUM_THINGS = len(DATASET.thing_class_ids)


def np_softmax(x, axis=-1):
  x = x.astype(np.float64)
  e = np.exp(x - x.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def np_resize_bilinear_align_corners(x, height, width):
  """[h, w, C] -> [height, width, C], corners aligned."""
  h, w = x.shape[:2]
  ys = np.arange(height) * ((h - 1) / (height - 1))
  xs = np.arange(width) * ((w - 1) / (width - 1))
  y0 = np.floor(ys).astype(int)
  x0 = np.floor(xs).astype(int)
  y1 = np.minimum(y0 + 1, h - 1)
  x1 = np.minimum(x0 + 1, w - 1)
  wy = (ys - y0)[:, None, None]
  wx = (xs - x0)[None, :, None]
  top = x[y0][:, x0] * (1 - wx) + x[y0][:, x1] * wx
  bottom = x[y1][:, x0] * (1 - wx) + x[y1][:, x1] * wx
  return top * (1 - wy) + bottom * wy


def np_maskwise_one_image(mask_logits, class_logits, size, opts):
  """Returns (panoptic, semantic, instance, semantic_scores, instance_scores) for one image."""
  probs_cls = np_softmax(class_logits)[:, :-1]
  pred = probs_cls.argmax(-1)
  conf = probs_cls.max(-1)
  num_slots = mask_logits.shape[-1]
  full_logits = np_resize_bilinear_align_corners(mask_logits.astype(np.float64), *size)
  full_probs = np_softmax(full_logits)
  # Semantic: zero-threshold pixel-wise pass.
  semantic_pred = CLASS_IDS[pred[full_logits.argmax(-1)]]
  height, width = size
  detections = np.sum((conf >= opts.thing_confidence_threshold) |
                      (conf >= opts.stuff_confidence_threshold))
  if detections == 0:
    mask_id_plus_one = np.ones(size, int)
    sem_map = np.zeros(size, int)
    thing_mask = np.zeros(size, bool)
    stuff_mask = np.zeros(size, bool)
    inst_score = np.zeros(size)
    sem_score = np.zeros(size)
  else:
    low_probs = np_softmax(mask_logits)
    mask_score = np.zeros(num_slots)
    for i in range(num_slots):
      sel = low_probs[..., i] > opts.pixel_confidence_threshold
      mask_score[i] = low_probs[..., i][sel].mean() if sel.any() else 0.0
    rank_score = conf ** opts.reorder_class_weight * mask_score ** opts.reorder_mask_weight
    order = sorted(range(num_slots), key=lambda i: -rank_score[i])  # Python sort is stable.
    canvas = np.zeros(size, int)
    sem_score = np.zeros(size)
    confident = np.zeros(size, bool)
    for rank, slot in enumerate(order):
      binary = full_probs[..., slot] > opts.pixel_confidence_threshold
      thr = (opts.thing_confidence_threshold if pred[slot] < NUM_THINGS
             else opts.stuff_confidence_threshold)
      new = binary & (canvas == 0)
      if conf[slot] >= thr and new.sum() > binary.sum() * opts.overlapping_threshold:
        canvas[new] = rank + 1
        confident |= new
        sem_score[new] = conf[slot]
    mask_id = np.maximum(canvas - 1, 0)
    ranked_pred = pred[order]
    sem_index = ranked_pred[mask_id]
    sem_map = CLASS_IDS[sem_index]
    thing_mask = confident & (sem_index < NUM_THINGS)
    stuff_mask = confident & (sem_index >= NUM_THINGS)
    mask_id_plus_one = mask_id + 1
    inst_score = full_probs.max(-1)
  thing_ids = mask_id_plus_one * thing_mask
  thing_sem = (sem_map + 1) * thing_mask
  stuff_sem = (sem_map + 1) * stuff_mask
  if opts.stuff_area_limit > 0:
    counts = np.bincount(stuff_sem.ravel())
    stuff_sem = stuff_sem * (counts[stuff_sem] >= opts.stuff_area_limit)
  if opts.thing_area_limit > 0:
    counts = np.bincount(thing_ids.ravel())
    keep = counts[thing_ids] >= opts.thing_area_limit
    thing_ids = thing_ids * keep
    thing_sem = thing_sem * keep
  sem = thing_sem + stuff_sem - 1
  sem[sem == -1] = DATASET.ignore_label
  panoptic = sem * DATASET.panoptic_label_divisor + thing_ids
  return panoptic, semantic_pred, mask_id_plus_one, sem_score, inst_score


def np_pixelwise_one_image(mask_logits, class_logits, size, opts):
  """Pixel-wise variant: returns (panoptic, instance) for one image."""
  probs_cls = np_softmax(class_logits)[:, :-1]
  pred = probs_cls.argmax(-1)
  conf = probs_cls.max(-1)
  full_logits = np_resize_bilinear_align_corners(mask_logits.astype(np.float64), *size)
  kept = conf >= opts.class_confidence_threshold
  if not kept.any():
    return np.zeros(size, int), np.ones(size, int)
  masked = np.where(kept, full_logits, -99999.0)
  mask_id = masked.argmax(-1)
  confident = (np_softmax(masked).max(-1) > opts.pixel_confidence_threshold) & kept[
      full_logits.argmax(-1)]
  sem_index = pred[mask_id]
  is_thing = sem_index < NUM_THINGS
  sem = np.where(confident, CLASS_IDS[sem_index], DATASET.ignore_label)
  thing_ids = np.where(confident & is_thing, mask_id + 1, 0)
  return sem * DATASET.panoptic_label_divisor + thing_ids, mask_id + 1


def random_logits(seed, batch=3, low=5, slots=10):
  rng = np.random.default_rng(seed)
  mask_logits = rng.normal(size=(batch, low, low, slots)).astype(np.float32) * 4
  class_logits = rng.normal(size=(batch, slots, len(CLASS_IDS) + 1)).astype(np.float32) * 3
  return mask_logits, class_logits


MASKWISE_OPTIONS = [
    postprocess.PostProcessingOptions(
        pixel_confidence_threshold=0.4, thing_confidence_threshold=0.5,
        stuff_confidence_threshold=0.3, overlapping_threshold=0.8, reorder_mask_weight=1.0,
        thing_area_limit=12, stuff_area_limit=40),
    postprocess.PostProcessingOptions(
        pixel_confidence_threshold=0.3, thing_confidence_threshold=0.4,
        stuff_confidence_threshold=0.6, overlapping_threshold=0.5, reorder_mask_weight=0.0),
]


def make_processor(opts, size=(17, 17)):
  return postprocess.PostProcessor(opts, DATASET.thing_class_ids, DATASET.stuff_class_ids,
                                   DATASET.ignore_label, DATASET.panoptic_label_divisor, size)


@pytest.mark.parametrize("opts", MASKWISE_OPTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_maskwise_matches_numpy_reference(opts, seed):
  mask_logits, class_logits = random_logits(seed)
  out = make_processor(opts)(mask_logits, class_logits)
  panoptic_ids = set()
  for b in range(mask_logits.shape[0]):
    pan, sem, inst, sem_score, inst_score = np_maskwise_one_image(
        mask_logits[b], class_logits[b], (17, 17), opts)
    np.testing.assert_array_equal(out["panoptic_pred"][b].numpy(), pan)
    np.testing.assert_array_equal(out["semantic_pred"][b].numpy(), sem)
    np.testing.assert_array_equal(out["instance_pred"][b].numpy(), inst)
    np.testing.assert_allclose(out["semantic_scores"][b].numpy(), sem_score, atol=1e-6)
    np.testing.assert_allclose(out["instance_scores"][b].numpy(), inst_score, atol=1e-6)
    panoptic_ids |= set(np.unique(pan).tolist())
  # The random case must exercise things, stuff and void, or the comparison proves little.
  categories = {i // 256 for i in panoptic_ids}
  assert 0 in categories and categories & {1, 2, 3} and categories & {4, 5, 6}
  for key in ("panoptic_pred", "semantic_pred", "instance_pred"):
    assert out[key].dtype == tf.int32 and out[key].shape == (3, 17, 17)


def test_maskwise_without_detections_is_all_void():
  mask_logits, class_logits = random_logits(3)
  class_logits = np.zeros_like(class_logits)  # confidence 1/7 everywhere
  opts = MASKWISE_OPTIONS[0]
  out = make_processor(opts)(mask_logits, class_logits)
  np.testing.assert_array_equal(out["panoptic_pred"].numpy(), 0)
  np.testing.assert_array_equal(out["instance_pred"].numpy(), 1)
  np.testing.assert_array_equal(out["instance_scores"].numpy(), 0.0)
  pan, *_ = np_maskwise_one_image(mask_logits[0], class_logits[0], (17, 17), opts)
  np.testing.assert_array_equal(pan, 0)


@pytest.mark.parametrize("seed", [0, 4])
def test_pixelwise_matches_numpy_reference(seed):
  opts = postprocess.PostProcessingOptions(method="pixelwise", class_confidence_threshold=0.5,
                                           pixel_confidence_threshold=0.4)
  mask_logits, class_logits = random_logits(seed)
  out = make_processor(opts)(mask_logits, class_logits)
  for b in range(mask_logits.shape[0]):
    pan, inst = np_pixelwise_one_image(mask_logits[b], class_logits[b], (17, 17), opts)
    np.testing.assert_array_equal(out["panoptic_pred"][b].numpy(), pan)
    np.testing.assert_array_equal(out["instance_pred"][b].numpy(), inst)


def test_xla_and_tf_function_match_eager():
  opts = MASKWISE_OPTIONS[0]
  processor = make_processor(opts)
  mask_logits, class_logits = random_logits(5)
  eager = processor(mask_logits, class_logits)
  compiled = tf.function(processor.__call__, jit_compile=True)(mask_logits, class_logits)
  graph = tf.function(processor.__call__)(mask_logits, class_logits)
  for key, value in eager.items():
    np.testing.assert_allclose(compiled[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)
    np.testing.assert_allclose(graph[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)


def test_from_options_reads_evaluator_options():
  message = evaluator_pb2.EvaluatorOptions(
      transformer_post_processing="maskwise", thing_area_limit=400, stuff_area_limit=6400)
  message.maskwise_postprocessing.transformer_class_confidence_threshold_stuff = 0.5
  message.maskwise_postprocessing.overlapping_threshold = 0.8
  message.maskwise_postprocessing.reorder_mask_weight = 1.0
  processor = postprocess.PostProcessor.from_options(message, DATASET, (33, 33))
  assert processor.options == postprocess.PostProcessingOptions(
      method="maskwise", pixel_confidence_threshold=pytest.approx(0.4),
      class_confidence_threshold=pytest.approx(0.7),
      thing_confidence_threshold=pytest.approx(0.7), stuff_confidence_threshold=pytest.approx(0.5),
      overlapping_threshold=pytest.approx(0.8), reorder_class_weight=1.0,
      reorder_mask_weight=1.0, thing_area_limit=400, stuff_area_limit=6400)
  assert processor.output_size == (33, 33)
  with pytest.raises(ValueError, match="transformer_post_processing"):
    postprocess.PostProcessingOptions(method="boxwise")


def test_bad_shapes_are_named():
  processor = make_processor(MASKWISE_OPTIONS[0])
  with pytest.raises(ValueError, match="number of mask slots"):
    processor(np.zeros((1, 5, 5, 8), np.float32), np.zeros((1, 9, 7), np.float32))
  with pytest.raises(ValueError, match="7 classes"):
    processor(np.zeros((1, 5, 5, 8), np.float32), np.zeros((1, 8, 5), np.float32))


def test_undo_padding_crops_then_resizes_nearest():
  panoptic = np.arange(2 * 9 * 9, dtype=np.int32).reshape(2, 9, 9)
  scores = panoptic.astype(np.float32) / 100
  out = postprocess.undo_padding(
      {"panoptic_pred": panoptic, "instance_scores": scores, "other": "kept"}, (5, 3), (9, 5))
  # Corner-aligned nearest from 5x3 to 9x5: source index round(i * (5-1)/(9-1)) = round(i/2),
  # columns round(j * 2/4) = round(j/2); TF rounds halves up here (0,1,1,2,2 for j=0..4).
  rows = np.floor(np.arange(9) * 0.5 + 0.5).astype(int)
  cols = np.floor(np.arange(5) * 0.5 + 0.5).astype(int)
  expected = panoptic[:, :5, :3][:, rows][:, :, cols]
  np.testing.assert_array_equal(out["panoptic_pred"].numpy(), expected)
  np.testing.assert_allclose(out["instance_scores"].numpy(), expected / 100)
  assert out["other"] == "kept"


def test_crop_padding_crops_only_the_maps():
  panoptic = np.arange(2 * 9 * 9, dtype=np.int32).reshape(2, 9, 9)
  size = tf.constant([5, 3])
  out = postprocess.crop_padding({"panoptic_pred": tf.constant(panoptic), "other": "kept"}, size)
  np.testing.assert_array_equal(out["panoptic_pred"].numpy(), panoptic[:, :5, :3])
  assert out["other"] == "kept"


@pytest.mark.parametrize("threshold", [0.34, 0.4, 0.6])
def test_two_masks_per_pixel_path_equals_the_general_merge(threshold):
  opts = postprocess.PostProcessingOptions(
      pixel_confidence_threshold=threshold, thing_confidence_threshold=0.2,
      stuff_confidence_threshold=0.2, overlapping_threshold=0.8)
  processor = make_processor(opts, size=(33, 33))
  rng = np.random.default_rng(7)
  mask_logits = rng.normal(size=(2, 9, 9, 4)).astype(np.float32) * 2
  # Slot 3 shadows slot 2, so many pixels lie in both masks and whichever ranks later loses
  # too much of its area to the other: the overlap rule decides.
  mask_logits[..., 3] = mask_logits[..., 2] + rng.normal(size=(2, 9, 9)).astype(np.float32) * 0.3
  mask_logits = tf.constant(mask_logits)
  class_logits = tf.constant(rng.normal(size=(2, 4, len(CLASS_IDS) + 1)).astype(np.float32) * 3)
  full_logits = geometry.resize_align_corners(mask_logits, (33, 33))
  class_probs = tf.nn.softmax(class_logits)[..., :-1]
  args = (mask_logits, full_logits, tf.argmax(class_probs, -1, output_type=tf.int32),
          tf.reduce_max(class_probs, -1))
  general = processor._maskwise(*args)  # pylint: disable=protected-access
  fast = processor._maskwise_two_per_pixel(mask_logits, (33, 33), *args[2:])  # pylint: disable=protected-access
  np.testing.assert_array_equal(fast[-1], tf.argmax(full_logits, -1, output_type=tf.int32))
  for name, ours, reference in zip(
      ("mask_id", "confident", "instance_scores", "semantic_scores", "ranked_pred"),
      fast, general):
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=0, atol=1e-6,
                               err_msg=name)
  # Every slot's class is confident, yet some mask was left out for its overlap.
  assert np.all(processor._ranking(*args[:1], *args[2:])[3])  # pylint: disable=protected-access
  mask_id, confident = general[0].numpy(), general[1].numpy()
  assert min(len(np.unique(mask_id[b][confident[b]])) for b in range(2)) < 4


@pytest.mark.parametrize("low_size", [(1, 5), (9, 3), (17, 9), (41, 6), (10, 7), (13, 13)])
def test_banded_pixel_statistics_equal_the_whole_map(low_size):
  """Bands of 8 logit rows (H - 1 = 4 (h - 1), h - 1 a multiple of 8) give the bits of the
  whole upsampled map; other sizes (10 and 13 rows) take the whole map. Static and dynamic
  shapes, batch 2."""
  rng = np.random.default_rng(low_size[0])
  low_h, low_w = low_size
  mask_logits = tf.constant(rng.normal(0.0, 3.0, (2, low_h, low_w, 6)).astype(np.float32))
  powers = tf.constant(rng.normal(size=(2, 6, 3)).astype(np.float32))
  size = (4 * (low_h - 1) + 1, 4 * (low_w - 1) + 1)
  full_logits = geometry.resize_align_corners(mask_logits, size)
  probs = tf.nn.softmax(full_logits)
  expected = (tf.einsum("bhwn,bnk->bhwk", tf.cast(probs > 0.4, tf.float32), powers),
              tf.reduce_max(probs, -1), tf.argmax(full_logits, -1, output_type=tf.int32))
  dynamic = tf.function(
      lambda logits, size: postprocess.pixel_statistics(logits, size, powers, 0.4),
      input_signature=[tf.TensorSpec([None, None, None, 6]), tf.TensorSpec([2], tf.int32)])
  for got in (postprocess.pixel_statistics(mask_logits, size, powers, 0.4),
              dynamic(mask_logits, tf.constant(size))):
    for name, ours, reference in zip(("moments", "max_probs", "argmax"), got, expected):
      assert ours.shape == reference.shape, name
      np.testing.assert_array_equal(ours, reference, err_msg=name)
