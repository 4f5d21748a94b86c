"""COCO AP of panoptic thing segments on hand-worked cases (divisor 100; things 2, 3)."""
import numpy as np
import pytest

from kmax_tf.evaluation import coco_ap


def make_metric():
  return coco_ap.PanopticInstanceAP(num_classes=4, thing_class_ids=(2, 3), label_divisor=100,
                                    ignored_label=0)


def base_gt():
  gt = np.full((12, 12), 100)  # stuff class 1
  gt[1:5, 1:5] = 201
  gt[6:11, 6:11] = 202
  return gt


def test_perfect_prediction_gives_ap_one():
  metric = make_metric()
  gt = base_gt()
  metric.update_state(gt, gt, np.ones(gt.shape), np.ones(gt.shape))
  stats = metric.result()
  assert stats[0] == pytest.approx(1.0) and stats[1] == pytest.approx(1.0)


def test_missing_instance_halves_recall():
  # Two GT instances, one perfect detection: precision 1 up to recall 0.5, nothing beyond.
  # COCO interpolates at 101 recall points, 51 of which (0.00..0.50) have precision 1.
  metric = make_metric()
  gt = base_gt()
  pred = gt.copy()
  pred[pred == 202] = 100
  metric.update_state(gt, pred, np.ones(gt.shape), np.ones(gt.shape))
  assert metric.result()[0] == pytest.approx(51 / 101)


def test_detection_on_crowd_is_ignored():
  metric = make_metric()
  gt = base_gt()
  crowd = gt == 202
  pred = gt.copy()
  pred[crowd] = 205  # a detection exactly on the crowd region, not a false positive
  scores = np.where(crowd, 1.0, 0.5)  # ranked first
  metric.update_state(gt, pred, scores, np.ones(gt.shape), is_crowd=crowd)
  assert metric.result()[0] == pytest.approx(1.0)


def test_scores_are_mean_semantic_times_mean_instance():
  panoptic = np.array([[201, 201, 301, 301]])
  semantic = np.array([[0.2, 0.4, 1.0, 0.5]])
  instance = np.array([[1.0, 0.5, 0.5, 0.5]])
  scores = coco_ap.instance_scores(panoptic, np.array([301, 201]), semantic, instance)
  np.testing.assert_allclose(scores, [0.75 * 0.5, 0.3 * 0.75])


def test_empty_cases():
  metric = make_metric()
  stuff_only = np.full((4, 4), 100)
  metric.update_state(stuff_only, stuff_only, np.ones((4, 4)), np.ones((4, 4)))
  assert (metric.result() == -1).all()
  metric.update_state(base_gt(), np.full((12, 12), 100), np.ones((12, 12)), np.ones((12, 12)))
  assert (metric.result() == 0).all()
  with pytest.raises(ValueError, match="must be equal"):
    metric.update_state(np.zeros((2, 2)), np.zeros((3, 2)), None, None)
