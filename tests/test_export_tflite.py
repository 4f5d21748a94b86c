"""`kmax-tf export --format tflite`: the network at one input size as a TFLite model with builtin
ops only, run by TensorFlow's TFLite interpreter (XNNPACK), against the Keras model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import config, configs, export
from kmax_tf.model import builder

import export_checkpoint  # tests/helpers

_CONFIG = configs.config_path("synthetic/kmax_micro.textproto")
_OVERRIDES = {"DATA_DIR": "/unused", "EXPERIMENT_NAME": "tflite_test"}
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kmax-tf")


def _run(args, onednn="1"):
  """The installed console script, as a user runs it, with oneDNN's kernels on or off."""
  return subprocess.run([_SCRIPT if os.path.exists(_SCRIPT) else "kmax-tf", *args],
                        capture_output=True, text=True, check=False, timeout=600,
                        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """(Keras model, checkpoint prefix) with non-trivial batch-norm statistics."""
  root = tmp_path_factory.mktemp("tflite")
  model = builder.build_model(config.load_config(_CONFIG, _OVERRIDES))
  return model, export_checkpoint.save_with_random_statistics(model, str(root / "ckpt" / "ckpt"))


def _export_args(prefix, output_dir, *extra):
  return (["export", "--config_file", str(_CONFIG), "--checkpoint", prefix, "--output_dir",
           str(output_dir), "--format", "tflite", *extra] +
          [f"--override={k}={v}" for k, v in _OVERRIDES.items()])


@pytest.mark.parametrize("onednn", ["1", "0"])
def test_tflite_network_equals_the_keras_model(checkpoint, tmp_path, onednn):
  """The export (converted under either CPU kernel family) against the Keras model."""
  model, prefix = checkpoint
  result = _run(_export_args(prefix, tmp_path / "out", "--tflite_size", "65", "97"), onednn)
  assert result.returncode == 0, result.stderr
  path = json.loads(result.stdout.strip().split("\n")[-1])["tflite"]
  assert path == str(tmp_path / "out" / export.TFLITE_FILE)
  interpreter = tf.lite.Interpreter(model_path=path, num_threads=2)
  runner = interpreter.get_signature_runner()
  image = np.random.default_rng(1).uniform(0, 255, (1, 65, 97, 3)).astype(np.float32)
  outputs = runner(**{export.INPUT_KEY: image})
  assert set(outputs) == set(export.TFLITE_OUTPUT_KEYS)
  # Builtins only: no Flex (TensorFlow) op, which edge runtimes lack.
  assert not any(op["op_name"].startswith("Flex")
                 for op in interpreter._get_ops_details())  # pylint: disable=protected-access
  reference = model(tf.constant(image), training=False)
  for key in export.TFLITE_OUTPUT_KEYS:
    assert outputs[key].shape == tuple(reference[key].shape), key
    scale = float(np.max(np.abs(reference[key])))
    np.testing.assert_allclose(outputs[key], reference[key], rtol=0, atol=1e-4 * scale,
                               err_msg=key)


def test_tflite_size_must_be_32k_plus_1(checkpoint, tmp_path):
  _, prefix = checkpoint
  result = _run(_export_args(prefix, tmp_path / "out", "--tflite_size", "64", "65"))
  assert result.returncode == 1
  line = [text for text in result.stderr.split("\n") if text.startswith("kmax-tf")]
  assert line == ["kmax-tf export: error: TFLite input size 64x65: each side must be 32k + 1 "
                  "(e.g. 513, 641, 1025); pad images to it"]
  assert not (tmp_path / "out").exists()
