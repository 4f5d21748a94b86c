"""Semantic cross-entropy against numpy: subsampling, weights, ignore label, top-k."""
import numpy as np
import pytest
import scipy.special

from kmax_tf.losses.semantic import semantic_cross_entropy


@pytest.mark.parametrize("ignore_label, top_k", [(0, 1.0), (255, 0.2)])
def test_formula(ignore_label, top_k):
  rng = np.random.default_rng(ignore_label)
  labels = rng.integers(0, 4, size=(2, 9, 9)).astype(np.int32)
  labels[labels == 0] = ignore_label
  weights = rng.uniform(0.5, 3.0, size=(2, 9, 9)).astype(np.float32)
  logits = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
  loss = semantic_cross_entropy(logits, labels, weights, ignore_label=ignore_label,
                                top_k_percent=top_k)
  for b in range(2):
    y = labels[b, ::2, ::2].reshape(-1)
    w = weights[b, ::2, ::2].reshape(-1) * (y != ignore_label)
    log_p = scipy.special.log_softmax(logits[b].reshape(25, 4), -1)
    ce = -log_p[np.arange(25), np.minimum(y, 3)] * w
    kept = np.sort(ce)[::-1][:round(top_k * 25)]
    np.testing.assert_allclose(loss[b], kept.sum() / np.count_nonzero(kept), rtol=1e-5)
