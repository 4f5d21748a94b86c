"""Tests for kmax_tf.config: parsing, placeholder substitution and error positions."""
import textwrap

import pytest

from kmax_tf import config

_VALID = textwrap.dedent("""\
    experiment_name: "${EXPERIMENT_NAME}"
    model_options {
      backbone { name: "kmax_resnet50" }
      max_deeplab { auxiliary_semantic_head { output_channels: 7 } }
    }
    train_dataset_options {
      dataset: "synthetic_panoptic"
      file_pattern: "${DATA_DIR}/train-*.tfrecord"
      crop_size: 129
      crop_size: 129
    }
    """)


def _write(tmp_path, text, name="exp.textproto"):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_substitutes_overrides_and_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("EXPERIMENT_NAME", "from_env")
  path = _write(tmp_path, _VALID)
  options = config.load_config(path, {"DATA_DIR": "/data"})
  assert options.experiment_name == "from_env"
  assert list(options.train_dataset_options.file_pattern) == ["/data/train-*.tfrecord"]
  # Overrides win over the environment.
  options = config.load_config(path, {"DATA_DIR": "/d", "EXPERIMENT_NAME": "mine"})
  assert options.experiment_name == "mine"


def test_reports_unresolved_placeholders_with_positions():
  text, unresolved = config.substitute_placeholders(_VALID, {"DATA_DIR": "/data"})
  assert "${DATA_DIR}" not in text
  assert [(p.name, p.line, p.column) for p in unresolved] == [("EXPERIMENT_NAME", 1, 19)]


@pytest.mark.parametrize("text,line,column,fragment", [
    # Unknown field.
    ('train_dataset_options {\n  datset: "x"\n}\n', 2, 3, 'no field named "datset"'),
    # Wrong type.
    ('train_dataset_options {\n  batch_size: "big"\n}\n', 2, 15, "Couldn't parse integer"),
    # Bad boolean literal.
    ('trainer_options {\n  solver_options {\n    use_sync_batchnorm: maybe\n  }\n}\n', 3, 25,
     'Expected "true" or "false"'),
    # Unbalanced brace: the parser reaches the end of the text still inside a message.
    ('model_options {\n  backbone {\n    name: "kmax_resnet50"\n}\n', 4, 1, 'Expected "}"'),
    # One closing brace too many.
    ('model_options {\n}\n}\n', 3, 1, "Expected identifier"),
])
def test_parse_errors_name_file_line_and_column(tmp_path, text, line, column, fragment):
  path = _write(tmp_path, text)
  with pytest.raises(config.ConfigError) as error:
    config.load_config(path)
  assert (error.value.line, error.value.column) == (line, column)
  assert str(error.value).startswith(f"{path}:{line}:{column}: ")
  assert fragment in str(error.value)


def test_missing_file_is_a_config_error(tmp_path):
  with pytest.raises(config.ConfigError, match="cannot read config"):
    config.load_config(tmp_path / "absent.textproto")


def test_parse_overrides_splits_at_the_first_equals_sign():
  assert config.parse_overrides(["A=1", "B=x=y", "C=", "A=2"]) == {"A": "2", "B": "x=y", "C": ""}


@pytest.mark.parametrize("pair", ["DATA_DIR", "=value", ""])
def test_malformed_override_is_a_config_error_without_position(pair):
  with pytest.raises(config.ConfigError) as error:
    config.parse_overrides(["A=1", pair])
  assert str(error.value) == f"--override expects NAME=VALUE, got {pair!r}"
  assert error.value.path is None
