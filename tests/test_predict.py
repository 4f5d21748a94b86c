"""`kmax-tf predict` on synthetic images rendered to files; its output feeds `eval pq`."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kmax_tf import cli, config, configs, panoptic_files, predict, weight_io
from kmax_tf.data import synthetic
from kmax_tf.datasets import get_dataset
from kmax_tf.evaluation import pq_files
from kmax_tf.model import builder

_CONFIG = configs.config_path("synthetic/kmax_micro.textproto")
DATASET = get_dataset("synthetic_panoptic")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict")
  options = config.load_config(_CONFIG, {"DATA_DIR": "/unused", "EXPERIMENT_NAME": "p"})
  prefix = tf.train.Checkpoint(model=weight_io.ModelVariables(
      builder.build_model(options))).save(str(root / "ckpt" / "ckpt"))
  images_dir, gt_dir = root / "images", root / "gt"
  images_dir.mkdir()
  annotations = []
  for index in range(3):
    image, panoptic = synthetic.draw_scene(synthetic.scene_rng(7, "val", index), 48 + 8 * index)
    Image.fromarray(image).save(images_dir / f"img{index}.png")
    annotations.append(
        panoptic_files.save_panoptic_png(str(gt_dir), f"img{index}", panoptic, DATASET))
  panoptic_files.write_panoptic_json(str(gt_dir), annotations, DATASET)
  # Unreadable files first and between the images: each is reported and skipped.
  (images_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  jpeg = io.BytesIO()
  Image.fromarray(image).save(jpeg, format="JPEG")
  (images_dir / "img1_cut.jpg").write_bytes(jpeg.getvalue()[:200])
  out = root / "out"
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    code = cli.main(["predict", "--config_file", str(_CONFIG), "--checkpoint", prefix,
                     "--input", str(images_dir), "--output_dir", str(out), "--no_progress",
                     "--override=DATA_DIR=/unused", "--override=EXPERIMENT_NAME=p"])
  return {"out": out, "gt": gt_dir, "images": images_dir, "code": code,
          "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_unreadable_files_are_reported_and_skipped(predicted):
  broken, cut = (str(predicted["images"] / name) for name in ("broken.png", "img1_cut.jpg"))
  assert predicted["code"] == 1
  lines = predicted["stderr"].strip().split("\n")
  assert len(lines) == 3
  assert lines[0].startswith(f"skipped {broken}: cannot decode image: ")
  assert lines[1].startswith(f"skipped {cut}: cannot decode image: ")
  assert lines[2] == (f"kmax-tf predict: error: 2 of 5 images could not be read (the others are "
                      f"in {predicted['out'] / 'panoptic.json'}): {broken}, {cut}")
  written = json.loads(predicted["stdout"].strip().split("\n")[-1])
  assert written["num_images"] == 3
  assert [f["path"] for f in written["failures"]] == [broken, cut]
  assert sorted(os.listdir(predicted["out"] / "panoptic")) == [f"img{i}.png" for i in range(3)]


def test_output_is_accepted_by_eval_pq(predicted):
  results = pq_files.pq_compute(str(predicted["gt"] / "panoptic.json"),
                                str(predicted["out"] / "panoptic.json"),
                                str(predicted["gt"] / "panoptic"),
                                str(predicted["out"] / "panoptic"))
  assert results["num_images"] == 3
  for group in ("All", "Things", "Stuff"):
    for key in ("pq", "sq", "rq"):
      assert 0.0 <= results[group][key] <= 1.0


def test_files_written_per_image(predicted):
  out = predicted["out"]
  with open(out / "panoptic.json", encoding="utf-8") as f:
    data = json.load(f)
  assert [a["image_id"] for a in data["annotations"]] == ["img0", "img1", "img2"]
  assert {c["id"] for c in data["categories"]} == set(range(1, 7))
  for index, annotation in enumerate(data["annotations"]):
    size = 48 + 8 * index
    semantic = np.asarray(Image.open(out / "semantic" / f"img{index}.png"))
    assert semantic.shape == (size, size) and semantic.max() < DATASET.num_classes
    vis = np.asarray(Image.open(out / "vis" / f"img{index}.png"))
    assert vis.shape == (size, size, 3)
    for segment in annotation["segments_info"]:
      assert segment["iscrowd"] == 0 and segment["area"] > 0 and len(segment["bbox"]) == 4


def test_list_images_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    predict.list_images([str(tmp_path / "missing.png")])
  with pytest.raises(ValueError, match="No image files"):
    predict.list_images([str(tmp_path)])
  (tmp_path / "a").mkdir()
  Image.new("RGB", (4, 4)).save(tmp_path / "a" / "x.png")
  Image.new("RGB", (4, 4)).save(tmp_path / "x.jpg")
  with pytest.raises(ValueError, match="same name 'x'"):
    predict.list_images([str(tmp_path / "a"), str(tmp_path / "x.jpg")])


def test_images_reach_the_model_upright_and_in_8_bits(tmp_path):
  grey16 = np.random.default_rng(0).integers(0, 1 << 16, (20, 30), dtype=np.uint16)
  Image.fromarray(grey16).save(tmp_path / "grey16.png")
  stored = np.zeros((20, 30, 3), np.uint8)
  stored[:10] = 200  # bright top half; EXIF 8 turns it a quarter counter-clockwise
  exif = Image.Exif()
  exif[0x0112] = 8
  Image.fromarray(stored).save(tmp_path / "turned.jpg", quality=95, exif=exif)
  seen = {}

  def predict_fn(image):
    seen[len(seen)] = image
    zeros = np.zeros(image.shape[:2], np.int32)
    return {"panoptic_pred": zeros + 256, "semantic_pred": zeros + 1}

  written = predict.predict_files(predict_fn, DATASET, [str(tmp_path / "grey16.png"),
                                                        str(tmp_path / "turned.jpg")],
                                  str(tmp_path / "out"), progress=False)
  assert written["num_images"] == 2 and written["failures"] == []
  np.testing.assert_array_equal(seen[0], np.repeat((grey16 >> 8)[..., None], 3, axis=-1))
  assert seen[1].shape == (30, 20, 3)
  assert np.abs(seen[1].astype(int) - np.rot90(stored)).mean() < 2
  vis = np.asarray(Image.open(tmp_path / "out" / "vis" / "turned.png"))
  assert vis.shape == (30, 20, 3)


def test_config_without_checkpoint_is_rejected(tmp_path, capsys):
  assert cli.main(["predict", "--config_file", str(_CONFIG), "--input", str(tmp_path),
                   "--output_dir", str(tmp_path / "o")]) == 2
  assert "needs --checkpoint" in capsys.readouterr().err
