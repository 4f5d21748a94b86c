"""Shared test setup: quiet TensorFlow logs, and `tests/helpers` importable by test modules."""
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Modules that several test modules use, and scripts tests run in subprocesses (tests are not a
# package under `--import-mode=importlib`).
sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))
