"""k-means cross-attention against numpy: argmax assignment, sum update, BN, projection."""
import layer_harness
import numpy as np
import tensorflow as tf

from kmax_tf.model import kmax_attention
from kmax_tf.model.layers import norm

EPS = 1e-3


def test_each_pixel_is_assigned_to_exactly_one_cluster():
  logits = np.random.default_rng(0).normal(size=(2, 5, 7, 6)).astype(np.float32)
  assignment = np.asarray(kmax_attention.kmeans_assignment(logits))
  assert assignment.shape == (2, 35, 6)
  assert set(np.unique(assignment)) == {0.0, 1.0}
  np.testing.assert_array_equal(assignment.sum(-1), np.ones((2, 35)))
  np.testing.assert_array_equal(assignment.argmax(-1), logits.reshape(2, 35, 6).argmax(-1))


def test_assignment_carries_no_gradient():
  logits = tf.constant(np.random.default_rng(1).normal(size=(1, 3, 3, 4)).astype(np.float32))
  with tf.GradientTape() as tape:
    tape.watch(logits)
    loss = tf.reduce_sum(kmax_attention.kmeans_assignment(logits) * 3.0)
  assert tape.gradient(loss, logits) is None


def test_update_matches_numpy_sum_then_bn_then_projection():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
  values = rng.normal(size=(2, 4, 5, 8)).astype(np.float32)
  layer = kmax_attention.KMeansCrossAttention(6)
  layer(logits, values)
  # gamma of the last BN starts at 0 (identity layer); set it to 1 to see the projection.
  layer.kmeans_memory_conv3_bn.batch_norm.gamma.assign(np.ones(6, np.float32))
  update = layer(logits, values, training=False).numpy()

  one_hot = np.eye(3)[logits.reshape(2, 20, 3).argmax(-1)]            # [B, L, N]
  summed = np.einsum("bln,bld->bnd", one_hot, values.reshape(2, 20, 8))  # sum, not mean
  expected = (summed / np.sqrt(1 + EPS)) @ layer.kmeans_memory_conv3_bn.dense.kernel.numpy()
  expected = expected / np.sqrt(1 + EPS)
  np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-4)


def test_fresh_layer_update_is_zero():
  layer = kmax_attention.KMeansCrossAttention(4, name="k")
  out = layer(np.ones((1, 2, 2, 3), np.float32), np.ones((1, 2, 2, 5), np.float32),
              training=False)
  np.testing.assert_array_equal(out.numpy(), np.zeros((1, 3, 4)))


def test_layer_contract():
  rng = np.random.default_rng(8)
  inputs = (rng.normal(size=(2, 4, 5, 3)).astype(np.float32),
            rng.normal(size=(2, 4, 5, 8)).astype(np.float32))
  layer_harness.run_layer_test(
      kmax_attention.KMeansCrossAttention,
      dict(channels=6, norm_layer=norm.BatchNormFactory(momentum=0.9, epsilon=1e-5,
                                                        synchronized=False)), inputs)
