"""Normalization factory injected into every layer that normalizes.

deeplab2 passes a `functools.partial(SyncBatchNormalization, momentum, epsilon)` around. Keras 3
has no separate sync-BN class, so the factory builds `keras.layers.BatchNormalization(
synchronized=...)`. The factory is a small serializable object so that layers holding it keep a
working `get_config`.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kmax_tf")
class BatchNormFactory:
  """Callable returning a fresh batch-norm layer (over the last axis unless told otherwise).

  Args:
    momentum: moving-statistics momentum (deeplab2 SolverOptions default 0.99).
    epsilon: variance epsilon (deeplab2 default 1e-3).
    synchronized: all-reduce the batch statistics across replicas.
  """

  def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, synchronized: bool = True):
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    self.synchronized = bool(synchronized)

  def __call__(self, name: str | None = None, gamma_initializer="ones", dtype=None, axis=-1):
    """Returns a BN layer; `dtype="float32"` keeps it in float32 under mixed precision."""
    return keras.layers.BatchNormalization(
        axis=axis, momentum=self.momentum, epsilon=self.epsilon, synchronized=self.synchronized,
        gamma_initializer=gamma_initializer, name=name, dtype=dtype)

  def get_config(self) -> dict:
    return {"momentum": self.momentum, "epsilon": self.epsilon,
            "synchronized": self.synchronized}

  @classmethod
  def from_config(cls, config: dict) -> "BatchNormFactory":
    return cls(**config)

  def __eq__(self, other) -> bool:
    return isinstance(other, BatchNormFactory) and self.get_config() == other.get_config()


def get(norm_layer) -> BatchNormFactory:
  """Accepts a factory, its config dict (from `get_config` of a layer), or None (defaults)."""
  if norm_layer is None:
    return BatchNormFactory()
  if isinstance(norm_layer, BatchNormFactory):
    return norm_layer
  if isinstance(norm_layer, dict):
    return BatchNormFactory.from_config(norm_layer)
  raise TypeError(f"norm_layer must be a BatchNormFactory or its config dict, got {norm_layer!r}")
