"""The `kmax-tf` console script: every command fails with one error line, a traceback only with
KMAX_TF_DEBUG=1."""
import os
import subprocess
import sys

import pytest

from kmax_tf import cli

# The script sits next to the interpreter (in a venv that may not be on PATH).
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kmax-tf")


def _run(args, debug=False, cwd=None):
  env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
  if debug:
    env[cli.DEBUG_ENV] = "1"
  return subprocess.run([_SCRIPT if os.path.exists(_SCRIPT) else "kmax-tf", *args],
                        capture_output=True, text=True, check=False, env=env, cwd=cwd,
                        timeout=300)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  (root / "bad.textproto").write_text("model_options {\n  backbone { nme: 'x' }\n}\n")
  (root / "pred.json").write_text('{"annotations": []}')
  return root


@pytest.mark.parametrize("args,line", [
    (["model", "summary", "--config_file", "{root}/missing.textproto"],
     "kmax-tf model summary: error: {root}/missing.textproto:0:0: cannot read config: "
     "No such file or directory"),
    (["export", "--config_file", "{root}/bad.textproto", "--checkpoint", "{root}",
      "--output_dir", "{root}/out"],
     "kmax-tf export: error: {root}/bad.textproto:2:14: Message type "
     "\"kmax_tf.ModelOptions.BackboneOptions\" has no field named \"nme\"."),
    (["predict", "--saved_model", "{root}", "--input", "{root}/missing.png",
      "--output_dir", "{root}/out"],
     "kmax-tf predict: error: --input {root}/missing.png does not exist"),
    (["eval", "pq", "--gt_json", "{root}/missing.json", "--pred_json", "{root}/pred.json"],
     "kmax-tf eval pq: error: [Errno 2] No such file or directory: '{root}/missing.json'"),
    (["train", "--config_file", "{root}/bad.textproto", "--mode", "train", "--bogus_flag", "1"],
     "kmax-tf train: error: Unknown command line flag 'bogus_flag' (see --help)"),
    (["train", "--config_file", "{root}/bad.textproto", "--mode", "train", "--model_dir",
      "{root}/model", "--override", "DATA_DIR"],
     "kmax-tf train: error: --override expects NAME=VALUE, got 'DATA_DIR'"),
], ids=["model", "export", "predict", "eval", "train", "train_override"])
def test_command_errors_are_one_line(bad_inputs, args, line):
  result = _run([a.format(root=bad_inputs) for a in args])
  assert result.returncode == 1
  # TensorFlow's own start-up log lines may come first.
  ours = [text for text in result.stderr.split("\n") if text.startswith("kmax-tf")]
  assert ours == [line.format(root=bad_inputs)]
  assert result.stderr.strip().endswith(ours[0]) and "Traceback" not in result.stderr
  assert not (bad_inputs / "out").exists()


def test_training_binary_reports_a_malformed_override(bad_inputs):
  # The absl binary says the same as `kmax-tf train`, without the prefix, before reading the
  # (here unparsable) config.
  result = subprocess.run(
      [sys.executable, "-m", "kmax_tf.trainer.train", f"--config_file={bad_inputs}/bad.textproto",
       "--mode=train", f"--model_dir={bad_inputs}/model", "--override=DATA_DIR"],
      capture_output=True, text=True, check=False, timeout=300,
      env={k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV})
  assert result.returncode == 1
  assert result.stderr.strip().split("\n")[-1] == "--override expects NAME=VALUE, got 'DATA_DIR'"


def test_usage_errors_are_one_line():
  result = _run(["eval", "pq", "--gt_json", "x.json"])
  assert result.returncode == 2
  assert result.stderr == ("kmax-tf eval pq: error: the following arguments are required: "
                           "--pred_json (see kmax-tf eval pq --help)\n")


def test_debug_variable_shows_the_traceback(bad_inputs):
  args = ["model", "summary", "--config_file", str(bad_inputs / "missing.textproto")]
  result = _run(args, debug=True)
  assert result.returncode == 1
  assert "Traceback (most recent call last)" in result.stderr
  assert "ConfigError" in result.stderr and "cannot read config" in result.stderr


class _FakeOpError(Exception):
  """Stands in for a TensorFlow runtime error (same module prefix, same message layout)."""
  __module__ = "tensorflow.python.framework.errors_impl"

  def __init__(self, message):
    super().__init__(message)
    self.message = message


@pytest.mark.parametrize("error,message", [
    (ValueError("x.png: cannot decode image"), "x.png: cannot decode image"),
    (KeyError("image_id"), "KeyError: 'image_id'"),
    (ValueError("3 problem(s):\n  a\n  b"), "3 problem(s):\n  a\n  b"),
    (RuntimeError(""), "RuntimeError: RuntimeError"),
    (_FakeOpError("Graph execution error:\n\nDetected at node Assert defined at (most recent "
                  "call last):\n  File \"a.py\", line 1, in f\n\ninput_tensor must be a uint8 "
                  "image; got shape] [0 5 3]\n\t [[{{node Assert}}]] [Op:__inference_f_9]"),
     "_FakeOpError: input_tensor must be a uint8 image; got shape] [0 5 3]"),
])
def test_error_message(error, message):
  assert cli.error_message(error) == message


def test_unexpected_exceptions_are_one_line_too(monkeypatch, capsys):
  def handler(args):
    raise KeyError("segments_info")

  parser = cli.build_parser()
  monkeypatch.setattr(cli, "build_parser", lambda: parser)
  parser.set_defaults(handler=handler)
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  # The sub-parser's own default handler wins over the top-level one: patch the leaf.
  leaf = [a for a in parser._actions if a.dest == "command"][0].choices["demo"]
  leaf.set_defaults(handler=handler)
  assert cli.main(["demo"]) == 1
  assert capsys.readouterr().err == "kmax-tf demo: error: KeyError: 'segments_info'\n"
  monkeypatch.setenv(cli.DEBUG_ENV, "1")
  with pytest.raises(KeyError):
    cli.main(["demo"])


def test_train_help_lists_the_trainer_flags():
  result = _run(["train", "--help"])
  assert result.returncode == 0, result.stderr
  for flag in ("--config_file", "--mode", "--model_dir", "--num_gpus", "--master", "--override",
               "--max_steps", "--[no]deterministic"):
    assert f"{flag}:" in result.stdout, flag


def test_train_takes_flags_in_both_forms(monkeypatch):
  # Both forms reach absl unchanged, after `train` and before any other option.
  calls = []
  monkeypatch.setattr("kmax_tf.trainer.train.run",
                      lambda argv, raise_flag_errors: calls.append(argv))
  argv = ["--config_file", "c.textproto", "--mode=train", "--model_dir", "d", "--override",
          "A=b", "--deterministic"]
  assert cli.main(["train", *argv]) == 0
  assert calls == [["kmax-tf train", *argv]]
