"""Tests for `kmax-tf config check`."""
import os
import pathlib
import subprocess
import sys

import pytest

from kmax_tf import cli

_REPO = pathlib.Path(__file__).resolve().parents[2]
_SHIPPED = sorted((_REPO / "configs").rglob("*.textproto"))
_REFERENCE = sorted((_REPO / "tests" / "deeplab2_configs").glob("*.textproto"))


def test_every_shipped_and_reference_config_passes(capsys):
  assert len(_SHIPPED) == 18  # 16 deeplab2 kMaX configs + the synthetic tiny and micro ones.
  assert len(_REFERENCE) == 2, "tests/deeplab2_configs should hold two deeplab2 files"
  files = [str(p) for p in _SHIPPED + _REFERENCE]
  assert cli.main(["config", "check", *files]) == 0
  lines = capsys.readouterr().out.strip().split("\n")
  assert len(lines) == len(files)
  coco = next(l for l in lines if "coco_kmax_meta_r50_os32" in l)
  assert ("OK dataset=coco_panoptic backbone=kmax_resnet50 crop=1281x1281 batch=64 "
          "steps=150000") in coco


def test_error_prints_file_line_column_and_exits_nonzero(tmp_path, capsys):
  good = _REPO / "configs" / "synthetic" / "kmax_tiny.textproto"
  bad = tmp_path / "bad.textproto"
  bad.write_text('model_options {\n  backbone {\n    nam: "kmax_resnet50"\n  }\n}\n')
  assert cli.main(["config", "check", str(good), str(bad)]) == 1
  captured = capsys.readouterr()
  assert f"{good}: OK" in captured.out
  assert captured.err.startswith(f"{bad}:3:5: ")


def test_console_script_is_installed(tmp_path):
  bad = tmp_path / "bad.textproto"
  bad.write_text("train_dataset_options {\n  crop_size: 100\n  crop_size: 129\n}\n")
  # The script sits next to the interpreter (in a venv that may not be on PATH).
  script = os.path.join(os.path.dirname(sys.executable), "kmax-tf")
  result = subprocess.run([script if os.path.exists(script) else "kmax-tf", "config", "check", str(bad)], capture_output=True,
                          text=True, check=False)
  assert result.returncode == 1
  assert result.stderr.startswith(f"{bad}:2:3: train_dataset_options.crop_size: 100 is not")


def test_override_flag_resolves_placeholders(capsys):
  tiny = _REPO / "configs" / "synthetic" / "kmax_tiny.textproto"
  assert cli.main(["config", "check", str(tiny), "--override", "DATA_DIR=/d",
                   "--override", "EXPERIMENT_NAME=x"]) == 0
  assert "placeholders" not in capsys.readouterr().out
  assert cli.main(["config", "check", str(tiny), "--override", "DATA_DIR"]) == 1
  assert capsys.readouterr().err == (
      "kmax-tf config check: error: --override expects NAME=VALUE, got 'DATA_DIR'\n")


_TINY = (_REPO / "configs" / "synthetic" / "kmax_tiny.textproto").read_text()
_SLOTS_LINE = next(i for i, line in enumerate(_TINY.split("\n"), 1) if "num_mask_slots" in line)


@pytest.mark.parametrize("content,position,message", [
    (b"", "1:1", "empty config: no field is set"),
    (b"# only a comment\n\n", "1:1", "empty config: no field is set"),
    (_TINY.replace("num_mask_slots: 16", "num_mask_slots: 0").encode(), f"{_SLOTS_LINE}:5",
     "model_options.max_deeplab.num_mask_slots: 0: must be positive"),
    # Latin-1 "é" in the second line's string.
    (b'# ok\nexperiment_name: "caf\xe9"\n', "2:22", "not UTF-8 text: byte 0xe9"),
], ids=["empty", "comments_only", "zero_mask_slots", "latin1"])
def test_configs_that_would_not_run_are_positioned_errors(tmp_path, capsys, content, position,
                                                          message):
  bad = tmp_path / "bad.textproto"
  bad.write_bytes(content)
  assert cli.main(["config", "check", str(bad)]) == 1
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.startswith(f"{bad}:{position}: {message}")
  assert len(captured.err.strip().split("\n")) == 1
