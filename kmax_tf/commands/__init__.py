"""Subcommands of the `kmax-tf` console script.

Each module defines `register(subparsers)`, adding its command (and sub-commands) with a
`handler(args) -> int` default. Modules import heavy dependencies (TensorFlow) inside their
handlers so that `kmax-tf --help` and `kmax-tf config check` start fast.
"""
