"""The command lines README.md and docs/ show, run through the installed `kmax-tf` script.

Commands are read from the documents themselves (fenced code blocks and the README's command
table), so a renamed subcommand or flag, or an example that no longer runs, fails here:
- every documented command names a real subcommand and only flags that subcommand accepts;
- the examples run as shown, through the console script, with the tiny config and test data
  substituted for the full-size config and the user's paths (`_run_block` lists each
  substitution; a substitution whose text is no longer in the README fails the test).
The main job (`kmax-tf demo`) runs in tests/test_demo.py (`--quick`) and, full size, in `.ci/run`.
"""
import argparse
import functools
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import tensorflow as tf

from kmax_tf import cli
from kmax_tf.configs import config_path
from kmax_tf.data import synthetic

import deeplab2_checkpoints  # tests/helpers

_REPO = pathlib.Path(__file__).resolve().parents[1]
_DOCUMENTS = (_REPO / "README.md", _REPO / "docs" / "model_zoo.md")
_MICRO = str(config_path("synthetic/kmax_micro.textproto"))
_SCRIPT_DIR = os.path.dirname(sys.executable)


def _fenced_blocks(path):
  """The text of each fenced code block of a Markdown file, indentation removed."""
  blocks, current, indent = [], None, ""
  for line in path.read_text(encoding="utf-8").splitlines():
    stripped = line.strip()
    if stripped.startswith("```"):
      if current is None:
        current, indent = [], line[:len(line) - len(line.lstrip())]
      else:
        blocks.append("\n".join(current))
        current = None
    elif current is not None:
      current.append(line[len(indent):] if line.startswith(indent) else line)
  return blocks


def _commands_of_block(block):
  """Command lines of a shell block: continuations joined, `$ ` prompts and `A && B` split."""
  commands = []
  for line in block.replace("\\\n", " ").splitlines():
    line = line.strip()
    line = line[2:] if line.startswith("$ ") else line
    for part in line.split("&&"):
      part = part.strip()
      if part.startswith(("kmax-tf ", "python -m kmax_tf")):
        commands.append(part)
  return commands


def _table_commands():
  """The synopses of the README's command table (`| `kmax-tf ...` | ... |`)."""
  rows = re.findall(r"^\| `(kmax-tf [^`]*)` \|", (_REPO / "README.md").read_text(encoding="utf-8"),
                    flags=re.MULTILINE)
  # Synopsis notation: [optional], {a,b} choices, (x | y) alternatives, ... repetition.
  return [re.sub(r"[\[\]{}()|]|\.\.\.", " ", row) for row in rows]


def _documented_commands():
  commands = _table_commands()
  for path in _DOCUMENTS:
    for block in _fenced_blocks(path):
      commands.extend(_commands_of_block(block))
  return commands


def _subcommands(parser):
  """{name: parser} of an argparse parser's subcommands ({} for a leaf)."""
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      return action.choices
  return {}


def _subcommand_and_flags(command):
  """(("kmax-tf", "data", "check"), {"--file_pattern", ...}) of a command line."""
  words = shlex.split(command.replace("$", ""))
  if words[:3] == ["python", "-m", "kmax_tf.trainer.train"]:
    path, rest = ["kmax-tf", "train"], words[3:]
  else:
    parser, path, rest = cli.build_parser(), ["kmax-tf"], words[1:]
    while rest and rest[0] in _subcommands(parser):
      parser = _subcommands(parser)[rest[0]]
      path.append(rest.pop(0))
  return tuple(path), {w.split("=", 1)[0] for w in rest if w.startswith("--")}


@functools.lru_cache(maxsize=None)
def _help(path):
  result = subprocess.run([os.path.join(_SCRIPT_DIR, path[0]), *path[1:], "--help"],
                          capture_output=True, text=True, check=False, timeout=120)
  assert result.returncode == 0, (path, result.stderr[-2000:])
  return result.stdout


def test_documents_show_the_commands():
  commands = _documented_commands()
  # The table has a row per subcommand; the blocks show config check, training, conversion.
  assert len(_table_commands()) >= 10
  assert any(c.startswith("python -m kmax_tf.trainer.train") for c in commands)
  assert sum(c.startswith("kmax-tf convert deeplab2") for c in commands) >= 3


@pytest.mark.parametrize("command", _documented_commands())
def test_documented_command_uses_only_flags_its_subcommand_accepts(command):
  path, flags = _subcommand_and_flags(command)
  text = _help(path)
  for flag in flags:
    # argparse lists `--flag`; absl (the trainer) `--flag:` or `--[no]flag:`.
    assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b|--\[no\]{re.escape(flag[2:])}\b",
                     text), f"`{' '.join(path)}` does not accept {flag} (README: {command})"


def _block_with(path, text):
  matching = [b for b in _fenced_blocks(path) if text in b]
  assert len(matching) == 1, f"expected one block of {path.name} containing {text!r}"
  return matching[0]


def _run_block(block, substitutions, cwd, extra_env=None):
  """Runs a README shell block with bash after the substitutions, `kmax-tf` on PATH."""
  for old, new in substitutions.items():
    assert old in block, f"README no longer shows {old!r}"
    block = block.replace(old, new)
  env = dict(os.environ, PATH=_SCRIPT_DIR + os.pathsep + os.environ["PATH"],
             TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
  return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env,
                        capture_output=True, text=True, check=False, timeout=1200)


def test_config_check_examples_print_what_the_readme_shows(tmp_path):
  block = _block_with(_REPO / "README.md", "$ kmax-tf config check")
  lines = block.splitlines()
  (tmp_path / "configs").symlink_to(_REPO / "configs")
  # The README's bad file: a misspelt field at line 3, column 5.
  (tmp_path / "bad.textproto").write_text(
      'model_options {\n  backbone {\n    nam: "resnet50"\n  }\n}\n')
  for index, line in enumerate(lines):
    if not line.startswith("$ "):
      continue
    expected = lines[index + 1]
    result = subprocess.run(shlex.split(line[2:]), cwd=tmp_path, capture_output=True, text=True,
                            check=False, timeout=120,
                            env=dict(os.environ, PATH=_SCRIPT_DIR + os.pathsep +
                                     os.environ["PATH"]))
    assert (result.stdout + result.stderr).strip() == expected, line
    assert (result.returncode == 0) == ("OK" in expected), line


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("synthetic")
  synthetic.write_dataset(str(directory), num_train=4, num_eval=1, image_size=64, seed=5)
  return directory


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  """The README's training example with the micro config: model_dir and the run's result."""
  model_dir = tmp_path_factory.mktemp("runs")
  block = _block_with(_REPO / "README.md", "python -m kmax_tf.trainer.train")
  result = _run_block(block, {
      "configs/coco/kmax_deeplab/kmax_meta_r50_os32.textproto": _MICRO,
      "--model_dir=/runs": f"--model_dir={model_dir}",
      # One CPU, two steps, and the micro config's ${DATA_DIR} placeholder.
      "--num_gpus=8": f"--num_gpus=0 --max_steps=2 --override=DATA_DIR={data_dir}",
  }, cwd=_REPO)
  return model_dir, result


def test_training_example_trains_and_evaluates(trained):
  model_dir, result = trained
  assert result.returncode == 0, result.stderr[-3000:]
  # EXPERIMENT_NAME comes from the example's `export`.
  assert tf.train.latest_checkpoint(str(model_dir / "kmax_r50")).endswith("ckpt-2")
  assert "PQ" in result.stderr or "pq" in result.stderr


def test_convert_and_evaluate_examples_run(trained, data_dir, tmp_path):
  block = _block_with(_REPO / "README.md", "kmax-tf convert deeplab2")
  deeplab2_dir = tmp_path / "kmax_resnet50_coco_train"
  deeplab2_checkpoints.write_checkpoint(
      deeplab2_checkpoints.listing("coco_r50_os32_full")["variables"],
      str(deeplab2_dir / "ckpt-1"))
  (deeplab2_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
  model_dir = tmp_path / "model_dir"
  convert_block, evaluate_block = block.split("\n\nkmax-tf train")
  result = _run_block(convert_block, {"/path/to/kmax_resnet50_coco_train": str(deeplab2_dir),
                                      "/path/to/model_dir": str(model_dir)}, cwd=_REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  converted = tf.train.latest_checkpoint(str(model_dir / "kmax_r50_coco_from_deeplab2"))
  assert tf.train.load_checkpoint(converted).get_tensor(
      "global_step/.ATTRIBUTES/VARIABLE_VALUE") == deeplab2_checkpoints.GLOBAL_STEP
  # The evaluation line on the training example's run: the micro config and its test data.
  trained_dir, _ = trained
  variables = ("CONFIG=" + _MICRO + "\nMODEL_DIR=" + str(trained_dir) +
               "\nEXPERIMENT_NAME=kmax_r50\n")
  result = _run_block(variables + "kmax-tf train" + evaluate_block, {
      'VAL_SET="/path/to/tfrecords/val*.tfrecord"': f"DATA_DIR={data_dir}"}, cwd=_REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "pq" in result.stderr.lower()
