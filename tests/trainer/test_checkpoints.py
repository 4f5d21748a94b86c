"""Tests for kmax_tf.trainer.checkpoints: fallback past unreadable checkpoints."""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.trainer import checkpoints


def _manager(directory, variable, init_calls=None):
  checkpoint = tf.train.Checkpoint(value=variable)
  init_fn = (lambda: init_calls.append(True)) if init_calls is not None else None
  return checkpoints.ResilientCheckpointManager(checkpoint, str(directory), max_to_keep=5,
                                                init_fn=init_fn)


def test_restores_latest_checkpoint(tmp_path):
  variable = tf.Variable(0.0)
  manager = _manager(tmp_path, variable)
  for step in (1, 2):
    variable.assign(float(step))
    manager.save(checkpoint_number=step)
  restored = tf.Variable(-1.0)
  path = _manager(tmp_path, restored).restore_or_initialize()
  assert path.endswith("ckpt-2") and float(restored.numpy()) == 2.0


def test_falls_back_when_latest_is_corrupt(tmp_path, caplog):
  variable = tf.Variable(0.0)
  manager = _manager(tmp_path, variable)
  for step in (1, 2):
    variable.assign(float(step))
    manager.save(checkpoint_number=step)
  for data_file in tmp_path.glob("ckpt-2.data-*"):
    data_file.write_bytes(b"\x00garbage")
  (tmp_path / "ckpt-2.index").write_bytes(b"not an index")
  restored = tf.Variable(-1.0)
  path = _manager(tmp_path, restored).restore_or_initialize()
  assert path.endswith("ckpt-1") and float(restored.numpy()) == 1.0
  assert "ckpt-2 is unreadable" in caplog.text


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_falls_back_when_latest_data_file_is_truncated(tmp_path, caplog, keep):
  """A write cut short (full disk, lost node): the reader raises IndexError, not an OpError."""
  variables = [tf.Variable(tf.zeros([256])) for _ in range(3)]
  manager = checkpoints.ResilientCheckpointManager(
      tf.train.Checkpoint(values=variables), str(tmp_path), max_to_keep=5)
  for step in (1, 2):
    for variable in variables:
      variable.assign(tf.fill([256], float(step)))
    manager.save(checkpoint_number=step)
  [data_file] = tmp_path.glob("ckpt-2.data-*")
  with open(data_file, "r+b") as f:
    f.truncate(int(data_file.stat().st_size * keep))
  restored = [tf.Variable(tf.fill([256], -1.0)) for _ in range(3)]
  path = checkpoints.ResilientCheckpointManager(
      tf.train.Checkpoint(values=restored), str(tmp_path), max_to_keep=5).restore_or_initialize()
  assert path.endswith("ckpt-1")
  for variable in restored:
    np.testing.assert_array_equal(variable.numpy(), np.ones(256))
  assert "ckpt-2 is unreadable" in caplog.text


def test_removes_the_temp_directory_of_a_killed_save(tmp_path):
  variable = tf.Variable(0.0)
  manager = _manager(tmp_path, variable)
  manager.save(checkpoint_number=1)
  # What a save killed before its shards were merged leaves behind (TensorFlow's own layout).
  tf.raw_ops.SaveV2(prefix=str(tmp_path / "ckpt-2_temp" / "part-00000-of-00001"),
                    tensor_names=["value"], shape_and_slices=[""], tensors=[variable])
  assert (tmp_path / "ckpt-2_temp").is_dir()
  (tmp_path / "other_temp").mkdir()  # Not a checkpoint of this manager: kept.
  removed = _manager(tmp_path, variable).remove_unfinished_saves()
  assert removed == [str(tmp_path / "ckpt-2_temp")]
  assert not (tmp_path / "ckpt-2_temp").exists() and (tmp_path / "other_temp").is_dir()
  assert (tmp_path / "ckpt-1.index").exists()


def test_initializes_when_nothing_is_readable(tmp_path):
  calls = []
  restored = tf.Variable(-1.0)
  assert _manager(tmp_path, restored, calls).restore_or_initialize() is None
  assert calls == [True] and float(restored.numpy()) == -1.0
