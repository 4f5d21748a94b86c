"""End-to-end trainer tests on the micro synthetic config (crop 65, batch 2).

Training runs in subprocesses (`python -m kmax_tf.trainer.train`), the way users launch it, so
that a run can be killed with SIGKILL and restarted.
"""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.configs import config_path
from kmax_tf.data import synthetic

_MICRO = str(config_path("synthetic/kmax_micro.textproto"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("synthetic")
  synthetic.write_dataset(str(directory), num_train=8, num_eval=2, image_size=64, seed=3)
  return directory


def _train_command(data_dir, model_dir, *extra):
  return [sys.executable, "-m", "kmax_tf.trainer.train", f"--config_file={_MICRO}",
          "--mode=train", f"--model_dir={model_dir}", f"--override=DATA_DIR={data_dir}",
          "--override=EXPERIMENT_NAME=micro", "--seed=7", "--deterministic", *extra]


def _console_train_command(data_dir, model_dir):
  """`_train_command` through the installed `kmax-tf train`, flags in the `--flag value` form."""
  script = os.path.join(os.path.dirname(sys.executable), "kmax-tf")
  return [script if os.path.exists(script) else "kmax-tf", "train", "--config_file", _MICRO,
          "--mode", "train", "--model_dir", str(model_dir), "--override",
          f"DATA_DIR={data_dir}", "--override", "EXPERIMENT_NAME=micro", "--seed", "7",
          "--deterministic"]


def _environment():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _model_weights(checkpoint_prefix):
  reader = tf.train.load_checkpoint(str(checkpoint_prefix))
  names = [name for name in reader.get_variable_to_shape_map()
           if name.startswith("model/by_path/")]
  assert len(names) > 100, "the checkpoint should hold every model variable"
  return {name: reader.get_tensor(name) for name in names}


def _train_losses(model_dir):
  """`losses/train_total_loss` summaries by step, read from the TensorBoard event files."""
  losses = {}
  for event_file in sorted((model_dir / "micro" / "train").glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      for value in event.summary.value:
        if value.tag == "losses/train_total_loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return losses


@pytest.fixture(scope="module")
def uninterrupted_run(data_dir, tmp_path_factory):
  """The micro config's 12 steps in one go; returns (model_dir, stderr)."""
  model_dir = tmp_path_factory.mktemp("uninterrupted")
  result = subprocess.run(_train_command(data_dir, model_dir), check=True, env=_environment(),
                          capture_output=True, text=True, timeout=900)
  return model_dir, result.stderr


def _summary_tags(directory):
  """{tag: sorted steps} of every summary in the event files of `directory`."""
  tags = {}
  for event_file in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      for value in event.summary.value:
        tags.setdefault(value.tag, set()).add(event.step)
  return {tag: sorted(steps) for tag, steps in tags.items()}


def _image_summary(directory, tag, step):
  """The decoded [H, W, 3] image of summary `tag` at `step` (written by tf.summary.image)."""
  for event_file in sorted(pathlib.Path(directory).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      for value in event.summary.value:
        if value.tag == tag and event.step == step:
          encoded = tf.make_ndarray(value.tensor)  # [width, height, png...]
          return tf.io.decode_png(encoded[2]).numpy()
  raise AssertionError(f"no image summary {tag} at step {step} in {directory}")


def test_train_writes_input_and_panoptic_overlay_images(uninterrupted_run):
  train_dir = uninterrupted_run[0] / "micro" / "train"
  tags = _summary_tags(train_dir)
  assert tags["images/input"] == [2, 4, 6, 8, 10, 12]
  assert tags["images/panoptic_prediction"] == [2, 4, 6, 8, 10, 12]
  image = _image_summary(train_dir, "images/input", 12)
  overlay = _image_summary(train_dir, "images/panoptic_prediction", 12)
  assert image.shape == overlay.shape == (65, 65, 3)
  # Half-and-half blend: overlay >= image / 2 everywhere (void keeps the image itself).
  assert np.all(overlay.astype(int) >= image.astype(int) // 2 - 1)
  assert image.std() > 0


def test_loss_decreases_and_progress_is_logged(uninterrupted_run):
  model_dir, stderr = uninterrupted_run
  assert "steps/s" in stderr and "ETA" in stderr
  losses = _train_losses(model_dir)
  assert sorted(losses) == [2, 4, 6, 8, 10, 12]
  assert losses[12] < losses[2], losses


def test_sigkill_and_restart_ends_with_the_same_weights(data_dir, uninterrupted_run, tmp_path):
  expected = _model_weights(uninterrupted_run[0] / "micro" / "ckpt-12")
  killed = tmp_path / "killed"
  # Killed and restarted through the console script, as the README launches training; the
  # uninterrupted run went through `python -m kmax_tf.trainer.train`.
  process = subprocess.Popen(_console_train_command(data_dir, killed), env=_environment(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 900
  while not (killed / "micro" / "ckpt-4.index").exists():
    assert process.poll() is None, "training exited before its checkpoint at step 4"
    assert time.time() < deadline
    time.sleep(0.1)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (killed / "micro" / "ckpt-12.index").exists()
  restarted = subprocess.run(_console_train_command(data_dir, killed), env=_environment(),
                             capture_output=True, text=True, timeout=900, check=True)
  assert "restored" in restarted.stderr.lower()
  resumed = _model_weights(killed / "micro" / "ckpt-12")
  assert resumed.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_allclose(resumed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_checkpoint_keeps_the_input_position_not_the_pipeline_buffers(uninterrupted_run):
  """The input stream is resumed from a seed and (epoch, position): a few bytes per checkpoint."""
  reader = tf.train.load_checkpoint(str(uninterrupted_run[0] / "micro" / "ckpt-12"))
  shapes = reader.get_variable_to_shape_map()
  assert not [name for name in shapes if "iterator" in name]
  # 12 steps of batch 2 on 8 records: epoch 2 was read to its end; the seed is --seed.
  state = reader.get_tensor("input_state/.ATTRIBUTES/VARIABLE_VALUE")
  assert state.tolist() == [7, 2, 8, 0, 0]
  weights = ("model/", "optimizer/", "backbone_optimizer/", "_CHECKPOINTABLE_OBJECT_GRAPH")
  other = {name: reader.get_tensor(name).nbytes for name in shapes
           if not name.startswith(weights)}
  assert sum(other.values()) < 1024, other


def test_skip_bad_records_trains_and_counts_them(data_dir, tmp_path):
  bad_dir = tmp_path / "data"
  bad_dir.mkdir()
  for path in data_dir.glob("*.tfrecord"):
    (bad_dir / path.name).write_bytes(path.read_bytes())
  (bad_dir / "train-zz-noise.tfrecord").write_bytes(np.random.default_rng(0).bytes(4000))
  model_dir = tmp_path / "run"
  # Without the flag the run would stop naming the file (tests/data/test_reader.py).
  command = _train_command(bad_dir, model_dir, "--max_steps=6", "--skip_bad_records")
  # TensorFlow's warnings (level 1) name each dropped record.
  result = subprocess.run(command, env=dict(_environment(), TF_CPP_MIN_LOG_LEVEL="1"),
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r"truncated or corrupt record.*train-zz-noise.tfrecord\] \[record\] \[0\]",
                   result.stderr), result.stderr[-3000:]
  # 6 steps of batch 2 take all 8 good records of epoch 0 and 4 of epoch 1: the noise file's
  # record of epoch 0 was dropped, the one of epoch 1 may have been.
  [logged] = re.findall(r"step 6/6 .* skipped (\d+) bad records", result.stderr)
  counts = {}
  for event_file in (model_dir / "micro" / "train").glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      for value in event.summary.value:
        if value.tag == "input/skipped_bad_records":
          counts[event.step] = int(tf.make_ndarray(value.tensor))
  assert counts[6] == int(logged) and int(logged) in (1, 2), (logged, counts)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(data_dir, tmp_path):
  config = (pathlib.Path(_MICRO).read_text()
            .replace("base_learning_rate: 0.001", "base_learning_rate: 1e+30"))
  config_file = tmp_path / "explode.textproto"
  config_file.write_text(config)
  command = _train_command(data_dir, tmp_path / "run")
  command[3] = f"--config_file={config_file}"
  result = subprocess.run(command, env=_environment(), capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode != 0
  assert "Training loss became" in result.stderr
  checkpoint = tf.train.latest_checkpoint(str(tmp_path / "run" / "micro"))
  weights = _model_weights(checkpoint)
  assert all(np.isfinite(value).all() for value in weights.values())


_WRITE_CHECKPOINTS = """
import pathlib, sys, time
import keras, orbit, tensorflow as tf
from kmax_tf import config, weight_io
from kmax_tf.model import builder
from kmax_tf.trainer import train_lib
config_file, data_dir, model_dir = sys.argv[1:4]
options = config.load_config(config_file, {"DATA_DIR": data_dir, "EXPERIMENT_NAME": "micro"})
keras.utils.set_random_seed(1)
model = builder.build_model(options)
step = orbit.utils.create_global_step()
directory = train_lib.experiment_dir(model_dir, options)
manager = tf.train.CheckpointManager(tf.train.Checkpoint(
    global_step=step, model=weight_io.ModelVariables(model)), directory, max_to_keep=5)
step.assign(2)
manager.save(checkpoint_number=2)
# The second checkpoint appears only once the first one has been evaluated.
while not (pathlib.Path(directory) / "vis" / "panoptic.json").exists():
  time.sleep(0.2)
for variable in model.trainable_variables:
  variable.assign(variable * 1.01)
step.assign(4)
manager.save(checkpoint_number=4)
"""


def test_continuous_eval_evaluates_each_new_checkpoint(data_dir, tmp_path):
  config_file = tmp_path / "continuous.textproto"
  config_file.write_text(pathlib.Path(_MICRO).read_text()
                         .replace("continuous_eval_timeout: 60", "continuous_eval_timeout: 20"))
  model_dir = tmp_path / "run"
  writer = subprocess.Popen(
      [sys.executable, "-c", _WRITE_CHECKPOINTS, str(config_file), str(data_dir), str(model_dir)],
      env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not (model_dir / "micro" / "ckpt-2.index").exists():
    assert writer.poll() is None, writer.stderr.read()
    assert time.time() < deadline
    time.sleep(0.2)
  command = _train_command(data_dir, model_dir)
  command[3:5] = [f"--config_file={config_file}", "--mode=continuous_eval"]
  evaluation = subprocess.run(command, env=_environment(), capture_output=True, text=True,
                              timeout=900, check=False)
  writer_errors = writer.communicate(timeout=60)[1]
  assert writer.returncode == 0, writer_errors
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  tags = _summary_tags(model_dir / "micro" / "eval")
  for tag in ("evaluation/pq/PQ", "evaluation/iou/IoU", "evaluation/ap/AP_Mask",
              "images/panoptic_prediction_0", "images/panoptic_prediction_1"):
    assert tags.get(tag) == [2, 4], (tag, tags)
  assert "images/panoptic_prediction_2" not in tags  # The eval split has two images.


def test_unwritable_model_dir_fails_before_the_model_is_built(tmp_path, monkeypatch):
  from kmax_tf import config
  from kmax_tf.model import builder
  from kmax_tf.trainer import train_lib

  def build_model(options):
    raise AssertionError("the model must not be built for an unwritable model_dir")

  monkeypatch.setattr(builder, "build_model", build_model)
  (tmp_path / "a_file").write_text("")
  model_dir = tmp_path / "a_file" / "runs"  # A directory cannot be made under a file.
  options = config.load_config(_MICRO, {"DATA_DIR": str(tmp_path), "EXPERIMENT_NAME": "micro"})
  for mode in ("train", "eval"):
    with pytest.raises(train_lib.ModelDirError, match=r"cannot write to .*a_file/runs/micro"):
      train_lib.run_experiment(mode, options, str(model_dir))
  result = subprocess.run(_train_command(tmp_path, model_dir), env=_environment(),
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "--model_dir: cannot write to" in result.stderr.strip().splitlines()[-1]
