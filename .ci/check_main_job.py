"""Checks the README's main job after `.ci/run` ran it: `python .ci/check_main_job.py LOG`.

LOG holds what `kmax-tf demo` printed on stdout. Its last line is the JSON summary: PQ must
reach 0.5, and the SavedModel it exported must serve images of odd sizes through
`kmax-tf predict` (one pixel, a tall strip, a COCO-like size, a size off the model's 32k+1 grid)
with TensorFlow's oneDNN CPU kernels and with its Eigen ones. Exits non-zero with a message
naming what failed.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

_MIN_PQ = 0.5
_SIZES = ((1, 1), (3000, 40), (480, 640), (97, 131))


def main(log_path: str) -> int:
  lines = pathlib.Path(log_path).read_text(encoding="utf-8").strip().splitlines()
  if not lines:
    sys.exit(f"{log_path}: `kmax-tf demo` printed nothing")
  summary = json.loads(lines[-1])
  if summary["pq"] < _MIN_PQ:
    sys.exit(f"kmax-tf demo: PQ {summary['pq']:.3f} is below {_MIN_PQ}")
  with tempfile.TemporaryDirectory() as work:
    work = pathlib.Path(work)
    rng = np.random.default_rng(0)
    inputs = []
    for height, width in _SIZES:
      inputs.append(work / f"odd_{height}x{width}.png")
      Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(inputs[-1])
    for onednn in ("1", "0"):
      output = work / f"out_onednn{onednn}"
      subprocess.run(["kmax-tf", "predict", "--saved_model", summary["saved_model"], "--input",
                      *map(str, inputs), "--output_dir", str(output), "--no_progress"],
                     check=True, env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn))
      for (height, width), path in zip(_SIZES, inputs):
        size = Image.open(output / "panoptic" / path.name).size
        if size != (width, height):
          sys.exit(f"{output / 'panoptic' / path.name}: size {size}, expected {(width, height)}")
  print(f"main job OK: pq={summary['pq']:.3f}; {summary['saved_model']} served {_SIZES} with "
        "oneDNN and Eigen kernels")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
