"""kmax_tf.ops.linear_sum_assignment against scipy.optimize.linear_sum_assignment."""
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

from kmax_tf.ops import batched_linear_sum_assignment, linear_sum_assignment


def _random_costs(rng, count, shape, integer):
  if integer:  # few distinct values: many tied optima
    return rng.integers(0, 4, (count,) + shape).astype(np.float32)
  return rng.normal(size=(count,) + shape).astype(np.float32)


def _check_against_scipy(cost, row_ind, col_ind):
  row_ind, col_ind = np.asarray(row_ind), np.asarray(col_ind)
  expected_rows, expected_cols = scipy.optimize.linear_sum_assignment(cost)
  assert len(row_ind) == min(cost.shape)
  assert np.all(np.diff(row_ind) > 0), row_ind
  assert len(set(col_ind.tolist())) == len(col_ind)
  np.testing.assert_allclose(cost[row_ind, col_ind].sum(),
                             cost[expected_rows, expected_cols].sum(), rtol=1e-5, atol=1e-5)


def _col_for_row_to_pairs(col_for_row):
  rows = np.flatnonzero(col_for_row >= 0)
  return rows, col_for_row[rows]


@pytest.mark.parametrize("integer", [False, True])
def test_eager_matches_scipy_on_square_and_rectangular(integer):
  rng = np.random.default_rng(1 + integer)
  shapes = [(1, 1), (4, 4), (6, 6), (128, 3), (3, 128), (5, 9), (9, 5)]
  for shape in shapes:
    for cost in _random_costs(rng, 2, shape, integer):
      _check_against_scipy(cost, *linear_sum_assignment(cost))


def test_integer_dtype_is_accepted_eagerly():
  cost = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]], np.int64)
  row_ind, col_ind = linear_sum_assignment(cost)
  np.testing.assert_array_equal(row_ind, [0, 1, 2])
  # Hand-worked optimum: 1 + 2 + 2 = 5 (rows 0,1,2 -> cols 1,0,2).
  np.testing.assert_array_equal(col_ind, [1, 0, 2])


def test_xla_batched_matches_scipy_on_many_matrices():
  """124 matrices, four compiled shapes; each jit function is reused across a batch."""
  rng = np.random.default_rng(3)
  solve = tf.function(batched_linear_sum_assignment, jit_compile=True)
  cases = [_random_costs(rng, 40, (7, 7), False), _random_costs(rng, 40, (7, 7), True),
           _random_costs(rng, 22, (128, 10), False), _random_costs(rng, 22, (10, 128), True)]
  total = 0
  for costs in cases:
    col_for_row = solve(tf.constant(costs)).numpy()
    for cost, assignment in zip(costs, col_for_row):
      _check_against_scipy(cost, *_col_for_row_to_pairs(assignment))
      total += 1
  assert total >= 100


def test_xla_scipy_contract_for_tall_matrix():
  rng = np.random.default_rng(4)
  solve = tf.function(linear_sum_assignment, jit_compile=True)
  for cost in _random_costs(rng, 3, (20, 6), False):
    _check_against_scipy(cost, *solve(tf.constant(cost)))


def test_inside_tf_function_without_xla():
  rng = np.random.default_rng(5)
  cost = _random_costs(rng, 1, (6, 9), True)[0]
  _check_against_scipy(cost, *tf.function(linear_sum_assignment)(tf.constant(cost)))


def test_permuting_predictions_permutes_the_assignment():
  rng = np.random.default_rng(6)
  for shape in [(6, 6), (4, 9), (9, 4)]:
    cost = rng.normal(size=shape).astype(np.float32)  # continuous: unique optimum
    permutation = rng.permutation(shape[1])
    rows, cols = linear_sum_assignment(cost)
    permuted_rows, permuted_cols = linear_sum_assignment(cost[:, permutation])
    np.testing.assert_array_equal(rows, permuted_rows)
    np.testing.assert_array_equal(permutation[permuted_cols.numpy()], cols)


def test_batched_marks_unassigned_rows():
  cost = np.array([[[0.0, 5.0], [1.0, 0.0], [0.5, 0.2]]], np.float32)  # 3 rows, 2 columns
  np.testing.assert_array_equal(batched_linear_sum_assignment(cost), [[0, 1, -1]])


def test_empty_matrix():
  rows, cols = linear_sum_assignment(np.zeros((0, 4), np.float32))
  assert rows.shape == (0,) and cols.shape == (0,)


@pytest.mark.parametrize("cost, message", [
    (np.array([[0.0, np.inf], [1.0, 2.0]], np.float32), "inf or nan"),
    (np.zeros((2, 2, 2), np.float32), r"matrix \[R, C\]"),
    (np.array([["a"]]), "real-valued"),
])
def test_bad_input_raises(cost, message):
  with pytest.raises((ValueError, TypeError), match=message):
    linear_sum_assignment(cost)
