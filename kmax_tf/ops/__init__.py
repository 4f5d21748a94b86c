"""TensorFlow ops without a library equivalent that compiles under XLA."""
from kmax_tf.ops.linear_sum_assignment import batched_linear_sum_assignment
from kmax_tf.ops.linear_sum_assignment import linear_sum_assignment

__all__ = ["batched_linear_sum_assignment", "linear_sum_assignment"]
