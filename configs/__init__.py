"""kMaX-DeepLab experiment configs (textproto), installed as package data of `kmax_tf.configs`."""
import pathlib

CONFIG_ROOT = pathlib.Path(__file__).resolve().parent


def config_path(relative_path: str) -> pathlib.Path:
  """Returns the path of a shipped config, e.g. `config_path('synthetic/kmax_tiny.textproto')`."""
  path = CONFIG_ROOT / relative_path
  if not path.is_file():
    raise FileNotFoundError(f"No shipped config {relative_path!r} under {CONFIG_ROOT}")
  return path
