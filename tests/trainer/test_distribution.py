"""Distribution strategies on CPU: strategy selection, 2-replica MirroredStrategy equal to one
device, and a 2-worker MultiWorkerMirroredStrategy on localhost.

The training runs are subprocesses started together (logical devices and TF_CONFIG must be set
before TensorFlow initialises); each trains the micro config for two steps.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.configs import config_path
from kmax_tf.data import synthetic
from kmax_tf.trainer import distribution

# Run by every training subprocess: `role` is single, mirrored (two logical CPUs) or worker.
_TRAIN = """
import dataclasses, sys
role, config_file, data_dir, model_dir = sys.argv[1:5]
import tensorflow as tf
if role == "mirrored":
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from kmax_tf import config, datasets
from kmax_tf.trainer import train_lib
descriptor = datasets.get_dataset("synthetic_panoptic")
# The decoder's drop-path draws differ per replica; off, so 1 and 2 replicas compute the same.
datasets._BUILDERS["synthetic_panoptic"] = lambda: dataclasses.replace(
    descriptor, transformer_decoder_drop_path_keep_prob=1.0)
options = config.load_config(config_file, {"DATA_DIR": data_dir, "EXPERIMENT_NAME": "run"})
devices = ("/cpu:0", "/cpu:1") if role == "mirrored" else None
train_lib.run_experiment("train", options, model_dir, run_options=train_lib.RunOptions(
    seed=7, deterministic=True, devices=devices, max_steps=2))
"""
# Instance discrimination samples every pixel of the 17x17 loss resolution (65 / stride 4), so
# which pixels a replica draws cannot matter: the loss is a mean over rows of a softmax over the
# same set of columns, invariant to their order. No warmup, so both steps move the weights.
_PIXELS_AT_LOSS_RESOLUTION = 17 * 17


def _free_port():
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Starts all four training processes at once; returns {name: (model_dir, returncode, log)}."""
  root = tmp_path_factory.mktemp("distribution")
  synthetic.write_dataset(str(root / "data"), num_train=8, num_eval=1, image_size=64, seed=3)
  config = (config_path("synthetic/kmax_micro.textproto").read_text()
            .replace("instance_discrimination_sample_k: 64",
                     f"instance_discrimination_sample_k: {_PIXELS_AT_LOSS_RESOLUTION}")
            .replace("warmup_steps: 2", "warmup_steps: 0"))
  config_file = root / "config.textproto"
  config_file.write_text(config)
  ports = [_free_port(), _free_port()]
  base_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  base_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  jobs = {"single": ("single", base_env), "mirrored": ("mirrored", base_env)}
  for index in range(2):
    tf_config = {"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                 "task": {"type": "worker", "index": index}}
    jobs[f"worker{index}"] = ("worker", dict(base_env, TF_CONFIG=json.dumps(tf_config)))
  processes = {}
  for name, (role, env) in jobs.items():
    log = open(root / f"{name}.log", "w", encoding="utf-8")  # pylint: disable=consider-using-with
    # Both workers write into the same model_dir, as a cluster sharing one file system does.
    model_dir = root / ("workers" if role == "worker" else name)
    processes[name] = (model_dir, log, subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", _TRAIN, role, str(config_file), str(root / "data"),
         str(model_dir)], env=env, stdout=log, stderr=subprocess.STDOUT))
  results = {}
  try:
    for name, (model_dir, log, process) in processes.items():
      returncode = process.wait(timeout=1500)
      log.close()
      results[name] = (model_dir / "run", returncode, (root / f"{name}.log").read_text())
  finally:
    for _, log, process in processes.values():
      if process.poll() is None:
        process.kill()
      log.close()
  return results


def _weights(checkpoint_prefix):
  """Model weights (seed-generator states left out) of a kmax-tf checkpoint."""
  reader = tf.train.load_checkpoint(str(checkpoint_prefix))
  names = [name for name in reader.get_variable_to_shape_map()
           if name.startswith("model/by_path/") and "seed_generator" not in name]
  assert len(names) > 100
  return {name: reader.get_tensor(name) for name in names}


def _has_iterator(checkpoint_prefix):
  names = tf.train.load_checkpoint(str(checkpoint_prefix)).get_variable_to_shape_map()
  return any(name.startswith("train_iterator/") for name in names)


# Four training processes (~6 min on 2 cores): outside the default suite, `pytest -m slow`.
@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "Open bug: after 2 steps 258 of 559 model variables differ between 2 replicas and 1 device "
    "(initial weights equal; backbone nearly all equal; decoder kernels off by ~2 Adam steps, "
    "BN moving variances by up to 0.026). Cause not yet found."))
def test_mirrored_two_replicas_match_one_device(runs):
  for name in ("single", "mirrored"):
    assert runs[name][1] == 0, runs[name][2][-3000:]
  # Only a one-device run checkpoints its input iterator (distributed ones are not trackable).
  assert _has_iterator(runs["single"][0] / "ckpt-2")
  assert not _has_iterator(runs["mirrored"][0] / "ckpt-2")
  initial = _weights(runs["single"][0] / "ckpt-0")
  np.testing.assert_equal(_weights(runs["mirrored"][0] / "ckpt-0"), initial)
  single = _weights(runs["single"][0] / "ckpt-2")
  mirrored = _weights(runs["mirrored"][0] / "ckpt-2")
  assert mirrored.keys() == single.keys()
  moved = [name for name in single if not np.array_equal(single[name], initial[name])]
  assert len(moved) > 0.9 * len(single), "two steps should change nearly every weight"
  for name, value in single.items():
    # BN moving statistics and weights after two AdamW steps (lr 1e-3): float-summation
    # differences only.
    np.testing.assert_allclose(mirrored[name], value, rtol=1e-4, atol=2e-5, err_msg=name)


@pytest.mark.slow
def test_two_workers_train_and_the_chief_checkpoints(runs):
  for name in ("worker0", "worker1"):
    assert runs[name][1] == 0, runs[name][2][-3000:]
  chief_dir = runs["worker0"][0]
  assert tf.train.latest_checkpoint(str(chief_dir)) == str(chief_dir / "ckpt-2")
  reader = tf.train.load_checkpoint(str(chief_dir / "ckpt-2"))
  assert reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 2
  # The other worker saved its copy apart, and the chief alone wrote summaries.
  assert (chief_dir / "workers" / "worker_1").is_dir()
  assert list((chief_dir / "train").glob("events.out.tfevents.*"))
  assert not (chief_dir / "workers" / "worker_1" / "train").exists()


def test_strategy_selection(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert isinstance(distribution.create_strategy(), tf.distribute.OneDeviceStrategy)
  mirrored = distribution.create_strategy(devices=["/cpu:0"])
  assert isinstance(mirrored, tf.distribute.MirroredStrategy)
  with pytest.raises(ValueError, match="num_gpus"):
    distribution.create_strategy(num_gpus=-1)
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                              "task": {"type": "worker", "index": 0}}))
  # One worker is not a cluster: no MultiWorkerMirroredStrategy.
  assert isinstance(distribution.create_strategy(), tf.distribute.OneDeviceStrategy)
