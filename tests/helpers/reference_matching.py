"""numpy/scipy reference of the Hungarian matching of ground-truth masks to mask slots (deeplab2
`max_deeplab_loss.py`: the cost is -dice * class probability; masks that are not valid get a
constant cost, so the optimum among the valid masks is unchanged). Used by the matching and the
total-loss tests."""
import numpy as np
import scipy.optimize


def match(gt_masks, slot_probs, gt_class_one_hot, slot_class_probs, valid):
  """Matches M ground-truth masks to N slots.

  Args:
    gt_masks: `[P, M]` one-hot ground-truth masks of P pixels.
    slot_probs: `[P, N]` slot probabilities, zero on void pixels.
    gt_class_one_hot: `[M, C]` classes of the masks (without void).
    slot_class_probs: `[N, C]` class probabilities of the slots (void column dropped).
    valid: `[M]` bool, the masks that take part.

  Returns:
    dice `[M, N]`, class_similarity `[M, N]`, matched `[M, N]` (1 where a valid mask got a
    slot) and the solver's permutation `[S, S]` of the problem padded to S = max(M, N) rows and
    columns (row i -> column j where it is 1; rows of invalid and padding masks included).
  """
  dice = gt_masks.T @ slot_probs / (
      (gt_masks.sum(0)[:, None] + slot_probs.sum(0)[None]) / 2 + 1e-5)
  class_similarity = gt_class_one_hot @ slot_class_probs.T
  masks, slots = dice.shape
  cost = -dice * class_similarity
  cost[~valid] = 999.0 if slots < masks else -999.0
  size = max(masks, slots)
  square = np.full((size, size), -999.0)
  square[:masks, :slots] = cost
  rows, cols = scipy.optimize.linear_sum_assignment(square)
  permutation = np.zeros((size, size))
  permutation[rows, cols] = 1
  matched = permutation[:masks, :slots] * valid[:, None]
  return dice, class_similarity, matched, permutation
