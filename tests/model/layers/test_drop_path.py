"""Drop path: per-sample binary masks scaled by 1/keep, and deeplab2's linear schedule."""
import keras
import layer_harness
import numpy as np
import pytest

from kmax_tf.model.layers import drop_path


def test_linear_schedule_matches_deeplab2_numbers():
  # Axial-ResNet-50 with p = 0.8: stride-16 blocks (stage 3) keep 0.85, stride-32 (stage 4) 0.8.
  assert drop_path.keep_prob_for_stage(0.8, "linear", 3) == pytest.approx(0.85)
  assert drop_path.keep_prob_for_stage(0.8, "linear", 4) == pytest.approx(0.8)
  assert drop_path.keep_prob_for_stage(0.8, "constant", 1) == 0.8
  with pytest.raises(ValueError, match="schedule"):
    drop_path.keep_prob_for_stage(0.8, "cosine", 1)


def test_training_masks_whole_samples():
  layer = drop_path.DropPath(0.5, seed=3)
  x = np.ones((64, 3, 2), np.float32)
  y = layer(x, training=True).numpy()
  per_sample = y.reshape(64, -1)
  assert np.all(per_sample == per_sample[:, :1])  # one decision per sample
  assert set(np.unique(per_sample)) <= {0.0, 2.0}
  assert 0 < (per_sample[:, 0] == 0).sum() < 64


def test_masks_follow_deeplab2_formula_and_are_reproducible():
  # deeplab2: x * floor(keep + U[0, 1)) / keep per sample. On one device the uniforms are those of
  # keras.random.uniform with an equally seeded generator, one draw of [B, 1, 1, 1] per call.
  x = np.random.default_rng(0).normal(size=(32, 2, 2, 3)).astype(np.float32)
  layer = drop_path.DropPath(0.7, seed=11)
  first, second = (layer(x, training=True).numpy() for _ in range(2))
  reference = keras.random.SeedGenerator(11)
  for y in (first, second):
    u = keras.random.uniform((32, 1, 1, 1), seed=reference).numpy()
    np.testing.assert_allclose(y, x * np.floor(0.7 + u) / 0.7, rtol=1e-6)
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(drop_path.DropPath(0.7, seed=11)(x, training=True), first)


def test_drop_rate_is_one_minus_keep():
  kept = drop_path.DropPath(0.8, seed=5)(np.ones((20000, 1), np.float32), training=True).numpy()
  assert set(np.unique(kept)) == {0.0, 1.25}
  # Binomial(20000, 0.2) drops: standard deviation 0.0028 of the fraction.
  assert abs((kept == 0).mean() - 0.2) < 0.012


def test_inference_and_keep_one_are_identity():
  x = np.arange(6, dtype=np.float32).reshape(2, 3)
  np.testing.assert_array_equal(drop_path.DropPath(0.5)(x, training=False), x)
  np.testing.assert_array_equal(drop_path.DropPath(1.0)(x, training=True), x)
  with pytest.raises(ValueError, match="keep_prob"):
    drop_path.DropPath(0.0)


def test_layer_contract():
  x = np.random.default_rng(5).normal(size=(4, 3, 2)).astype(np.float32)
  layer_harness.run_layer_test(drop_path.DropPath, dict(keep_prob=0.8, seed=3), (x,))
