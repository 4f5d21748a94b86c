"""Generated protobuf modules of the config schema (source: protos/*.proto)."""
