"""Metrics and evaluation tools (installed as `kmax_tf.evaluation`).

The metric classes are importable from the package (`kmax_tf.evaluation.PanopticQuality`) but
loaded lazily, so `kmax-tf eval pq` (numpy only, via `pq_files`) never imports TensorFlow.
"""
import importlib

_LAZY = {
    "PanopticQuality": "panoptic_quality",
    "MeanIoU": "miou",
    "PanopticInstanceAP": "coco_ap",
    "Evaluator": "evaluator",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
