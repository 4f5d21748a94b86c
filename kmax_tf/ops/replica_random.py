"""Random draws that differ between the replicas of a distributed step.

A Keras `SeedGenerator` keeps its state in a variable. Under a `tf.distribute` strategy that
variable is mirrored, so every replica reads the same state and `keras.random.*` hands every
replica the same numbers: two MirroredStrategy replicas drew identical drop-path masks. deeplab2
draws with the stateful `tf.random.uniform`, whose numbers differ per replica. `replica_seed`
folds the global replica id into the generator's seed whenever a step runs on more than one
replica (MultiWorker and TPU ids are global, so workers differ too).

With a single replica (no strategy, OneDeviceStrategy, or a one-device MirroredStrategy) the fold
is skipped rather than folding in id 0: the seed is then exactly the one `keras.random` uses, so
one-device draws are bit-identical to `keras.random.*` with the same generator and do not change
with this module. Either way each draw advances the generator once, as `keras.random` does, so
a run is reproducible from the generator's seed and resumable from its checkpointed state.

The draws use `tf.random.stateless_*` directly because `keras.random.*` accepts only an int or a
`SeedGenerator` as seed, not a seed tensor.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def replica_seed(seed_generator: keras.random.SeedGenerator) -> tf.Tensor:
  """Advances `seed_generator` once and returns this replica's int32 `[2]` stateless seed."""
  # The same int64 -> int32 reduction keras.random applies (XLA wants int32 seeds); repeated
  # here so that one-replica draws equal keras.random's.
  seed = tf.cast(tf.math.floormod(seed_generator.next(), tf.int32.max - 1), tf.int32)
  if tf.distribute.in_cross_replica_context():
    return seed
  context = tf.distribute.get_replica_context()
  if context.num_replicas_in_sync == 1:
    return seed
  return tf.random.experimental.stateless_fold_in(
      seed, tf.cast(context.replica_id_in_sync_group, tf.int32))


def uniform(shape, seed_generator: keras.random.SeedGenerator, minval: float = 0.0,
            maxval: float = 1.0, dtype=tf.float32) -> tf.Tensor:
  """`U[minval, maxval)` of `shape` (ints or a shape tensor) drawn with `replica_seed`."""
  return tf.random.stateless_uniform(shape, replica_seed(seed_generator), minval=minval,
                                     maxval=maxval, dtype=dtype)
