"""PanopticQuality on hand-worked cases (arithmetic in the comments) and a random cross-check.

Maps are single rows of pixels; divisor 1000, so 2001 = class 2 instance 1, 1000 = class 1
(stuff), 0 = void. Classes: 0 void (ignored), 1 stuff, 2 and 3 things.
"""
import numpy as np
import pytest

from kmax_tf.evaluation import panoptic_quality, pq_core


def make_metric(**kwargs):
  return panoptic_quality.PanopticQuality(num_classes=4, ignored_label=0,
                                          max_instances_per_category=1000,
                                          thing_class_ids=(2, 3), **kwargs)


def row(*values):
  return np.array([values])


def test_tp_void_and_absent_class():
  metric = make_metric()
  # Pixels:        0     1     2     3     4     5     6     7     8     9
  gt = row(2001, 2001, 2001, 2001, 1000, 1000, 1000, 1000, 0, 0)
  pred = row(2005, 2005, 2005, 1000, 1000, 1000, 1000, 1000, 2005, 3007)
  # (2001, 2005): inter 3; |gt| 4, |pred| 4 of which 1 on void -> union 4 + 4 - 3 - 1 = 4,
  #   IoU 0.75 > 0.5: TP for class 2.
  # (1000, 1000): inter 4; |pred| 5 (pixel 3..7), |gt| 4 -> union 5, IoU 0.8: TP for class 1.
  # 3007 lies only on void (1/1 > 0.5): not a FP. Class 3 appears nowhere: left out of means.
  metric.update_state(gt, pred)
  pq, sq, rq, tp, fn, fp = metric.result()
  assert pq == pytest.approx((0.8 + 0.75) / 2)
  assert sq == pytest.approx((0.8 + 0.75) / 2)
  assert (rq, tp, fn, fp) == (1.0, 1.0, 0.0, 0.0)
  details = metric.detailed_results()
  assert sorted(details["per_class"]) == [1, 2]
  assert details["things"]["pq"] == pytest.approx(0.75) and details["things"]["n"] == 1
  assert details["stuff"]["pq"] == pytest.approx(0.8)
  assert details["crowd_convention"] == "deeplab2"

  # Second image (streaming): a class-3 thing predicted as class 2 -> FN for 3, FP for 2;
  # the stuff segment matches perfectly (IoU 1).
  metric.update_state(row(3002, 3002, 3002, 3002, 3002, 1000, 1000, 1000, 1000, 1000),
                      row(2009, 2009, 2009, 2009, 2009, 1000, 1000, 1000, 1000, 1000))
  # class 1: iou 1.8, tp 2        -> sq 0.9,  rq 1,                     pq 0.9
  # class 2: iou 0.75, tp 1, fp 1 -> sq 0.75, rq 1 / (1 + 0.5) = 2/3,   pq 0.5
  # class 3: fn 1                 -> sq 0,    rq 0,                     pq 0
  np.testing.assert_allclose(
      metric.result(),
      [(0.9 + 0.5 + 0) / 3, (0.9 + 0.75 + 0) / 3, (1 + 2 / 3 + 0) / 3, 1.0, 1 / 3, 1 / 3])


def test_iou_exactly_half_is_not_a_match():
  metric = make_metric()
  # inter 2, union 4 + 2 - 2 = 4 -> IoU 0.5, not > 0.5: one FN and one FP for class 2.
  metric.update_state(row(2001, 2001, 2001, 2001, 1000, 1000),
                      row(2001, 2001, 1000, 1000, 1000, 1000))
  per_class = metric.detailed_results()["per_class"]
  assert per_class[2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0.0, "fn": 1.0, "fp": 1.0}
  # Stuff: inter 2, union 4 + 2 - 2 = 4 -> IoU 0.5 as well: FN + FP.
  assert per_class[1]["fn"] == 1.0 and per_class[1]["fp"] == 1.0
  metric.reset_state()
  # One more pixel: inter 3, union 4 -> IoU 0.75, a TP.
  metric.update_state(row(2001, 2001, 2001, 2001, 1000, 1000),
                      row(2001, 2001, 2001, 1000, 1000, 1000))
  assert metric.detailed_results()["per_class"][2]["tp"] == 1.0


def test_crowd_in_union_official_vs_void_deeplab2():
  # Pixels 0-1: class-2 crowd; 2-5: instance 2001; 6-9: stuff. The prediction covers 0-5.
  gt = row(2000, 2000, 2001, 2001, 2001, 2001, 1000, 1000, 1000, 1000)
  crowd = gt == 2000
  pred = row(2001, 2001, 2001, 2001, 2001, 2001, 1000, 1000, 1000, 1000)
  official = make_metric(crowd_convention="official")
  official.update_state(gt, pred, is_crowd=crowd)
  # Official: crowd stays in the union: 6 + 4 - 4 - 0 = 6 -> IoU 4/6.
  assert official.detailed_results()["per_class"][2]["pq"] == pytest.approx(4 / 6)
  deeplab2 = make_metric(crowd_convention="deeplab2")
  deeplab2.update_state(gt, pred, is_crowd=crowd)
  # deeplab2: crowd is void, removed from the union: 6 + 4 - 4 - 2 = 4 -> IoU 1.
  assert deeplab2.detailed_results()["per_class"][2]["pq"] == pytest.approx(1.0)
  # Without is_crowd the map is read as deeplab2 does: 2000 is an ordinary (instance 0) segment
  # of class 2 that the prediction does not match: one FN.
  plain = make_metric()
  plain.update_state(gt, pred)
  assert plain.detailed_results()["per_class"][2]["fn"] == 1.0


def test_crowd_forgives_same_class_only_in_official_convention():
  # Pixels 0-5: class-2 crowd; 6-9 stuff. Predictions: a class-2 thing on 0-3 (all crowd),
  # a class-3 thing on 4-5 (on crowd of another class).
  gt = row(2000, 2000, 2000, 2000, 2000, 2000, 1000, 1000, 1000, 1000)
  pred = row(2001, 2001, 2001, 2001, 3001, 3001, 1000, 1000, 1000, 1000)
  official = make_metric(crowd_convention="official")
  official.update_state(gt, pred, is_crowd=gt == 2000)
  per_class = official.detailed_results()["per_class"]
  # 2001: (void 0 + same-class crowd 4) / 4 > 0.5 -> forgiven; 3001: crowd of class 2 does not
  # count for class 3 -> FP. Stuff: TP with IoU 1.
  assert 2 not in per_class and per_class[3]["fp"] == 1.0 and per_class[1]["tp"] == 1.0
  deeplab2 = make_metric(crowd_convention="deeplab2")
  deeplab2.update_state(gt, pred, is_crowd=gt == 2000)
  # deeplab2: crowd is void, so both predictions are forgiven.
  assert sorted(deeplab2.detailed_results()["per_class"]) == [1]


def test_ignored_class_with_instance_is_neither_segment_nor_void():
  metric = make_metric()
  # GT id 5 (class 0, instance 5) is not void: the prediction over it is not forgiven.
  metric.update_state(row(5, 5, 5, 1000), row(2001, 2001, 2001, 1000))
  per_class = metric.detailed_results()["per_class"]
  assert per_class[2]["fp"] == 1.0 and per_class[1]["tp"] == 1.0 and 0 not in per_class


def test_batch_streaming_reset_and_config():
  rng = np.random.default_rng(0)
  gt = rng.choice([0, 1000, 2001, 2002, 3001], size=(3, 6, 7))
  pred = rng.choice([0, 1000, 2001, 2002, 3004], size=(3, 6, 7))
  batched, single = make_metric(), make_metric()
  batched.update_state(gt, pred)
  for b in range(3):
    single.update_state(gt[b], pred[b])
  np.testing.assert_allclose(batched.result(), single.result())
  assert all(v.aggregation == "sum" for v in batched.variables)
  batched.reset_states()
  assert all(np.all(v.numpy() == 0) for v in batched.variables)
  config = batched.get_config()
  assert (config["num_classes"], config["ignored_label"], config["max_instances_per_category"],
          config["thing_class_ids"]) == (4, 0, 1000, (2, 3))
  assert "offset" not in config
  # deeplab2's trainer passes its pair-encoding `offset`; it changes nothing here.
  deeplab2_call = panoptic_quality.PanopticQuality(4, 0, 1000, offset=256 * 256,
                                                   thing_class_ids=(2, 3))
  deeplab2_call.update_state(gt, pred)
  np.testing.assert_allclose(deeplab2_call.result(), single.result())
  with pytest.raises(ValueError, match="classes outside"):
    batched.update_state(row(9001), row(1000))


def deeplab2_style_reference(gt, pred, num_classes, ignored, divisor):
  """Dictionary/loop statement of deeplab2's compare_and_accumulate, for the random check."""
  iou = np.zeros(num_classes)
  tp, fn, fp = (np.zeros(num_classes) for _ in range(3))
  void = ignored * divisor
  gt_area = dict(zip(*np.unique(gt, return_counts=True)))
  pred_area = dict(zip(*np.unique(pred, return_counts=True)))
  inter = {}
  for g, p in zip(gt.ravel(), pred.ravel()):
    inter[(g, p)] = inter.get((g, p), 0) + 1
  matched_gt, matched_pred = set(), set()
  for (g, p), count in inter.items():
    if g // divisor != p // divisor or p // divisor == ignored:
      continue
    union = gt_area[g] + pred_area[p] - count - inter.get((void, p), 0)
    if count / union > 0.5:
      iou[g // divisor] += count / union
      tp[g // divisor] += 1
      matched_gt.add(g)
      matched_pred.add(p)
  for g in gt_area:
    if g not in matched_gt and g // divisor != ignored:
      fn[g // divisor] += 1
  for p in pred_area:
    if p not in matched_pred and p // divisor != ignored:
      if inter.get((void, p), 0) / pred_area[p] <= 0.5:
        fp[p // divisor] += 1
  return iou, tp, fn, fp


@pytest.mark.parametrize("seed", range(3))
def test_random_maps_match_loop_reference(seed):
  rng = np.random.default_rng(seed)
  # Blocky maps so that many pairs have IoU > 0.5.
  gt = rng.choice([0, 1000, 1001, 2001, 2002, 3001, 3002], size=(4, 5)).repeat(3, 0).repeat(3, 1)
  pred = gt.copy()
  noise = rng.random(gt.shape) < 0.3
  pred[noise] = rng.choice([0, 1000, 2001, 2003, 3002], size=noise.sum())
  metric = make_metric()
  ours = metric.compare_and_accumulate(gt, pred)
  theirs = deeplab2_style_reference(gt, pred, 4, 0, 1000)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b)


def test_summarize_subsets_and_empty():
  averages, _ = pq_core.summarize(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3))
  assert averages["pq"] == 0.0 and averages["n"] == 0
  averages, per = pq_core.summarize([0.9, 0.0, 0.0], [1, 0, 0], [0, 1, 0], [0, 0, 0],
                                    category_subset=[0, 2])
  assert averages["n"] == 1 and averages["pq"] == pytest.approx(0.9)
  assert per["rq"][1] == 0.0


def test_package_exports_the_metric():
  from kmax_tf import evaluation
  assert evaluation.PanopticQuality is panoptic_quality.PanopticQuality
  with pytest.raises(AttributeError):
    evaluation.NoSuchMetric  # pylint: disable=pointless-statement
