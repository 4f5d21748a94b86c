"""`kmax-tf model summary`: JSON object with totals and per-component trainable counts."""
import json
import pathlib

from kmax_tf import cli

_TINY = pathlib.Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "kmax_tiny.textproto"


def test_json_summary_of_tiny_config_with_unresolved_placeholders(capsys):
  assert cli.main(["model", "summary", "--config_file", str(_TINY), "--format", "json"]) == 0
  lines = capsys.readouterr().out.strip().split("\n")
  assert len(lines) == 1
  summary = json.loads(lines[0])
  components = summary["components"]
  assert set(components) == {"backbone", "pixel_decoder", "transformer_decoder", "heads",
                             "aux_semantic"}
  assert all(isinstance(v, int) and v > 0 for v in components.values())
  assert summary["trainable_params"] == sum(components.values())
  assert summary["non_trainable_params"] == sum(summary["non_trainable_components"].values())
  # Tiny final head: pixel head (5x5 dw on 32 ch, 1x1 to 64, 1x1 to 32) + BN(32) + mask head
  # 64->32 + BN(32) + class head 64->7 (+bias) + shared mask BN.
  head = (25 * 32 + 64) + (32 * 64 + 128) + (64 * 32 + 32) + 64 + (64 * 32 + 64) + (64 * 7 + 7) + 2
  assert components["heads"] == head


def test_bad_config_file_is_reported(tmp_path, capsys):
  bad = tmp_path / "bad.textproto"
  bad.write_text("model_options { backbone { nme: 'x' } }\n")
  assert cli.main(["model", "summary", "--config_file", str(bad)]) == 1
  assert "bad.textproto:1" in capsys.readouterr().err
