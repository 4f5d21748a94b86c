"""Distribution strategy selection, as deeplab2's trainer picks it."""
from __future__ import annotations

import json
import os
from typing import Sequence

import tensorflow as tf


def create_strategy(master: str | None = None, num_gpus: int = 0,
                    devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
  """Returns the strategy for the flags.

  Args:
    master: TPU name or address; set -> `TPUStrategy`.
    num_gpus: 0 -> one CPU, 1 -> one GPU, >1 -> `MirroredStrategy` over that many GPUs.
    devices: explicit device list for `MirroredStrategy` (e.g. two logical CPUs in tests);
      overrides `num_gpus`.

  A `TF_CONFIG` environment variable with more than one worker selects
  `MultiWorkerMirroredStrategy` (one process per worker, as TF's cluster resolver expects).
  """
  if master:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=master)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if _multi_worker_cluster():
    return tf.distribute.MultiWorkerMirroredStrategy()
  if devices:
    return tf.distribute.MirroredStrategy(devices=list(devices))
  if num_gpus > 1:
    return tf.distribute.MirroredStrategy(devices=[f"/gpu:{i}" for i in range(num_gpus)])
  if num_gpus == 1:
    return tf.distribute.OneDeviceStrategy("/gpu:0")
  if num_gpus < 0:
    raise ValueError(f"--num_gpus must be >= 0, got {num_gpus}")
  return tf.distribute.OneDeviceStrategy("/cpu:0")


def _multi_worker_cluster() -> bool:
  config = os.environ.get("TF_CONFIG")
  if not config:
    return False
  cluster = json.loads(config).get("cluster", {})
  return sum(len(tasks) for name, tasks in cluster.items() if name in ("worker", "chief")) > 1
