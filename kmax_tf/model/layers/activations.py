"""Activation lookup: deeplab2's 'gelu' is the exact (erf) GELU, 'approximated_gelu' the tanh one."""
from __future__ import annotations

import keras


def get_activation(name: str | None):
  """Returns a function `x -> act(x)`; None or 'none' give the identity."""
  if name is None or name == "none":
    return lambda x: x
  if name == "gelu":
    return lambda x: keras.activations.gelu(x, approximate=False)
  if name == "approximated_gelu":
    return lambda x: keras.activations.gelu(x, approximate=True)
  if name in ("relu", "swish", "silu", "elu", "sigmoid"):
    return keras.activations.get(name)
  raise ValueError(f"Unsupported activation {name!r}")
