"""Subcommands of the `kmax-tf` console script.

Each module defines `register(subparsers)`, adding its command (and sub-commands) with a
`handler(args) -> int` default. A handler that fails raises (a ValueError or OSError whose
message names the problem); `kmax_tf.cli.main` prints it as the command's one error line.
Modules import heavy dependencies (TensorFlow) inside their handlers so that `kmax-tf --help`
and `kmax-tf config check` start fast.
"""
