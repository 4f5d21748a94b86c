"""Exact minimum-cost bipartite matching (the linear sum assignment problem) in TensorFlow.

The solver is the shortest-augmenting-path method of Jonker & Volgenant in the form scipy uses
(D. F. Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 2016): rows are
added one at a time; for each new row a Dijkstra search over reduced costs `c[i,j] - u[i] - v[j]`
finds the cheapest augmenting path to a free column, then the dual variables `u`, `v` are updated
and the path is flipped. The result is an exact optimum (not a greedy approximation).

Why not scipy or deeplab2's solver: `scipy.optimize.linear_sum_assignment` needs a host
round-trip (`tf.numpy_function`), which XLA cannot compile; deeplab2's `matchers_ops` only takes
square matrices. Everything here is TF ops with static shapes, so it runs eagerly (the solver
core is a graph function, traced once per shape), inside `tf.function` and under
`jit_compile=True`. Each Dijkstra step is vectorised over all columns and
over the batch; the loops are `tf.while_loop`s whose trip counts are bounded by the number of rows
(`maximum_iterations`), so XLA sees fixed-size state.

Costs must be finite (use a large constant instead of `inf` to forbid a pair).
"""
from __future__ import annotations

import tensorflow as tf


def _as_float_cost(cost) -> tf.Tensor:
  cost = tf.convert_to_tensor(cost)
  if cost.dtype.is_floating:
    # Half precision is too coarse for the dual updates; solve in float32.
    return cost if cost.dtype == tf.float64 else tf.cast(cost, tf.float32)
  if cost.dtype.is_integer or cost.dtype == tf.bool:
    return tf.cast(cost, tf.float32)
  raise TypeError(f"linear_sum_assignment: cost must be real-valued, got dtype {cost.dtype.name}")


def _check_finite(cost: tf.Tensor) -> None:
  # Only checkable without a graph: under tf.function / XLA a data-dependent error cannot be
  # raised, and a non-finite cost there simply gives an arbitrary assignment.
  if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(cost))):
    raise ValueError("linear_sum_assignment: cost matrix contains inf or nan; use a large finite "
                     "constant to forbid a pair")


# A graph function even when called eagerly: the loops run thousands of small steps, which op-by-op
# eager dispatch makes ~10x slower. Inside tf.function or XLA it is simply inlined.
@tf.function(autograph=False)
def _solve_rows_le_cols(cost: tf.Tensor) -> tf.Tensor:
  """Assigns every row of `cost [B, R, C]` (R <= C, R >= 1) to a distinct column.

  Returns:
    col_for_row: int32 `[B, R]`, the optimal column of each row.
  """
  batch, num_rows, num_cols = cost.shape
  dtype = cost.dtype
  inf = tf.constant(float("inf"), dtype)
  zero = tf.zeros([], dtype)
  row_ids = tf.range(num_rows, dtype=tf.int32)
  col_ids = tf.range(num_cols, dtype=tf.int32)

  def gather_row(matrix, index):  # [B, X, Y], [B] -> [B, Y]
    return tf.gather(matrix, index, batch_dims=1)

  def gather_elem(vector, index):  # [B, X], [B] -> [B]
    return tf.gather(vector, index, batch_dims=1)

  def add_one_row(cur_row, u, v, col4row, row4col):
    """Extends the partial assignment of rows `< cur_row` to row `cur_row` for every image."""
    cur = tf.fill([batch], cur_row)

    # Dijkstra over columns. `spc[j]` is the shortest reduced path cost from `cur_row` to
    # column j, `path[j]` the row preceding j on that path; `min_val` is the cost of the last
    # column settled. An image is `searching` until it settles a free column (`sink`).
    def search_cond(i, min_val, spc, path, seen_rows, seen_cols, sink):
      return tf.reduce_any(sink < 0)

    def search_body(i, min_val, spc, path, seen_rows, seen_cols, sink):
      searching = sink < 0
      seen_rows = seen_rows | (tf.equal(row_ids[None], i[:, None]) & searching[:, None])
      reduced = (min_val[:, None] + gather_row(cost, i) - gather_elem(u, i)[:, None] - v)
      improve = searching[:, None] & ~seen_cols & (reduced < spc)
      path = tf.where(improve, i[:, None], path)
      spc = tf.where(improve, reduced, spc)
      open_spc = tf.where(seen_cols, inf, spc)
      lowest = tf.reduce_min(open_spc, axis=1)
      candidates = tf.equal(open_spc, lowest[:, None]) & ~seen_cols
      # Among equally short columns prefer a free one: it ends the search a step earlier.
      free_candidates = candidates & (row4col < 0)
      pick = tf.where(tf.reduce_any(free_candidates, axis=1, keepdims=True),
                      free_candidates, candidates)
      j = tf.argmax(tf.cast(pick, tf.int32), axis=1, output_type=tf.int32)
      min_val = tf.where(searching, lowest, min_val)
      seen_cols = seen_cols | (tf.equal(col_ids[None], j[:, None]) & searching[:, None])
      owner = gather_elem(row4col, j)
      sink = tf.where(searching & (owner < 0), j, sink)
      i = tf.where(searching & (owner >= 0), owner, i)
      return i, min_val, spc, path, seen_rows, seen_cols, sink

    _, min_val, spc, path, seen_rows, seen_cols, sink = tf.while_loop(
        search_cond, search_body,
        (cur, tf.zeros([batch], dtype), tf.fill([batch, num_cols], inf),
         tf.fill([batch, num_cols], -1), tf.zeros([batch, num_rows], tf.bool),
         tf.zeros([batch, num_cols], tf.bool), tf.fill([batch], -1)),
        maximum_iterations=num_rows)

    # Dual update keeping reduced costs non-negative and zero along the assignment.
    spc_of_assigned = tf.gather(spc, tf.maximum(col4row, 0), batch_dims=1)
    is_cur = tf.equal(row_ids[None], cur_row)
    u = u + tf.where(is_cur, min_val[:, None],
                     tf.where(seen_rows, min_val[:, None] - spc_of_assigned, zero))
    v = v - tf.where(seen_cols, min_val[:, None] - spc, zero)

    # Flip the augmenting path from `sink` back to `cur_row`.
    def flip_cond(j, done, col4row, row4col):
      return tf.reduce_any(~done)

    def flip_body(j, done, col4row, row4col):
      active = ~done
      # Finished images hold j = -1; clamp so the (discarded) lookups stay in range.
      j = tf.maximum(j, 0)
      i = gather_elem(path, j)
      row4col = tf.where(active[:, None] & tf.equal(col_ids[None], j[:, None]),
                         i[:, None], row4col)
      previous = gather_elem(col4row, i)
      col4row = tf.where(active[:, None] & tf.equal(row_ids[None], i[:, None]),
                         j[:, None], col4row)
      return tf.where(active, previous, j), done | tf.equal(i, cur_row), col4row, row4col

    _, _, col4row, row4col = tf.while_loop(
        flip_cond, flip_body, (sink, tf.zeros([batch], tf.bool), col4row, row4col),
        maximum_iterations=num_rows)
    return cur_row + 1, u, v, col4row, row4col

  _, _, _, col4row, _ = tf.while_loop(
      lambda cur_row, *_: cur_row < num_rows, add_one_row,
      (tf.constant(0), tf.zeros([batch, num_rows], dtype), tf.zeros([batch, num_cols], dtype),
       tf.fill([batch, num_rows], -1), tf.fill([batch, num_cols], -1)),
      maximum_iterations=num_rows)
  return col4row


def batched_linear_sum_assignment(cost) -> tf.Tensor:
  """Solves a batch of assignment problems.

  Args:
    cost: `[B, R, C]` real costs with static shape (integers are solved as float32).

  Returns:
    col_for_row: int32 `[B, R]`; the column assigned to each row, or -1 for the `R - C` rows left
      unassigned when `R > C`. The assignment minimises the summed cost over `min(R, C)` pairs.
  """
  cost = _as_float_cost(cost)
  if cost.shape.rank != 3 or not cost.shape.is_fully_defined():
    raise ValueError(f"batched_linear_sum_assignment: cost must have static shape [B, R, C], "
                     f"got {cost.shape}")
  _check_finite(cost)
  batch, num_rows, num_cols = cost.shape
  if min(num_rows, num_cols) == 0:
    return tf.fill([batch, num_rows], -1)
  if num_rows <= num_cols:
    return _solve_rows_le_cols(cost)
  # More rows than columns: assign every column to a row instead, then invert.
  row_for_col = _solve_rows_le_cols(tf.transpose(cost, [0, 2, 1]))
  hits = tf.equal(row_for_col[:, :, None], tf.range(num_rows)[None, None])  # [B, C, R]
  col_for_row = tf.argmax(tf.cast(hits, tf.int32), axis=1, output_type=tf.int32)
  return tf.where(tf.reduce_any(hits, axis=1), col_for_row, -1)


def linear_sum_assignment(cost) -> tuple[tf.Tensor, tf.Tensor]:
  """TensorFlow counterpart of `scipy.optimize.linear_sum_assignment` (minimisation).

  Args:
    cost: `[R, C]` real costs with static shape.

  Returns:
    (row_ind, col_ind): int32 `[min(R, C)]` each; `row_ind` ascending, `col_ind[t]` is the column
    assigned to row `row_ind[t]`, and `cost[row_ind, col_ind].sum()` is minimal.
  """
  cost = tf.convert_to_tensor(cost)
  if cost.shape.rank != 2:
    raise ValueError(f"linear_sum_assignment: cost must be a matrix [R, C], got shape {cost.shape}")
  num_rows = cost.shape[0]
  col_for_row = batched_linear_sum_assignment(cost[None])[0]
  assigned = col_for_row >= 0
  # Rows without a column sort after all assigned rows; keep the first min(R, C).
  order = tf.argsort(tf.where(assigned, 0, 1) * num_rows + tf.range(num_rows), stable=True)
  num_pairs = min(cost.shape)
  row_ind = order[:num_pairs]
  return row_ind, tf.gather(col_for_row, row_ind)
