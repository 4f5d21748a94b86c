"""Regenerates kmax_tf/protos/*_pb2.py from protos/*.proto with grpcio-tools.

Usage: python protos/generate.py [--output_dir DIR]

The .proto files import each other as "kmax_tf/protos/<name>.proto" so that the generated modules
import each other as `kmax_tf.protos.<name>_pb2`; this script stages them under that path in a
temporary proto root before running protoc.
"""
import argparse
import pathlib
import shutil
import sys
import tempfile

PROTO_DIR = pathlib.Path(__file__).resolve().parent
DEFAULT_OUTPUT_DIR = PROTO_DIR.parent / "kmax_tf" / "protos"


def generate(output_dir: pathlib.Path) -> list[pathlib.Path]:
  """Compiles every protos/*.proto into `output_dir`; returns the written module paths."""
  from grpc_tools import protoc  # Only needed by developers, listed in the [test] extra.

  proto_files = sorted(PROTO_DIR.glob("*.proto"))
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    staged = root / "kmax_tf" / "protos"
    staged.mkdir(parents=True)
    for proto in proto_files:
      shutil.copy(proto, staged / proto.name)
    status = protoc.main([
        "protoc", f"-I{root}", f"--python_out={root}",
        *[str(staged / p.name) for p in proto_files],
    ])
    if status != 0:
      raise RuntimeError(f"protoc failed with status {status}")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for proto in proto_files:
      module = f"{proto.stem}_pb2.py"
      shutil.copy(staged / module, output_dir / module)
      written.append(output_dir / module)
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output_dir", type=pathlib.Path, default=DEFAULT_OUTPUT_DIR)
  args = parser.parse_args(argv)
  for path in generate(args.output_dir):
    print(path)


if __name__ == "__main__":
  sys.exit(main())
