"""Per-replica seeds: with one replica they are keras.random's seeds, draw for draw.

The two-replica case needs two logical devices before TensorFlow starts, so it runs in a
subprocess in tests/trainer/test_distribution.py.
"""
import keras
import numpy as np
import tensorflow as tf

from kmax_tf.ops import replica_random


def test_one_device_draws_equal_keras_random_and_advance_the_state_once():
  ours, theirs = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
  draws = []
  for _ in range(2):
    draw = replica_random.uniform((3, 4), ours, minval=-1.0, maxval=2.0).numpy()
    np.testing.assert_array_equal(
        draw, keras.random.uniform((3, 4), minval=-1.0, maxval=2.0, seed=theirs))
    draws.append(draw)
  assert not np.array_equal(draws[0], draws[1])
  assert draws[0].min() >= -1.0 and draws[0].max() < 2.0
  # One `next()` per draw: the state's counter moved by exactly 2, as keras.random's does.
  np.testing.assert_array_equal(ours.state.numpy(), [5, 2])
  np.testing.assert_array_equal(ours.state.numpy(), theirs.state.numpy())


def test_one_replica_strategy_and_tf_function_skip_the_fold():
  # A one-device MirroredStrategy has num_replicas_in_sync == 1: draws are keras.random's.
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  with strategy.scope():
    generator = keras.random.SeedGenerator(9)
  draw = strategy.run(tf.function(lambda: replica_random.uniform([6], generator)))
  np.testing.assert_array_equal(
      draw, keras.random.uniform([6], seed=keras.random.SeedGenerator(9)))
  # The seed itself: [9, 0] reduced to int32 exactly as keras.random reduces it.
  seed = replica_random.replica_seed(keras.random.SeedGenerator(2**31 + 3))
  assert seed.dtype == tf.int32
  np.testing.assert_array_equal(seed, [(2**31 + 3) % (2**31 - 2), 0])
