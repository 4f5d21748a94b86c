"""Distribution strategies on CPU: strategy selection, 2-replica MirroredStrategy equal to one
device (the trainer's step on a toy model, and the micro config end to end), the toy step
compiled by XLA, and a 2-worker MultiWorkerMirroredStrategy on localhost.

The training runs are subprocesses (logical devices and TF_CONFIG must be set before TensorFlow
initialises); the slow ones are started together and each trains the micro config for two steps.
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
from kmax_tf.model import semantic_decoder
from kmax_tf.trainer import train_lib
# Random masks cannot agree between 1 and 2 replicas (one device draws [2, ...], each replica
# [1, ...] from its own seed), so the model's two stochastic layers are switched off: the
# transformer decoder's drop path and ASPP's ReplicaDropout(0.1).
descriptor = datasets.get_dataset("synthetic_panoptic")
datasets._BUILDERS["synthetic_panoptic"] = lambda: dataclasses.replace(
    descriptor, transformer_decoder_drop_path_keep_prob=1.0)
datasets.get_dataset.cache_clear()  # It is functools.cache'd: drop the unpatched descriptor.
assert datasets.get_dataset("synthetic_panoptic").transformer_decoder_drop_path_keep_prob == 1.0
semantic_decoder.ReplicaDropout.call = lambda self, inputs, training=None: inputs
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


# Conv biases feeding straight into a batch norm: their exact gradient is 0 (BN subtracts the
# batch mean), so what the optimizer sees is float32 rounding (~1e-7), which Adam normalises into
# steps of up to the learning rate; the two runs' values are unrelated noise (measured up to
# 1.3e-4 apart after two steps).
# (Checkpoint keys spell "/" inside a variable path as ".S".)
_NOISE_ONLY_SUFFIX = "pixel_space_head.Sfinal_conv.Sbias/.ATTRIBUTES/VARIABLE_VALUE"


# Four training processes (6-10 min on 2 cores): outside the default suite, `pytest -m slow`.
@pytest.mark.slow
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
  noise_only = [name for name in single if name.endswith(_NOISE_ONLY_SUFFIX)]
  assert len(noise_only) == 4, noise_only  # The head's and the 3 decoder layers' predictors.
  for name, value in single.items():
    if name in noise_only:
      continue
    # Float32 reduction-order differences only (gradients summed over 2 replicas, batch-norm
    # moments all-reduced). Adam divides each gradient element by its running RMS, so a
    # rounding difference d in an element g shifts the update by about lr * d / |g|: tiny
    # for most elements, but up to a fraction of lr (1e-3) where g is near 0. Measured worst
    # 2.1e-5 here (2.7e-5 in a same-process rerun); a real replica bug moves weights by Adam steps
    # (the dropout/drop-path mismatch this test once had gave ~2e-3 on 258 variables).
    np.testing.assert_allclose(mirrored[name], value, rtol=1e-4, atol=1e-4, err_msg=name)


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


# A toy model trained by KMaXTrainer for 3 steps on one device and on 2 replicas (two logical
# CPUs, so its own process), in float64 so that reduction order cannot matter. It checks the
# trainer's step semantics under MirroredStrategy: loss scaled by 1/replicas, gradients summed,
# both optimizers (main + backbone) applied once per step, synchronized BN statistics. A third
# run compiles the step with XLA on one device; under two replicas that must be refused.
_TOY = """
import sys
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import orbit
from kmax_tf.protos import trainer_pb2
from kmax_tf.data import reader
from kmax_tf.trainer import optimizer as optimizer_lib, runner
keras.config.set_floatx("float64")
rng = np.random.default_rng(0)
batch = {"image": rng.uniform(0, 255, (4, 5, 5, 3)), "target": rng.normal(size=(4, 2)),
         "input_position": np.zeros((4, reader.POSITION_SIZE), np.int64),
         "skipped_records": np.zeros(4, np.int64)}

def dataset_fn(input_context=None, **unused):
  data = tf.data.Dataset.from_tensor_slices(batch)
  replicas = 1
  if input_context is not None:
    replicas = input_context.num_replicas_in_sync
    data = data.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return data.batch(4 // replicas).repeat()

def loss(inputs, outputs):
  squared = tf.square(outputs - inputs["target"])
  return {"total_loss": tf.reduce_sum(squared, axis=-1) + tf.reduce_max(squared, axis=-1)}

def train(strategy, kind, jit_compile=False):
  keras.utils.set_random_seed(1)
  with strategy.scope():
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="backbone")(inputs / 255.0)
    x = keras.layers.BatchNormalization(synchronized=True, momentum=0.5, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    solver = trainer_pb2.SolverOptions(
        optimizer=kind, base_learning_rate=0.05, training_number_of_steps=10,
        adamw_weight_decay=0.1, backbone_learning_rate_multiplier=0.5)
    optimizers = optimizer_lib.build_optimizers(
        solver, model.trainable_variables, model.get_layer("backbone").trainable_variables)
    global_step = orbit.utils.create_global_step()
  trainer = runner.KMaXTrainer(
      strategy=strategy, model=model, loss=loss, loss_names=("total_loss",),
      optimizers=optimizers, train_dataset=dataset_fn,
      global_step=global_step, total_steps=3, jit_compile=jit_compile)
  logs = trainer.train(tf.constant(3))
  result = {v.path: v.numpy() for v in model.weights}
  result["train_total_loss"] = logs["losses/train_total_loss"].numpy()
  return result

results = {}
for kind in ("adamw", "sgd"):
  for name, strategy in (("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                         ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    results.update({f"{kind}/{name}/{key}": value
                    for key, value in train(strategy, kind).items()})
  results.update({f"{kind}/xla/{key}": value for key, value in
                  train(tf.distribute.OneDeviceStrategy("/cpu:0"), kind, True).items()})
try:
  train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), "sgd", True)
  results["mirrored_xla_error"] = np.array("")
except ValueError as error:
  results["mirrored_xla_error"] = np.array(str(error))
np.savez(sys.argv[1], **results)
"""


def _run_script(script, output, timeout):
  """Runs `script` in a fresh Python (it sets up its own logical devices) with the path of an
  .npz it writes; returns the arrays it saved."""
  result = subprocess.run([sys.executable, "-c", script, str(output)], capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  return dict(np.load(output))


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
  """{"<optimizer>/<single|mirrored|xla>/<weight path>": array, "mirrored_xla_error": str}."""
  return _run_script(_TOY, tmp_path_factory.mktemp("toy") / "weights.npz", timeout=600)


def _toy_weights(arrays, kind, run):
  prefix = f"{kind}/{run}/"
  return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}


@pytest.mark.parametrize("other_run", ["mirrored", "xla"])
def test_trainer_step_matches_one_device(toy_runs, other_run):
  """Two replicas, or one device with the step compiled by XLA, train as one device does."""
  for kind in ("adamw", "sgd"):
    single, other = _toy_weights(toy_runs, kind, "single"), _toy_weights(toy_runs, kind, other_run)
    assert other.keys() == single.keys()
    assert {"backbone/kernel", "bn/moving_variance", "head/kernel"} <= single.keys()
    for key, value in single.items():
      # float64 rounding only: measured worst relative differences 9e-14 (two replicas) and
      # 8e-13 (XLA), both on elements near zero; a wrong step moves weights by ~lr (0.05).
      np.testing.assert_allclose(other[key], value, rtol=1e-9, atol=1e-12,
                                 err_msg=f"{kind} {other_run}: {key}")


def test_xla_step_under_two_replicas_is_refused_by_name(toy_runs):
  message = str(toy_runs["mirrored_xla_error"])
  assert "--jit_compile" in message and "MirroredStrategy has 2 replicas" in message, message


# Two replicas of a MirroredStrategy draw drop-path masks, ASPP dropout masks and instance-
# discrimination pixels (kmax_tf.ops.replica_random); the whole thing twice from fresh,
# equally seeded layers to show the per-replica draws are reproducible.
_REPLICA_DRAWS = """
import sys, types
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from kmax_tf.losses.instance_discrimination import sample_pixels
from kmax_tf.model.layers.drop_path import DropPath
from kmax_tf.model.semantic_decoder import ReplicaDropout
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
# sample_pixels reads only these two fields: 40 non-void pixels of equal weight.
gt = types.SimpleNamespace(pixel_non_void=tf.ones((1, 40)),
                           inverse_pixel_mask_area=tf.ones((1, 40)))

def draws(prefix):
  with strategy.scope():
    drop_path, dropout = DropPath(0.5, seed=1), ReplicaDropout(0.5, seed=2)
    sampler = keras.random.SeedGenerator(3)

  @tf.function
  def step():
    outputs = {"drop_path": drop_path(tf.ones((64, 1, 1, 1)), training=True),
               "dropout": dropout(tf.ones((1, 64)), training=True),
               "samples": sample_pixels(gt, 8, 1.0, sampler)}
    # This replica's copy of the mirrored sampler state, read after the draw.
    outputs["state"] = tf.identity(sampler.state.value)
    return outputs

  result = {}
  for index in range(2):
    for name, value in strategy.run(step).items():
      for replica, local in enumerate(strategy.experimental_local_results(value)):
        result[f"{prefix}/{name}/{index}/{replica}"] = local.numpy()
  return result

np.savez(sys.argv[1], **draws("first"), **draws("again"))
"""


def test_replicas_draw_different_masks_and_pixels(tmp_path):
  draws = _run_script(_REPLICA_DRAWS, tmp_path / "draws.npz", timeout=300)
  for name in ("drop_path", "dropout", "samples"):
    for step in (0, 1):
      replica0, replica1 = (draws[f"first/{name}/{step}/{r}"] for r in (0, 1))
      # Equal by chance with probability 2^-64 (masks) or ~1e-10 (8 ordered pixels of 40).
      assert not np.array_equal(replica0, replica1), (name, step)
      for replica in (0, 1):
        key = f"{name}/{step}/{replica}"
        np.testing.assert_array_equal(draws["again/" + key], draws["first/" + key])
    assert not np.array_equal(draws[f"first/{name}/0/0"], draws[f"first/{name}/1/0"]), name
  for replica in (0, 1):
    assert set(np.unique(draws[f"first/drop_path/0/{replica}"])) == {0.0, 2.0}
    assert len(set(draws[f"first/samples/0/{replica}"][0].tolist())) == 8
    # Each replica advanced its copy of the mirrored state once per draw: they stay in sync.
    for step in (0, 1):
      np.testing.assert_array_equal(draws[f"first/state/{step}/{replica}"], [3, step + 1])


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
