"""MeanIoU against a numpy confusion matrix, with ignore labels inside and outside the range."""
import numpy as np
import pytest

from kmax_tf.evaluation import miou


def numpy_miou(gt, pred, num_classes, ignore):
  keep = gt != ignore
  confusion = np.zeros((num_classes, num_classes))
  np.add.at(confusion, (gt[keep], pred[keep]), 1)
  inter = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - inter
  return np.mean(inter[union > 0] / union[union > 0]), inter, union


@pytest.mark.parametrize("ignore", [0, 255])
def test_matches_numpy_confusion_matrix(ignore):
  rng = np.random.default_rng(ignore)
  gt = rng.integers(0, 5, size=(2, 8, 9))
  gt[:, :2] = ignore
  pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(1, 5, size=gt.shape))
  pred[pred == 255] = 1
  metric = miou.MeanIoU(num_classes=5, ignore_label=ignore)
  for b in range(2):
    metric.update_state(gt[b], pred[b])
  expected, inter, union = numpy_miou(gt, pred, 5, ignore)
  assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
  per_class = metric.per_class_iou()
  np.testing.assert_allclose(per_class[union > 0], (inter / np.maximum(union, 1))[union > 0],
                             rtol=1e-6)


def test_hand_worked():
  # gt [1 1 2 2 0], pred [1 2 2 2 1], ignore 0: class 1: inter 1, union 2 -> 0.5;
  # class 2: inter 2, union 3 -> 2/3; mean 7/12. The ignored pixel's prediction is dropped.
  metric = miou.MeanIoU(num_classes=3, ignore_label=0)
  metric.update_state(np.array([[1, 1, 2, 2, 0]]), np.array([[1, 2, 2, 2, 1]]))
  assert float(metric.result()) == pytest.approx(7 / 12)
