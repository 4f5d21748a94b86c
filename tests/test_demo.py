"""`kmax-tf demo --quick` end to end: every stage runs and writes its files (not the PQ bar)."""
import json
import os
import subprocess
import sys

import tensorflow as tf


def test_quick_demo_runs_every_stage(tmp_path):
  output = tmp_path / "demo"
  script = os.path.join(os.path.dirname(sys.executable), "kmax-tf")
  result = subprocess.run(
      [script if os.path.exists(script) else "kmax-tf", "demo", "--quick",
       "--output_dir", str(output)],
      capture_output=True, text=True, timeout=1500, check=True, cwd=tmp_path,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ("pq", "sq", "rq", "miou"):
    assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
  assert summary["train_steps"] == 4
  assert "[2/5] Training" in result.stderr
  # Data, checkpoint, SavedModel, predictions and overlays exist.
  assert list((output / "data").glob("train-*.tfrecord"))
  assert tf.train.latest_checkpoint(summary["checkpoint_dir"]).endswith("ckpt-4")
  assert (output / "saved_model" / "saved_model.pb").exists()
  assert len(summary["overlays"]) == 4 and all(os.path.exists(p) for p in summary["overlays"])
  annotations = json.loads((output / "predictions" / "panoptic.json").read_text())
  assert len(annotations["annotations"]) == 4
  assert json.loads((output / "summary.json").read_text()) == summary
