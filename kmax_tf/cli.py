"""The `kmax-tf` console script: dispatches to the modules in `kmax_tf.commands`.

A command that fails prints one line, `kmax-tf <command>: error: <message>`, on stderr and exits
non-zero (1; 2 for command-line usage errors). `KMAX_TF_DEBUG=1` in the environment shows the
traceback instead.
"""
import argparse
import importlib
import os
import sys

# Order is the order shown by `kmax-tf --help`.
_COMMAND_MODULES = (
    "demo",
    "config",
    "model",
    "data",
    "train",
    "eval",
    "export",
    "predict",
    "convert",
)
DEBUG_ENV = "KMAX_TF_DEBUG"
# Exceptions whose message is written for the user; others also show their type.
_USER_ERRORS = (ValueError, OSError)


class _Parser(argparse.ArgumentParser):
  """Usage errors on one line, like every other error (`add_subparsers` reuses this class)."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="kmax-tf",
      description="kMaX-DeepLab in TensorFlow 2 / Keras 3, compatible with deeplab2 configs.",
      epilog=f"On error a command prints one line; set {DEBUG_ENV}=1 for the traceback.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name in _COMMAND_MODULES:
    importlib.import_module(f"kmax_tf.commands.{name}").register(subparsers)
  return parser


def _command_prog(parser: argparse.ArgumentParser, args) -> str:
  """`prog` of the innermost sub-command that `args` selected, e.g. "kmax-tf eval pq"."""
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      return _command_prog(action.choices[getattr(args, action.dest)], args)
  return parser.prog


def error_message(error: BaseException) -> str:
  """The message of `error` for the error line: its first line (the ones after it, e.g. a list
  of problems, follow indented), prefixed with the exception type unless it is a user error.
  TensorFlow runtime errors keep only the op's message, not the graph trace before it."""
  text = str(error).strip()
  if type(error).__module__.startswith("tensorflow") and hasattr(error, "message"):
    # "Graph execution error:\n\nDetected at node ... (most recent call last):\n<trace>\n\n
    # <message>\n\t [[{{node ...}}]]": the paragraph after the trace is the op's message.
    paragraphs = [p.strip() for p in error.message.split("\n\n") if p.strip()]
    kept = [p for p in paragraphs
            if not p.startswith(("Graph execution error", "Detected at node"))]
    text = (kept[0] if kept else text).split("\n\t")[0].strip()
  lines = [line for line in text.split("\n") if line.strip()] or [type(error).__name__]
  if not isinstance(error, _USER_ERRORS):
    lines[0] = f"{type(error).__name__}: {lines[0]}"
  return "\n".join([lines[0]] + ["  " + line.strip() for line in lines[1:]])


def main(argv=None) -> int:
  parser = build_parser()
  # `kmax-tf train` hands its flags to absl, which parses and checks them (deeplab2's flags,
  # both `--flag=value` and `--flag value`); argparse's REMAINDER would not collect them when an
  # option comes first, so they arrive as the unknown arguments here.
  args, unknown = parser.parse_known_args(argv)
  if args.command == "train":
    args.flags = unknown
  elif unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  prog = _command_prog(parser, args)
  try:
    return args.handler(args)
  except SystemExit as exit_:
    # `raise SystemExit("message")` and `sys.exit("message")` get the error line too.
    if isinstance(exit_.code, str) and not os.environ.get(DEBUG_ENV):
      print(f"{prog}: error: {exit_.code}", file=sys.stderr)
      return 1
    raise
  except KeyboardInterrupt:
    if os.environ.get(DEBUG_ENV):
      raise
    print(f"{prog}: error: interrupted", file=sys.stderr)
    return 130
  except Exception as error:  # pylint: disable=broad-except
    if os.environ.get(DEBUG_ENV):
      raise
    print(f"{prog}: error: {error_message(error)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
