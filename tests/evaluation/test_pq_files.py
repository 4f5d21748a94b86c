"""pq_files (and `kmax-tf eval pq`) against the panopticapi re-statement on generated data."""
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from kmax_tf.evaluation import pq_files

_SPEC = importlib.util.spec_from_file_location(
    "panopticapi_reference", pathlib.Path(__file__).with_name("panopticapi_reference.py"))
reference = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(reference)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco_panoptic")
  return reference.write_synthetic_set(str(root), num_images=10, height=48, width=64, seed=3)


def assert_same_results(ours, theirs):
  for group in ("All", "Things", "Stuff"):
    for key in ("pq", "sq", "rq"):
      assert ours[group][key] == pytest.approx(theirs[group][key], abs=1e-6), (group, key)
    assert ours[group]["n"] == theirs[group]["n"]
  for category, values in theirs["per_class"].items():
    for key in ("pq", "sq", "rq"):
      assert ours["per_class"][category][key] == pytest.approx(values[key], abs=1e-6)


def test_matches_panopticapi_reference(dataset):
  gt_json, gt_folder, pred_json, pred_folder = dataset
  ours = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder)
  theirs = reference.pq_compute(*dataset)
  assert_same_results(ours, theirs)
  assert ours["crowd_convention"] == "official" and ours["num_images"] == 10
  # The generated set must contain crowd and give imperfect but non-trivial matches.
  with open(dataset[0]) as f:
    gt = json.load(f)
  assert any(s["iscrowd"] for a in gt["annotations"] for s in a["segments_info"])
  assert 0.05 < ours["All"]["pq"] < 0.95 and ours["Things"]["n"] == 4


def test_workers_give_identical_numbers(dataset):
  one = pq_files.pq_compute(dataset[0], dataset[2], dataset[1], dataset[3], workers=1)
  two = pq_files.pq_compute(dataset[0], dataset[2], dataset[1], dataset[3], workers=2)
  assert one == two


def test_deeplab2_convention_equals_reference_with_crowd_as_void(dataset, tmp_path):
  gt_json, gt_folder, pred_json, pred_folder = dataset
  with open(gt_json) as f:
    gt = json.load(f)
  # Rewrite the ground truth the way deeplab2's converters do: crowd segments become VOID.
  os.makedirs(tmp_path / "gt")
  for annotation in gt["annotations"]:
    rgb = np.array(Image.open(os.path.join(gt_folder, annotation["file_name"])))
    wide = rgb.astype(np.int64)
    ids = wide[..., 0] + 256 * wide[..., 1] + 65536 * wide[..., 2]
    for segment in annotation["segments_info"]:
      if segment["iscrowd"]:
        rgb[ids == segment["id"]] = 0
    annotation["segments_info"] = [s for s in annotation["segments_info"] if not s["iscrowd"]]
    Image.fromarray(rgb).save(tmp_path / "gt" / annotation["file_name"])
  with open(tmp_path / "gt.json", "w") as f:
    json.dump(gt, f)
  theirs = reference.pq_compute(str(tmp_path / "gt.json"), str(tmp_path / "gt"), pred_json,
                                pred_folder)
  ours = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder,
                             crowd_convention="deeplab2")
  assert_same_results(ours, theirs)
  official = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder)
  assert ours["Things"]["pq"] != official["Things"]["pq"]


def test_unlisted_prediction_segment_is_an_error(dataset, tmp_path):
  gt_json, gt_folder, pred_json, pred_folder = dataset
  with open(pred_json) as f:
    pred = json.load(f)
  dropped = pred["annotations"][2]["segments_info"].pop()
  with open(tmp_path / "pred.json", "w") as f:
    json.dump(pred, f)
  with pytest.raises(KeyError, match=f"ID 2 segments with IDs \\[{dropped['id']}\\]"):
    pq_files.pq_compute(gt_json, str(tmp_path / "pred.json"), gt_folder, pred_folder)


def test_cli_prints_table_and_json(dataset, capsys):
  from kmax_tf.commands import eval as eval_command
  import argparse
  parser = argparse.ArgumentParser()
  eval_command.register(parser.add_subparsers())
  gt_json, gt_folder, pred_json, pred_folder = dataset
  args = parser.parse_args(["eval", "pq", "--gt_json", gt_json, "--gt_folder", gt_folder,
                            "--pred_json", pred_json, "--pred_folder", pred_folder])
  assert args.handler(args) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  summary = json.loads(lines[-1])
  theirs = reference.pq_compute(*dataset)
  assert summary["crowd_convention"] == "official"
  assert summary["All"]["pq"] == pytest.approx(theirs["All"]["pq"], abs=1e-6)
  assert any(line.startswith("Things") for line in lines)
