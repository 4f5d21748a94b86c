"""Checks the README's main job after `.ci/run` ran it: `python .ci/check_main_job.py LOG`.

LOG holds what `kmax-tf demo` printed on stdout. Its last line is the JSON summary: PQ must
reach 0.5, and the SavedModel it exported must serve images of two odd sizes through
`kmax-tf predict` (a tall strip and a size off the model's 32k+1 grid). Exits non-zero with a
message naming what failed.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

_MIN_PQ = 0.5
_SIZES = ((3000, 40), (97, 131))


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
    subprocess.run(["kmax-tf", "predict", "--saved_model", summary["saved_model"], "--input",
                    *map(str, inputs), "--output_dir", str(work / "out"), "--no_progress"],
                   check=True)
    for (height, width), path in zip(_SIZES, inputs):
      panoptic = work / "out" / "panoptic" / path.name
      if Image.open(panoptic).size != (width, height):
        sys.exit(f"{panoptic}: size {Image.open(panoptic).size}, expected {(width, height)}")
  print(f"main job OK: pq={summary['pq']:.3f}, served {_SIZES} with {summary['saved_model']}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
