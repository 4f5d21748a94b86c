"""CPU train-step time of the COCO ResNet-50 kMaX config at crop 385, batch 1; one JSON line.

Runs the trainer's own step (`kmax_tf.trainer.runner.KMaXTrainer`: forward, every loss term,
gradients, AdamW for main and backbone) on a fixed synthetic batch with a few COCO thing and
stuff masks, once as `tf.function` and once with the per-replica step XLA-compiled
(`jit_compile`). Each variant reports its first step (trace + graph optimisation / compilation
+ one step) and the median of `--steps` further steps after `--warmup` untimed ones; the ratio
is jit over tf.function, measured in the same process. deeplab2's figure for this setting on a
2-core CPU of this kind is ~2.0 s/step (from the issue; kmax-tf target <= 1.6 s/step).

  python benchmarks/train_step.py [--steps 5] [--warmup 1] [--variants function jit]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=wrong-import-position
import orbit  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import timing  # pylint: disable=wrong-import-position

from kmax_tf import config, datasets  # pylint: disable=wrong-import-position
from kmax_tf.data import reader  # pylint: disable=wrong-import-position
from kmax_tf.losses import kmax_loss  # pylint: disable=wrong-import-position
from kmax_tf.model import builder  # pylint: disable=wrong-import-position
from kmax_tf.trainer import optimizer as optimizer_lib  # pylint: disable=wrong-import-position
from kmax_tf.trainer import runner  # pylint: disable=wrong-import-position

_CONFIG = (pathlib.Path(__file__).resolve().parents[1] / "configs" / "coco" / "kmax_deeplab" /
           "kmax_meta_r50_os32.textproto")
_CROP = 385
_DEEPLAB2_S_PER_STEP = 2.0
_TARGET_S_PER_STEP = 1.6


def _options():
  options = config.load_config(_CONFIG, validate=False)
  data = options.train_dataset_options
  data.batch_size = 1
  del data.crop_size[:]
  data.crop_size.extend([_CROP, _CROP])
  return options


def _batch(options):
  """One training batch: a textured image, two stuff regions and three thing instances."""
  dataset = datasets.get_dataset(options.train_dataset_options.dataset)
  max_thing_id = options.train_dataset_options.max_thing_id
  rng = np.random.default_rng(0)
  semantic = np.full((_CROP, _CROP), dataset.stuff_class_ids[0], np.int32)
  semantic[_CROP // 2:] = dataset.stuff_class_ids[1]
  thing_mask = np.full((_CROP, _CROP), -1, np.int32)
  thing_class = np.full((max_thing_id,), -1, np.int32)
  for instance, (top, left) in enumerate([(40, 40), (200, 60), (120, 250)]):
    thing_class[instance] = dataset.thing_class_ids[instance]
    semantic[top:top + 90, left:left + 80] = dataset.thing_class_ids[instance]
    thing_mask[top:top + 90, left:left + 80] = instance
  return {
      "image": rng.uniform(0, 255, (1, _CROP, _CROP, 3)).astype(np.float32),
      "semantic_gt": semantic[None],
      "semantic_loss_weight": np.ones((1, _CROP, _CROP), np.float32),
      "thing_id_mask_gt": thing_mask[None],
      "thing_id_class_gt": thing_class[None],
      "input_position": np.zeros((1, reader.POSITION_SIZE), np.int64),
      "skipped_records": np.zeros((1,), np.int64),
  }


def _trainer(options, batch, jit_compile: bool):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    model = builder.build_model(options)
    loss = kmax_loss.build_loss(options, training=True, seed=0)
    optimizers = optimizer_lib.build_optimizers(
        options.trainer_options.solver_options, model.trainable_variables,
        model.encoder.trainable_variables)
    return runner.KMaXTrainer(
        strategy=strategy, model=model, loss=loss, loss_names=loss.loss_names,
        optimizers=optimizers,
        train_dataset=lambda **unused: tf.data.Dataset.from_tensors(batch).repeat(),
        global_step=orbit.utils.create_global_step(),
        total_steps=options.trainer_options.solver_options.training_number_of_steps,
        jit_compile=jit_compile)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--variants", nargs="+", default=["function", "jit"],
                      choices=["function", "jit"])
  args = parser.parse_args()
  options = _options()
  batch = _batch(options)
  one_step = tf.constant(1, tf.int32)
  result = {"benchmark": "train_step", "config": "coco/kmax_meta_r50_os32", "crop": _CROP,
            "batch": 1, "device": "CPU", "cpus": os.cpu_count(), "tensorflow": tf.__version__,
            "steps": args.steps, "warmup": args.warmup,
            "deeplab2_s_per_step": _DEEPLAB2_S_PER_STEP, "target_s_per_step": _TARGET_S_PER_STEP}
  for variant in args.variants:
    trainer = _trainer(options, batch, jit_compile=variant == "jit")
    start = time.perf_counter()
    logs = trainer.train(one_step)
    result[f"{variant}_first_step_s"] = round(time.perf_counter() - start, 2)
    seconds = timing.median_seconds(lambda t=trainer: t.train(one_step), args.steps,
                                    warmup=args.warmup)
    result[f"{variant}_s_per_step"] = round(seconds, 3)
    result[f"{variant}_vs_deeplab2"] = round(seconds / _DEEPLAB2_S_PER_STEP, 3)
    result[f"{variant}_first_loss"] = round(float(logs["losses/train_total_loss"]), 4)
  if {"function", "jit"} <= set(args.variants):
    result["jit_vs_function"] = round(result["jit_s_per_step"] / result["function_s_per_step"], 3)
  result["load_average"] = [round(value, 2) for value in os.getloadavg()]
  print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
  main()
