"""Training and evaluation runtime (installed as `kmax_tf.trainer`)."""
