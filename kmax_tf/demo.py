"""`kmax-tf demo`: the whole life of a kMaX model on the built-in synthetic dataset.

Generates the data, trains the tiny config on CPU, evaluates (PQ/SQ/RQ, mIoU), exports a
SavedModel, draws overlays of a few evaluation images with the exported model, and returns a
summary whose JSON form is the command's last line.
"""
from __future__ import annotations

import json
import pathlib
import time

from absl import logging

from kmax_tf import config
from kmax_tf import config_validation
from kmax_tf.configs import config_path

# Full demo: 15 minutes on 2 CPU cores is the budget for all stages together.
FULL = {"config": "synthetic/kmax_tiny.textproto", "num_train": 400, "num_eval": 32,
        "image_size": 128, "train_steps": None}
# Quick mode (tests): every stage, a handful of steps.
QUICK = {"config": "synthetic/kmax_micro.textproto", "num_train": 8, "num_eval": 2,
         "image_size": 64, "train_steps": 4}
NUM_OVERLAYS = 4


def run_demo(output_dir: str, *, quick: bool = False, seed: int = 0,
             train_steps: int | None = None) -> dict:
  """Runs every stage into `output_dir`; returns the summary (metrics and written paths)."""
  # Imported here: each pulls in TensorFlow and the model.
  from kmax_tf import export  # pylint: disable=import-outside-toplevel
  from kmax_tf import predict  # pylint: disable=import-outside-toplevel
  from kmax_tf.data import reader  # pylint: disable=import-outside-toplevel
  from kmax_tf.data import synthetic  # pylint: disable=import-outside-toplevel
  from kmax_tf.datasets import get_dataset  # pylint: disable=import-outside-toplevel
  from kmax_tf.evaluation import evaluator as evaluator_lib  # pylint: disable=import-outside-toplevel
  from kmax_tf import weight_io  # pylint: disable=import-outside-toplevel
  from kmax_tf.model import builder  # pylint: disable=import-outside-toplevel
  from kmax_tf.trainer import train_lib  # pylint: disable=import-outside-toplevel

  settings = QUICK if quick else FULL
  output = pathlib.Path(output_dir).resolve()
  data_dir, model_dir = output / "data", output / "model"
  started = time.time()

  logging.info("[1/5] Writing the synthetic dataset to %s", data_dir)
  synthetic.write_dataset(str(data_dir), settings["num_train"], settings["num_eval"],
                          image_size=settings["image_size"], seed=seed)
  options = config.load_config(
      config_path(settings["config"]), {"DATA_DIR": str(data_dir), "EXPERIMENT_NAME": "demo"},
      use_environment=False,
      required_fields=config_validation.TRAIN_FIELDS + config_validation.EVAL_FIELDS)

  steps = train_steps or settings["train_steps"] or (
      options.trainer_options.solver_options.training_number_of_steps)
  logging.info("[2/5] Training %d steps (checkpoints in %s)", steps, model_dir)
  train_lib.run_experiment("train", options, str(model_dir),
                           run_options=train_lib.RunOptions(seed=seed, max_steps=steps))
  checkpoint = train_lib.experiment_dir(str(model_dir), options)

  logging.info("[3/5] Evaluating on %d images", settings["num_eval"])
  model = builder.build_model(options)
  weight_io.restore_model_variables(model, checkpoint)
  evaluator = evaluator_lib.Evaluator(
      model, get_dataset(options.eval_dataset_options.dataset), options.evaluator_options,
      output_dir=str(output / "eval"))
  results = evaluator.evaluate(reader.build_dataset(options.eval_dataset_options,
                                                    is_training=False))

  logging.info("[4/5] Exporting a SavedModel")
  saved_model_dir = output / "saved_model"
  export.save_model(model, options, str(saved_model_dir))

  logging.info("[5/5] Drawing overlays with the exported model")
  image_paths = _write_scenes(output / "images", NUM_OVERLAYS, settings["image_size"], seed)
  predictions_dir = output / "predictions"
  predict_fn, dataset = predict.saved_model_predictor(str(saved_model_dir))
  written = predict.predict_files(predict_fn, dataset, image_paths, str(predictions_dir))

  summary = {
      "pq": results["all"]["pq"], "sq": results["all"]["sq"], "rq": results["all"]["rq"],
      "miou": results["miou"],
      "train_steps": steps,
      "seconds": round(time.time() - started, 1),
      "data_dir": str(data_dir), "checkpoint_dir": checkpoint,
      "saved_model": str(saved_model_dir), "predictions": str(predictions_dir),
      "overlays": sorted(str(p) for p in pathlib.Path(written["vis_dir"]).glob("*.png")),
  }
  with open(output / "summary.json", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  return summary


def _write_scenes(directory: pathlib.Path, count: int, size: int, seed: int) -> list[str]:
  """Fresh synthetic scenes as PNG files: what a user would hand to `kmax-tf predict`."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from kmax_tf.data import synthetic  # pylint: disable=import-outside-toplevel
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  for index in range(count):
    image, _ = synthetic.draw_scene(synthetic.scene_rng(seed, "val", 10_000 + index), size)
    path = directory / f"scene_{index}.png"
    Image.fromarray(image).save(path)
    paths.append(str(path))
  return paths


def main_json(summary: dict) -> str:
  """The one-line JSON the command prints last."""
  return json.dumps(summary, sort_keys=True)


