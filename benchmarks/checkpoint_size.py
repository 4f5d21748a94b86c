"""Checkpoint size of the micro model trained on a COCO-like stream, and the input state's share.

The stream: 640x480 JPEG scenes with raw int32 panoptic labels (1.2 MB per record, as COCO's),
64 distinct records hard-linked into 16 shards, so that an epoch (1024 records) fills the
training shuffle buffer (`reader.SHUFFLE_BUFFER_SIZE`, 1000 records, the COCO config's). The
trainer (`train_lib.run_experiment`, micro config, `--deterministic`) runs `--steps` steps and
saves; the JSON line gives the checkpoint's bytes and those of the input state in it (seed and
stream position). For comparison it gives the bytes of a full shuffle buffer of these records
(what checkpoints held at least when they saved the `tf.data` iterator), and times a restart
mid-epoch (the skipped records are read but not decoded) against a fresh start.

  python benchmarks/checkpoint_size.py [--steps 2] [--resume_position 900]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=wrong-import-position

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import input_pipeline  # pylint: disable=wrong-import-position

from kmax_tf import config  # pylint: disable=wrong-import-position
from kmax_tf.configs import config_path  # pylint: disable=wrong-import-position
from kmax_tf.data import reader  # pylint: disable=wrong-import-position
from kmax_tf.trainer import train_lib  # pylint: disable=wrong-import-position

_RECORDS = 64
_SHARDS = 16
# The trainer's checkpoint entries that hold the input stream's state.
_INPUT_STATE_PREFIXES = ("input_state/", "skipped_records/")


def _write_stream(directory: pathlib.Path) -> str:
  input_pipeline.write_records(str(directory), _RECORDS, coco_ids=False)
  first = directory / "train-00000-of-00001.tfrecord"
  for shard in range(_SHARDS):
    os.link(first, directory / f"train-{shard:05d}-of-{_SHARDS:05d}.tfrecord")
  first.unlink()
  return str(directory / "train-*-of-*.tfrecord")


def _checkpoint_bytes(prefix: str) -> int:
  return sum(os.path.getsize(path) for path in tf.io.gfile.glob(prefix + ".*"))


def _entry_bytes(prefix: str) -> dict:
  checkpoint = tf.train.load_checkpoint(prefix)
  sizes = {}
  for name in checkpoint.get_variable_to_shape_map():
    value = checkpoint.get_tensor(name)
    sizes[name] = len(value) if isinstance(value, bytes) else value.nbytes
  return sizes


def _first_batch_seconds(dataset_options, start) -> float:
  begin = time.perf_counter()
  next(iter(reader.build_dataset(dataset_options, True, deterministic=True, seed=0,
                                 start=start)))
  return time.perf_counter() - begin


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--resume_position", type=int, default=900,
                      help="record position in the epoch to time a restart from")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as directory:
    directory = pathlib.Path(directory)
    (directory / "data").mkdir()
    pattern = _write_stream(directory / "data")
    options = config.load_config(str(config_path("synthetic/kmax_micro.textproto")),
                                 {"DATA_DIR": str(directory / "data"), "EXPERIMENT_NAME": "micro"})
    train_options = options.train_dataset_options
    del train_options.file_pattern[:]
    train_options.file_pattern.append(pattern)
    train_lib.run_experiment("train", options, str(directory / "run"),
                             run_options=train_lib.RunOptions(seed=0, deterministic=True,
                                                              max_steps=args.steps))
    prefix = tf.train.latest_checkpoint(str(directory / "run" / "micro"))
    total = _checkpoint_bytes(prefix)
    entries = _entry_bytes(prefix)
    state = sum(size for name, size in entries.items() if name.startswith(_INPUT_STATE_PREFIXES))

    record_bytes = sum(os.path.getsize(path) for path in tf.io.gfile.glob(pattern)) / (
        _RECORDS * _SHARDS)

    fresh_s = _first_batch_seconds(train_options, None)
    resume_s = _first_batch_seconds(
        train_options, [0, args.resume_position] + [0] * (reader.POSITION_SIZE - 2))
  print(json.dumps({
      "benchmark": "checkpoint_size", "model": "synthetic/kmax_micro",
      "stream": {"image_size": [480, 640], "label": "raw int32", "records_per_epoch":
                 _RECORDS * _SHARDS, "shuffle_buffer": reader.SHUFFLE_BUFFER_SIZE},
      "steps": args.steps, "checkpoint_bytes": total, "input_state_bytes": state,
      "input_state_share": round(state / total, 8),
      # What a checkpointed tf.data iterator held at least: its full shuffle buffer.
      "shuffle_buffer_bytes_estimate": round(record_bytes * reader.SHUFFLE_BUFFER_SIZE),
      "first_batch_s_fresh": round(fresh_s, 2),
      "first_batch_s_resume": round(resume_s, 2),
      "resume_position": args.resume_position}))


if __name__ == "__main__":
  main()
