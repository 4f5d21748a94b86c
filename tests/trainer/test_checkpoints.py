"""Tests for kmax_tf.trainer.checkpoints: fallback past unreadable checkpoints."""
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


def test_initializes_when_nothing_is_readable(tmp_path):
  calls = []
  restored = tf.Variable(-1.0)
  assert _manager(tmp_path, restored, calls).restore_or_initialize() is None
  assert calls == [True] and float(restored.numpy()) == -1.0
