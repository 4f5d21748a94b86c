"""pq_files (and `kmax-tf eval pq`) against panopticapi's own `pq_compute` (panopticapi-lite)."""
import contextlib
import importlib.util
import io
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from kmax_tf import cli, panoptic_files
from kmax_tf.evaluation import pq_files
# The reference: cocodataset/panopticapi, installed as `panopticapi-lite` (see README).
from panopticapi import evaluation as panopticapi_evaluation  # pylint: disable=wrong-import-order


_SPEC = importlib.util.spec_from_file_location(
    "synthetic_coco_panoptic", pathlib.Path(__file__).with_name("synthetic_coco_panoptic.py"))
synthetic = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(synthetic)


def panopticapi_pq(gt_json, gt_folder, pred_json, pred_folder):
  with contextlib.redirect_stdout(io.StringIO()):  # it prints progress and its table
    return panopticapi_evaluation.pq_compute(gt_json, pred_json, gt_folder, pred_folder)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco_panoptic")
  return synthetic.write_synthetic_set(str(root), num_images=10, height=48, width=64, seed=3)


def assert_same_results(ours, theirs):
  for group in ("All", "Things", "Stuff"):
    for key in ("pq", "sq", "rq"):
      assert ours[group][key] == pytest.approx(theirs[group][key], abs=1e-6), (group, key)
    assert ours[group]["n"] == theirs[group]["n"]
  for category, values in theirs["per_class"].items():
    for key in ("pq", "sq", "rq"):
      assert ours["per_class"][category][key] == pytest.approx(values[key], abs=1e-6)


def test_matches_panopticapi(dataset):
  gt_json, gt_folder, pred_json, pred_folder = dataset
  ours = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder)
  theirs = panopticapi_pq(*dataset)
  assert_same_results(ours, theirs)
  assert ours["crowd_convention"] == "official" and ours["num_images"] == 10
  # The generated set must contain crowd and give imperfect but non-trivial matches.
  with open(dataset[0]) as f:
    gt = json.load(f)
  assert any(s["iscrowd"] for a in gt["annotations"] for s in a["segments_info"])
  assert 0.05 < ours["All"]["pq"] < 0.95 and ours["Things"]["n"] == 4


def test_matches_panopticapi_on_outlines_that_change_every_row(tmp_path):
  # Ellipses leave few rows equal to the row above: the key-row decoder sees nearly every row.
  files = synthetic.write_synthetic_set(str(tmp_path), num_images=6, height=40, width=56,
                                        seed=5, shapes="ellipses")
  gt_json, gt_folder, pred_json, pred_folder = files
  ours = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder)
  assert_same_results(ours, panopticapi_pq(*files))
  assert 0.05 < ours["All"]["pq"] < 0.95


def test_matches_panopticapi_on_images_of_several_sizes(tmp_path):
  # One batch holds images of two widths and, within a width, of two heights.
  merged = {"gt": {"annotations": []}, "pred": {"annotations": []}}
  for part, (height, width) in enumerate(((40, 56), (24, 56), (32, 48))):
    root = tmp_path / f"part{part}"
    synthetic.write_synthetic_set(str(root), num_images=3, height=height, width=width,
                                  seed=7 + part)
    for name in ("gt", "pred"):
      os.makedirs(tmp_path / name, exist_ok=True)
      with open(root / f"{name}.json") as f:
        listing = json.load(f)
      merged[name]["categories"] = listing["categories"]
      for annotation in listing["annotations"]:
        file_name = f"{part}_{annotation['file_name']}"
        os.rename(root / name / annotation["file_name"], tmp_path / name / file_name)
        annotation.update(file_name=file_name, image_id=f"{part}_{annotation['image_id']}")
        merged[name]["annotations"].append(annotation)
  files = []
  for name in ("gt", "pred"):
    # Interleaved, so that neighbouring images differ in size.
    merged[name]["annotations"] = merged[name]["annotations"][0::3] + merged[name][
        "annotations"][1::3] + merged[name]["annotations"][2::3]
    with open(tmp_path / f"{name}.json", "w") as f:
      json.dump(merged[name], f)
    files += [str(tmp_path / f"{name}.json"), str(tmp_path / name)]
  ours = pq_files.pq_compute(files[0], files[2], files[1], files[3])
  assert_same_results(ours, panopticapi_pq(*files))
  assert ours["num_images"] == 9 and 0.05 < ours["All"]["pq"] < 0.95


def test_map_ids_to_slots():
  keys = np.array([7, 0, 5, 9, 7, 3, 0], np.int64)
  # 7 listed twice: the last listing wins (what panopticapi's id -> segment dict keeps).
  np.testing.assert_array_equal(pq_files._map_ids(keys, [7, 5, 7, 3], [10, 11, 12, 13]),
                                [12, -1, 11, -1, 12, 13, -1])
  np.testing.assert_array_equal(pq_files._map_ids(keys, [0, 9], [4, 8]),
                                [-1, 4, -1, 8, -1, -1, 4])
  np.testing.assert_array_equal(pq_files._map_ids(keys, [], []), [-1] * 7)


def test_keys_separate_images_and_drop_ids_no_png_holds():
  keys = pq_files._keys(np.array([0, 1, 1, 2, 0]), np.array([5, 5, 0, (1 << 24) - 1, 1 << 24]))
  np.testing.assert_array_equal(keys, [5, (1 << 24) + 5, 1 << 24, (3 << 24) - 1, -1])


def test_workers_give_identical_numbers(tmp_path):
  # 40 images make three batches (pq_files._BATCH = 16), which two processes can share.
  files = synthetic.write_synthetic_set(str(tmp_path), num_images=40, height=24, width=32, seed=4)
  gt_json, gt_folder, pred_json, pred_folder = files
  one = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder, workers=1)
  two = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder, workers=2)
  assert one == two and one["num_images"] == 40


def test_a_dying_worker_is_an_error(dataset, monkeypatch):
  # Forked workers inherit the patch: each exits at once, sending nothing.
  monkeypatch.setattr(pq_files, "_take_batches", lambda job, counter: os._exit(3))
  with pytest.raises(RuntimeError, match="worker process died \\(exit code 3\\)"):
    pq_files.pq_compute(dataset[0], dataset[2], dataset[1], dataset[3])


def test_deeplab2_convention_equals_panopticapi_with_crowd_as_void(dataset, tmp_path):
  gt_json, gt_folder, pred_json, pred_folder = dataset
  with open(gt_json) as f:
    gt = json.load(f)
  # Rewrite the ground truth the way deeplab2's converters do: crowd segments become VOID.
  os.makedirs(tmp_path / "gt")
  for annotation in gt["annotations"]:
    rgb = np.array(Image.open(os.path.join(gt_folder, annotation["file_name"])))
    ids = panoptic_files.rgb_to_ids(rgb)
    for segment in annotation["segments_info"]:
      if segment["iscrowd"]:
        rgb[ids == segment["id"]] = 0
    annotation["segments_info"] = [s for s in annotation["segments_info"] if not s["iscrowd"]]
    Image.fromarray(rgb).save(tmp_path / "gt" / annotation["file_name"])
  with open(tmp_path / "gt.json", "w") as f:
    json.dump(gt, f)
  theirs = panopticapi_pq(str(tmp_path / "gt.json"), str(tmp_path / "gt"), pred_json,
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
  theirs = panopticapi_pq(*dataset)
  assert summary["crowd_convention"] == "official"
  assert summary["All"]["pq"] == pytest.approx(theirs["All"]["pq"], abs=1e-6)
  assert any(line.startswith("Things") for line in lines)


def write_set(root, gt_map, gt_segments, pred_map, pred_segments, categories):
  """One-image COCO panoptic set from id maps `[H, W]` (ids < 256, so they are the red byte)."""
  paths = []
  for name, id_map, segments in (("gt", gt_map, gt_segments), ("pred", pred_map, pred_segments)):
    os.makedirs(root / name)
    rgb = np.zeros(id_map.shape + (3,), np.uint8)
    rgb[..., 0] = id_map
    Image.fromarray(rgb).save(root / name / "0.png")
    with open(root / f"{name}.json", "w") as f:
      json.dump({"annotations": [{"image_id": 0, "file_name": "0.png",
                                  "segments_info": segments}], "categories": categories}, f)
    paths += [str(root / f"{name}.json"), str(root / name)]
  return paths


def test_hand_worked_image_equals_panopticapi(tmp_path):
  # 4 x 10 image, every row alike; columns:   0 1 2 3 4 5 6 7 8 9
  gt_row = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 5])  # 1, 5 thing cat 1 (5 crowd); 2 stuff 2
  pred_row = np.array([7, 7, 8, 8, 9, 9, 9, 9, 9, 6])  # 7, 8 cat 1; 9 cat 2; 6 cat 1
  gt_map, pred_map = np.tile(gt_row, (4, 1)), np.tile(pred_row, (4, 1))
  categories = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0},
                {"id": 3, "name": "absent", "isthing": 0}]
  gt_segments = [{"id": 1, "category_id": 1, "area": 16, "iscrowd": 0},
                 {"id": 2, "category_id": 2, "area": 16, "iscrowd": 0},
                 {"id": 5, "category_id": 1, "area": 4, "iscrowd": 1}]
  pred_segments = [{"id": 7, "category_id": 1}, {"id": 8, "category_id": 1},
                   {"id": 9, "category_id": 2}, {"id": 6, "category_id": 1}]
  paths = write_set(tmp_path, gt_map, gt_segments, pred_map, pred_segments, categories)
  # (1, 7) and (1, 8): inter 8, union 16 + 8 - 8 = 16, IoU exactly 0.5: no match, so GT 1 is
  #   a FN and 7, 8 (no void or crowd under them) are FPs.
  # (2, 9): inter 16, |9| = 20 of which 4 on void -> union 16 + 20 - 16 - 4 = 16, IoU 1: TP.
  # 6 lies only on the crowd segment of its own category: forgiven (4/4 > 0.5).
  # Category 1: tp 0, fn 1, fp 2 -> PQ = RQ = 0; category 2: PQ = SQ = RQ = 1;
  # category 3 appears nowhere and is left out of the means: All PQ = 0.5, Things 0, Stuff 1.
  ours = pq_files.pq_compute(paths[0], paths[2], paths[1], paths[3])
  theirs = panopticapi_pq(paths[0], paths[1], paths[2], paths[3])
  assert_same_results(ours, theirs)
  assert ours["All"]["pq"] == pytest.approx(0.5) and ours["All"]["n"] == 2
  assert ours["Things"]["pq"] == 0.0 and ours["Stuff"]["pq"] == pytest.approx(1.0)
  assert ours["per_class"][1]["rq"] == 0.0 and ours["per_class"][3]["pq"] == 0.0


def _hand_worked_set(tmp_path, gt_segments, pred_segments):
  """`write_set` of the hand-worked image above with other segment lists."""
  gt_map = np.tile(np.array([1, 1, 1, 1, 2, 2, 2, 2, 0, 5]), (4, 1))
  pred_map = np.tile(np.array([7, 7, 8, 8, 9, 9, 9, 9, 9, 6]), (4, 1))
  categories = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
  return write_set(tmp_path, gt_map, gt_segments, pred_map, pred_segments, categories)


_GT = [{"id": 1, "category_id": 1, "area": 16, "iscrowd": 0},
       {"id": 2, "category_id": 2, "area": 16, "iscrowd": 0},
       {"id": 5, "category_id": 1, "area": 4, "iscrowd": 1}]
_PRED = [{"id": 7, "category_id": 1}, {"id": 8, "category_id": 1},
         {"id": 9, "category_id": 2}, {"id": 6, "category_id": 1}]


@pytest.mark.parametrize("side", ["ground-truth", "prediction"])
def test_segment_listed_twice_counts_once_as_in_panopticapi(tmp_path, side):
  # panopticapi keeps the last entry of an id (a dict per image). Ground truth: stuff segment 2
  # is first listed with another area (counted as a second, unmatched segment, it was a false
  # negative: Stuff PQ 2/3). Prediction: segment 9 is first listed with the thing category.
  gt, pred = list(_GT), list(_PRED)
  if side == "ground-truth":
    gt.insert(1, {"id": 2, "category_id": 2, "area": 10, "iscrowd": 0})
  else:
    pred.insert(2, {"id": 9, "category_id": 1})
  paths = _hand_worked_set(tmp_path, gt, pred)
  ours = pq_files.pq_compute(paths[0], paths[2], paths[1], paths[3])
  theirs = panopticapi_pq(*paths)
  assert_same_results(ours, theirs)
  assert ours["Stuff"]["pq"] == pytest.approx(1.0)
  duplicate = 2 if side == "ground-truth" else 9
  assert ours["warnings"] == [
      f"image 0: segment ids [{duplicate}] are listed more than once in the {side} JSON; the "
      "last entry of each counts (as in panopticapi)"]


def test_ground_truth_category_missing_from_the_list_is_a_warning(tmp_path):
  gt = [dict(_GT[0], category_id=42)] + _GT[1:]
  paths = _hand_worked_set(tmp_path, gt, _PRED)
  ours = pq_files.pq_compute(paths[0], paths[2], paths[1], paths[3])
  assert_same_results(ours, panopticapi_pq(*paths))
  assert len(ours["warnings"]) == 1
  assert ours["warnings"][0].startswith(
      "ground-truth category ids [42] (1 segments) are not in the categories list")


def test_cli_prints_warnings_on_stderr(tmp_path, capsys):
  paths = _hand_worked_set(tmp_path, [dict(_GT[0], category_id=42)] + _GT[1:] + _GT[1:2], _PRED)
  assert cli.main(["eval", "pq", "--gt_json", paths[0], "--gt_folder", paths[1],
                   "--pred_json", paths[2], "--pred_folder", paths[3], "--workers", "1"]) == 0
  err = capsys.readouterr().err.strip().split("\n")
  assert len(err) == 2 and all(line.startswith("kmax-tf eval pq: warning: ") for line in err)
  assert "segment ids [2] are listed more than once" in err[0] and "[42]" in err[1]
