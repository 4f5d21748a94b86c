"""The committed kmax_tf/protos/*_pb2.py modules must match protos/*.proto."""
import pathlib
import subprocess
import sys

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[1]


def test_generated_modules_are_fresh(tmp_path):
  pytest.importorskip("grpc_tools", reason="grpcio-tools comes with the [test] extra")
  # A separate process: grpc_tools' compiler extension crashes when loaded into a process that
  # already holds TensorFlow's protobuf symbols (other tests import TensorFlow).
  subprocess.run([sys.executable, str(_REPO / "protos" / "generate.py"), "--output_dir",
                  str(tmp_path)], check=True, capture_output=True)
  fresh_modules = sorted(tmp_path.glob("*_pb2.py"))
  assert [p.name for p in fresh_modules] == [
      f"{name}_pb2.py" for name in ("config", "dataset", "evaluator", "model", "trainer")]
  for fresh in fresh_modules:
    committed = _REPO / "kmax_tf" / "protos" / fresh.name
    assert committed.read_text() == fresh.read_text(), (
        f"{committed} is stale: run `python protos/generate.py`")
