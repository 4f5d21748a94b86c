"""Metrics and evaluation tools (installed as `kmax_tf.evaluation`)."""
