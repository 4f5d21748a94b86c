"""One test of a Keras layer's contract, after keras-hub's `run_layer_test`: configuration, weights,
mixed precision and the `.keras` format.

`run_layer_test(cls, init_kwargs, inputs)` checks that
  1. every `__init__` parameter (but `**kwargs`) is a key of `get_config()`, and every argument the
     test passes is non-default and is reported as given (not as its default);
  2. `cls.from_config(layer.get_config())` has the same config, the same weight shapes and, loaded
     with the same (randomly perturbed) weights, the same outputs;
  3. a `dtype` policy argument survives `get_config`; under that policy set globally (as the
     trainer does) the variables stay float32 and the outputs come in the compute dtype (or the
     dtypes the layer promises), close to the float32 outputs with the same weights;
  4. a functional model wrapping the layer, saved as `.keras` and loaded, gives the same outputs.
A constructor argument left out of `get_config` fails 1 (and usually 2): a round trip that only
compares `get_config()` with itself cannot notice it.
"""
from __future__ import annotations

import inspect
import json
import os
import tempfile

import keras
import numpy as np


def _float_leaves(structure):
  """The floating tensors of a nest of outputs, in `keras.tree.flatten` order."""
  return [leaf for leaf in keras.tree.flatten(structure)
          if keras.backend.is_float_dtype(keras.backend.standardize_dtype(leaf.dtype))]


def _numpy(structure):
  """A nest of tensors as float64 numpy arrays (bfloat16 has no numpy dtype)."""
  return [np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(leaf, "float32")), np.float64)
          for leaf in _float_leaves(structure)]


def _assert_outputs_close(actual, expected, what, rtol=1e-6, atol=1e-6):
  actual, expected = _numpy(actual), _numpy(expected)
  assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
  for index, (a, e) in enumerate(zip(actual, expected)):
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{what}, output {index}")


def _same(a, b) -> bool:
  try:
    return bool(a == b)
  except (TypeError, ValueError):  # arrays and the like: never a configuration default
    return False


def check_config_keys(cls, init_kwargs: dict) -> dict:
  """Part 1 of `run_layer_test`; returns the config of `cls(**init_kwargs)`."""
  parameters = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
                if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
  config = cls(**init_kwargs).get_config()
  missing = sorted(set(parameters) - set(config))
  assert not missing, f"{cls.__name__}.get_config() lacks constructor arguments {missing}"
  json.dumps(config)  # the .keras format stores it as JSON
  for name, value in init_kwargs.items():
    if name not in parameters or parameters[name].default is parameters[name].empty:
      continue
    assert not _same(value, parameters[name].default), (
        f"{cls.__name__}: pass a non-default {name} so that the test can see it survive")
    try:
      default = cls(**{k: v for k, v in init_kwargs.items() if k != name}).get_config()[name]
    except ValueError:  # the default does not fit the other arguments
      continue
    assert not _same(config[name], default), (
        f"{cls.__name__}.get_config() reports {name}={config[name]!r}, as if it were not given")
  return config


def _perturb_weights(layer):
  """Scales every float weight by U[0.75, 1.25) and replaces its zeros by U[0.1, 0.5), so that
  no output is 0 whatever the initializers (residual branches end in a BN with gamma 0) while
  activations keep their scale and moving variances stay positive."""
  rng = np.random.default_rng(0)
  for weight in layer.weights:
    if keras.backend.is_float_dtype(weight.dtype):
      value = weight.numpy()
      value = np.where(value == 0, rng.uniform(0.1, 0.5, value.shape),
                       value * rng.uniform(0.75, 1.25, value.shape))
      weight.assign(value.astype(weight.dtype))


def _copy_weights(source, target, what):
  shapes = [tuple(w.shape) for w in source.weights]
  assert [tuple(w.shape) for w in target.weights] == shapes, f"{what}: different weights"
  target.set_weights(source.get_weights())


def run_layer_test(cls, init_kwargs: dict, inputs: tuple, call_kwargs: dict | None = None,
                   policy: str = "mixed_bfloat16", mixed_dtypes=None,
                   mixed_tolerance: float = 0.1, save: bool = True):
  """Runs checks 1-4 of the module docstring; returns the layer built from `init_kwargs`.

  Args:
    cls: the layer class.
    init_kwargs: constructor arguments, each different from its default.
    inputs: positional call arguments (arrays, or dicts of arrays), with tiny shapes.
    call_kwargs: keyword call arguments; `training=False` unless given.
    policy: the mixed global policy of check 3 (None skips it).
    mixed_dtypes: dtype names of the floating outputs under `policy`, in `keras.tree.flatten`
      order (a single name for all); by default the policy's compute dtype.
    mixed_tolerance: largest mixed/float32 output difference, relative to max(1, max |output|).
    save: run check 4.
  """
  call_kwargs = {"training": False, **(call_kwargs or {})}
  config = check_config_keys(cls, init_kwargs)

  layer = cls(**init_kwargs)
  layer(*inputs, **call_kwargs)
  _perturb_weights(layer)
  outputs = layer(*inputs, **call_kwargs)
  rebuilt = cls.from_config(config)
  assert rebuilt.get_config() == config, f"{cls.__name__}: from_config(get_config()) differs"
  rebuilt(*inputs, **call_kwargs)
  _copy_weights(layer, rebuilt, f"{cls.__name__}.from_config")
  _assert_outputs_close(rebuilt(*inputs, **call_kwargs), outputs,
                        f"{cls.__name__}.from_config with the same weights")

  if policy is not None:
    _check_mixed_precision(cls, init_kwargs, inputs, call_kwargs, layer, outputs, policy,
                           mixed_dtypes, mixed_tolerance)
  if save:
    _check_saved_model(layer, inputs, call_kwargs)
  return layer


def _check_mixed_precision(cls, init_kwargs, inputs, call_kwargs, reference, expected, policy,
                           mixed_dtypes, tolerance):
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy)
  try:
    layer = cls(**init_kwargs)
    layer(*inputs, **call_kwargs)
  finally:
    keras.config.set_dtype_policy(previous)
  what = f"{cls.__name__} under {policy}"
  explicit = cls(**init_kwargs, dtype=policy)
  rebuilt = cls.from_config(explicit.get_config()).dtype_policy.name
  assert rebuilt == policy, f"{cls.__name__}(dtype={policy!r}) comes back as {rebuilt}"
  variables = [v.path for v in layer.weights if v.dtype != "float32"]
  assert not variables, f"{what}: variables not float32: {variables}"
  _copy_weights(reference, layer, what)
  outputs = _float_leaves(layer(*inputs, **call_kwargs))
  if mixed_dtypes is None or isinstance(mixed_dtypes, str):
    mixed_dtypes = [mixed_dtypes or keras.DTypePolicy(policy).compute_dtype] * len(outputs)
  dtypes = [keras.backend.standardize_dtype(o.dtype) for o in outputs]
  assert dtypes == list(mixed_dtypes), f"{what}: output dtypes {dtypes}"
  for index, (got, want) in enumerate(zip(_numpy(outputs), _numpy(expected))):
    assert np.isfinite(got).all(), f"{what}, output {index}"
    error = np.abs(got - want).max(initial=0)
    assert error <= tolerance * max(1.0, np.abs(want).max(initial=0)), (
        f"{what}, output {index}: differs from float32 by {error}")


def _check_saved_model(layer, inputs, call_kwargs):
  symbolic = keras.tree.map_structure(
      lambda x: keras.Input(batch_shape=np.shape(x), dtype=keras.backend.standardize_dtype(
          np.asarray(x).dtype)), inputs)
  model = keras.Model(list(symbolic), layer(*symbolic, **call_kwargs))
  expected = model(list(inputs))
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
  _assert_outputs_close(loaded(list(inputs)), expected, f"{type(layer).__name__} saved as .keras")
